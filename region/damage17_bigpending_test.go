package region

import (
	"fmt"
	"strings"
	"testing"

	"github.com/latticedb/lattice/crdt"
	"github.com/latticedb/lattice/region/store"
)

// damage17Adds returns a batch of replica's cart adds, as the deltas of
// its writes joined in one group arrive: count entries, each its own
// write (dot), spread over lines of long skus (ids may be 128
// characters), and the context of the batch's dots.
func damage17Adds(replica crdt.ReplicaID, count, perLine int) (*crdt.Cart, *crdt.Context) {
	c := &crdt.Cart{Entries: map[crdt.Dot]crdt.Line{}}
	dots := &crdt.Context{}
	pad := strings.Repeat("x", 112)
	for i := 1; i <= count; i++ {
		d := crdt.Dot{Replica: replica, Counter: uint64(i)}
		sku := fmt.Sprintf("%s-%s-%03d", replica, pad, (i-1)/perLine)
		c.Entries[d] = crdt.Line{SKU: sku, Kind: crdt.KindAdd, N: 1}
		c.Ctx.Insert(d)
		dots.Insert(d)
	}
	return c, dots
}

// TestLargeKeptDeltasJoinedIntoRepair: docs/operations.md, Damaged
// values: the deltas a damaged cart receives "are kept aside (p/ + its
// key ...) and joined into that state when it comes". In a cluster of
// three regions each may add up to 4,096 entries to a cart (cartLimits),
// so the deltas of two peers kept aside for one damaged cart may hold
// 8,180 entries; with long skus (a whole cart's encoding repeats the sku
// in every entry) their join is larger than crdt.MaxObjectBytes, though
// every line stays within its limit. The kept state is written as one
// whole-cart value and read back with DecodeCartStored, which refuses
// values past crdt.MaxObjectBytes: the kept deltas are then taken for
// undecodable and dropped, and the repair from the first peer's state
// (eu-west's, which lacks ap-south's adds) loses ap-south's adds, whose
// dots the region claims in its applied context.
func TestLargeKeptDeltasJoinedIntoRepair(t *testing.T) {
	node, _, _, peer, _ := damagedCartNode(t)

	west, westDots := damage17Adds("eu-west", 4090, 100)
	south, southDots := damage17Adds("ap-south", 4090, 100)
	for _, b := range []struct {
		c    *crdt.Cart
		dots *crdt.Context
	}{{west, westDots}, {south, southDots}} {
		g := &crdt.Group{}
		g.AddCart("v", b.c.Clone())
		// As it travels: encoded and decoded.
		g, err := crdt.DecodeGroup(crdt.EncodeGroup(g))
		if err != nil {
			t.Fatalf("test setup: a batch of deltas does not decode: %v", err)
		}
		if err := node.ApplyRemote(b.dots, g); err != nil {
			t.Fatalf("a delta to the damaged cart: %v", err)
		}
	}
	var kept int
	_ = node.store.View([]string{prefixCart + "v"}, func(r store.Reader) error {
		b, _, _ := r.Get(prefixPending + prefixCart + "v")
		kept = len(b)
		return nil
	})
	t.Logf("deltas kept aside for cart v: %d bytes (crdt.MaxObjectBytes %d)", kept, crdt.MaxObjectBytes)
	if applied := node.Applied(); !applied.Contains(crdt.Dot{Replica: "ap-south", Counter: 4090}) {
		t.Fatal("test setup: the region does not claim ap-south's adds it keeps aside")
	}

	// eu-west's whole state repairs the cart: the region's old lines and
	// eu-west's own adds, not ap-south's (they have not reached it).
	state := peer.Clone()
	state.Join(west)
	if err := node.ApplyReflecting(&crdt.Context{}, &crdt.Group{Carts: map[string]*crdt.Cart{"v": state}}, &crdt.Context{}); err != nil {
		t.Fatal(err)
	}
	got := must[Cart](t)(node.GetCart(bg, "v"))
	var fromSouth, fromWest int64
	for _, it := range got.Items {
		switch {
		case strings.HasPrefix(it.SKU, "ap-south-"):
			fromSouth += it.Qty
		case strings.HasPrefix(it.SKU, "eu-west-"):
			fromWest += it.Qty
		}
	}
	if fromSouth != 4090 || fromWest != 4090 || qtyOf(got, "apple") != 2 || qtyOf(got, "pear") != 1 {
		t.Fatalf("after the repair cart v holds %d of ap-south's 4090 kept-aside adds, %d of eu-west's 4090, apple %d, pear %d; "+
			"the region claims every one of ap-south's dots", fromSouth, fromWest, qtyOf(got, "apple"), qtyOf(got, "pear"))
	}
}
