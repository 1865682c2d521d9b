package region

import (
	"testing"

	"github.com/latticedb/lattice/region/store"
)

// TestDisagreeingCartNoPeerHoldsIsServedAfterCatchUp: a cart written only
// at us-east (no peer holds it) loses a line on disk; every checksum
// passes, and the start finds its lines disagreeing with its head. The
// region goes on as a new incarnation and catches up; no peer sends a
// state of the cart, so once caught up "a key no peer held is written
// anew, empty: its writes had never left the region" (docs/operations.md,
// Damaged values). The cart must then be served and take writes, and no
// key stay listed as damaged.
func TestDisagreeingCartNoPeerHoldsIsServedAfterCatchUp(t *testing.T) {
	const id = "solo"
	r := newSemRig(t, "us-east", "eu-west")
	a := r.nodes["us-east"]
	must[Cart](t)(a.AddItem(bg, id, "apple", 1))
	must[Cart](t)(a.AddItem(bg, id, "pear", 1))
	must[Cart](t)(a.AddItem(bg, "shared", "fig", 1))
	for _, d := range damage8Deltas(r, "us-east", r.published("us-east")-1) {
		r.apply("eu-west", d) // only the last write (cart shared) reaches eu-west
	}
	r.closed["us-east"] = true
	heldBack10Rewrite(t, a, cartLineKey(id, "apple"), func(tx *store.Tx) { tx.Delete(cartLineKey(id, "apple")) })
	a = r.open("us-east")
	if !a.CatchingUp() {
		t.Fatalf("us-east opened with cart %s disagreeing with its head is not catching up", id)
	}
	wantCode(t, second(a.GetCart(bg, id)), CodeUnavailable)
	damage8CatchUp(r, "us-east", id)
	if _, err := a.GetCart(bg, id); err != nil {
		t.Errorf("us-east caught up still refuses cart %s, which no peer holds: %v (corrupt keys %v)", id, err, a.store.Corrupt())
	}
	if _, err := a.AddItem(bg, id, "kiwi", 1); err != nil {
		t.Errorf("us-east caught up refuses an add to cart %s: %v", id, err)
	}
	if bad := a.store.Corrupt(); len(bad) > 0 {
		t.Errorf("caught up, us-east still lists damaged keys %v", bad)
	}
}
