package region

import (
	"fmt"
	"strings"
	"testing"

	"github.com/latticedb/lattice/crdt"
)

// TestCartPastPeerBytesLeftOutOfAntiEntropy: docs/api.md, carts: a peer's
// cart is accepted up to 65,536 entries and 4 MiB encoded; a join held
// for a while (removals lagging behind adds) may be larger, and is then
// left out of anti-entropy and refused to quorum reads until it shrinks.
// A cart of fewer than 65,536 entries whose long skus take it past 4 MiB
// must be left out as one of more entries is: shipped, every peer would
// refuse the message that carries it, and the other keys with it.
func TestCartPastPeerBytesLeftOutOfAntiEntropy(t *testing.T) {
	n := openNode(t, t.TempDir(), newFakeClock())
	c := &crdt.Cart{Entries: map[crdt.Dot]crdt.Line{}}
	const entries = 40_000
	for i := range entries {
		r := crdt.ReplicaID(fmt.Sprintf("r%d", i%4))
		d := crdt.Dot{Replica: r, Counter: uint64(i/4 + 1)}
		sku := fmt.Sprintf("%04d", i%1000) + strings.Repeat("s", 124)
		c.Entries[d] = crdt.Line{SKU: sku, Kind: crdt.KindAdd, N: 1}
		c.Ctx.Insert(d)
	}
	if b := len(crdt.EncodeCart(c)); b <= crdt.MaxGroupBytes {
		t.Fatalf("test setup: the cart takes %d bytes, within %d", b, crdt.MaxGroupBytes)
	}
	g := &crdt.Group{Carts: map[string]*crdt.Cart{"big": c}, Items: map[string]*crdt.Item{}}
	small := &crdt.Cart{}
	small.Join(small.Add("r9", "book", 1))
	g.Carts["small"] = small
	if err := n.ApplyRemote(&crdt.Context{}, g); err != nil {
		t.Fatal(err)
	}
	got, err := n.ReadObjects([]string{"big", "small"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := got.Carts["big"]; ok {
		t.Errorf("a cart of %d entries and %d bytes is read for anti-entropy: no peer decodes it", entries, len(crdt.EncodeCart(c)))
	}
	if _, ok := got.Carts["small"]; !ok {
		t.Errorf("the other cart read with it is left out")
	}
	if _, _, err := n.readObjects([]string{"big"}, nil, true); err == nil {
		t.Errorf("a quorum read's strict read of the cart answers it")
	}
}
