package region

import (
	"testing"
	"time"

	"github.com/latticedb/lattice/region/store"
)

// heldBack10Rewrite stops node (cleanly) and changes its store as fn
// says, through the store itself: the values it writes pass their
// checksums. The node's next open finds no checksum failure.
func heldBack10Rewrite(t *testing.T, tn *testNode, key string, fn func(tx *store.Tx)) {
	t.Helper()
	tn.close()
	st, err := OpenStore(tn.path, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Update([]string{lockKey(key)}, func(tx *store.Tx) error { fn(tx); return nil }); err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestCartDisagreeingWithItsHeadStartsANewIncarnation: a line of a cart is
// missing from the store (its head counts it): the region finds the cart
// damaged at start ("lines that disagree with the cart's head damage the
// whole cart (c/CART_ID is listed too)", docs/operations.md, Damaged
// values) and lists c/v in corrupt_keys, but the store's checksums all
// pass, so it keeps its incarnation and does not catch up; the cart is
// not held back. eu-west's older state repairs it and is served at once,
// and us-east's next add takes the dot of its own add of kiwi, which
// ap-south holds: the regions then disagree for good (the fault commit
// de6e6c9 fixed for checksum failures). "A store found with damaged
// values when it opens goes on as a new incarnation and catches up".
func TestCartDisagreeingWithItsHeadStartsANewIncarnation(t *testing.T) {
	const id = "v"
	r := newSemRig(t, "us-east", "eu-west", "ap-south")
	a := r.nodes["us-east"]
	must[Cart](t)(a.AddItem(bg, id, "apple", 1))
	must[Cart](t)(a.AddItem(bg, id, "pear", 1))
	for _, d := range damage8Deltas(r, "us-east", 0) {
		r.apply("eu-west", d)
		r.apply("ap-south", d)
	}
	mark := r.published("us-east")
	must[Cart](t)(a.AddItem(bg, id, "kiwi", 1))
	for _, d := range damage8Deltas(r, "us-east", mark) {
		r.apply("ap-south", d) // eu-west is cut off from us-east meanwhile
	}
	kiwiState := r.stateOf("ap-south", id).Clone()

	r.closed["us-east"] = true
	heldBack10Rewrite(t, a, cartLineKey(id, "apple"), func(tx *store.Tx) { tx.Delete(cartLineKey(id, "apple")) })
	a = r.open("us-east")
	corrupt := a.store.Corrupt()
	wantCode(t, second(a.GetCart(bg, id)), CodeUnavailable)
	if !a.CatchingUp() {
		t.Errorf("us-east opened with damaged cart %s (corrupt keys %v) is not catching up: it keeps its incarnation", id, corrupt)
	}
	r.repair("eu-west", "us-east", id)
	if c, err := a.GetCart(bg, id); err == nil {
		t.Errorf("us-east serves cart %s repaired from eu-west's older state alone (ap-south holds kiwi, added at us-east)", itemsString(c.Items))
	}
	if _, err := a.AddItem(bg, id, "grape", 1); err != nil {
		return // refused until caught up: nothing issued
	}
	if bad := kiwiState.Conflicts(r.stateOf("us-east", id)); len(bad) > 0 {
		t.Errorf("us-east issued dot(s) %v again after the repair: ap-south holds them for kiwi, us-east for grape; the regions disagree for good", bad)
	}
}

// TestItemThatDoesNotDecodeStartsANewIncarnation: the home h's stored item
// passes its checksum but does not decode; h lists it as damaged
// (corrupt_keys) but keeps its incarnation and decides at once. The
// first peer's older state (a's, without h's commit of 6 that b holds)
// repairs it, and h sells the 6 committed units again: 16 of 10.
func TestItemThatDoesNotDecodeStartsANewIncarnation(t *testing.T) {
	const sku = "p1"
	r := newEscrowRig(t)
	h := r.nodes["h"]
	must[Item](t)(h.Restock(bg, sku, 10))
	damage8DeliverTo(t, r, "a", "b")
	res := must[Reservation](t)(h.Reserve(bg, sku, 6, time.Minute, Idem{}))
	if c := must[Reservation](t)(h.Commit(bg, res.ID, Idem{})); c.State != StateCommitted {
		t.Fatalf("commit: %+v", c)
	}
	committed := res.Qty
	damage8DeliverTo(t, r, "b") // a is cut off from h meanwhile

	heldBack10Rewrite(t, h, prefixItem+sku, func(tx *store.Tx) { tx.Set(prefixItem+sku, []byte("\x00not an item")) })
	r.open("h")
	h = r.nodes["h"]
	corrupt := h.store.Corrupt()
	wantCode(t, second2(h.GetItem(bg, sku, false)), CodeUnavailable)
	if !h.CatchingUp() {
		t.Errorf("h opened with a damaged item (corrupt keys %v) is not catching up: it keeps its incarnation and decides at once", corrupt)
	}
	damage8RepairItem(t, r, "a", "h", sku) // a's round with h comes first
	ctx, cancel := contextWithTimeout(time.Second)
	defer cancel()
	if res, err := h.Reserve(ctx, sku, 10, time.Minute, Idem{}); err == nil {
		if c, err := h.Commit(bg, res.ID, Idem{}); err == nil && c.State == StateCommitted {
			committed += res.Qty
		}
	}
	if committed > 10 {
		t.Errorf("h committed %d units of a stock of 10 after a's older state repaired its damaged item", committed)
	}
}
