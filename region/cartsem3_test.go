package region

import (
	"context"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/latticedb/lattice/crdt"
	"github.com/latticedb/lattice/region/config"
	"github.com/latticedb/lattice/region/store"
)

// semRig is a few unpartitioned regions in one process whose deltas are
// queued per origin and delivered when, in what order and as often as a
// test chooses; each region also has a model: the pure crdt.Cart state of
// each cart that the same operations and joins make.
type semRig struct {
	t       *testing.T
	dir     string
	clock   *fakeClock
	regions []string
	nodes   map[string]*testNode
	closed  map[string]bool
	// home, when set, places carts and skus at a home region; nil makes
	// every region the home of every key.
	home func(key string) string

	mu  sync.Mutex
	log map[string][]Delta // every delta each region published, in order
}

type semPub struct {
	r      *semRig
	region string
}

func (p semPub) Publish(d Delta) {
	p.r.mu.Lock()
	p.r.log[p.region] = append(p.r.log[p.region], d)
	p.r.mu.Unlock()
}

type semFwd struct{ r *semRig }

func (f semFwd) Forward(ctx context.Context, home string, req *HomeRequest) (*HomeResponse, error) {
	tn := f.r.nodes[home]
	if tn == nil {
		return nil, &Error{Code: CodeHomeUnavailable, RetryAfter: 1, Detail: "no such home"}
	}
	c := *req
	rctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp := *tn.ServeForwarded(rctx, &c)
	return &resp, nil
}

func newSemRig(t *testing.T, regions ...string) *semRig {
	return newSemRigHome(t, nil, regions...)
}

func newSemRigHome(t *testing.T, home func(string) string, regions ...string) *semRig {
	t.Helper()
	r := &semRig{t: t, dir: t.TempDir(), clock: newFakeClock(), regions: regions, home: home,
		nodes: map[string]*testNode{}, closed: map[string]bool{}, log: map[string][]Delta{}}
	for _, name := range regions {
		r.open(name)
	}
	t.Cleanup(func() {
		for name, tn := range r.nodes {
			if !r.closed[name] {
				tn.close()
			}
		}
	})
	return r
}

func (r *semRig) open(name string) *testNode {
	r.t.Helper()
	path := filepath.Join(r.dir, name, "data.db")
	st, err := OpenStore(path, store.Options{})
	if err != nil {
		r.t.Fatal(err)
	}
	var peers []string
	for _, p := range r.regions {
		if p != name {
			peers = append(peers, p)
		}
	}
	n, err := NewNode(Options{Name: name, Store: st, Clock: r.clock, ExpiryInterval: time.Hour,
		IsRegion:    func(s string) bool { return slices.Contains(r.regions, s) },
		Publisher:   semPub{r, name},
		Forwarder:   semFwd{r},
		Home:        r.home,
		PeerRegions: peers})
	if err != nil {
		r.t.Fatal(err)
	}
	tn := &testNode{Node: n, store: st, path: path, clock: r.clock}
	r.nodes[name] = tn
	r.closed[name] = false
	return tn
}

// restart closes region name (cleanly, or as a killed process stops)
// and opens it again on its file.
func (r *semRig) restart(name string, clean bool) {
	r.t.Helper()
	if clean {
		r.nodes[name].close()
	} else {
		r.nodes[name].crash()
	}
	r.closed[name] = true
	r.open(name)
}

// apply applies delta d at region to, as replication does.
func (r *semRig) apply(to string, d Delta) {
	r.t.Helper()
	dots := &crdt.Context{}
	dots.Insert(crdt.Dot{Replica: d.Origin, Counter: d.Seq})
	// As it travels: encoded and decoded.
	g, err := crdt.DecodeGroup(crdt.EncodeGroup(d.Group))
	if err != nil {
		r.t.Fatalf("delta %s:%d does not decode: %v", d.Origin, d.Seq, err)
	}
	if err := r.nodes[to].ApplyRemote(dots, g); err != nil {
		r.t.Fatalf("apply %s:%d at %s: %v", d.Origin, d.Seq, to, err)
	}
}

