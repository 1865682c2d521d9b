package region

import (
	"testing"
	"time"

	"github.com/latticedb/lattice/crdt"
)

// peerDelta returns the region-level dots and group of a delta of item sku
// made by region from (its first write).
func peerDelta(from, sku string, it *crdt.Item) (*crdt.Context, *crdt.Group) {
	dots := &crdt.Context{}
	dots.Insert(crdt.Dot{Replica: crdt.ReplicaID(from), Counter: 1})
	g := &crdt.Group{}
	g.AddItem(sku, it)
	return dots, g
}

// TestReadRepairTokenStaysSatisfiable: a peer's read repair (OpRepair)
// carries the context its state reflects. The tokens the region then hands
// out for that key must still be tokens it honours once it holds the
// writes that exist: a client that read the cart here and reads it here
// again with the token it got must be served once the writes the state
// shows have arrived, not wait for writes no region ever made.
func TestReadRepairTokenStaysSatisfiable(t *testing.T) {
	n := newNode(t)
	must[Cart](t)(n.AddItem(bg, "v", "apple", 1))

	// eu-west's state of the cart: its own add, and a reflected context
	// that names writes of ap-south far beyond any that exist.
	kd := crdt.Dot{Replica: "eu-west", Counter: 1}
	c := &crdt.Cart{Entries: map[crdt.Dot]crdt.Line{kd: {SKU: "pear", Kind: crdt.KindAdd, N: 1}}}
	c.Ctx.Insert(kd)
	reflects := crdt.Context{VV: map[crdt.ReplicaID]uint64{"eu-west": 1, "ap-south": crdt.MaxCounter}}
	resp := n.ServeForwarded(bg, &HomeRequest{Op: OpRepair, Keys: []string{"c/v"},
		State: &crdt.Group{Carts: map[string]*crdt.Cart{"v": c}}, Token: crdt.FormatToken(&reflects)})
	if resp.Err != nil {
		t.Fatalf("repair refused: %v", resp.Err)
	}

	ctx := WithAnswer(bg)
	must[Cart](t)(n.GetCart(ctx, "v"))
	tok := n.TokenFor(ctx)
	// eu-west's write itself arrives (its delta): the region now holds
	// every write that exists of what the repair reflected.
	dots := &crdt.Context{}
	dots.Insert(kd)
	if err := n.ApplyRemote(dots, &crdt.Group{Carts: map[string]*crdt.Cart{"v": c}}); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := contextWithTimeout(500 * time.Millisecond)
	defer cancel()
	if err := n.WaitToken(wctx, tok); err != nil {
		got, _ := crdt.ParseToken(tok)
		t.Fatalf("the region does not honour the token it handed out for its own read (%v): the token covers %v, the region applied %v", err, got.VV, n.Applied().VV)
	}
}

// TestHeldVersionFromPeerKeepsHomeDeciding: the held units of a sku are
// a register only its home writes, each write with the next version. A
// peer's delta that carries a held value at the largest version must not
// keep the home from deciding: its next reservation of the sku is made and
// the sku still reads there.
func TestHeldVersionFromPeerKeepsHomeDeciding(t *testing.T) {
	n := newNode(t) // us-east, the home of every sku
	must[Item](t)(n.Restock(bg, "s1", 10))
	dots, g := peerDelta("eu-west", "s1", &crdt.Item{Held: crdt.Register{Version: crdt.MaxCounter, Replica: "eu-west", Value: 0}})
	if err := n.ApplyRemote(dots, g); err != nil {
		t.Fatal(err)
	}
	if _, err := n.Reserve(bg, "s1", 1, time.Minute, Idem{}); err != nil {
		t.Fatalf("first reservation at the home: %v", err)
	}
	if _, err := n.Reserve(bg, "s1", 1, time.Minute, Idem{}); err != nil {
		t.Fatalf("second reservation at the home: %v", err)
	}
	it, err := n.GetItem(bg, "s1", false)
	if err != nil {
		t.Fatalf("the home no longer reads s1: %v", err)
	}
	if it.Reserved != 2 {
		t.Errorf("the home shows %d units reserved, want 2", it.Reserved)
	}
}

// TestCartContextFromPeerKeepsCartWritable: a peer's cart delta carries
// the cart's causal context. A context that names this region's own dots
// up to the largest counter must not leave the cart unwritable here: the
// region's next add to it is made, the cart still reads, and the delta of
// that add decodes at its peers.
func TestCartContextFromPeerKeepsCartWritable(t *testing.T) {
	n := newNode(t) // us-east
	must[Cart](t)(n.AddItem(bg, "v", "apple", 1))
	kd := crdt.Dot{Replica: "eu-west", Counter: 1}
	c := &crdt.Cart{Entries: map[crdt.Dot]crdt.Line{kd: {SKU: "pear", Kind: crdt.KindAdd, N: 1}}}
	c.Ctx.Insert(kd)
	c.Ctx.VV[n.Self()] = crdt.MaxCounter
	dots := &crdt.Context{}
	dots.Insert(crdt.Dot{Replica: "eu-west", Counter: 1})
	if err := n.ApplyRemote(dots, &crdt.Group{Carts: map[string]*crdt.Cart{"v": c}}); err != nil {
		t.Fatal(err)
	}
	if _, err := n.AddItem(bg, "v", "kiwi", 1); err != nil {
		t.Fatalf("add after the peer's delta: %v", err)
	}
	view, err := n.GetCart(bg, "v")
	if err != nil {
		t.Fatalf("the cart no longer reads: %v", err)
	}
	if qtyOf(view, "kiwi") != 1 {
		t.Errorf("the cart is %+v, want kiwi 1", view.Items)
	}
	got, err := n.ReadObjects([]string{"v"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := crdt.DecodeGroup(crdt.EncodeGroup(got)); err != nil {
		t.Errorf("the cart's state no longer decodes at a peer: %v", err)
	}
}
