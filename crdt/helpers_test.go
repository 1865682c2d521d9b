package crdt

import (
	"bytes"
	"slices"
	"testing"

	"pgregory.net/rapid"
)

// The three regions of the SPEC §7 dev cluster.
const (
	usEast  ReplicaID = "us-east"
	euWest  ReplicaID = "eu-west"
	apSouth ReplicaID = "ap-south"
)

var (
	testReplicas = []ReplicaID{usEast, euWest, apSouth}
	testSKUs     = []string{"apple", "book", "cup", "desk"}
	testCartIDs  = []string{"cart-1", "cart-2"}
	testItemSKUs = []string{"sku-a", "sku-b"}
)

// world is a random operation history at the three test replicas, with
// random partial exchanges of deltas and states between them. Every value
// it holds (replica states, snapshots, deltas) comes from the same history,
// so any two of them may meaningfully be joined, and every entry's dot is
// in its cart's causal context.
type world struct {
	state  [3]*Group
	deltas []*Group // every delta group made, in creation order
	snaps  []*Group // clones of replica states taken along the way

	// Oracle for convergence: the entries every add or set created and the
	// dots every remove, set, clear or observed remove deleted, per cart.
	created map[string]map[Dot]Line
	removed map[string]map[Dot]bool
	// Oracle for items: restocks and consumptions per sku and replica,
	// and every held write.
	restocked map[string]map[ReplicaID]uint64
	consumed  map[string]map[ReplicaID]uint64
	held      map[string][]Register
}

func newWorld() *world {
	w := &world{
		created:   make(map[string]map[Dot]Line),
		removed:   make(map[string]map[Dot]bool),
		restocked: make(map[string]map[ReplicaID]uint64),
		consumed:  make(map[string]map[ReplicaID]uint64),
		held:      make(map[string][]Register),
	}
	for i := range w.state {
		w.state[i] = &Group{}
	}
	return w
}

// cartOf returns the cart id of g, or an empty cart when g has none. The
// result must not be changed.
func cartOf(g *Group, id string) *Cart {
	if c, ok := g.Carts[id]; ok {
		return c
	}
	return &Cart{}
}

// itemOf returns the item sku of g, or an empty item when g has none. The
// result must not be changed.
func itemOf(g *Group, sku string) *Item {
	if it, ok := g.Items[sku]; ok {
		return it
	}
	return &Item{}
}

// cartOp applies one drawn cart operation at replica i: it makes the delta
// from i's state, records it in the oracle and joins it at i.
func (w *world) cartOp(t *rapid.T, i int) {
	r := testReplicas[i]
	id := rapid.SampledFrom(testCartIDs).Draw(t, "cart")
	c := cartOf(w.state[i], id)
	var d *Cart
	switch op := rapid.IntRange(0, 9).Draw(t, "cartop"); {
	case op <= 3:
		d = c.Add(r, rapid.SampledFrom(testSKUs).Draw(t, "sku"), rapid.Int64Range(1, 5).Draw(t, "n"))
	case op <= 5:
		d = c.Set(r, rapid.SampledFrom(testSKUs).Draw(t, "sku"), rapid.Int64Range(0, 5).Draw(t, "q"))
	case op <= 7:
		d = c.Remove(rapid.SampledFrom(testSKUs).Draw(t, "sku"))
	case op == 8:
		d = c.Clear()
	default:
		all := c.Dots()
		var some []Dot
		for _, dt := range all {
			if rapid.Bool().Draw(t, "observed") {
				some = append(some, dt)
			}
		}
		d = c.RemoveObserved(some)
	}
	w.recordCart(id, d)
	dg := &Group{}
	dg.AddCart(id, d)
	w.deltas = append(w.deltas, dg)
	w.state[i].Join(dg)
}

func (w *world) recordCart(id string, d *Cart) {
	if w.created[id] == nil {
		w.created[id] = make(map[Dot]Line)
		w.removed[id] = make(map[Dot]bool)
	}
	for dt, l := range d.Entries {
		w.created[id][dt] = l
	}
	for _, dt := range ctxDots(&d.Ctx) {
		if _, ok := d.Entries[dt]; !ok {
			w.removed[id][dt] = true
		}
	}
}

