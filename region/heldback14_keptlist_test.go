package region

import "testing"

// keptFor returns the deltas region n keeps aside for cart id (p/c/id),
// nil if none.
func keptFor(t *testing.T, n *testNode, id string) []byte {
	t.Helper()
	var kept []byte
	if err := n.store.Scan(prefixPending+prefixCart+id, func(k string, v []byte, err error) bool {
		if k == prefixPending+prefixCart+id {
			kept = v
		}
		return true
	}); err != nil {
		t.Fatal(err)
	}
	return kept
}

// TestKeptDeltaOfHeldBackCartSurvivesADamagedHeldBackList: us-east's
// cart is found damaged and held back, and eu-west's state repairs it
// (whole again, still held back, listed in m/heldback). ap-south's add of
// kiwi reaches us-east as a delta, which is kept aside (p/c/<id>). Then
// ap-south's own copy of the cart is damaged, so us-east's kept delta is
// the only copy of kiwi, and us-east's list of held-back keys is damaged
// (every cart and item is held back). kiwi replicated to another region
// and must not be lost (README, Limitations): once every region has
// caught up, every region serves the cart with kiwi, and no kept delta is
// left behind.
func TestKeptDeltaOfHeldBackCartSurvivesADamagedHeldBackList(t *testing.T) {
	const id = "cart-0001"
	r := newSemRig(t, "us-east", "eu-west", "ap-south")
	must[Cart](t)(r.nodes["us-east"].AddItem(bg, id, "apple", 1))
	for _, d := range damage8Deltas(r, "us-east", 0) {
		r.apply("eu-west", d)
		r.apply("ap-south", d)
	}

	damage8Reopen(t, r, "us-east", cartLineKey(id, "apple"))
	r.repair("eu-west", "us-east", id) // whole again, but held back (listed in m/heldback)

	mark := r.published("ap-south")
	must[Cart](t)(r.nodes["ap-south"].AddItem(bg, id, "kiwi", 1))
	for _, d := range damage8Deltas(r, "ap-south", mark) {
		r.apply("us-east", d) // kept aside: the cart is held back at us-east
	}
	a := r.nodes["us-east"]
	if len(keptFor(t, a, id)) == 0 {
		t.Fatalf("us-east kept no delta for held-back cart %s", id)
	}

	// ap-south's copy of the cart is damaged: kiwi is left only in us-east's
	// kept delta. Then us-east's list of held-back keys is damaged.
	damage8Reopen(t, r, "ap-south", cartLineKey(id, "kiwi"))
	a = damage8Reopen(t, r, "us-east", keyHeldBack)
	if !a.CatchingUp() {
		t.Fatal("us-east with a damaged held-back list is not catching up")
	}

	damage8CatchUp(r, "us-east", id)
	damage8CatchUp(r, "ap-south", id)
	damage8Converge(r, id)

	for _, name := range r.regions {
		if v := r.cart(name, id); qtyOf(v, "apple") != 1 || qtyOf(v, "kiwi") != 1 {
			t.Errorf("%s serves cart %s as %s after every region caught up, want [apple:1 kiwi:1]: ap-south's add of kiwi, kept aside at us-east while %s was held back, was dropped when us-east's held-back list was found damaged (state %v ctx %v)",
				name, id, itemsString(v.Items), id, r.stateOf(name, id).Entries, r.stateOf(name, id).Ctx)
		}
	}
	if kept := keptFor(t, a, id); len(kept) > 0 {
		t.Errorf("us-east caught up still keeps deltas for cart %s (%d bytes) that it never joined", id, len(kept))
	}
}
