package region

import (
	"testing"

	"github.com/latticedb/lattice/crdt"
)

// TestTokenWithinReplicaBudget: the applied context of a cluster whose
// regions have long (valid) names and that has used 231 replica ids —
// within the lifetime budget of 256 (crdt.MaxReplicas) — is larger than a
// plain token; the region's tokens (Node.Token, TokenFor) are compressed
// then, and it takes them back.
func TestTokenWithinReplicaBudget(t *testing.T) {
	n := newNode(t)
	names := []string{"northamerica-northeast1", "australia-southeast1", "southamerica-east1"}
	dots := crdt.Context{VV: map[crdt.ReplicaID]uint64{}}
	for i := range 230 {
		dots.VV[crdt.Incarnation(names[i%len(names)], uint64(1796000000+i))] = 1000
	}
	if err := n.ApplyRemote(&dots, nil); err != nil {
		t.Fatal(err)
	}
	applied := n.Applied()
	if k := len(applied.Replicas()); k > crdt.MaxReplicas {
		t.Fatalf("test setup: %d replica ids, past the budget", k)
	}
	tok := n.Token()
	if err := n.WaitToken(bg, tok); err != nil {
		t.Errorf("the region's own token (%d characters) is refused: %v", len(tok), err)
	}
	ctx := WithAnswer(bg)
	must[Cart](t)(n.AddItem(ctx, "c", "x", 1))
	tok = n.TokenFor(ctx)
	if _, err := crdt.ParseToken(tok); err != nil {
		t.Errorf("a write's answer token (%d characters) does not parse: %v", len(tok), err)
	}
}
