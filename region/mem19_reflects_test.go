package region

import (
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/latticedb/lattice/crdt"
	"github.com/latticedb/lattice/region/store"
)

func mem19LiveHeap() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// TestMem19RepairReflectsPerKeyWithinInput: the context an anti-entropy
// push reflects (Message.Reflects, decoded as the peer sent it) is kept
// per key it repaired (Node.extra, noteReflects), up to 1,024 cloud dots
// each. A first push of many keys stores one context shared by all of
// them; a second push of the same keys, reflecting one dot more, gives
// every key a clone of its own (cur.Clone joined with the new one): some
// 1,024 map entries a key for a few dozen bytes of input a key. What a
// region keeps of its peers' messages must stay a small multiple of
// their size (at most 30 times here).
func TestMem19RepairReflectsPerKeyWithinInput(t *testing.T) {
	st, err := OpenStore(":memory:", store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	n, err := NewNode(Options{Name: "us-east", Store: st, ExpiryInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	const keys = 1000
	g := &crdt.Group{}
	for i := range keys {
		var c crdt.Cart
		g.AddCart(fmt.Sprintf("c%05d", i), c.Add("eu-west", "s", 1))
	}
	// 1,023 dots of eu-west out of order (dot 1 is nowhere), as the
	// peer read them with the states; then one more.
	first := &crdt.Context{}
	for k := uint64(2); k <= 1024; k++ {
		first.Insert(crdt.Dot{Replica: "eu-west", Counter: k})
	}
	second := &crdt.Context{}
	second.Insert(crdt.Dot{Replica: "eu-west", Counter: 2000})
	input := 2*len(crdt.EncodeGroup(g)) + len(crdt.EncodeContext(first)) + len(crdt.EncodeContext(second))

	base := mem19LiveHeap()
	if err := n.ApplyGroup(&crdt.Context{}, g, first, true); err != nil {
		t.Fatal(err)
	}
	if err := n.ApplyGroup(&crdt.Context{}, g, second, true); err != nil {
		t.Fatal(err)
	}
	held := uint64(max(int64(mem19LiveHeap())-int64(base), 0)) // the heap may shrink
	t.Logf("two pushes of %d keys, %d bytes encoded in all: live heap grew by %.1f MiB (%.0f times)",
		keys, input, float64(held)/(1<<20), float64(held)/float64(input))
	if held > 30*uint64(input) {
		t.Errorf("two anti-entropy pushes of %d keys (%d bytes of groups and reflected contexts) keep %.1f MiB: %.0f times their size, "+
			"a context of ~1,024 cloud dots per key (Node.extra)", keys, input, float64(held)/(1<<20), float64(held)/float64(input))
	}
	runtime.KeepAlive(n)
}
