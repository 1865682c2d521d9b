package region

import (
	"testing"
	"time"

	"github.com/latticedb/lattice/crdt"

	"github.com/latticedb/lattice/region/store"
)

// TestRenewedIncarnationAppliedContextAfterCleanRestart: us-east writes
// five times, then a line of a cart is deleted through the store (every
// checksum passes): the start finds the cart disagreeing with its head
// and goes on as a new incarnation. It catches up, writes once as the
// new replica (its dot 1) and stops cleanly. Opened again, its applied
// context must hold the new replica's dot 1 and nothing past it; its
// next write takes dot 2, and a peer that applied both deltas covers
// the region's token.
func TestRenewedIncarnationAppliedContextAfterCleanRestart(t *testing.T) {
	const id = "v"
	r := newSemRig(t, "us-east", "eu-west")
	a := r.nodes["us-east"]
	for _, sku := range []string{"apple", "pear", "fig", "plum", "lime"} {
		must[Cart](t)(a.AddItem(bg, id, sku, 1))
	}
	for _, d := range damage8Deltas(r, "us-east", 0) {
		r.apply("eu-west", d)
	}
	old := a.Self()

	r.closed["us-east"] = true
	heldBack10Rewrite(t, a, cartLineKey(id, "apple"), func(tx *store.Tx) { tx.Delete(cartLineKey(id, "apple")) })
	a = r.open("us-east")
	if a.Self() == old {
		t.Fatalf("us-east opened on a cart that disagrees with its head keeps replica %s", old)
	}
	renewed := a.Self()
	damage8CatchUp(r, "us-east", id)

	mark := r.published("us-east")
	must[Cart](t)(a.AddItem(bg, "w", "kiwi", 1))
	if got := appliedMax(a, renewed); got != 1 {
		t.Fatalf("the renewed replica's first write: applied context holds %s up to %d, want 1", renewed, got)
	}
	r.restart("us-east", true)
	a = r.nodes["us-east"]
	if a.Self() != renewed {
		t.Fatalf("a clean restart changed the replica from %s to %s", renewed, a.Self())
	}
	if got := appliedMax(a, renewed); got != 1 {
		t.Errorf("after a clean restart us-east's applied context holds dots of %s up to %d, but that replica wrote only dot 1 (dots 2..%d were never issued)",
			renewed, got, got)
	}
	must[Cart](t)(a.AddItem(bg, "w", "grape", 1))
	ds := damage8Deltas(r, "us-east", mark)
	for _, d := range ds {
		r.apply("eu-west", d)
	}
	var seqs []uint64
	for _, d := range ds {
		seqs = append(seqs, d.Seq)
	}
	ctx, cancel := contextWithTimeout(time.Second)
	defer cancel()
	if err := r.nodes["eu-west"].WaitToken(ctx, a.Token()); err != nil {
		t.Errorf("eu-west applied every delta of %s (seqs %v) but does not serve us-east's token: %v", renewed, seqs, err)
	}
}

// appliedMax returns the highest counter of replica id that node's applied
// context holds.
func appliedMax(n *testNode, id crdt.ReplicaID) uint64 {
	c := n.Applied()
	return c.Max(id)
}
