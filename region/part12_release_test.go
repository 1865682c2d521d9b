package region

import "testing"

// TestFailedReleaseKeepsKeysHeldBackUntilTheNextStart: us-east's store
// is found with a damaged cart line and catches up. Its store fails (it
// is closed under the region) before the round that completes the
// catch-up, so the release cannot write. The cart must stay refused and
// the region still catching up (nothing of the release was recorded);
// after a restart the next completed round releases it, with the
// removal eu-west holds, and the region takes writes of it again.
func TestFailedReleaseKeepsKeysHeldBackUntilTheNextStart(t *testing.T) {
	const id = "v"
	r := newSemRig(t, "us-east", "eu-west")
	a := r.nodes["us-east"]
	must[Cart](t)(a.AddItem(bg, id, "apple", 1))
	must[Cart](t)(a.AddItem(bg, id, "pear", 1))
	must[Cart](t)(a.RemoveItem(bg, id, "apple"))
	must[Cart](t)(a.AddItem(bg, "other", "fig", 1))
	for _, d := range damage8Deltas(r, "us-east", 0) {
		r.apply("eu-west", d)
	}
	a = damage8Reopen(t, r, "us-east", "e/"+id+"/pear")
	if !a.CatchingUp() {
		t.Fatal("us-east, found damaged at its start, is not catching up")
	}
	r.repair("eu-west", "us-east", id)
	if err := a.store.Close(); err != nil {
		t.Fatal(err)
	}
	a.SyncedWith("eu-west", "", []string{"eu-west"})
	if !a.CatchingUp() {
		t.Fatal("us-east recorded that it caught up although its store could not write the release")
	}
	if c, err := a.GetCart(bg, id); err == nil {
		t.Fatalf("after a release that could not write, us-east serves cart %s", itemsString(c.Items))
	}
	a.SyncedWith("eu-west", "", []string{"eu-west"}) // the next round fails alike
	if _, err := a.GetCart(bg, id); err == nil {
		t.Fatal("after a second failed release, us-east serves the cart")
	}

	r.restart("us-east", false)
	a = r.nodes["us-east"]
	if !a.CatchingUp() {
		t.Fatal("restarted after a failed release, us-east is not catching up")
	}
	wantCode(t, second(a.GetCart(bg, id)), CodeUnavailable)
	damage8CatchUp(r, "us-east", id)
	c := r.cart("us-east", id)
	if qtyOf(c, "apple") != 0 || qtyOf(c, "pear") != 1 {
		t.Fatalf("caught up, us-east serves %s, want pear:1 alone", itemsString(c.Items))
	}
	must[Cart](t)(a.AddItem(bg, id, "kiwi", 1))
	if bad := a.store.Corrupt(); len(bad) > 0 {
		t.Fatalf("caught up, us-east still lists damaged keys %v", bad)
	}
}
