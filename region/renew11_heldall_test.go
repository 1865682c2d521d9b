package region

import (
	"testing"
	"time"
)

// TestDamagedHeldBackListKeepsAppliedContextOutOfSnapshots: us-east
// removes apple from a cart; the removal reaches ap-south only. A line of
// the cart is then found damaged at us-east, which holds the cart back;
// eu-west's older state (apple still in) repairs it there. us-east stops
// before it has caught up and its stored list of held-back keys
// (m/heldback) is damaged: at its next start it holds back every cart and
// item. Its snapshots must still leave its applied context out (as they
// do while the list is whole): the cart it stores lacks the removal its
// applied context covers. ap-south being cut off, a round between us-east
// and eu-west must not make eu-west serve the token of the removal while
// eu-west's cart still shows apple (SPEC §5, read-your-writes).
func TestDamagedHeldBackListKeepsAppliedContextOutOfSnapshots(t *testing.T) {
	const id = "cart-0001"
	r := newSemRig(t, "us-east", "eu-west", "ap-south")
	a, mark := damage8AddThenRemove(t, r, id)
	for _, d := range damage8Deltas(r, "us-east", mark) {
		r.apply("ap-south", d) // eu-west does not get the removal
	}
	tok := a.Token()
	must[Cart](t)(a.AddItem(bg, "other", "fig", 1))

	a = damage8Reopen(t, r, "us-east", cartLineKey(id, "pear"))
	if !a.isHeldBack(prefixCart + id) {
		t.Fatalf("us-east does not hold back cart %s", id)
	}
	r.repair("eu-west", "us-east", id) // whole again, from the older state
	a = damage8Reopen(t, r, "us-east", keyHeldBack)
	if !a.CatchingUp() || !a.isHeldBack(prefixCart+id) {
		t.Fatalf("us-east with a damaged %s: catching up %v, cart held back %v", keyHeldBack, a.CatchingUp(), a.isHeldBack(prefixCart+id))
	}
	w := r.nodes["eu-west"]
	ctx, cancel := contextWithTimeout(100 * time.Millisecond)
	err := w.WaitToken(ctx, tok)
	cancel()
	if err == nil {
		t.Fatal("eu-west serves the token of the removal before any round")
	}

	mh := newDamage8Mesh(t, r)
	heldBack10Run(mh, 10*time.Second, func(x, y string) bool { return x == "ap-south" || y == "ap-south" })
	if !a.CatchingUp() {
		t.Fatal("us-east caught up without a round with ap-south")
	}
	ctx, cancel = contextWithTimeout(time.Second)
	defer cancel()
	if err := w.WaitToken(ctx, tok); err == nil {
		if c, err := w.GetCart(bg, id); err == nil && qtyOf(c, "apple") != 0 {
			t.Errorf("after a round with us-east (whose %s is damaged), eu-west serves the token of us-east's removal of apple but its cart is %s: it adopted us-east's applied context, which covers the removal its state lacks",
				keyHeldBack, itemsString(c.Items))
		}
	}
}

// TestDamagedHeldBackListHoldsEverythingBackAcrossARestart: as above,
// us-east's cart is repaired from eu-west's older state (without
// us-east's own removal of apple, which only ap-south holds) and held
// back; its stored list of held-back keys is then damaged, so its next
// start holds back every cart and item until it has caught up
// (docs/operations.md, Damaged values: "if that value is damaged too,
// every cart and item is refused until the region has caught up"). It
// restarts once more, cleanly, before it has caught up: the cart must
// still be refused, not served with apple to a reader holding the token
// of the removal.
func TestDamagedHeldBackListHoldsEverythingBackAcrossARestart(t *testing.T) {
	const id = "cart-0001"
	r := newSemRig(t, "us-east", "eu-west", "ap-south")
	a, mark := damage8AddThenRemove(t, r, id)
	for _, d := range damage8Deltas(r, "us-east", mark) {
		r.apply("ap-south", d)
	}
	tok := a.Token()
	must[Cart](t)(a.AddItem(bg, "other", "fig", 1))

	a = damage8Reopen(t, r, "us-east", cartLineKey(id, "pear"))
	r.repair("eu-west", "us-east", id)
	a = damage8Reopen(t, r, "us-east", keyHeldBack)
	if c, err := a.GetCart(bg, id); err == nil {
		t.Fatalf("us-east with a damaged %s serves cart %s", keyHeldBack, itemsString(c.Items))
	}
	r.restart("us-east", true)
	a = r.nodes["us-east"]
	if !a.CatchingUp() {
		t.Fatal("us-east restarted before catching up is not catching up")
	}
	ctx, cancel := contextWithTimeout(time.Second)
	defer cancel()
	tokErr := a.WaitToken(ctx, tok)
	if c, err := a.GetCart(bg, id); err == nil {
		t.Errorf("us-east, restarted while still catching up after its %s was damaged, serves cart %s as %s (token of its own removal of apple served: %v); ap-south, which holds the removal, has not sent its state",
			keyHeldBack, id, itemsString(c.Items), tokErr == nil)
	}
}