// repair sends region from's whole state of cart id to region to, as an
// anti-entropy repair does.
func (r *semRig) repair(from, to, id string) {
	r.t.Helper()
	g, ctx, err := r.nodes[from].readObjects([]string{id}, nil, false)
	if err != nil {
		r.t.Fatalf("read %s at %s: %v", id, from, err)
	}
	if g, err = crdt.DecodeGroup(crdt.EncodeGroup(g)); err != nil {
		r.t.Fatalf("state of %s at %s does not decode: %v", id, from, err)
	}
	if err := r.nodes[to].ApplyReflecting(&crdt.Context{}, g, &ctx); err != nil {
		r.t.Fatalf("repair of %s from %s at %s: %v", id, from, to, err)
	}
}

// deliverAll applies every delta published so far at every other region,
// in publication order.
func (r *semRig) deliverAll() {
	r.t.Helper()
	r.mu.Lock()
	logs := map[string][]Delta{}
	for k, v := range r.log {
		logs[k] = slices.Clone(v)
	}
	r.mu.Unlock()
	for _, from := range r.regions {
		for _, d := range logs[from] {
			for _, to := range r.regions {
				if to != from {
					r.apply(to, d)
				}
			}
		}
	}
}

func (r *semRig) cart(name, id string) Cart {
	r.t.Helper()
	c, err := r.nodes[name].GetCart(bg, id)
	if err != nil {
		r.t.Fatalf("read %s at %s: %v", id, name, err)
	}
	return c
}

func (r *semRig) published(name string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.log[name])
}

func (r *semRig) lastDelta(name string) Delta {
	r.mu.Lock()
	defer r.mu.Unlock()
	l := r.log[name]
	return l[len(l)-1]
}

func itemsString(items []crdt.CartItem) string {
	s := "["
	for i, it := range items {
		if i > 0 {
			s += " "
		}
		s += fmt.Sprintf("%s:%d", it.SKU, it.Qty)
	}
	return s + "]"
}

func sameItems(a, b []crdt.CartItem) bool {
	if len(a) == 0 && len(b) == 0 {
		return true
	}
	return slices.Equal(a, b)
}

// stateOf returns region name's stored state of cart id (empty if none).
func (r *semRig) stateOf(name, id string) *crdt.Cart {
	r.t.Helper()
	g, err := r.nodes[name].ReadObjects([]string{id}, nil)
	if err != nil {
		r.t.Fatalf("read objects %s at %s: %v", id, name, err)
	}
	if c, ok := g.Carts[id]; ok {
		return c
	}
	return &crdt.Cart{}
}

func sameCart(a, b *crdt.Cart) bool {
	if len(a.Entries) != len(b.Entries) || !a.Ctx.Equal(&b.Ctx) {
		return false
	}
	for d, l := range a.Entries {
		if m, ok := b.Entries[d]; !ok || m != l {
			return false
		}
	}
	return true
}

