package region

import (
	"strings"
	"testing"

	"github.com/latticedb/lattice/crdt"
)

// TestCartLineOfLongRegionNamesStaysReadableWhenRemovalsLag: three
// regions whose names have 63 characters (the longest a region name may
// be). The first adds units of one sku, one entry each, up to its line
// limit (⌊524,288 / ((63 + 45) × 3)⌋ = 1,618), the second sees the adds
// and clears the cart, the first sees the clear and adds again; the
// third gets every add but none of the clears (docs/api.md: "A region
// that sees one region's new adds before another region's removal of its
// earlier ones holds their join for a while ... a peer's cart of up to
// 65,536 entries is accepted, a stored one of any honest size is read").
// Each stored entry repeats its 63-character replica id, so the third
// region's line of the sku passes 1 MiB long before the cart holds 65,536
// entries; it must still read the cart.
func TestCartLineOfLongRegionNamesStaysReadableWhenRemovalsLag(t *testing.T) {
	names := []string{"a", "b", "c"}
	for i := range names {
		names[i] += "-" + strings.Repeat("r", 63-2)
	}
	r := newSemRig(t, names...)
	origin := crdt.ReplicaID(names[0])
	b, c := r.nodes[names[1]], r.nodes[names[2]]
	const id, sku = "cart-longline", "a"
	_, line := c.cartLimits()
	// An entry of the stored line: its array head, replica id, counter
	// (up to 3 bytes here), kind and quantity.
	entryBytes := 1 + 2 + len(origin) + 3 + 1 + 1
	rounds := crdt.MaxObjectBytes/(entryBytes*line) + 1
	if rounds*line > crdt.MaxCartEntries {
		t.Fatalf("%d entries: past MaxCartEntries, the test's premise", rounds*line)
	}
	a := &crdt.Cart{}
	var seq uint64
	for round := range rounds {
		add := &crdt.Cart{Entries: map[crdt.Dot]crdt.Line{}}
		dots := &crdt.Context{}
		for a.LineEntries(sku) < line {
			d := a.Ctx.Next(origin)
			l := crdt.Line{SKU: sku, Kind: crdt.KindAdd, N: 1}
			if a.Entries == nil {
				a.Entries = map[crdt.Dot]crdt.Line{}
			}
			a.Entries[d] = l
			a.Ctx.Insert(d)
			add.Entries[d] = l
			add.Ctx.Insert(d)
			seq++
			dots.Insert(crdt.Dot{Replica: origin, Counter: seq})
		}
		g := &crdt.Group{Carts: map[string]*crdt.Cart{id: add}}
		for _, n := range []*testNode{b, c} {
			if err := n.ApplyRemote(dots, g.Clone()); err != nil {
				t.Fatalf("round %d: the adds at %s: %v", round, n.Region(), err)
			}
		}
		if _, err := b.ClearCart(WithoutCartItems(bg), id); err != nil {
			t.Fatalf("round %d: clear: %v", round, err)
		}
		a.Join(r.lastDelta(names[1]).Group.Carts[id])
	}
	entries := rounds * line
	got, err := c.GetCart(bg, id)
	if err != nil {
		t.Fatalf("the third region holds %d rounds of %d adds of %s (%d entries, within MaxCartEntries %d): reading the cart: %v",
			rounds, line, sku, entries, crdt.MaxCartEntries, err)
	}
	if q := qtyOf(got, sku); q != int64(entries) {
		t.Fatalf("the third region shows %s × %d, want %d", sku, q, entries)
	}
	_, err = c.AddItem(WithoutCartItems(bg), id, sku, 1)
	wantCode(t, err, CodeCartFull)
}
