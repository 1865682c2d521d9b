package crdt

import (
	"bytes"
	"maps"
	"slices"
	"testing"

	"pgregory.net/rapid"
)

// dotSet is the model a Context must behave like: a plain set of dots.
type dotSet map[Dot]bool

// modelCounters bounds the counters of model dots; dense sets of them make
// long runs for compaction to walk.
const modelCounters = 40

func drawDotSet(t *rapid.T, label string) dotSet {
	s := make(dotSet)
	top := rapid.Uint64Range(1, modelCounters).Draw(t, label+"-top")
	n := rapid.IntRange(0, 3*int(top)).Draw(t, label+"-size")
	for range n {
		r := rapid.SampledFrom(testReplicas).Draw(t, label+"-replica")
		k := rapid.Uint64Range(1, top).Draw(t, label+"-counter")
		s[Dot{r, k}] = true
	}
	return s
}

// contextOf builds a Context by inserting the dots of s in a drawn order.
func contextOf(t *rapid.T, s dotSet) Context {
	var c Context
	for _, d := range rapid.Permutation(slices.SortedFunc(maps.Keys(s), compareDots)).Draw(t, "insert-order") {
		c.Insert(d)
	}
	return c
}

// checkModel asserts that c holds exactly the dots of s.
func checkModel(t *rapid.T, what string, c *Context, s dotSet) {
	t.Helper()
	for _, r := range testReplicas {
		var maxK uint64
		for k := uint64(1); k <= modelCounters+2; k++ {
			d := Dot{r, k}
			if c.Contains(d) != s[d] {
				t.Fatalf("%s: Contains(%s) = %v, model %v", what, d, c.Contains(d), s[d])
			}
			if s[d] {
				maxK = k
			}
		}
		if c.Max(r) != maxK {
			t.Fatalf("%s: Max(%s) = %d, model %d", what, r, c.Max(r), maxK)
		}
		if next := c.Next(r); next != (Dot{r, maxK + 1}) {
			t.Fatalf("%s: Next(%s) = %s, want %s:%d", what, r, next, r, maxK+1)
		}
	}
	checkCompact(t, c)
	if got := len(ctxDots(c)); got != len(s) {
		t.Fatalf("%s: context holds %d dots, model %d", what, got, len(s))
	}
	if c.Empty() != (len(s) == 0) {
		t.Fatalf("%s: Empty() = %v with %d dots", what, c.Empty(), len(s))
	}
}

func TestContextMatchesDotSetModel(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		sa, sb := drawDotSet(t, "a"), drawDotSet(t, "b")
		a, b := contextOf(t, sa), contextOf(t, sb)
		checkModel(t, "a", &a, sa)
		checkModel(t, "b", &b, sb)

		union := make(dotSet)
		maps.Copy(union, sa)
		maps.Copy(union, sb)
		j := a.Clone()
		j.Join(&b)
		checkModel(t, "a⊔b", &j, union)
		checkModel(t, "b after join", &b, sb) // Join leaves its argument alone

		subset := func(x, y dotSet) bool {
			for d := range x {
				if !y[d] {
					return false
				}
			}
			return true
		}
		if a.Covers(&b) != subset(sb, sa) {
			t.Fatalf("a.Covers(b) = %v, model %v", a.Covers(&b), subset(sb, sa))
		}
		if !j.Covers(&a) || !j.Covers(&b) {
			t.Fatalf("the join does not cover its arguments")
		}
		if a.Equal(&b) != (subset(sa, sb) && subset(sb, sa)) {
			t.Fatalf("a.Equal(b) = %v, model disagrees", a.Equal(&b))
		}
		wantReps := make(map[ReplicaID]bool)
		for d := range sa {
			wantReps[d.Replica] = true
		}
		if got := a.Replicas(); !slices.Equal(got, slices.Sorted(maps.Keys(wantReps))) {
			t.Fatalf("Replicas() = %v, model %v", got, slices.Sorted(maps.Keys(wantReps)))
		}

		// A clone is independent of its original.
		cl := a.Clone()
		cl.Insert(Dot{usEast, modelCounters + 1})
		checkModel(t, "a after inserting into its clone", &a, sa)
	})
}