// TestCartRandomOpsMatchModel runs random adds, sets, removes and clears
// of one cart at three regions, with deltas delivered in random order,
// duplicated and late, anti-entropy repairs and clean restarts, against a
// model of each region's cart made of the pure OR-Set's operations and
// joins. Every region's stored cart must equal its model at every step,
// and once every delta has arrived every region must show the same items.
func TestCartRandomOpsMatchModel(t *testing.T) {
	seed := testSeed(t)
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	regions := []string{"us-east", "eu-west", "ap-south"}
	r := newSemRig(t, regions...)
	model := map[string]*crdt.Cart{}
	for _, name := range regions {
		model[name] = &crdt.Cart{}
	}
	const id = "cart-r"
	skus := make([]string, 20)
	for i := range skus {
		skus[i] = fmt.Sprintf("sku-%02d", i)
	}
	steps := 500
	for step := range steps {
		name := regions[rng.IntN(len(regions))]
		n := r.nodes[name]
		sku := skus[rng.IntN(len(skus))]
		var what string
		var answer *Cart // the write's answer, if a write
		switch k := rng.IntN(100); {
		case k < 30:
			q := int64(1 + rng.IntN(3))
			what = fmt.Sprintf("add %s %d at %s", sku, q, name)
			before := r.published(name)
			ans, err := n.AddItem(bg, id, sku, q)
			if err != nil {
				t.Fatalf("seed %d step %d %s: %v", seed, step, what, err)
			}
			if r.published(name) == before {
				t.Fatalf("seed %d step %d %s: no delta published", seed, step, what)
			}
			model[name].Join(model[name].Add(n.Self(), sku, q))
			answer = &ans
		case k < 42:
			q := int64(rng.IntN(4))
			what = fmt.Sprintf("set %s %d at %s", sku, q, name)
			ans, err := n.SetItem(bg, id, sku, q)
			if err != nil {
				t.Fatalf("seed %d step %d %s: %v", seed, step, what, err)
			}
			model[name].Join(model[name].Set(n.Self(), sku, q))
			answer = &ans
		case k < 52:
			what = fmt.Sprintf("remove %s at %s", sku, name)
			ans, err := n.RemoveItem(bg, id, sku)
			if err != nil {
				t.Fatalf("seed %d step %d %s: %v", seed, step, what, err)
			}
			model[name].Join(model[name].Remove(sku))
			answer = &ans
		case k < 55:
			what = fmt.Sprintf("clear at %s", name)
			if _, err := n.ClearCart(bg, id); err != nil {
				t.Fatalf("seed %d step %d %s: %v", seed, step, what, err)
			}
			model[name].Join(model[name].Clear())
		case k < 90:
			from := regions[rng.IntN(len(regions))]
			if from == name {
				continue
			}
			r.mu.Lock()
			l := r.log[from]
			r.mu.Unlock()
			if len(l) == 0 {
				continue
			}
			// Mostly recent deltas, sometimes any (late or duplicated).
			i := len(l) - 1 - rng.IntN(min(len(l), 4))
			if rng.IntN(4) == 0 {
				i = rng.IntN(len(l))
			}
			d := l[i]
			what = fmt.Sprintf("delta %s:%d at %s", d.Origin, d.Seq, name)
			r.apply(name, d)
			if c, ok := d.Group.Carts[id]; ok {
				model[name].Join(c)
			}
		case k < 97:
			from := regions[rng.IntN(len(regions))]
			if from == name {
				continue
			}
			what = fmt.Sprintf("repair from %s at %s", from, name)
			r.repair(from, name, id)
			model[name].Join(model[from])
		default:
			clean := rng.IntN(2) == 0
			what = fmt.Sprintf("restart %s (clean %v)", name, clean)
			r.restart(name, clean)
		}
		if answer != nil && !sameItems(answer.Items, model[name].Items()) {
			t.Fatalf("seed %d step %d after %s: the write answered %s, model %s",
				seed, step, what, itemsString(answer.Items), itemsString(model[name].Items()))
		}
		got := r.stateOf(name, id)
		if !sameCart(got, model[name]) {
			t.Fatalf("seed %d step %d after %s: region %s holds %v ctx %v, model %v ctx %v",
				seed, step, what, name, got.Entries, got.Ctx, model[name].Entries, model[name].Ctx)
		}
		if v := r.cart(name, id); !sameItems(v.Items, model[name].Items()) {
			t.Fatalf("seed %d step %d after %s: region %s shows %s, model %s",
				seed, step, what, name, itemsString(v.Items), itemsString(model[name].Items()))
		}
	}
	r.deliverAll()
	want := &crdt.Cart{}
	for _, name := range regions {
		want.Join(model[name])
	}
	for _, name := range regions {
		if v := r.cart(name, id); !sameItems(v.Items, want.Items()) {
			t.Errorf("seed %d: after every delta, region %s shows %s, want %s",
				seed, name, itemsString(v.Items), itemsString(want.Items()))
		}
		if got := r.stateOf(name, id); !sameCart(got, want) {
			t.Errorf("seed %d: after every delta, region %s holds %v ctx %v, want %v ctx %v",
				seed, name, got.Entries, got.Ctx, want.Entries, want.Ctx)
		}
	}
	// Converged regions have the same anti-entropy digest, so that
	// anti-entropy finds nothing to repair.
	var first []uint64
	for i, name := range regions {
		s, err := r.nodes[name].Snapshot(nil)
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			first = s.Buckets
		} else if !slices.Equal(first, s.Buckets) {
			t.Errorf("seed %d: digest of %s differs from %s's after convergence", seed, name, regions[0])
		}
	}
}

