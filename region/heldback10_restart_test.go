package region

import (
	"github.com/latticedb/lattice/region/store"
	"testing"
	"time"
)

// TestHeldBackKeptDeltaAndSecondDamageAcrossRestart: us-east's cart v is
// found damaged and held back; eu-west's older state repairs it; then
// ap-south's add of kiwi reaches us-east as a delta, which is kept aside
// (the cart is still held back). us-east restarts before it has caught
// up, and this time a line of cart w is found damaged too. Both carts are
// held back; once caught up, v shows ap-south's kiwi and us-east's own
// removal of apple (which only ap-south held), w is repaired, no key is
// listed as damaged, the held-back list is empty, and the digest is the
// one a restart rebuilds from the file.
func TestHeldBackKeptDeltaAndSecondDamageAcrossRestart(t *testing.T) {
	r := newSemRig(t, "us-east", "eu-west", "ap-south")
	a := r.nodes["us-east"]
	must[Cart](t)(a.AddItem(bg, "v", "apple", 1))
	must[Cart](t)(a.AddItem(bg, "v", "pear", 1))
	must[Cart](t)(a.AddItem(bg, "w", "plum", 2))
	must[Cart](t)(a.AddItem(bg, "w", "fig", 1))
	for _, d := range damage8Deltas(r, "us-east", 0) {
		r.apply("eu-west", d)
		r.apply("ap-south", d)
	}
	mark := r.published("us-east")
	must[Cart](t)(a.RemoveItem(bg, "v", "apple"))
	for _, d := range damage8Deltas(r, "us-east", mark) {
		r.apply("ap-south", d)
	}
	must[Cart](t)(a.AddItem(bg, "other", "x", 1))
	a = damage8Reopen(t, r, "us-east", cartLineKey("v", "pear"))
	r.repair("eu-west", "us-east", "v")

	c := r.nodes["ap-south"]
	mark = r.published("ap-south")
	must[Cart](t)(c.AddItem(bg, "v", "kiwi", 1))
	for _, d := range damage8Deltas(r, "ap-south", mark) {
		r.apply("us-east", d) // kept aside: v is held back
	}
	tok := c.Token()
	must[Cart](t)(a.AddItem(bg, "other", "y", 1))

	a = damage8Reopen(t, r, "us-east", cartLineKey("w", "fig"))
	if !a.CatchingUp() {
		t.Fatal("us-east is not catching up")
	}
	for _, id := range []string{"v", "w"} {
		if c, err := a.GetCart(bg, id); err == nil {
			t.Errorf("us-east restarted before catching up serves cart %s: %s", id, itemsString(c.Items))
		}
	}
	mh := newDamage8Mesh(t, r)
	mh.run(10 * time.Second)
	if a.CatchingUp() {
		t.Fatal("us-east has not caught up after 10 s of anti-entropy")
	}
	ctx, cancel := contextWithTimeout(2 * time.Second)
	defer cancel()
	if err := a.WaitToken(ctx, tok); err != nil {
		t.Fatalf("us-east does not serve ap-south's token: %v", err)
	}
	if v := r.cart("us-east", "v"); qtyOf(v, "apple") != 0 || qtyOf(v, "pear") != 1 || qtyOf(v, "kiwi") != 1 {
		t.Errorf("us-east caught up serves cart v as %s, want kiwi:1 pear:1", itemsString(v.Items))
	}
	if w := r.cart("us-east", "w"); qtyOf(w, "plum") != 2 || qtyOf(w, "fig") != 1 {
		t.Errorf("us-east caught up serves cart w as %s, want fig:1 plum:2", itemsString(w.Items))
	}
	deadline := time.Now().Add(2 * time.Second)
	for len(a.store.Corrupt()) > 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if bad := a.store.Corrupt(); len(bad) > 0 {
		t.Errorf("caught up, us-east still lists damaged keys %v", bad)
	}
	var list []byte
	_ = a.store.View([]string{keyHeldBack}, func(rd store.Reader) error {
		list, _, _ = rd.Get(keyHeldBack)
		return nil
	})
	if len(list) > 0 {
		t.Errorf("caught up, us-east still lists held-back keys %q", list)
	}
	a.dg.mu.Lock()
	damaged := len(a.dg.damaged)
	a.dg.mu.Unlock()
	before, _ := a.Snapshot(nil)
	if damaged > 0 || before.Applied.Empty() {
		t.Errorf("caught up, us-east's digest leaves out %d damaged keys", damaged)
	}
	r.restart("us-east", true)
	after, _ := r.nodes["us-east"].Snapshot(nil)
	for b := range before.Buckets {
		if before.Buckets[b] != after.Buckets[b] {
			t.Errorf("us-east's digest bucket %d differs from the one a restart rebuilds", b)
		}
	}
}
