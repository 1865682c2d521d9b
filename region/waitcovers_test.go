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

// TestWaitWakesOnlyOnItsReplica checks that a causal wait on another
// region's write is not woken by this region's own writes (each wait
// waits on the replica of the first item it misses), that it returns once
// the missing write of that replica arrives, including one applied out of
// order, and that waits which time out leave nothing registered.
func TestWaitWakesOnlyOnItsReplica(t *testing.T) {
	n := nodeWithPeers(t, "eu-west", "ap-south")
	ctx := context.Background()
	want := crdt.Context{}
	want.Insert(crdt.Dot{Replica: "eu-west", Counter: 1})
	want.Insert(crdt.Dot{Replica: "ap-south", Counter: 2}) // out of order
	done := make(chan error, 1)
	go func() {
		w := want.Clone()
		done <- n.waitCovers(ctx, &w, true)
	}()
	registered := func(r crdt.ReplicaID) bool {
		n.amu.Lock()
		defer n.amu.Unlock()
		return n.appliedWaits[r] != nil
	}
	waitUntil(t, 5*time.Second, "the wait registers", func() bool {
		return registered("eu-west") || registered("ap-south")
	})
	first := crdt.ReplicaID("eu-west")
	if !registered(first) {
		first = "ap-south"
	}
	n.amu.Lock()
	w := n.appliedWaits[first]
	n.amu.Unlock()
	for i := range 20 {
		if _, err := n.AddItem(ctx, "c", "s", int64(i+1)); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-w.ch:
		t.Fatalf("the wait on %s was woken by this region's own writes", first)
	default:
	}
	for _, d := range []crdt.Dot{{Replica: "eu-west", Counter: 1}, {Replica: "ap-south", Counter: 2}} {
		dots := crdt.Context{}
		dots.Insert(d)
		if err := n.ApplyRemote(&dots, &crdt.Group{}); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("the wait answered %v once both writes were applied", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the wait did not return once both writes were applied")
	}
	for range 50 {
		never := crdt.Context{}
		never.Insert(crdt.Dot{Replica: crdt.ReplicaID("gone-region"), Counter: 3})
		tctx, cancel := context.WithTimeout(ctx, time.Millisecond)
		err := n.waitCovers(tctx, &never, true)
		cancel()
		var e *Error
		if !errors.As(err, &e) || e.Code != CodeCausalTimeout {
			t.Fatalf("a wait on a write never applied answered %v; want causal_timeout", err)
		}
	}
	n.amu.Lock()
	left := len(n.appliedWaits)
	n.amu.Unlock()
	if left != 0 {
		t.Fatalf("%d waits stay registered after every waiter left", left)
	}
}