// TestCartStaysReadableWhenRemovalsLagBehindAdds: region us-east fills a
// cart to its entry limit (cartLimits); eu-west sees those adds and
// clears the cart; us-east sees the clear, its cart is empty again, and
// it fills it once more; and so on. ap-south receives every one of
// us-east's adds but, cut off from eu-west, none of its clears. Every
// region kept within its limit, yet ap-south's join holds every round of
// adds. The docs promise that concurrent adds never make a cart no region
// can read: ap-south must still read the cart, take further deltas, and
// converge once the clears arrive.
func TestCartStaysReadableWhenRemovalsLagBehindAdds(t *testing.T) {
	r := newSemRig(t, "us-east", "eu-west", "ap-south")
	b, c := r.nodes["eu-west"], r.nodes["ap-south"]
	const id = "cart-lag"
	limit, _ := c.cartLimits()
	rounds := crdt.MaxCartEntries/limit + 1
	fillRounds(t, r, &crdt.Cart{}, b, []*testNode{c}, id, rounds)
	if _, err := c.GetCart(bg, id); err != nil {
		t.Errorf("after %d rounds of %d adds each, every region within its limit of %d: ap-south cannot read the cart: %v",
			rounds, limit, limit, err)
	}
	// The clears arrive: every region's cart is empty.
	r.mu.Lock()
	clears := slices.Clone(r.log["eu-west"])
	r.mu.Unlock()
	for _, d := range clears {
		r.apply("ap-south", d)
	}
	got, err := c.GetCart(bg, id)
	if err != nil || len(got.Items) != 0 {
		t.Errorf("after eu-west's clears reached ap-south: items %s err %v, want [] and no error", itemsString(got.Items), err)
	}
}

// TestCartTokenAfterMoveShowsWrites: a client adds at us-east and moves
// to eu-west with its token: eu-west serves it only once it holds the
// add, and then shows it; the same after a clear at eu-west read back at
// us-east (the cleared line must not show).
func TestCartTokenAfterMoveShowsWrites(t *testing.T) {
	r := newSemRig(t, "us-east", "eu-west")
	a, b := r.nodes["us-east"], r.nodes["eu-west"]
	const id = "cart-tok"
	ctx := WithAnswer(bg)
	if _, err := a.AddItem(ctx, id, "x", 2); err != nil {
		t.Fatal(err)
	}
	tok := a.Token()
	wctx, cancel := contextWithTimeout(100 * time.Millisecond)
	err := b.WaitToken(wctx, tok)
	cancel()
	if err == nil {
		t.Fatalf("eu-west honoured a token naming a write it does not hold")
	}
	r.deliverAll()
	wctx, cancel = contextWithTimeout(time.Second)
	defer cancel()
	if err := b.WaitToken(wctx, tok); err != nil {
		t.Fatalf("after delivery: %v", err)
	}
	if got := r.cart("eu-west", id); qtyOf(got, "x") != 2 {
		t.Fatalf("eu-west after the token: %s, want x:2", itemsString(got.Items))
	}
	if _, err := b.ClearCart(bg, id); err != nil {
		t.Fatal(err)
	}
	tok = b.Token()
	r.deliverAll()
	if err := a.WaitToken(wctx, tok); err != nil {
		t.Fatalf("us-east: %v", err)
	}
	if got := r.cart("us-east", id); len(got.Items) != 0 {
		t.Fatalf("us-east after eu-west's clear: %s, want []", itemsString(got.Items))
	}
}