// TestCompactLongRuns joins, into contexts that lack only the first dot of
// each replica, a decoded context whose clouds hold the largest runs a
// decoder accepts, then fills the gaps. Compaction must fold every run into
// the version vector, and in time linear in the cloud (a quadratic
// compaction took seconds per replica here).
func TestCompactLongRuns(t *testing.T) {
	reps := []string{"ap-south", "eu-west", "us-east", "us-west"}
	var recs [][]byte
	for _, r := range reps {
		cloud := make([]uint64, maxArray)
		for k := range cloud {
			cloud[k] = uint64(k + 2)
		}
		recs = append(recs, wRep(r, 0, cloud))
	}
	c := mustDecodeCart(t, wCart(recs...))
	if got := len(c.Ctx.Cloud); got != len(reps)*maxArray {
		t.Fatalf("decoded cloud holds %d dots", got)
	}
	gap := &Cart{}
	for _, r := range reps {
		gap.Ctx.Insert(Dot{ReplicaID(r), 1})
	}
	c.Join(gap)
	for _, r := range reps {
		if got := c.Ctx.VV[ReplicaID(r)]; got != maxArray+1 {
			t.Fatalf("VV[%s] = %d, want %d", r, got, maxArray+1)
		}
	}
	if len(c.Ctx.Cloud) != 0 {
		t.Fatalf("%d cloud dots left", len(c.Ctx.Cloud))
	}
	// Dots that only extend the cloud are kept as they are.
	c.Join(&Cart{Ctx: Context{Cloud: map[Dot]struct{}{{usEast, maxArray + 3}: {}}}})
	if len(c.Ctx.Cloud) != 1 || c.Ctx.VV[usEast] != maxArray+1 {
		t.Fatalf("a dot beyond a gap was folded: VV %d, cloud %v", c.Ctx.VV[usEast], c.Ctx.Cloud)
	}
}

// checkJoinLaws checks that join is commutative, associative, idempotent
// and inflationary on values drawn by draw, comparing canonical encodings,
// and that a join leaves its arguments unchanged.
func checkJoinLaws[V any](t *testing.T, draw func(*rapid.T, int) []V, join func(a, b V) V, enc func(V) []byte) {
	rapid.Check(t, func(t *rapid.T) {
		v := draw(t, 3)
		a, b, c := v[0], v[1], v[2]
		before := [][]byte{enc(a), enc(b), enc(c)}
		ab := enc(join(a, b))
		sameBytes(t, "commutative: a⊔b = b⊔a", ab, enc(join(b, a)))
		sameBytes(t, "associative: (a⊔b)⊔c = a⊔(b⊔c)", enc(join(join(a, b), c)), enc(join(a, join(b, c))))
		sameBytes(t, "idempotent: a⊔a = a", enc(join(a, a)), before[0])
		sameBytes(t, "inflationary: (a⊔b)⊔a = a⊔b", enc(join(join(a, b), a)), ab)
		for k, x := range []V{a, b, c} {
			sameBytes(t, "a joined value is left unchanged", enc(x), before[k])
		}
	})
}

func TestJoinLaws(t *testing.T) {
	counters := func(t *rapid.T, n int) []*PNCounter {
		var out []*PNCounter
		for _, it := range drawItems(t, n) {
			out = append(out, &it.Stock)
		}
		return out
	}
	registers := func(t *rapid.T, n int) []*Register {
		var out []*Register
		for _, it := range drawItems(t, n) {
			out = append(out, &it.Held)
		}
		return out
	}
	t.Run("Cart", func(t *testing.T) {
		checkJoinLaws(t, drawCarts, func(a, b *Cart) *Cart { return joinCarts(a, b) }, EncodeCart)
	})
	t.Run("PNCounter", func(t *testing.T) {
		checkJoinLaws(t, counters, func(a, b *PNCounter) *PNCounter { return joinCounters(a, b) }, encCounter)
	})
	t.Run("Register", func(t *testing.T) {
		checkJoinLaws(t, registers, func(a, b *Register) *Register { return joinRegisters(a, b) }, encRegister)
	})
	t.Run("Item", func(t *testing.T) {
		checkJoinLaws(t, drawItems, func(a, b *Item) *Item { return joinItems(a, b) }, EncodeItem)
	})
	t.Run("Group", func(t *testing.T) {
		checkJoinLaws(t, drawGroups, func(a, b *Group) *Group { return joinGroups(a, b) }, EncodeGroup)
	})
}