// itemOp applies one drawn item operation at replica i.
func (w *world) itemOp(t *rapid.T, i int) {
	r := testReplicas[i]
	sku := rapid.SampledFrom(testItemSKUs).Draw(t, "itemsku")
	it := itemOf(w.state[i], sku)
	var d *Item
	switch op := rapid.IntRange(0, 3).Draw(t, "itemop"); op {
	case 0, 1:
		n := rapid.Uint64Range(1, 50).Draw(t, "restock")
		d = it.Restock(r, n)
		w.add(w.restocked, sku, r, n)
	case 2:
		n := rapid.Uint64Range(1, 20).Draw(t, "consume")
		d = it.Consume(r, n)
		w.add(w.consumed, sku, r, n)
	default:
		d = it.SetHeld(r, rapid.Int64Range(0, 30).Draw(t, "held"))
		w.held[sku] = append(w.held[sku], d.Held)
	}
	dg := &Group{}
	dg.AddItem(sku, d)
	w.deltas = append(w.deltas, dg)
	w.state[i].Join(dg)
}

func (w *world) add(m map[string]map[ReplicaID]uint64, sku string, r ReplicaID, n uint64) {
	if m[sku] == nil {
		m[sku] = make(map[ReplicaID]uint64)
	}
	m[sku][r] += n
}

// genWorld draws a history of up to maxSteps steps: operations at random
// replicas, partial delta deliveries (any subset of the deltas made so far,
// in any order, with duplicates), full-state merges and snapshots.
func genWorld(t *rapid.T, maxSteps int) *world {
	w := newWorld()
	steps := rapid.IntRange(0, maxSteps).Draw(t, "steps")
	for range steps {
		i := rapid.IntRange(0, 2).Draw(t, "replica")
		switch step := rapid.IntRange(0, 11).Draw(t, "step"); {
		case step <= 4:
			w.cartOp(t, i)
		case step <= 6:
			w.itemOp(t, i)
		case step <= 8:
			if len(w.deltas) == 0 {
				continue
			}
			k := rapid.IntRange(1, 2*len(w.deltas)).Draw(t, "deliveries")
			for range k {
				j := rapid.IntRange(0, len(w.deltas)-1).Draw(t, "delta")
				w.state[i].Join(w.deltas[j])
			}
		case step <= 9:
			src := rapid.IntRange(0, 2).Draw(t, "from")
			w.state[i].Join(w.state[src])
		default:
			w.snaps = append(w.snaps, w.state[i].Clone())
		}
	}
	return w
}

// groups returns every value of the world: replica states, snapshots and
// deltas. None of them may be changed.
func (w *world) groups() []*Group {
	out := slices.Clone(w.state[:])
	out = append(out, w.snaps...)
	return append(out, w.deltas...)
}

// carts returns every cart value of the world under id (including empty
// ones where a group has none).
func (w *world) carts(id string) []*Cart {
	var out []*Cart
	for _, g := range w.groups() {
		out = append(out, cartOf(g, id))
	}
	return out
}

// items returns every item value of the world under sku.
func (w *world) items(sku string) []*Item {
	var out []*Item
	for _, g := range w.groups() {
		out = append(out, itemOf(g, sku))
	}
	return out
}

// drawCarts draws n cart values of one freshly drawn world: values of the
// same history, so any of them may be joined.
func drawCarts(t *rapid.T, n int) []*Cart {
	w := genWorld(t, 40)
	u := w.carts(rapid.SampledFrom(testCartIDs).Draw(t, "cartid"))
	out := make([]*Cart, n)
	for k := range out {
		out[k] = u[rapid.IntRange(0, len(u)-1).Draw(t, "pick")]
	}
	return out
}

// drawItems draws n item values of one freshly drawn world.
func drawItems(t *rapid.T, n int) []*Item {
	w := genWorld(t, 40)
	u := w.items(rapid.SampledFrom(testItemSKUs).Draw(t, "itemsku"))
	out := make([]*Item, n)
	for k := range out {
		out[k] = u[rapid.IntRange(0, len(u)-1).Draw(t, "pick")]
	}
	return out
}

