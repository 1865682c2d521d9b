package region

import (
	"testing"

	"github.com/latticedb/lattice/crdt"
)

// fillLineRounds makes us-east (modelled by a, its cart) add units of
// sku, one entry each, up to its line limit (cartLimits), eu-west (b)
// see those adds and clear the cart, and us-east see the clear; the adds
// of every round also reach ap-south (c), the clears do not.
func fillLineRounds(t *testing.T, r *semRig, a *crdt.Cart, b, c *testNode, id, sku string, rounds int) {
	t.Helper()
	var seq uint64
	_, line := b.cartLimits()
	for round := range rounds {
		add := &crdt.Cart{Entries: map[crdt.Dot]crdt.Line{}}
		dots := &crdt.Context{}
		for a.LineEntries(sku) < line {
			d := a.Ctx.Next("us-east")
			l := crdt.Line{SKU: sku, Kind: crdt.KindAdd, N: 1}
			if a.Entries == nil {
				a.Entries = map[crdt.Dot]crdt.Line{}
			}
			a.Entries[d] = l
			a.Ctx.Insert(d)
			add.Entries[d] = l
			add.Ctx.Insert(d)
			seq++
			dots.Insert(crdt.Dot{Replica: "us-east", Counter: seq})
		}
		g := &crdt.Group{Carts: map[string]*crdt.Cart{id: add}}
		for _, n := range []*testNode{b, c} {
			if err := n.ApplyRemote(dots, g.Clone()); err != nil {
				t.Fatalf("round %d: us-east's adds at %s: %v", round, n.Region(), err)
			}
		}
		if _, err := b.ClearCart(WithoutCartItems(bg), id); err != nil {
			t.Fatalf("round %d: clear at eu-west: %v", round, err)
		}
		a.Join(r.lastDelta("eu-west").Group.Carts[id])
	}
}

// TestCartLineStaysReadableWhenRemovalsLagBehindAdds: us-east adds units
// of one sku up to its line limit, eu-west sees the adds and clears the
// cart, us-east sees the clear and adds again; ap-south gets every add
// but none of the clears. Each region kept within its limits, and
// ap-south's join stays well under the 65,536 entries docs/api.md says a
// peer's cart may hold ("a stored one of any honest size is read"), so
// ap-south must read the cart, and its whole state must decode at a peer
// (anti-entropy, read repair, a forwarded checkout).
func TestCartLineStaysReadableWhenRemovalsLagBehindAdds(t *testing.T) {
	r := newSemRig(t, "us-east", "eu-west", "ap-south")
	b, c := r.nodes["eu-west"], r.nodes["ap-south"]
	const id, sku = "cart-lagline", "a"
	_, line := c.cartLimits()
	rounds := 5
	entries := rounds * line
	if entries > crdt.MaxCartEntries {
		t.Fatalf("%d entries: past MaxCartEntries, the test's premise", entries)
	}
	fillLineRounds(t, r, &crdt.Cart{}, b, c, id, sku, rounds)
	got, err := c.GetCart(bg, id)
	if err != nil {
		t.Errorf("ap-south holds %d rounds of %d adds of %s (%d entries, within MaxCartEntries %d): reading the cart: %v",
			rounds, line, sku, entries, crdt.MaxCartEntries, err)
	} else if q := qtyOf(got, sku); q != int64(entries) {
		t.Errorf("ap-south shows %s × %d, want %d", sku, q, entries)
	}
}

// TestCartStateDecodesWhenRemovalsLagBehindAdds: as above, with us-east's
// adds spread over 64 lines (fillRounds): ap-south reads the cart, and
// its whole state, of fewer entries than the 65,536 docs/api.md says a
// peer's cart may hold, must decode at a peer, as anti-entropy, a read
// repair or a forwarded checkout sends it.
func TestCartStateDecodesWhenRemovalsLagBehindAdds(t *testing.T) {
	r := newSemRig(t, "us-east", "eu-west", "ap-south")
	b, c := r.nodes["eu-west"], r.nodes["ap-south"]
	const id = "cart-lagstate"
	limit, _ := c.cartLimits()
	rounds := 5
	entries := rounds * limit
	if entries > crdt.MaxCartEntries {
		t.Fatalf("%d entries: past MaxCartEntries, the test's premise", entries)
	}
	fillRounds(t, r, &crdt.Cart{}, b, []*testNode{c}, id, rounds)
	if _, err := c.GetCart(bg, id); err != nil {
		t.Fatalf("ap-south cannot read the cart: %v", err)
	}
	g, _, err := c.readObjects([]string{id}, nil, false)
	if err != nil {
		t.Fatalf("reading ap-south's state of the cart: %v", err)
	}
	if n := len(g.Carts[id].Entries); n != entries {
		t.Fatalf("ap-south's state holds %d entries, want %d", n, entries)
	}
	if _, err := crdt.DecodeGroup(crdt.EncodeGroup(g)); err != nil {
		t.Errorf("ap-south's whole state of a cart of %d entries (MaxCartEntries %d) does not decode at a peer: %v",
			entries, crdt.MaxCartEntries, err)
	}
	// ap-south's client removes a line, then clears the cart: each
	// write's delta must decode at a peer too.
	for _, what := range []string{"remove s000", "clear"} {
		var err error
		if what == "clear" {
			_, err = c.ClearCart(WithoutCartItems(bg), id)
		} else {
			_, err = c.RemoveItem(WithoutCartItems(bg), id, "s000")
		}
		if err != nil {
			t.Fatalf("%s at ap-south: %v", what, err)
		}
		d := r.lastDelta("ap-south")
		if _, err := crdt.DecodeGroup(crdt.EncodeGroup(d.Group)); err != nil {
			t.Errorf("the delta of the %s at ap-south does not decode at a peer: %v", what, err)
		}
	}
}