// Full-state mutators written from SPEC §2 directly, without the package's
// delta mutators: the reference each delta mutator must agree with.

func refNext(c *Cart, r ReplicaID) Dot {
	var k uint64
	for _, d := range ctxDots(&c.Ctx) {
		if d.Replica == r {
			k = max(k, d.Counter)
		}
	}
	return Dot{r, k + 1}
}

func refDeleteIf(c *Cart, drop func(Dot, Line) bool) *Cart {
	out := c.Clone()
	for d, l := range out.Entries {
		if drop(d, l) {
			delete(out.Entries, d)
		}
	}
	if len(out.Entries) == 0 {
		out.Entries = nil
	}
	return out
}

func refInsert(c *Cart, r ReplicaID, l Line) *Cart {
	d := refNext(c, r)
	if c.Entries == nil {
		c.Entries = make(map[Dot]Line)
	}
	c.Entries[d] = l
	c.Ctx.Insert(d)
	return c
}

func refAdd(c *Cart, r ReplicaID, sku string, n int64) *Cart {
	return refInsert(c.Clone(), r, Line{SKU: sku, Kind: KindAdd, N: n})
}

func refRemove(c *Cart, sku string) *Cart {
	return refDeleteIf(c, func(_ Dot, l Line) bool { return l.SKU == sku })
}

func refSet(c *Cart, r ReplicaID, sku string, q int64) *Cart {
	out := refRemove(c, sku)
	if q > 0 {
		out = refInsert(out, r, Line{SKU: sku, Kind: KindSet, N: q})
	}
	return out
}

func refClear(c *Cart) *Cart { return refDeleteIf(c, func(Dot, Line) bool { return true }) }

func refRemoveObserved(c *Cart, dots []Dot) *Cart {
	out := refDeleteIf(c, func(d Dot, _ Line) bool { return slices.Contains(dots, d) })
	for _, d := range dots {
		out.Ctx.Insert(d)
	}
	return out
}