// drawGroups draws n groups (states, snapshots or deltas) of one freshly
// drawn world.
func drawGroups(t *rapid.T, n int) []*Group {
	w := genWorld(t, 40)
	u := w.groups()
	out := make([]*Group, n)
	for k := range out {
		out[k] = u[rapid.IntRange(0, len(u)-1).Draw(t, "pick")]
	}
	return out
}

// ctxDots lists every dot of c (test contexts have small counters).
func ctxDots(c *Context) []Dot {
	var out []Dot
	for r, n := range c.VV {
		for k := uint64(1); k <= n; k++ {
			out = append(out, Dot{r, k})
		}
	}
	for d := range c.Cloud {
		out = append(out, d)
	}
	slices.SortFunc(out, compareDots)
	return out
}

// Joins that return a new value and leave both arguments alone.

func joinCarts(cs ...*Cart) *Cart {
	out := &Cart{}
	for _, c := range cs {
		out.Join(c)
	}
	return out
}

func joinItems(its ...*Item) *Item {
	out := &Item{}
	for _, it := range its {
		out.Join(it)
	}
	return out
}

func joinGroups(gs ...*Group) *Group {
	out := &Group{}
	for _, g := range gs {
		out.Join(g)
	}
	return out
}

func joinCounters(cs ...*PNCounter) *PNCounter {
	out := &PNCounter{}
	for _, c := range cs {
		out.Join(c)
	}
	return out
}

func joinRegisters(rs ...*Register) *Register {
	out := &Register{}
	for _, r := range rs {
		out.Join(r)
	}
	return out
}

// Canonical encodings used to compare states. A PN-counter or register is
// compared through the encoding of an item holding only it.

func encCounter(c *PNCounter) []byte { return EncodeItem(&Item{Stock: *c}) }
func encRegister(r *Register) []byte { return EncodeItem(&Item{Held: *r}) }

// tb is what the assertion helpers need of *testing.T and *rapid.T.
type tb interface {
	Helper()
	Fatalf(format string, args ...any)
}

func sameBytes(t tb, what string, got, want []byte) {
	t.Helper()
	if !bytes.Equal(got, want) {
		t.Fatalf("%s: encodings differ\n got %x\nwant %x", what, got, want)
	}
}

func sameCart(t tb, what string, got, want *Cart) {
	t.Helper()
	sameBytes(t, what, EncodeCart(got), EncodeCart(want))
}

// checkCartInvariants asserts what every reachable cart satisfies: every
// entry's dot is in the context, the context is compact, every entry is
// well formed and the view lists only positive quantities.
func checkCartInvariants(t tb, c *Cart) {
	t.Helper()
	for d, l := range c.Entries {
		if !c.Ctx.Contains(d) {
			t.Fatalf("entry %s is not in the causal context", d)
		}
		if l.N < 1 || (l.Kind != KindAdd && l.Kind != KindSet) || !ValidID(l.SKU) {
			t.Fatalf("entry %s is malformed: %+v", d, l)
		}
	}
	checkCompact(t, &c.Ctx)
	for _, it := range c.Items() {
		if it.Qty <= 0 || it.Qty != c.Qty(it.SKU) || !c.Has(it.SKU) {
			t.Fatalf("view line %+v disagrees with Qty %d / Has %v", it, c.Qty(it.SKU), c.Has(it.SKU))
		}
	}
}

func checkCompact(t tb, c *Context) {
	t.Helper()
	for r, v := range c.VV {
		if v == 0 {
			t.Fatalf("version vector keeps a zero entry for %s", r)
		}
	}
	for d := range c.Cloud {
		if d.Counter <= c.VV[d.Replica]+1 {
			t.Fatalf("cloud dot %s should have been compacted into VV %d", d, c.VV[d.Replica])
		}
	}
}

// viewOf returns the cart's view as a map.
func viewOf(c *Cart) map[string]int64 {
	m := make(map[string]int64)
	for _, it := range c.Items() {
		m[it.SKU] = it.Qty
	}
	return m
}

func mustDecodeCart(t testing.TB, b []byte) *Cart {
	t.Helper()
	c, err := DecodeCart(b)
	if err != nil {
		t.Fatalf("DecodeCart: %v", err)
	}
	return c
}
