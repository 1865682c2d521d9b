package region

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/latticedb/lattice/crdt"
)

// TestWaitCoversEveryReplicasDots checks that a causal wait on a token
// whose out-of-order dots belong to several replicas returns only once
// every one of them is applied, whichever replica's dot is missing and in
// whatever order the token's maps are walked (the wait keeps the dots as
// one list per replica; checking them in the wrong order once let a wait
// return with a replica's dots unchecked).
func TestWaitCoversEveryReplicasDots(t *testing.T) {
	n := nodeWithPeers(t, "eu-west", "ap-south")
	replicas := []crdt.ReplicaID{"eu-west", "ap-south", crdt.Incarnation("eu-west", 7)}
	applied := crdt.Context{}
	for _, r := range replicas {
		for _, k := range []uint64{1, 3, 5, 7} {
			applied.Insert(crdt.Dot{Replica: r, Counter: k})
		}
	}
	if err := n.ApplyRemote(&applied, &crdt.Group{}); err != nil {
		t.Fatal(err)
	}
	have := n.Applied()
	if !have.Covers(&applied) {
		t.Fatalf("the region applied %v, want it to cover %v", have, applied)
	}
	for round := range 20 {
		for _, missing := range replicas {
			want := applied.Clone()
			want.Insert(crdt.Dot{Replica: missing, Counter: 9}) // never applied
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
			err := n.waitCovers(ctx, &want, true)
			cancel()
			var e *Error
			if !errors.As(err, &e) || e.Code != CodeCausalTimeout {
				t.Fatalf("round %d: a token naming %s:9, never applied, answered %v; want causal_timeout", round, missing, err)
			}
		}
		want := applied.Clone()
		if err := n.waitCovers(context.Background(), &want, true); err != nil {
			t.Fatalf("round %d: a token of applied dots only: %v", round, err)
		}
	}
}