// TestCartMutatorsAreDeltaMutators checks m(X) = X ⊔ mδ(X) for every cart
// mutator, against the reference full-state mutators and against the view
// SPEC §2 promises at the origin.
func TestCartMutatorsAreDeltaMutators(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		x := drawCarts(t, 1)[0]
		before := EncodeCart(x)
		viewBefore := viewOf(x)
		r := rapid.SampledFrom(testReplicas).Draw(t, "replica")
		sku := rapid.SampledFrom(append(slices.Clone(testSKUs), "new-sku")).Draw(t, "sku")

		var delta, want *Cart
		changed := map[string]bool{sku: true} // skus whose view may change
		op := rapid.SampledFrom([]string{"add", "set", "remove", "clear", "removeObserved"}).Draw(t, "op")
		var n int64
		var observed []Dot
		switch op {
		case "add":
			n = rapid.Int64Range(1, MaxQty).Draw(t, "n")
			delta, want = x.Add(r, sku, n), refAdd(x, r, sku, n)
		case "set":
			n = rapid.Int64Range(0, MaxQty).Draw(t, "q")
			delta, want = x.Set(r, sku, n), refSet(x, r, sku, n)
		case "remove":
			delta, want = x.Remove(sku), refRemove(x, sku)
		case "clear":
			delta, want = x.Clear(), refClear(x)
			for s := range viewBefore {
				changed[s] = true
			}
		case "removeObserved":
			for _, d := range x.Dots() {
				if rapid.Bool().Draw(t, "observed") {
					observed = append(observed, d)
					changed[x.Entries[d].SKU] = true
				}
			}
			delta, want = x.RemoveObserved(observed), refRemoveObserved(x, observed)
		}
		sameBytes(t, op+": the mutator changed its receiver", EncodeCart(x), before)

		got := x.Clone()
		got.Join(delta)
		sameCart(t, op+": X ⊔ mδ(X) = m(X)", got, want)
		checkCartInvariants(t, got)
		checkCartInvariants(t, delta)

		// The delta is small: only the new entry and the removed dots.
		if len(delta.Entries) > 1 {
			t.Fatalf("%s: delta carries %d entries", op, len(delta.Entries))
		}
		removed := 0
		for d := range x.Entries {
			if _, ok := got.Entries[d]; !ok {
				removed++
			}
		}
		if wantDots := len(delta.Entries) + removed; op != "removeObserved" && len(ctxDots(&delta.Ctx)) != wantDots {
			t.Fatalf("%s: delta context holds %d dots, want %d (new entries + removed entries)", op, len(ctxDots(&delta.Ctx)), wantDots)
		}

		// The view at the origin.
		view := viewOf(got)
		switch op {
		case "add":
			if view[sku] != viewBefore[sku]+n {
				t.Fatalf("add(%s, %d): qty %d, want %d", sku, n, view[sku], viewBefore[sku]+n)
			}
		case "set":
			if view[sku] != n || got.Qty(sku) != n {
				t.Fatalf("set(%s, %d): qty %d", sku, n, view[sku])
			}
			if n == 0 && got.Has(sku) {
				t.Fatalf("set(%s, 0) left an entry", sku)
			}
		case "remove":
			if got.Has(sku) || got.Qty(sku) != 0 {
				t.Fatalf("remove(%s): still has qty %d", sku, got.Qty(sku))
			}
		case "clear":
			if len(got.Entries) != 0 || len(got.Items()) != 0 {
				t.Fatalf("clear: %d entries remain", len(got.Entries))
			}
			if !got.Ctx.Equal(&x.Ctx) {
				t.Fatalf("clear changed the causal context, it only needs the dots already seen")
			}
		case "removeObserved":
			for _, d := range observed {
				if _, ok := got.Entries[d]; ok {
					t.Fatalf("removeObserved: entry %s survived", d)
				}
			}
			if len(got.Entries) != len(x.Entries)-len(observed) {
				t.Fatalf("removeObserved removed %d entries, want %d", len(x.Entries)-len(got.Entries), len(observed))
			}
		}
		for s, q := range viewBefore {
			if !changed[s] && view[s] != q {
				t.Fatalf("%s of %s changed unrelated sku %s: %d -> %d", op, sku, s, q, view[s])
			}
		}
		// A delta that changes the state says so.
		if !bytes.Equal(EncodeCart(got), before) && !x.Brings(delta) {
			t.Fatalf("%s: Brings reports false for a delta that changes the state", op)
		}
	})
}