// TestCartConcurrentWritersKeepEveryLine: writers at one region add,
// set and remove their own skus of one cart at once, while another
// region's deltas to the same cart arrive; emptied lines are swept in the
// background meanwhile. Every writer's last outcome must hold, and the
// other region's lines too.
func TestCartConcurrentWritersKeepEveryLine(t *testing.T) {
	r := newSemRig(t, "us-east", "eu-west")
	a, b := r.nodes["us-east"], r.nodes["eu-west"]
	const id = "cart-conc"
	const writers, rounds = 6, 40
	var wg sync.WaitGroup
	want := make([]int64, writers)
	errs := make(chan error, writers+1)
	for w := range writers {
		wg.Go(func() {
			sku := fmt.Sprintf("w%d", w)
			var q int64
			for i := range rounds {
				var err error
				switch i % 4 {
				case 0, 1:
					_, err = a.AddItem(bg, id, sku, 1)
					q++
				case 2:
					_, err = a.SetItem(bg, id, sku, 5)
					q = 5
				case 3:
					if i%8 == 3 {
						_, err = a.RemoveItem(bg, id, sku)
						q = 0
					}
				}
				if err != nil {
					errs <- err
					return
				}
			}
			want[w] = q
		})
	}
	wg.Go(func() {
		for i := range rounds {
			if _, err := b.AddItem(bg, id, fmt.Sprintf("b%d", i%5), 1); err != nil {
				errs <- err
				return
			}
			r.apply("us-east", r.lastDelta("eu-west"))
		}
	})
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	got := r.cart("us-east", id)
	for w := range writers {
		if q := qtyOf(got, fmt.Sprintf("w%d", w)); q != want[w] {
			t.Errorf("w%d × %d, want %d (cart %s)", w, q, want[w], itemsString(got.Items))
		}
	}
	for i := range 5 {
		if q := qtyOf(got, fmt.Sprintf("b%d", i)); q != rounds/5 {
			t.Errorf("b%d × %d, want %d", i, q, rounds/5)
		}
	}
}

// TestForwardedCheckoutKeepsConcurrentAdds: the cart and its skus are homed at
// us-east. A shopper at eu-west adds x × 2 and checks out there (the
// coordinator, us-east, gets eu-west's copy of the cart); meanwhile
// ap-south added x × 1, which us-east already holds but eu-west has not
// seen. The order buys the 2 the shopper saw; once every region has every
// write, the concurrent unit is still in the cart everywhere (add wins
// over the checkout's removal) and the bought units never come back.
func TestForwardedCheckoutKeepsConcurrentAdds(t *testing.T) {
	r := newSemRigHome(t, func(string) string { return "us-east" }, "us-east", "eu-west", "ap-south")
	a, b, c := r.nodes["us-east"], r.nodes["eu-west"], r.nodes["ap-south"]
	const id = "cart-co"
	if _, err := a.Restock(bg, "x", 10); err != nil {
		t.Fatal(err)
	}
	if _, err := b.AddItem(bg, id, "x", 2); err != nil {
		t.Fatal(err)
	}
	if _, err := c.AddItem(bg, id, "x", 1); err != nil {
		t.Fatal(err)
	}
	r.apply("us-east", r.lastDelta("ap-south"))
	order, err := b.Checkout(bg, id, 0, Idem{Key: "k1"})
	if err != nil {
		t.Fatalf("checkout: %v", err)
	}
	if len(order.Lines) != 1 || order.Lines[0].SKU != "x" || order.Lines[0].Qty != 2 {
		t.Fatalf("order %+v, want x × 2", order.Lines)
	}
	r.deliverAll()
	for _, name := range r.regions {
		if got := r.cart(name, id); qtyOf(got, "x") != 1 || len(got.Items) != 1 {
			t.Errorf("%s after the checkout and every delta: %s, want [x:1]", name, itemsString(got.Items))
		}
	}
}

