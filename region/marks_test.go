package region

import (
	"fmt"
	"slices"
	"testing"

	"github.com/latticedb/lattice/crdt"
	"github.com/latticedb/lattice/region/store"
)

// TestAppliedFromMarks checks that the applied context a region reopens
// with holds every dot of its local writes, which store no applied context
// of their own (Node.openApplied): after a clean stop (same incarnation:
// the next write takes the next dot), after an unclean one (a new
// incarnation that keeps the old one's dots), and around checkpoints
// written by a remote group and by a write that sets no cart.
func TestAppliedFromMarks(t *testing.T) {
	dir := t.TempDir()
	clock := newFakeClock()
	n := openNode(t, dir, clock)
	first := n.Self()
	adds := func(n *testNode, k int) {
		t.Helper()
		for i := range k {
			must[Cart](t)(n.AddItem(bg, fmt.Sprintf("c%d", i%3), fmt.Sprintf("s%d", i), 1))
		}
	}
	adds(n, 5)
	// A remote group writes a checkpoint; more local writes follow it.
	peer := crdt.ReplicaID("eu-west")
	g := &crdt.Group{Carts: map[string]*crdt.Cart{"remote": (&crdt.Cart{}).Add(peer, "x", 1)}}
	if err := n.ApplyRemote(&crdt.Context{VV: map[crdt.ReplicaID]uint64{peer: 1}}, g); err != nil {
		t.Fatal(err)
	}
	adds(n, 4)
	want := n.Applied()
	if got := want.Max(first); got != 9 {
		t.Fatalf("applied holds %d dots of %s, want 9", got, first)
	}
	n.close()

	n = openNode(t, dir, clock)
	if n.Self() != first {
		t.Fatalf("a clean stop started incarnation %s", n.Self())
	}
	if got := n.Applied(); !got.Covers(&want) || !want.Covers(&got) {
		t.Fatalf("reopened with applied %v, want %v", got, want)
	}
	adds(n, 1)
	if got := n.Applied(); got.Max(first) != 10 {
		t.Fatalf("the write after a reopen took dot %d, want 10", got.Max(first))
	}
	want = n.Applied()
	n.Node.Close()
	if err := n.store.CloseUnclean(); err != nil {
		t.Fatal(err)
	}

	n = openNode(t, dir, clock)
	second := n.Self()
	if second == first {
		t.Fatal("an unclean stop after writes kept the incarnation")
	}
	if got := n.Applied(); !got.Covers(&want) || got.Max(second) != 0 {
		t.Fatalf("new incarnation opened with applied %v, want %v", got, want)
	}
	adds(n, 2)
	// Writes of the new incarnation, after its checkpoint.
	want = n.Applied()
	if want.Max(second) != 2 || want.Max(first) != 10 {
		t.Fatalf("applied %v", want)
	}
	n.close()
	n = openNode(t, dir, clock)
	if got := n.Applied(); n.Self() != second || !got.Covers(&want) || !want.Covers(&got) {
		t.Fatalf("reopened as %s with applied %v, want %s with %v", n.Self(), got, second, want)
	}
}

// TestLocalWriteStoresNoContext checks that a local write appends only
// its own values to the store file, not the applied context.
func TestLocalWriteStoresNoContext(t *testing.T) {
	n := newNode(t)
	must[Cart](t)(n.AddItem(bg, "c", "a", 1))
	before := fileSize(t, n.path)
	must[Cart](t)(n.AddItem(bg, "c", "b", 1))
	var keys []string
	err := store.Commands(n.path, func(cmd [][]byte, end int64) bool {
		if end > before {
			keys = append(keys, string(cmd[1]))
		}
		return true
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(keys) // a transaction's keys are written in no set order
	if !slices.Equal(keys, []string{"c/c", "e/c/b"}) {
		t.Fatalf("a cart add wrote %q, want only the cart (the line it adds to and the head)", keys)
	}
}