// TestItemMutatorsAreDeltaMutators checks m(X) = X ⊔ mδ(X) for Restock,
// Consume and SetHeld (and so for PNCounter.Inc/Dec and Register.Write).
func TestItemMutatorsAreDeltaMutators(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		x := drawItems(t, 1)[0]
		before := EncodeItem(x)
		r := rapid.SampledFrom(testReplicas).Draw(t, "replica")
		want := x.Clone()
		var delta *Item
		op := rapid.SampledFrom([]string{"restock", "consume", "setHeld"}).Draw(t, "op")
		switch op {
		case "restock":
			n := rapid.Uint64Range(1, 1000).Draw(t, "n")
			delta = x.Restock(r, n)
			if want.Stock.P == nil {
				want.Stock.P = make(map[ReplicaID]uint64)
			}
			want.Stock.P[r] += n
			if got := joinItems(x, delta).Stock.Value(); got != x.Stock.Value()+int64(n) {
				t.Fatalf("restock %d: stock %d, want %d", n, got, x.Stock.Value()+int64(n))
			}
		case "consume":
			n := rapid.Uint64Range(1, 1000).Draw(t, "n")
			delta = x.Consume(r, n)
			if want.Stock.N == nil {
				want.Stock.N = make(map[ReplicaID]uint64)
			}
			want.Stock.N[r] += n
			if got := joinItems(x, delta).Stock.Value(); got != x.Stock.Value()-int64(n) {
				t.Fatalf("consume %d: stock %d, want %d", n, got, x.Stock.Value()-int64(n))
			}
		case "setHeld":
			v := rapid.Int64Range(0, 1000).Draw(t, "held")
			delta = x.SetHeld(r, v)
			want.Held = Register{Version: x.Held.Version + 1, Replica: r, Value: v}
			if got := joinItems(x, delta).Held.Value; got != v {
				t.Fatalf("setHeld %d: held %d", v, got)
			}
		}
		sameBytes(t, op+": the mutator changed its receiver", EncodeItem(x), before)
		got := x.Clone()
		got.Join(delta)
		sameBytes(t, op+": X ⊔ mδ(X) = m(X)", EncodeItem(got), EncodeItem(want))
		if !x.Brings(delta) {
			t.Fatalf("%s: Brings reports false for a delta that changes the state", op)
		}
	})
}

// TestDeltasInAnyOrderEqualFullStateJoin delivers a random subset of a
// history's deltas in random order with duplicates to some state of the
// history, then the rest, and compares with the full-state join of all
// replicas. Every intermediate state stays below the final one.
func TestDeltasInAnyOrderEqualFullStateJoin(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		w := genWorld(t, 60)
		full := joinGroups(w.state[:]...)
		sameBytes(t, "the join of all deltas is the join of all replica states", EncodeGroup(joinGroups(w.deltas...)), EncodeGroup(full))

		u := w.groups()
		g := u[rapid.IntRange(0, len(u)-1).Draw(t, "start")].Clone()
		seen := make(map[int]bool)
		if len(w.deltas) > 0 {
			k := rapid.IntRange(0, 3*len(w.deltas)).Draw(t, "first-deliveries")
			for range k {
				j := rapid.IntRange(0, len(w.deltas)-1).Draw(t, "delta")
				g.Join(w.deltas[j])
				seen[j] = true
				sameBytes(t, "an intermediate state is below the full join", EncodeGroup(joinGroups(full, g)), EncodeGroup(full))
			}
		}
		var rest []int
		for j := range w.deltas {
			if !seen[j] {
				rest = append(rest, j)
			}
		}
		for _, j := range rapid.Permutation(rest).Draw(t, "rest-order") {
			g.Join(w.deltas[j])
		}
		sameBytes(t, "subset in any order with duplicates, then the rest = full-state join", EncodeGroup(g), EncodeGroup(full))
	})
}