// TestCartQuorumReadThenRemoveIsFinal: eu-west reads a cart with a read
// quorum of both regions, which brings us-east's unreplicated add of x;
// the shopper removes x at eu-west. Once every delta has arrived, x is
// gone everywhere (the remove observed the add) and the answer of the
// read showed it.
func TestCartQuorumReadThenRemoveIsFinal(t *testing.T) {
	r := newSemRig(t, "us-east", "eu-west")
	a, b := r.nodes["us-east"], r.nodes["eu-west"]
	const id = "cart-q"
	if _, err := a.AddItem(bg, id, "x", 2); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := contextWithTimeout(3 * time.Second)
	defer cancel()
	got, err := b.GetCart(WithAnswer(WithQuorum(ctx, 2)), id)
	if err != nil {
		t.Fatalf("quorum read: %v", err)
	}
	if qtyOf(got, "x") != 2 {
		t.Fatalf("quorum read at eu-west: %s, want x:2", itemsString(got.Items))
	}
	if _, err := b.RemoveItem(bg, id, "x"); err != nil {
		t.Fatal(err)
	}
	r.deliverAll()
	for _, name := range r.regions {
		if got := r.cart(name, id); len(got.Items) != 0 {
			t.Errorf("%s: %s, want []", name, itemsString(got.Items))
		}
	}
}

