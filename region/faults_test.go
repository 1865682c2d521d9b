package region

import (
	"testing"
)

func TestCloseUncleanIsACrash(t *testing.T) {
	n := newNode(t)
	k0 := n.store.Incarnation()
	must[Cart](t)(n.AddItem(bg, "c", "a", 1))
	n.Node.Close()
	if err := n.store.Close(); err != nil {
		t.Fatal(err)
	}
	n = reopenNode(t, n)
	k := n.store.Incarnation()
	if k != k0 {
		t.Fatalf("after a clean stop: incarnation %d, want %d", k, k0)
	}
	must[Cart](t)(n.AddItem(bg, "c", "b", 1))
	n.Node.Close()
	if err := n.store.CloseUnclean(); err != nil {
		t.Fatal(err)
	}
	if err := n.store.CloseUnclean(); err != nil {
		t.Fatal(err)
	}
	if err := n.store.Close(); err != nil { // no clean stop after the crash
		t.Fatal(err)
	}
	n = reopenNode(t, n)
	if n.store.Incarnation() <= k {
		t.Fatalf("after CloseUnclean of a run that wrote: incarnation %d, want past %d", n.store.Incarnation(), k)
	}
	if c := must[Cart](t)(n.GetCart(bg, "c")); qtyOf(c, "a") != 1 || qtyOf(c, "b") != 1 {
		t.Fatalf("a crash lost writes in the file: %+v", c)
	}
}