// TestRandomHistoriesConverge exchanges everything at the end of random
// histories (by deltas in a different random order at each replica, or by
// full states) and checks that all replicas are equal and hold what the
// oracle says: exactly the entries that were created and never removed, a
// context of every dot ever made, stock of every restock minus every
// consumption, and the last held write.
func TestRandomHistoriesConverge(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		w := genWorld(t, 60)
		if rapid.Bool().Draw(t, "by-deltas") {
			for i := range w.state {
				idx := make([]int, len(w.deltas))
				for j := range idx {
					idx[j] = j
				}
				for _, j := range rapid.Permutation(idx).Draw(t, "order") {
					w.state[i].Join(w.deltas[j])
				}
			}
		} else {
			// Gossip along a ring twice: us-east → eu-west → ap-south → us-east.
			for range 2 {
				for i := range w.state {
					w.state[(i+1)%3].Join(w.state[i])
				}
			}
		}
		want := EncodeGroup(w.state[0])
		for i := 1; i < 3; i++ {
			sameBytes(t, "replicas converge", EncodeGroup(w.state[i]), want)
		}

		for _, id := range testCartIDs {
			c := cartOf(w.state[0], id)
			checkCartInvariants(t, c)
			wantEntries := make(map[Dot]Line)
			for d, l := range w.created[id] {
				if !w.removed[id][d] {
					wantEntries[d] = l
				}
			}
			if !maps.Equal(c.Entries, wantEntries) {
				t.Fatalf("cart %s: entries %v, want created minus removed %v", id, c.Entries, wantEntries)
			}
			if got := ctxDots(&c.Ctx); len(got) != len(w.created[id]) {
				t.Fatalf("cart %s: context holds %d dots, %d were made", id, len(got), len(w.created[id]))
			}
			for d := range w.created[id] {
				if !c.Ctx.Contains(d) {
					t.Fatalf("cart %s: context misses dot %s", id, d)
				}
			}
			for i := 1; i < 3; i++ {
				if !slices.Equal(cartOf(w.state[i], id).Items(), c.Items()) {
					t.Fatalf("cart %s: views differ", id)
				}
			}
		}
		for _, sku := range testItemSKUs {
			it := itemOf(w.state[0], sku)
			var want int64
			for r, n := range w.restocked[sku] {
				want += int64(n)
				if it.Stock.P[r] != n {
					t.Fatalf("%s: P[%s] = %d, want %d", sku, r, it.Stock.P[r], n)
				}
			}
			for r, n := range w.consumed[sku] {
				want -= int64(n)
				if it.Stock.N[r] != n {
					t.Fatalf("%s: N[%s] = %d, want %d", sku, r, it.Stock.N[r], n)
				}
			}
			if it.Stock.Value() != want {
				t.Fatalf("%s: stock %d, want %d", sku, it.Stock.Value(), want)
			}
			wantHeld := Register{}
			for _, h := range w.held[sku] {
				if h.Version > wantHeld.Version || (h.Version == wantHeld.Version && h.Replica > wantHeld.Replica) {
					wantHeld = h
				}
			}
			if it.Held != wantHeld {
				t.Fatalf("%s: held %+v, want %+v", sku, it.Held, wantHeld)
			}
		}
	})
}

// TestBringsIffJoinChanges checks that Brings(d) is false exactly when
// joining d leaves the state unchanged.
func TestBringsIffJoinChanges(t *testing.T) {
	t.Run("Cart", func(t *testing.T) {
		rapid.Check(t, func(t *rapid.T) {
			v := drawCarts(t, 2)
			x, d := v[0], v[1]
			changes := !bytes.Equal(EncodeCart(joinCarts(x, d)), EncodeCart(x))
			if x.Brings(d) != changes {
				t.Fatalf("Brings = %v but the join changes the state: %v", x.Brings(d), changes)
			}
		})
	})
	t.Run("Item", func(t *testing.T) {
		rapid.Check(t, func(t *rapid.T) {
			v := drawItems(t, 2)
			x, d := v[0], v[1]
			changes := !bytes.Equal(EncodeItem(joinItems(x, d)), EncodeItem(x))
			if x.Brings(d) != changes {
				t.Fatalf("Brings = %v but the join changes the state: %v", x.Brings(d), changes)
			}
			changes = !bytes.Equal(encCounter(joinCounters(&x.Stock, &d.Stock)), encCounter(&x.Stock))
			if x.Stock.Brings(&d.Stock) != changes {
				t.Fatalf("PNCounter.Brings = %v but the join changes the state: %v", x.Stock.Brings(&d.Stock), changes)
			}
			changes = !bytes.Equal(encRegister(joinRegisters(&x.Held, &d.Held)), encRegister(&x.Held))
			if x.Held.Brings(&d.Held) != changes {
				t.Fatalf("Register.Brings = %v but the join changes the state: %v", x.Held.Brings(&d.Held), changes)
			}
		})
	})
}

