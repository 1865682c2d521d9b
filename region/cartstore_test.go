package region

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/latticedb/lattice/crdt"
	"github.com/latticedb/lattice/region/store"
)

// lineKeys returns the line keys stored for cart id.
func lineKeys(t *testing.T, st *store.Store, id string) []string {
	t.Helper()
	var keys []string
	if err := st.Scan(cartLinesPrefix(id), func(k string, _ []byte, _ error) bool {
		keys = append(keys, k)
		return true
	}); err != nil {
		t.Fatal(err)
	}
	return keys
}

// cartHash returns the digest's hash of cart id, and whether it has one.
func cartHash(t *testing.T, n *Node, id string) (uint64, bool) {
	t.Helper()
	s, err := n.Snapshot(func(d []uint64) []uint32 {
		all := make([]uint32, len(d))
		for i := range all {
			all[i] = uint32(i)
		}
		return all
	})
	if err != nil {
		t.Fatal(err)
	}
	h, ok := s.Keys[prefixCart+id]
	return h, ok
}

// TestAddWritesOnlyItsLine checks that an add to a cart of 1,000 lines
// writes the line it adds to and the head, and that the answer still
// shows every line.
func TestAddWritesOnlyItsLine(t *testing.T) {
	n := newNode(t)
	c := &crdt.Cart{Entries: map[crdt.Dot]crdt.Line{}}
	for i := range 1000 {
		d := crdt.Dot{Replica: "eu-west", Counter: uint64(i + 1)}
		c.Entries[d] = crdt.Line{SKU: fmt.Sprintf("s%04d", i), Kind: crdt.KindAdd, N: 1}
		c.Ctx.Insert(d)
	}
	g := &crdt.Group{}
	g.AddCart("big", c)
	if err := n.ApplyRemote(&crdt.Context{}, g); err != nil {
		t.Fatal(err)
	}
	before := fileSize(t, n.path)
	view := must[Cart](t)(n.AddItem(bg, "big", "s0500", 2))
	if len(view.Items) != 1000 || qtyOf(view, "s0500") != 3 || qtyOf(view, "s0999") != 1 {
		t.Fatalf("answer of the add: %d items, s0500 × %d", len(view.Items), qtyOf(view, "s0500"))
	}
	var keys []string
	if err := store.Commands(n.path, func(cmd [][]byte, end int64) bool {
		if end > before {
			keys = append(keys, string(cmd[1]))
		}
		return true
	}); err != nil {
		t.Fatal(err)
	}
	// The order of a transaction's records in the file is not fixed.
	slices.Sort(keys)
	if !slices.Equal(keys, []string{"c/big", "e/big/s0500"}) {
		t.Fatalf("the add wrote %q", keys)
	}
	if grew := fileSize(t, n.path) - before; grew > 400 {
		t.Fatalf("the add appended %d bytes to the file", grew)
	}
	// A new sku is refused once the cart holds MaxCartSKUs lines.
	wantCode(t, second(n.AddItem(bg, "big", "new", 1)), CodeCartFull)
	got := must[Cart](t)(n.GetCart(bg, "big"))
	if len(got.Items) != 1000 || qtyOf(got, "s0500") != 3 {
		t.Fatalf("read: %d items", len(got.Items))
	}
}

// deltaLog keeps every delta a node publishes.
type deltaLog struct {
	mu     sync.Mutex
	deltas []Delta
}

func (l *deltaLog) Publish(d Delta) {
	l.mu.Lock()
	l.deltas = append(l.deltas, d)
	l.mu.Unlock()
}

func (l *deltaLog) take() []Delta {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := l.deltas
	l.deltas = nil
	return out
}

