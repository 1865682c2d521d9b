package region

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/latticedb/lattice/crdt"
	"github.com/latticedb/lattice/region/store"
)

// TestDamagedCartTakesNoHeldDelta: a cart with one damaged line receives
// a remote delta whose dots the replication protocol holds unclaimed (they
// lie past its claims window): the protocol hands it over with no dots to
// claim and its own dots as what it reflects (protocol.Apply). It is a
// delta all the same, not a peer's whole state: the cart must not be
// rewritten from it alone, dropping its healthy lines and this region's
// own dots, so that its next write here would issue a dot again for
// another entry.
func TestDamagedCartTakesNoHeldDelta(t *testing.T) {
	node, _, _, peer, _ := damagedCartNode(t)

	// A peer's delta, far ahead of what this region has of the peer: the
	// protocol applies it with its dot held, not claimed.
	far := uint64(10_000)
	kd := crdt.Dot{Replica: "eu-west", Counter: far}
	d := &crdt.Cart{Entries: map[crdt.Dot]crdt.Line{kd: {SKU: "kiwi", Kind: crdt.KindAdd, N: 1}}}
	d.Ctx.Insert(kd)
	g := &crdt.Group{}
	g.AddCart("v", d)
	var reflects crdt.Context
	reflects.Insert(kd)
	if err := node.ApplyGroup(&crdt.Context{}, g, &reflects, false); err != nil {
		t.Fatal(err)
	}
	peer.Join(d)
	view, err := node.GetCart(bg, "v")
	if err == nil && qtyOf(view, "pear") != 1 {
		t.Errorf("the damaged cart was rewritten from a delta alone: it serves %+v, without its pear line", view.Items)
	}
	// A write here must not take a dot this region already issued.
	if _, err := node.AddItem(bg, "v", "grape", 1); err != nil {
		return // refused while damaged: nothing reissued
	}
	got, err := node.ReadObjects([]string{"v"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if bad := peer.Conflicts(got.Carts["v"]); len(bad) > 0 {
		t.Errorf("the region issued dots %v again for other entries: here %v, at the peer %v", bad, got.Carts["v"].Entries, peer.Entries)
	}
}

// TestDamagedCartClaimsOnlyWhatItShows: a remote delta to a damaged cart
// is not joined into it (the cart waits for a peer's whole state). Its
// dot must then not be claimed as applied while the cart lacks it: once a
// peer that had not yet received that delta repairs the cart, a reader
// holding a token that covers the delta is served the cart without it,
// and peers adopting this region's applied context would drop the delta
// as redundant.
func TestDamagedCartClaimsOnlyWhatItShows(t *testing.T) {
	node, _, _, peer, peerApplied := damagedCartNode(t)

	// ap-south adds kiwi; its delta reaches this region (not the peer).
	kd := crdt.Dot{Replica: "ap-south", Counter: 1}
	d := &crdt.Cart{Entries: map[crdt.Dot]crdt.Line{kd: {SKU: "kiwi", Kind: crdt.KindAdd, N: 1}}}
	d.Ctx.Insert(kd)
	g := &crdt.Group{}
	g.AddCart("v", d)
	dots := &crdt.Context{}
	dots.Insert(kd)
	if err := node.ApplyRemote(dots, g); err != nil {
		t.Fatal(err)
	}
	// The peer's whole state, which does not hold kiwi yet, repairs it.
	if err := node.ApplyReflecting(&crdt.Context{}, &crdt.Group{Carts: map[string]*crdt.Cart{"v": peer.Clone()}}, &peerApplied); err != nil {
		t.Fatal(err)
	}
	var want crdt.Context
	want.Insert(kd)
	ctx, cancel := contextWithTimeout(time.Second)
	defer cancel()
	if err := node.waitCovers(ctx, &want, false); err != nil {
		return // the kiwi write is not claimed: nothing promised
	}
	view := must[Cart](t)(node.GetCart(bg, "v"))
	if qtyOf(view, "kiwi") != 1 {
		t.Fatalf("the region claims %v (applied %v) but serves the cart without its write: %+v", kd, node.Applied(), view.Items)
	}
}

// TestDamagedCartKeepsDeltasAcrossRestart: the deltas a damaged cart
// receives are kept aside durably (under "p/c/ID"): after a restart, the
// peer's whole state that repairs the cart (which lacks them) is joined
// with them, and the kept value is then deleted.
func TestDamagedCartKeepsDeltasAcrossRestart(t *testing.T) {
	dir := t.TempDir()
	clock := newFakeClock()
	n := openNode(t, dir, clock)
	must[Cart](t)(n.AddItem(bg, "v", "apple", 2))
	peerState, err := n.ReadObjects([]string{"v"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	peer := peerState.Carts["v"].Clone()
	n.close()
	flipStoredByte(t, n.path, "e/v/apple")
	node, st, _ := reopen(t, n.path, clock)

	kd := crdt.Dot{Replica: "ap-south", Counter: 1}
	d := &crdt.Cart{Entries: map[crdt.Dot]crdt.Line{kd: {SKU: "kiwi", Kind: crdt.KindAdd, N: 1}}}
	d.Ctx.Insert(kd)
	dots := &crdt.Context{}
	dots.Insert(kd)
	if err := node.ApplyGroup(dots, &crdt.Group{Carts: map[string]*crdt.Cart{"v": d}}, nil, false); err != nil {
		t.Fatal(err)
	}
	if got := testutil.ToFloat64(node.m.PendingDeltas); got != 1 {
		t.Fatalf("pending deltas counted %v, want 1", got)
	}
	if _, err := node.GetCart(bg, "v"); err == nil {
		t.Fatal("the damaged cart was served after a delta")
	}
	node.Close()
	st.Close()
	node, st, _ = reopen(t, n.path, clock)
	if err := node.ApplyGroup(&crdt.Context{}, &crdt.Group{Carts: map[string]*crdt.Cart{"v": peer}}, nil, true); err != nil {
		t.Fatal(err)
	}
	view := must[Cart](t)(node.GetCart(bg, "v"))
	if qtyOf(view, "kiwi") != 1 || qtyOf(view, "apple") != 2 {
		t.Fatalf("the repaired cart is %+v, want apple 2 and the kept kiwi 1", view.Items)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		var ok bool
		err := st.View([]string{"c/v"}, func(r store.Reader) error {
			_, ok, err = r.Get(prefixPending + "c/v")
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the kept deltas were not deleted after the repair")
		}
		time.Sleep(5 * time.Millisecond) // poll interval
	}
}

// damagedCartNode writes cart v (apple 2, pear 1) at us-east, damages its
// apple line on disk and reopens the region. It returns the reopened
// node, its store and metrics, the cart as a peer that had received both
// adds holds it, and the applied context the region had before the damage
// (what such a peer had of it).
func damagedCartNode(t *testing.T) (node *Node, st *store.Store, m *Metrics, peer *crdt.Cart, peerApplied crdt.Context) {
	t.Helper()
	clock := newFakeClock()
	n := openNode(t, t.TempDir(), clock)
	must[Cart](t)(n.AddItem(bg, "v", "apple", 2))
	must[Cart](t)(n.AddItem(bg, "v", "pear", 1))
	peerState, err := n.ReadObjects([]string{"v"}, nil) // what a peer holds
	if err != nil {
		t.Fatal(err)
	}
	peer = peerState.Carts["v"].Clone()
	peerApplied = n.Applied()
	n.close()
	flipStoredByte(t, n.path, "e/v/apple")
	node, st, m = reopen(t, n.path, clock)
	return node, st, m, peer, peerApplied
}