// TestCodecRoundTrip checks Decode(Encode(x)) for every value a history
// produces: it decodes, re-encodes to the same bytes and equals x.
func TestCodecRoundTrip(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		w := genWorld(t, 60)
		for _, g := range w.groups() {
			b := EncodeGroup(g)
			g2, err := DecodeGroup(b)
			if err != nil {
				t.Fatalf("DecodeGroup(EncodeGroup(g)): %v", err)
			}
			sameBytes(t, "group re-encoding", EncodeGroup(g2), b)
			if g2.Len() != g.Len() {
				t.Fatalf("group has %d keys after the round trip, %d before", g2.Len(), g.Len())
			}
			for id, c := range g.Carts {
				cb := EncodeCart(c)
				c2, err := DecodeCart(cb)
				if err != nil {
					t.Fatalf("DecodeCart(EncodeCart(c)): %v", err)
				}
				sameBytes(t, "cart re-encoding", EncodeCart(c2), cb)
				for _, got := range []*Cart{c2, g2.Carts[id]} {
					if !maps.Equal(got.Entries, c.Entries) {
						t.Fatalf("cart %s: entries differ after the round trip", id)
					}
					if !got.Ctx.Equal(&c.Ctx) {
						t.Fatalf("cart %s: context differs after the round trip", id)
					}
					if !slices.Equal(got.Items(), c.Items()) {
						t.Fatalf("cart %s: view differs after the round trip", id)
					}
				}
			}
			for sku, it := range g.Items {
				ib := EncodeItem(it)
				it2, err := DecodeItem(ib)
				if err != nil {
					t.Fatalf("DecodeItem(EncodeItem(it)): %v", err)
				}
				sameBytes(t, "item re-encoding", EncodeItem(it2), ib)
				for _, got := range []*Item{it2, g2.Items[sku]} {
					if got.Held != it.Held || got.Stock.Value() != it.Stock.Value() ||
						!nonZeroEqual(got.Stock.P, it.Stock.P) || !nonZeroEqual(got.Stock.N, it.Stock.N) {
						t.Fatalf("item %s differs after the round trip: %+v vs %+v", sku, got, it)
					}
				}
			}
		}
	})
}

// nonZeroEqual compares counter maps, ignoring zero entries (a zero
// contribution is not encoded).
func nonZeroEqual(a, b map[ReplicaID]uint64) bool {
	for r, v := range a {
		if b[r] != v {
			return false
		}
	}
	for r, v := range b {
		if a[r] != v {
			return false
		}
	}
	return true
}

// TestJoinKeepsNoReferences checks that a join result shares nothing with
// its argument: changing the result afterwards leaves the argument alone.
func TestJoinKeepsNoReferences(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		w := genWorld(t, 40)
		u := w.groups()
		src := u[rapid.IntRange(0, len(u)-1).Draw(t, "src")]
		before := EncodeGroup(src)
		dst := &Group{}
		dst.Join(src)
		// Change every key of the result.
		for _, c := range dst.Carts {
			c.Join(c.Add(usEast, "extra", 1))
			c.Join(c.Clear())
		}
		for _, it := range dst.Items {
			it.Join(it.Restock(euWest, 7))
			it.Join(it.SetHeld(usEast, 3))
		}
		sameBytes(t, "the joined group is unchanged", EncodeGroup(src), before)

		// AddCart and AddItem copy their argument too.
		d := (&Cart{}).Add(apSouth, "book", 1)
		g := &Group{}
		g.AddCart("cart-x", d)
		d.Join(d.Clear())
		if cartOf(g, "cart-x").Qty("book") != 1 {
			t.Fatalf("AddCart kept a reference to its delta")
		}
		it := (&Item{}).Restock(apSouth, 5)
		g.AddItem("sku-x", it)
		it.Join(it.Restock(apSouth, 5))
		if itemOf(g, "sku-x").Stock.Value() != 5 {
			t.Fatalf("AddItem kept a reference to its delta")
		}
	})
}
