package region

import "testing"

// TestHeldBackKeysSurviveARestart: a region whose store was found damaged
// holds the damaged cart back until it has caught up with every peer. A
// first peer's older state repairs it; the region then restarts (cleanly,
// and again uncleanly) before it has caught up. The cart, now whole on
// disk, must still be held back after each start: served, it would show
// the older state without this region's removal that the other peer
// holds. Once caught up it is served, removal included, and no key stays
// listed as damaged.
func TestHeldBackKeysSurviveARestart(t *testing.T) {
	const id = "v"
	r := newSemRig(t, "us-east", "eu-west", "ap-south")
	a, mark := damage8AddThenRemove(t, r, id)
	for _, d := range damage8Deltas(r, "us-east", mark) {
		r.apply("ap-south", d) // eu-west does not get the removal
	}
	must[Cart](t)(a.AddItem(bg, "other", "fig", 1)) // the damaged line is not in the last transaction

	a = damage8Reopen(t, r, "us-east", "e/"+id+"/pear")
	r.repair("eu-west", "us-east", id) // whole again, from the older state
	for _, clean := range []bool{true, false} {
		r.restart("us-east", clean)
		a = r.nodes["us-east"]
		if !a.CatchingUp() {
			t.Fatalf("us-east restarted (clean %v) before catching up is not catching up", clean)
		}
		if c, err := a.GetCart(bg, id); err == nil {
			t.Fatalf("us-east restarted (clean %v) before catching up serves cart %s, repaired from eu-west's older state alone", clean, itemsString(c.Items))
		}
		wantCode(t, second(a.AddItem(bg, id, "kiwi", 1)), CodeUnavailable)
	}
	damage8CatchUp(r, "us-east", id)
	if c := r.cart("us-east", id); qtyOf(c, "apple") != 0 || qtyOf(c, "pear") != 1 {
		t.Fatalf("us-east caught up serves %s, want pear:1 alone", itemsString(c.Items))
	}
	must[Cart](t)(a.AddItem(bg, id, "kiwi", 1))
	if bad := a.store.Corrupt(); len(bad) > 0 {
		t.Fatalf("caught up, us-east still lists damaged keys %v", bad)
	}
	// Served again after a restart too: the held-back list is empty.
	r.restart("us-east", true)
	if c := r.cart("us-east", id); qtyOf(c, "kiwi") != 1 || qtyOf(c, "pear") != 1 {
		t.Fatalf("after a restart us-east serves %s", itemsString(c.Items))
	}
}

// TestReleaseKeepsTheLinesThatReadWhole: a cart only us-east holds (its
// deltas never left) loses one line to damage. Once us-east has caught up
// and no peer sent the cart, it keeps the lines that read whole and loses
// the damaged one alone.
func TestReleaseKeepsTheLinesThatReadWhole(t *testing.T) {
	const id = "solo"
	r := newSemRig(t, "us-east", "eu-west", "ap-south")
	a := r.nodes["us-east"]
	must[Cart](t)(a.AddItem(bg, id, "apple", 2))
	must[Cart](t)(a.AddItem(bg, id, "pear", 1))
	must[Cart](t)(a.AddItem(bg, id, "plum", 3))
	must[Cart](t)(a.AddItem(bg, "other", "fig", 1)) // the damaged line is not in the last transaction
	a = damage8Reopen(t, r, "us-east", cartLineKey(id, "pear"))
	wantCode(t, second(a.GetCart(bg, id)), CodeUnavailable)
	damage8CatchUp(r, "us-east", id)
	c := r.cart("us-east", id)
	if qtyOf(c, "apple") != 2 || qtyOf(c, "plum") != 3 || qtyOf(c, "pear") != 0 {
		t.Fatalf("us-east caught up serves %s, want apple:2 and plum:3 (the lines that read whole)", itemsString(c.Items))
	}
	must[Cart](t)(a.AddItem(bg, id, "pear", 1))
	if bad := a.store.Corrupt(); len(bad) > 0 {
		t.Fatalf("caught up, us-east still lists damaged keys %v", bad)
	}
}