// randomCartOp makes a random cart operation on sku of cart id at n: an
// add (half the time), a set, a remove or a clear.
func randomCartOp(t *testing.T, rng *rand.Rand, n *Node, id, sku string) {
	t.Helper()
	var err error
	switch op := rng.IntN(10); {
	case op < 5:
		_, err = n.AddItem(bg, id, sku, int64(1+rng.IntN(3)))
	case op < 7:
		_, err = n.SetItem(bg, id, sku, int64(rng.IntN(4)))
	case op < 9:
		_, err = n.RemoveItem(bg, id, sku)
	default:
		_, err = n.ClearCart(bg, id)
	}
	if err != nil {
		t.Fatal(err)
	}
}

// TestSplitCartsAgree runs random cart operations at two regions, whose
// deltas reach the other late and in random order, then lets every delta
// arrive: both must show the same carts and have the same digest hash for
// each, the hash of the head of the joined state, and a third region
// repaired with one region's states (anti-entropy) must too.
//
// LATTICE_SEED fixes the seed; the seed is logged.
func TestSplitCartsAgree(t *testing.T) {
	seed := testSeed(t)
	rng := rand.New(rand.NewPCG(seed, 1))
	open := func(name string) (*Node, *deltaLog) {
		st, err := OpenStore(filepath.Join(t.TempDir(), "data.db"), store.Options{})
		if err != nil {
			t.Fatal(err)
		}
		log := &deltaLog{}
		n, err := NewNode(Options{Name: name, Store: st, Publisher: log, ExpiryInterval: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { n.Close(); st.Close() })
		return n, log
	}
	a, la := open("us-east")
	b, lb := open("eu-west")
	nodes, logs := []*Node{a, b}, []*deltaLog{la, lb}
	carts := []string{"x", "y"}
	var pending [2][]Delta // deltas on their way to node i
	deliver := func(i int, d Delta) {
		dots := &crdt.Context{}
		dots.Insert(crdt.Dot{Replica: d.Origin, Counter: d.Seq})
		if err := nodes[i].ApplyRemote(dots, d.Group); err != nil {
			t.Fatal(err)
		}
	}
	for range 400 {
		i := rng.IntN(2)
		n, id, sku := nodes[i], carts[rng.IntN(len(carts))], fmt.Sprintf("s%d", rng.IntN(6))
		randomCartOp(t, rng, n, id, sku)
		pending[1-i] = append(pending[1-i], logs[i].take()...)
		for j := range 2 {
			for len(pending[j]) > 0 && rng.IntN(3) == 0 {
				k := rng.IntN(len(pending[j]))
				d := pending[j][k]
				pending[j] = slices.Delete(pending[j], k, k+1)
				deliver(j, d)
			}
		}
	}
	for j := range 2 {
		for _, d := range pending[j] {
			deliver(j, d)
		}
	}
	c, _ := open("ap-south")
	g, err := a.ReadObjects(carts, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.ApplyRemote(&crdt.Context{}, g); err != nil {
		t.Fatal(err)
	}
	for _, id := range carts {
		va, vb, vc := must[Cart](t)(a.GetCart(bg, id)), must[Cart](t)(b.GetCart(bg, id)), must[Cart](t)(c.GetCart(bg, id))
		if !slices.Equal(va.Items, vb.Items) || !slices.Equal(va.Items, vc.Items) {
			t.Fatalf("cart %s: us-east %v, eu-west %v, ap-south %v", id, va.Items, vb.Items, vc.Items)
		}
		ha, _ := cartHash(t, a, id)
		hb, _ := cartHash(t, b, id)
		hc, _ := cartHash(t, c, id)
		head := crdt.HeadOf(g.Carts[id])
		if want := crdt.StateHash(prefixCart+id, crdt.EncodeCartHead(&head)); ha != want || hb != want || hc != want {
			t.Fatalf("cart %s: digest hashes %x %x %x, want %x", id, ha, hb, hc, want)
		}
	}
}

// TestWholeCartsAreSplitOnOpen opens a file that holds a cart stored
// whole under its key, as regions stored carts before they were split:
// the region reads it, splits it into a head and lines, digests it as
// every region digests that state, and writes it as any other cart.
func TestWholeCartsAreSplitOnOpen(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "us-east", "data.db")
	old := &crdt.Cart{Entries: map[crdt.Dot]crdt.Line{}}
	for i, sku := range []string{"apple", "pear", "plum"} {
		d := crdt.Dot{Replica: "eu-west", Counter: uint64(2*i + 1)}
		old.Entries[d] = crdt.Line{SKU: sku, Kind: crdt.KindAdd, N: int64(i + 1)}
		old.Ctx.Insert(d)
		old.Ctx.Insert(crdt.Dot{Replica: "eu-west", Counter: uint64(2*i + 2)})
	}
	st, err := OpenStore(path, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Update([]string{"c/old"}, func(tx *store.Tx) error {
		tx.Set("c/old", crdt.EncodeCart(old))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}

	n := openNode(t, dir, newFakeClock())
	got := must[Cart](t)(n.GetCart(bg, "old"))
	if len(got.Items) != 3 || qtyOf(got, "apple") != 1 || qtyOf(got, "plum") != 3 {
		t.Fatalf("converted cart: %+v", got.Items)
	}
	if keys := lineKeys(t, n.store, "old"); !slices.Equal(keys, []string{"e/old/apple", "e/old/pear", "e/old/plum"}) {
		t.Fatalf("lines: %q", keys)
	}
	head := crdt.HeadOf(old)
	if h, ok := cartHash(t, n.Node, "old"); !ok || h != crdt.StateHash("c/old", crdt.EncodeCartHead(&head)) {
		t.Fatalf("digest of the converted cart: %x, %v", h, ok)
	}
	must[Cart](t)(n.AddItem(bg, "old", "pear", 1))
	n.close()
	n = openNode(t, dir, newFakeClock())
	if got := must[Cart](t)(n.GetCart(bg, "old")); qtyOf(got, "pear") != 3 || len(got.Items) != 3 {
		t.Fatalf("after reopening: %+v", got.Items)
	}
}

// TestDamagedLineDamagesItsCart flips a byte in one line of a cart: the
// whole cart is refused, left out of the digest and of what anti-entropy
// ships, until a peer's state repairs it; then it reads, digests and
// takes writes as before.
func TestDamagedLineDamagesItsCart(t *testing.T) {
	dir := t.TempDir()
	clock := newFakeClock()
	n := openNode(t, dir, clock)
	must[Cart](t)(n.AddItem(bg, "victim", "apple", 2))
	must[Cart](t)(n.AddItem(bg, "victim", "pear", 1))
	must[Cart](t)(n.AddItem(bg, "other", "pear", 1))
	peer, err := n.ReadObjects([]string{"victim"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := cartHash(t, n.Node, "victim")
	n.close()

	flipStoredByte(t, n.path, "e/victim/apple")
	node, st, _ := reopen(t, n.path, clock)
	if c := st.Corrupt(); !slices.Contains(c, "e/victim/apple") || !slices.Contains(c, "c/victim") {
		t.Fatalf("corrupt keys: %v", c)
	}
	wantCode(t, second(node.GetCart(bg, "victim")), CodeUnavailable)
	wantCode(t, second(node.AddItem(bg, "victim", "pear", 1)), CodeUnavailable)
	if _, ok := cartHash(t, node, "victim"); ok {
		t.Fatal("the damaged cart is still in the digest")
	}
	g, err := node.ReadObjects([]string{"victim", "other"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := g.Carts["victim"]; ok || g.Carts["other"] == nil {
		t.Fatalf("a damaged cart must never be replicated: %v", g.Carts)
	}

	if err := node.ApplyRemote(&crdt.Context{}, peer); err != nil {
		t.Fatal(err)
	}
	got := must[Cart](t)(node.GetCart(bg, "victim"))
	if qtyOf(got, "apple") != 2 || qtyOf(got, "pear") != 1 {
		t.Fatalf("repaired cart: %+v", got.Items)
	}
	if h, ok := cartHash(t, node, "victim"); !ok || h != want {
		t.Fatalf("digest of the repaired cart: %x, want %x", h, want)
	}
	if got := must[Cart](t)(node.AddItem(bg, "victim", "pear", 1)); qtyOf(got, "pear") != 2 {
		t.Fatalf("after the repair: %+v", got.Items)
	}
}

// TestEmptyLinesAreDeleted checks that the line of a removed sku, left
// empty by the write that removed it, is deleted in the background, and
// that a cart after many add/remove cycles of distinct skus keeps no more
// keys than its lines.
func TestEmptyLinesAreDeleted(t *testing.T) {
	n := newNode(t)
	must[Cart](t)(n.AddItem(bg, "c", "keep", 1))
	for i := range 50 {
		sku := fmt.Sprintf("gone%d", i)
		must[Cart](t)(n.AddItem(bg, "c", sku, 1))
		must[Cart](t)(n.RemoveItem(bg, "c", sku))
	}
	must[Cart](t)(n.AddItem(bg, "c", "also", 1))
	must[Cart](t)(n.SetItem(bg, "c", "also", 0))
	waitUntil(t, 10*time.Second, "the empty lines deleted", func() bool {
		return slices.Equal(lineKeys(t, n.store, "c"), []string{"e/c/keep"})
	})
	if got := must[Cart](t)(n.GetCart(bg, "c")); len(got.Items) != 1 || qtyOf(got, "keep") != 1 {
		t.Fatalf("cart: %+v", got.Items)
	}
	must[Cart](t)(n.ClearCart(bg, "c"))
	waitUntil(t, 10*time.Second, "the cleared cart's lines deleted", func() bool {
		return len(lineKeys(t, n.store, "c")) == 0
	})
}

// cartHashes returns the digest hash of each cart of ids, all of which
// must be in the digest.
func cartHashes(t *testing.T, n *Node, ids []string) map[string]uint64 {
	t.Helper()
	want := map[string]uint64{}
	for _, id := range ids {
		h, ok := cartHash(t, n, id)
		if !ok {
			t.Fatalf("cart %s not in the digest", id)
		}
		want[id] = h
	}
	return want
}

// TestOpenCartsOutOfLineOrder reopens carts whose ids are prefixes of one
// another, so that their lines ("e/ID/SKU") are listed in another order
// than their heads ("c/ID"), beside an emptied cart whose head has no
// lines: every cart opens whole, with its digest hash.
func TestOpenCartsOutOfLineOrder(t *testing.T) {
	dir := t.TempDir()
	clock := newFakeClock()
	n := openNode(t, dir, clock)
	ids := []string{"a", "a-x", "a.y", "a0", "a-", "b", "empty"}
	for i, id := range ids {
		must[Cart](t)(n.AddItem(bg, id, "apple", int64(i+1)))
		must[Cart](t)(n.AddItem(bg, id, "pear", 1))
	}
	must[Cart](t)(n.SetItem(bg, "empty", "apple", 0))
	must[Cart](t)(n.SetItem(bg, "empty", "pear", 0))
	want := cartHashes(t, n.Node, ids)
	n.close()
	node, st, _ := reopen(t, n.path, clock)
	if c := st.Corrupt(); len(c) > 0 {
		t.Fatalf("corrupt keys after reopening: %v", c)
	}
	for i, id := range ids {
		got := must[Cart](t)(node.GetCart(bg, id))
		if id != "empty" && (qtyOf(got, "apple") != int64(i+1) || qtyOf(got, "pear") != 1) {
			t.Fatalf("cart %s after reopening: %+v", id, got.Items)
		}
		if h, ok := cartHash(t, node, id); !ok || h != want[id] {
			t.Fatalf("digest of cart %s: %x, %v, want %x", id, h, ok, want[id])
		}
	}
}

// TestOpenCartsSplitAnywhere reopens a store of carts whose ids are
// prefixes of one another, beside a cart with a line that fails its
// checksum, one with a line that disagrees with its head and a line
// without a head, splitting the carts into two parts (cartParts) at each
// of their ids and between them: whatever the split, every whole cart
// opens with its digest hash, and exactly the damaged ones are refused
// and left out of the digest.
func TestOpenCartsSplitAnywhere(t *testing.T) {
	dir := t.TempDir()
	clock := newFakeClock()
	n := openNode(t, dir, clock)
	ids := []string{"a", "a-", "a-x", "a.y", "a0", "ab", "ab-c", "ab.", "ab0", "b", "b-1", "b.", "liar", "victim"}
	for i, id := range ids {
		must[Cart](t)(n.AddItem(bg, id, "apple", int64(i+1)))
		must[Cart](t)(n.AddItem(bg, id, "pear", 1))
	}
	want := cartHashes(t, n.Node, ids)
	n.close()

	// A line whose checksum fails, one that disagrees with its head (its
	// quantity changed) and one without a head.
	flipStoredByte(t, n.path, "e/victim/apple")
	st, err := OpenStore(n.path, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Update([]string{"c/liar", "c/ab-"}, func(tx *store.Tx) error {
		b, _, err := tx.Get("e/liar/pear")
		if err != nil {
			return err
		}
		_, es, err := crdt.DecodeCartLine(b)
		if err != nil {
			return err
		}
		for d, l := range es {
			l.N++
			es[d] = l
		}
		tx.Set("e/liar/pear", crdt.AppendCartLine(nil, "pear", es))
		tx.Set("e/ab-/pear", crdt.AppendCartLine(nil, "pear", es))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	damaged := map[string]bool{"victim": true, "liar": true, "ab-": true}
	wantCorrupt := []string{"c/ab-", "c/liar", "c/victim", "e/victim/apple"}

	defer func() { splitCarts = nil }()
	for i, at := range append([]string{"", "0", "a/", "a-w", "ab-", "ab-d", "zz"}, ids...) {
		splitCarts = func([]string) string { return at }
		st, err := OpenStore(n.path, store.Options{})
		if err != nil {
			t.Fatal(err)
		}
		// Digests of 1024 buckets (the default), and of an odd number,
		// which the parts share unevenly.
		node, err := NewNode(Options{Name: "us-east", Store: st, Clock: clock, ExpiryInterval: time.Hour, DigestBuckets: []int{0, 7}[i%2]})
		if err != nil {
			t.Fatal(err)
		}
		if parts := node.cartParts(); len(parts) != 2 && at != "" || len(parts) != 1 && at == "" {
			t.Errorf("split at %q: %d parts", at, len(parts))
		}
		c := st.Corrupt()
		if slices.Sort(c); !slices.Equal(c, wantCorrupt) {
			t.Errorf("split at %q: corrupt keys %q, want %q", at, c, wantCorrupt)
		}
		for i, id := range ids {
			h, ok := cartHash(t, node, id)
			if damaged[id] {
				if ok {
					t.Errorf("split at %q: the damaged cart %s is in the digest", at, id)
				}
				wantCode(t, second(node.GetCart(bg, id)), CodeUnavailable)
				continue
			}
			if !ok || h != want[id] {
				t.Errorf("split at %q: digest of cart %s: %x, %v, want %x", at, id, h, ok, want[id])
			}
			got := must[Cart](t)(node.GetCart(bg, id))
			if qtyOf(got, "apple") != int64(i+1) || qtyOf(got, "pear") != 1 {
				t.Errorf("split at %q: cart %s: %+v", at, id, got.Items)
			}
		}
		node.Close()
		st.Close()
	}
}

// TestLoadCartAgrees checks loadCart, the read of a whole cart that builds
// only the cart, against loadCartLines, the read a write makes: after
// random operations at two regions (carts with entries of both, removed
// lines, cleared carts) both read the same entries and context; and a
// cart whose line is missing, damaged, foreign to the head, or whose head
// is damaged, reads as corrupt with both.
//
// LATTICE_SEED fixes the seed; the seed is logged.
func TestLoadCartAgrees(t *testing.T) {
	seed := testSeed(t)
	rng := rand.New(rand.NewPCG(seed, 2))
	a := newNode(t)
	bst, err := OpenStore(filepath.Join(t.TempDir(), "data.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	b, err := NewNode(Options{Name: "eu-west", Store: bst, ExpiryInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close(); bst.Close() })
	carts := []string{"p", "q", "r", "s"}
	for range 300 {
		n := a.Node
		if rng.IntN(3) == 0 {
			n = b
		}
		id, sku := carts[rng.IntN(len(carts))], fmt.Sprintf("s%d", rng.IntN(5))
		randomCartOp(t, rng, n, id, sku)
		if rng.IntN(4) == 0 { // now and then, b's carts reach a
			g, err := b.ReadObjects(carts, nil)
			if err != nil {
				t.Fatal(err)
			}
			if err := a.ApplyRemote(&crdt.Context{}, g); err != nil {
				t.Fatal(err)
			}
		}
	}
	g, err := b.ReadObjects(carts, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.ApplyRemote(&crdt.Context{}, g); err != nil {
		t.Fatal(err)
	}
	both := func(id string) (lean, full *crdt.Cart, leanErr, fullErr error) {
		err := a.store.View([]string{prefixCart + id}, func(r store.Reader) error {
			lean, leanErr = loadCart(a.cartReader(r), id)
			full, _, fullErr = loadCartLines(a.cartReader(r), id, nil, true, false)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return
	}
	for _, id := range carts {
		lean, full, le, fe := both(id)
		if le != nil || fe != nil {
			t.Fatalf("cart %s: loadCart %v, loadCartLines %v", id, le, fe)
		}
		if !bytes.Equal(crdt.AppendCart(nil, lean), crdt.AppendCart(nil, full)) {
			t.Fatalf("cart %s: loadCart read %+v, loadCartLines %+v", id, lean, full)
		}
	}

	// Damage: each case changes one key of a cart with two lines or more.
	a.AddItem(bg, "d", "x", 1)
	a.AddItem(bg, "d", "y", 2)
	set := func(key string, v []byte) {
		if err := a.store.Update([]string{prefixCart + "d"}, func(tx *store.Tx) error { tx.Set(key, v); return nil }); err != nil {
			t.Fatal(err)
		}
	}
	var lineY, head []byte
	if err := a.store.View([]string{prefixCart + "d"}, func(r store.Reader) error {
		lineY, _, _ = r.Get(cartLineKey("d", "y"))
		head, _, _ = r.Get(prefixCart + "d")
		lineY, head = slices.Clone(lineY), slices.Clone(head)
		return nil
	}); err != nil || len(lineY) == 0 || len(head) == 0 {
		t.Fatalf("reading cart d: %v", err)
	}
	cases := []struct {
		name string
		key  string
		v    []byte
	}{
		{"line emptied", cartLineKey("d", "y"), []byte{}},
		{"line not a line", cartLineKey("d", "y"), []byte{0x01, 0x02}},
		{"line under another sku", cartLineKey("d", "z"), lineY},
		{"head not a head", prefixCart + "d", []byte{0x83, 0x01}},
	}
	for _, tc := range cases {
		set(tc.key, tc.v)
		_, _, le, fe := both("d")
		if !errors.Is(le, store.ErrCorrupt) || !errors.Is(fe, store.ErrCorrupt) {
			t.Errorf("%s: loadCart %v, loadCartLines %v; want both corrupt", tc.name, le, fe)
		}
		// Undo.
		if tc.key == cartLineKey("d", "z") {
			set(tc.key, []byte{})
		} else if tc.key == prefixCart+"d" {
			set(tc.key, head)
		} else {
			set(tc.key, lineY)
		}
		if _, _, le, fe := both("d"); le != nil || fe != nil {
			t.Fatalf("%s undone: loadCart %v, loadCartLines %v", tc.name, le, fe)
		}
	}
}
