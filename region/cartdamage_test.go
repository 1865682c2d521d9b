package region

import (
	"testing"

	"github.com/latticedb/lattice/crdt"
)

// TestDamagedCartTakesNoDelta: a cart with one damaged line receives a
// remote delta (not a whole state). It must not be rewritten from the
// delta alone, which would drop its healthy lines and this region's own
// dots, so that its next write here would issue a dot again for another
// entry; it stays refused until a peer's whole state repairs it, and then
// its next write takes a fresh dot.
func TestDamagedCartTakesNoDelta(t *testing.T) {
	node, _, _, peer, _ := damagedCartNode(t)
	t.Logf("self after reopen: %s", node.Self())

	// A peer's delta: eu-west adds kiwi.
	d := &crdt.Cart{}
	kd := crdt.Dot{Replica: "eu-west", Counter: 1}
	d.Entries = map[crdt.Dot]crdt.Line{kd: {SKU: "kiwi", Kind: crdt.KindAdd, N: 1}}
	d.Ctx.Insert(kd)
	g := &crdt.Group{}
	g.AddCart("v", d)
	dots := &crdt.Context{}
	dots.Insert(crdt.Dot{Replica: "eu-west", Counter: 1})
	if err := node.ApplyRemote(dots, g); err != nil {
		t.Fatal(err)
	}
	peer.Join(d)
	view, err := node.GetCart(bg, "v")
	t.Logf("after the delta: %+v err %v", view.Items, err)
	if err == nil && qtyOf(view, "pear") != 1 {
		t.Errorf("the damaged cart was served after a mere delta, without its pear line: %+v", view.Items)
	}
	// While damaged, the cart takes no local write either.
	if _, err := node.AddItem(bg, "v", "grape", 1); err == nil {
		t.Fatal("a write to the damaged cart was accepted")
	}
	// A peer's whole state repairs it: its own entries and dots come back.
	if err := node.ApplyReflecting(&crdt.Context{}, &crdt.Group{Carts: map[string]*crdt.Cart{"v": peer.Clone()}}, &crdt.Context{}); err != nil {
		t.Fatal(err)
	}
	view = must[Cart](t)(node.GetCart(bg, "v"))
	if qtyOf(view, "apple") != 2 || qtyOf(view, "pear") != 1 || qtyOf(view, "kiwi") != 1 {
		t.Fatalf("after the repair: %+v; want apple 2, pear 1, kiwi 1", view.Items)
	}
	must[Cart](t)(node.AddItem(bg, "v", "grape", 1))
	got, err := node.ReadObjects([]string{"v"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if bad := peer.Conflicts(got.Carts["v"]); len(bad) > 0 {
		t.Errorf("the region reissued dots %v it had already issued: %v vs peer %v", bad, got.Carts["v"].Entries, peer.Entries)
	}
	// The peer joins the region's state: grape survives.
	peer.Join(got.Carts["v"])
	if peer.Qty("grape") != 1 {
		t.Errorf("the acknowledged grape is lost at the peer: %v", peer.Items())
	}
}