// fillRounds makes us-east (modelled by a, its cart) fill cart id to
// limit entries, eu-west (b) see those adds and clear the cart, and
// us-east see the clear; the adds of every round also reach the nodes
// in to, the clears do not.
func fillRounds(t *testing.T, r *semRig, a *crdt.Cart, b *testNode, to []*testNode, id string, rounds int) {
	t.Helper()
	var seq uint64 // us-east's region-level dots
	limit, _ := b.cartLimits()
	for round := range rounds {
		add := &crdt.Cart{Entries: map[crdt.Dot]crdt.Line{}}
		dots := &crdt.Context{}
		for i := 0; len(a.Entries) < limit; i++ {
			d := a.Ctx.Next("us-east")
			l := crdt.Line{SKU: fmt.Sprintf("s%03d", i%64), Kind: crdt.KindAdd, N: 1}
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
		for _, n := range append([]*testNode{b}, to...) {
			if err := n.ApplyRemote(dots, g.Clone()); err != nil {
				t.Fatalf("round %d: us-east's adds at %s: %v", round, n.Region(), err)
			}
		}
		if _, err := b.ClearCart(bg, id); err != nil {
			t.Fatalf("round %d: clear at eu-west: %v", round, err)
		}
		a.Join(r.lastDelta("eu-west").Group.Carts[id])
	}
}

// TestCartOwnAddsSurviveLaggingRemovals: ap-south adds x to a cart; its
// delta has not left yet when the rounds of us-east's adds (each within
// us-east's limit, each cleared by eu-west, whose clears ap-south does not
// get) reach it, and a peer's whole state then repairs the cart there.
// ap-south then adds y. Both adds were acknowledged: once ap-south and
// eu-west have exchanged every delta and state, both must show x and y.
func TestCartOwnAddsSurviveLaggingRemovals(t *testing.T) {
	r := newSemRig(t, "us-east", "eu-west", "ap-south")
	b, c := r.nodes["eu-west"], r.nodes["ap-south"]
	const id = "cart-own"
	if _, err := c.AddItem(bg, id, "x", 1); err != nil {
		t.Fatal(err)
	}
	limit, _ := c.cartLimits()
	a := &crdt.Cart{}
	fillRounds(t, r, a, b, []*testNode{c}, id, crdt.MaxCartEntries/limit+1)
	if _, err := c.GetCart(bg, id); err != nil {
		t.Logf("ap-south cannot read the cart: %v", err)
	}
	// Anti-entropy brings us-east's whole state to ap-south.
	if err := c.ApplyReflecting(&crdt.Context{}, &crdt.Group{Carts: map[string]*crdt.Cart{id: a.Clone()}}, &crdt.Context{}); err != nil {
		t.Fatalf("repair at ap-south: %v", err)
	}
	if _, err := c.AddItem(bg, id, "y", 1); err != nil {
		t.Fatalf("add of y at ap-south: %v", err)
	}
	// ap-south and eu-west exchange every delta, then their states.
	r.mu.Lock()
	fromC, fromB := slices.Clone(r.log["ap-south"]), slices.Clone(r.log["eu-west"])
	r.mu.Unlock()
	for _, d := range fromC {
		r.apply("eu-west", d)
	}
	for _, d := range fromB {
		r.apply("ap-south", d)
	}
	r.repair("eu-west", "ap-south", id)
	r.repair("ap-south", "eu-west", id)
	for _, name := range []string{"ap-south", "eu-west"} {
		got := r.cart(name, id)
		if qtyOf(got, "x") != 1 || qtyOf(got, "y") != 1 {
			t.Errorf("%s: x × %d, y × %d, want 1 and 1 (both adds acknowledged); divergent keys %v",
				name, qtyOf(got, "x"), qtyOf(got, "y"), r.nodes[name].Divergent())
		}
	}
}

// TestFullCartTakesFoldsNotNewLines: in a cluster of many regions the
// entry limit is low; a cart at its limit refuses an add and a set of a
// new sku (cart_full, nothing written) but takes a set of a line already
// in it, which folds its entries, after which adds fit again.
func TestFullCartTakesFoldsNotNewLines(t *testing.T) {
	var peers []string
	for i := range 63 {
		peers = append(peers, fmt.Sprintf("r%02d", i))
	}
	n := nodeWithPeers(t, peers...)
	limit, line := n.cartLimits()
	const id = "cart-full"
	for i := range limit {
		sku := fmt.Sprintf("s%d", i/line)
		if _, err := n.AddItem(bg, id, sku, 1); err != nil {
			t.Fatalf("add %d of %d: %v", i, limit, err)
		}
	}
	before := must[Cart](t)(n.GetCart(bg, id))
	_, err := n.AddItem(bg, id, "s0", 1)
	wantCode(t, err, CodeCartFull)
	_, err = n.SetItem(bg, id, "new", 2)
	wantCode(t, err, CodeCartFull)
	if after := must[Cart](t)(n.GetCart(bg, id)); !sameItems(before.Items, after.Items) {
		t.Fatalf("refused writes changed the cart: %s → %s", itemsString(before.Items), itemsString(after.Items))
	}
	got, err := n.SetItem(bg, id, "s0", 7)
	if err != nil {
		t.Fatalf("set of a line in a full cart: %v", err)
	}
	if qtyOf(got, "s0") != 7 {
		t.Fatalf("s0 × %d after set 7", qtyOf(got, "s0"))
	}
	if _, err := n.AddItem(bg, id, "new", 1); err != nil {
		t.Fatalf("add after the fold: %v", err)
	}
}

// TestPartitionedCartTokenAfterMove: a client writes two carts of
// different partitions at us-east, carrying its token from one request
// to the next, then moves to eu-west: a read there with the token waits
// until eu-west holds both writes and then shows them; before they are
// delivered it times out.
func TestPartitionedCartTokenAfterMove(t *testing.T) {
	r := newPartRig(t, partRigSpec{regions: []string{"us-east", "eu-west"}, parts: 2,
		home: func(string) string { return "us-east" }})
	c0, c1 := r.key("cart", 0), r.key("cart", 1)
	ctx, cancel := r.keyRequest(c0)
	if _, err := r.parts["us-east"].AddItem(ctx, c0, "x", 1); err != nil {
		t.Fatal(err)
	}
	tok := r.parts["us-east"].TokenFor(ctx)
	cancel()
	ctx, cancel = r.keyRequest(c1)
	if err := r.parts["us-east"].WaitToken(ctx, tok); err != nil {
		t.Fatal(err)
	}
	if _, err := r.parts["us-east"].AddItem(ctx, c1, "y", 1); err != nil {
		t.Fatal(err)
	}
	tok = r.parts["us-east"].TokenFor(ctx)
	cancel()
	for _, id := range []string{c0, c1} {
		ctx, cancel := r.request(config.PartitionOf(id, 2), 100*time.Millisecond)
		err := r.parts["eu-west"].WaitToken(ctx, tok)
		cancel()
		if err == nil {
			t.Fatalf("eu-west honoured the token for %s before holding the write", id)
		}
	}
	r.deliver()
	for _, id := range []string{c0, c1} {
		ctx, cancel := r.keyRequest(id)
		if err := r.parts["eu-west"].WaitToken(ctx, tok); err != nil {
			t.Fatalf("after delivery, token for %s: %v", id, err)
		}
		got, err := r.parts["eu-west"].GetCart(ctx, id)
		cancel()
		if err != nil || len(got.Items) != 1 {
			t.Fatalf("eu-west %s: %s %v, want one line", id, itemsString(got.Items), err)
		}
	}
}

// largeCart gives n, a region of three, a cart of 12,288 entries (each
// region may fill a cart to 4,096 before seeing the others', here in four
// lines all three add to), and returns a peer's whole state of it with
// one more add.
func largeCart(tb testing.TB, n *Node, id string) (whole *crdt.Cart, entries int) {
	tb.Helper()
	limit, _ := n.cartLimits()
	whole = &crdt.Cart{}
	for i, r := range []crdt.ReplicaID{"us-west", "eu-west", "ap-south"} {
		c := &crdt.Cart{Entries: make(map[crdt.Dot]crdt.Line, limit)}
		for k := range limit {
			d := crdt.Dot{Replica: r, Counter: uint64(k + 1)}
			c.Entries[d] = crdt.Line{SKU: fmt.Sprintf("s%d", k%4), Kind: crdt.KindAdd, N: 1}
			c.Ctx.Insert(d)
		}
		whole.Join(c)
		dots := &crdt.Context{}
		dots.Insert(crdt.Dot{Replica: r, Counter: uint64(i + 1)})
		if err := n.ApplyRemote(dots, &crdt.Group{Carts: map[string]*crdt.Cart{id: c}}); err != nil {
			tb.Fatal(err)
		}
	}
	d := crdt.Dot{Replica: "eu-west", Counter: uint64(limit + 1)}
	whole.Entries[d] = crdt.Line{SKU: "late", Kind: crdt.KindAdd, N: 1}
	whole.Ctx.Insert(d)
	return whole, 3*limit + 1
}

// TestLargeCartClearAndRepair: joining a peer's whole state of a cart of
// 12,289 entries (anti-entropy) and then clearing it give the join and
// then an empty cart. Both run under the cart's lock, so what they cost
// every request for the cart waits for: BenchmarkLargeCartClearAndRepair
// measures it (2.2-5.9 s each before newDelta compacted once and
// Cart.Concurrent indexed the delta's skus, 0.06-0.08 s together after).
func TestLargeCartClearAndRepair(t *testing.T) {
	n := nodeWithPeers(t, "eu-west", "ap-south")
	const id = "cart-big"
	whole, entries := largeCart(t, n, id)
	if err := n.ApplyReflecting(&crdt.Context{}, &crdt.Group{Carts: map[string]*crdt.Cart{id: whole}}, &crdt.Context{}); err != nil {
		t.Fatal(err)
	}
	c, err := n.GetCart(bg, id)
	if err != nil {
		t.Fatal(err)
	}
	units := int64(0)
	for _, it := range c.Items {
		units += it.Qty
	}
	if units != int64(entries) {
		t.Fatalf("after the join the cart holds %d units, want %d (one per entry)", units, entries)
	}
	if _, err := n.ClearCart(WithoutCartItems(bg), id); err != nil {
		t.Fatal(err)
	}
	if c, err := n.GetCart(bg, id); err != nil || len(c.Items) != 0 {
		t.Fatalf("after the clear: %+v %v, want an empty cart", c.Items, err)
	}
}

// BenchmarkLargeCartClearAndRepair times the join of a peer's whole state
// of a 12,289-entry cart and its clear, one of each per iteration.
func BenchmarkLargeCartClearAndRepair(b *testing.B) {
	for i := range b.N {
		b.StopTimer()
		n := nodeWithPeers(b, "eu-west", "ap-south")
		id := fmt.Sprintf("cart-big-%d", i)
		whole, _ := largeCart(b, n, id)
		b.StartTimer()
		if err := n.ApplyReflecting(&crdt.Context{}, &crdt.Group{Carts: map[string]*crdt.Cart{id: whole}}, &crdt.Context{}); err != nil {
			b.Fatal(err)
		}
		if _, err := n.ClearCart(WithoutCartItems(bg), id); err != nil {
			b.Fatal(err)
		}
	}
}
