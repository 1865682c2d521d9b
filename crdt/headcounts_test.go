package crdt

import (
	"testing"
	"unsafe"

	"pgregory.net/rapid"
)

// TestCartHeadCounts checks that CartHeadCounts accepts exactly the heads
// DecodeCartHead accepts, with the same counts and sum, and that its
// HeadContext answers as the decoded context's Contains: on the heads
// of the carts of random histories, on non-canonical re-encodings of
// them, on damaged copies and on whole carts.
func TestCartHeadCounts(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		w := genWorld(t, 40)
		for _, g := range w.groups() {
			for _, c := range g.Carts {
				h := HeadOf(c)
				b := EncodeCartHead(&h)
				if _, _, _, err := CartHeadCounts(b); err != nil {
					t.Fatalf("CartHeadCounts(EncodeCartHead(%+v)): %v", h, err)
				}
				for _, in := range [][]byte{b, widen(t, b), mutate(t, b), mutate(t, b), EncodeCart(c)} {
					checkHeadCounts(t, in)
				}
			}
		}
	})
}

func checkHeadCounts(t tb, b []byte) {
	t.Helper()
	h, err := DecodeCartHead(b)
	entries, lines, sum, err2 := CartHeadCounts(b)
	if (err == nil) != (err2 == nil) {
		t.Fatalf("%x: DecodeCartHead: %v, CartHeadCounts: %v", b, err, err2)
	}
	if err != nil {
		return
	}
	if entries != h.Entries || lines != h.Lines || sum != h.Sum {
		t.Fatalf("%x: CartHeadCounts = %d, %d, %x; DecodeCartHead = %+v", b, entries, lines, sum, h)
	}
	// Dots in and around the context, and of a replica it does not hold.
	dots := []Dot{{"nowhere", 0}, {"nowhere", 1}, {"", 1}}
	for r, v := range h.Ctx.VV {
		for k := range v + 3 {
			dots = append(dots, Dot{r, k})
		}
		dots = append(dots, Dot{r + "x", v}, Dot{r[:len(r)-1], v})
	}
	for d := range h.Ctx.Cloud {
		dots = append(dots, Dot{d.Replica, d.Counter - 1}, d, Dot{d.Replica, d.Counter + 1})
	}
	hc := HeadContextOf(b)
	for _, d := range dots {
		want := h.Ctx.Contains(d)
		if got := hc.Contains(d); got != want {
			t.Fatalf("%x: HeadContext.Contains(%v) = %v, the context's Contains %v (%+v)", b, d, got, want, h.Ctx)
		}
		if got := headContains(b, d); got != want {
			t.Fatalf("%x: headContains(%v) = %v, the context's Contains %v (%+v)", b, d, got, want, h.Ctx)
		}
	}
}

// TestCartHeadCountsAllocatesNothing checks that reading a head's counts,
// asking its context for a dot and visiting a line of the replica a
// ReplicaCache holds allocate nothing, and that the cache holds the
// replica of the last line visited.
func TestCartHeadCountsAllocatesNothing(t *testing.T) {
	var c Cart
	c.Ctx.Insert(Dot{"us-east+1796526441", 5})
	c.Ctx.Insert(Dot{"eu-west", 9})
	c.Ctx.Insert(Dot{"eu-west", 12})
	h := CartHead{Ctx: c.Ctx, Entries: 2, Lines: 1, Sum: 42}
	b := EncodeCartHead(&h)
	if n := testing.AllocsPerRun(100, func() { _, _, _, _ = CartHeadCounts(b) }); n != 0 {
		t.Errorf("CartHeadCounts allocates %v times", n)
	}
	d := Dot{"eu-west", 12}
	if n := testing.AllocsPerRun(100, func() { hc := HeadContextOf(b); _ = hc.Contains(d) }); n != 0 {
		t.Errorf("HeadContext.Contains allocates %v times", n)
	}
	var one Cart
	one.Ctx.Insert(Dot{"us-east+1796526441", 1})
	one.Ctx.Insert(Dot{"us-east+1796526441", 2})
	ob := EncodeCartHead(&CartHead{Ctx: one.Ctx, Entries: 1, Lines: 1, Sum: 3})
	if hc := HeadContextOf(ob); !hc.one || hc.vv != 2 || hc.Contains(Dot{"us-east+1796526441", 3}) || !hc.Contains(Dot{"us-east+1796526441", 2}) {
		t.Errorf("the context of one replica's version vector: %+v", hc)
	}
	if n := testing.AllocsPerRun(100, func() { hc := HeadContextOf(ob); _ = hc.Contains(d) }); n != 0 {
		t.Errorf("HeadContext.Contains allocates %v times", n)
	}

	line := map[Dot]Line{
		{Replica: "us-east+1796526441", Counter: 2}: {SKU: "book", Kind: KindAdd, N: 2},
		{Replica: "us-east+1796526441", Counter: 5}: {SKU: "book", Kind: KindSet, N: 1},
	}
	lb := AppendCartLine(nil, "book", line)
	var c0 ReplicaCache
	var got []Dot
	visit := func(d Dot, _ Line) { got = append(got, d) }
	if sku, err := VisitCartLineFrom(lb, "book", &c0, visit); err != nil || sku != "book" || len(got) != 2 || c0.id != "us-east+1796526441" {
		t.Fatalf("VisitCartLineFrom = %q, %v; visited %v, cached %q", sku, err, got, c0.id)
	}
	if unsafe.StringData(string(got[0].Replica)) != unsafe.StringData(string(got[1].Replica)) {
		t.Errorf("the entries of one replica do not share its id: %v", got)
	}
	rep := c0.id
	got = got[:0]
	if _, err := VisitCartLineFrom(lb, "book", &c0, visit); err != nil || len(got) != 2 || unsafe.StringData(string(got[0].Replica)) != unsafe.StringData(string(rep)) {
		t.Fatalf("VisitCartLineFrom from the cached replica: %v, visited %v", err, got)
	}
	if n := testing.AllocsPerRun(100, func() { _, _ = VisitCartLineFrom(lb, "book", &c0, func(Dot, Line) {}) }); n != 0 {
		t.Errorf("VisitCartLineFrom allocates %v times with the line's replica cached", n)
	}
	if _, err := VisitCartLineFrom(lb[:len(lb)-1], "book", &c0, visit); err == nil || c0.id != rep {
		t.Fatalf("VisitCartLineFrom of a cut line: %v, cached %q", err, c0.id)
	}
	// An invalid replica is refused, even right after a valid one.
	bad := AppendCartLine(nil, "book", map[Dot]Line{{Replica: "us east", Counter: 1}: {SKU: "book", Kind: KindAdd, N: 1}})
	if _, err := VisitCartLineFrom(bad, "book", &c0, visit); err == nil || c0.id != rep {
		t.Fatalf("a line of an invalid replica: %v, cached %q", err, c0.id)
	}
	var empty ReplicaCache
	noRep := AppendCartLine(nil, "book", map[Dot]Line{{Replica: "", Counter: 1}: {SKU: "book", Kind: KindAdd, N: 1}})
	if _, err := VisitCartLineFrom(noRep, "book", &empty, visit); err == nil {
		t.Fatal("a line of an empty replica id decoded")
	}
}

// TestVisitCartLineFromMatches checks that VisitCartLineFrom accepts the
// lines VisitCartLine accepts and visits the same entries, whatever
// replica it starts from, on the lines of random carts and damaged
// copies of them.
func TestVisitCartLineFromMatches(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		w := genWorld(t, 40)
		for _, g := range w.groups() {
			for _, c := range g.Carts {
				lines := map[string]map[Dot]Line{}
				for d, l := range c.Entries {
					if lines[l.SKU] == nil {
						lines[l.SKU] = map[Dot]Line{}
					}
					lines[l.SKU][d] = l
				}
				for sku, es := range lines {
					b := AppendCartLine(nil, sku, es)
					for _, in := range [][]byte{b, widen(t, b), mutate(t, b)} {
						type visit struct {
							d Dot
							l Line
						}
						var want, got []visit
						wsku, werr := VisitCartLine(in, sku, func(d Dot, l Line) { want = append(want, visit{d, l}) })
						for _, from := range []ReplicaID{"", usEast, euWest, apSouth, "eu-west+7"} {
							got = got[:0]
							var c ReplicaCache
							if from != "" {
								// A cache of a valid replica, as a line of it leaves it.
								VisitCartLineFrom(AppendCartLine(nil, "x", map[Dot]Line{{Replica: from, Counter: 1}: {SKU: "x", Kind: KindAdd, N: 1}}), "x", &c, func(Dot, Line) {})
								if c.id != from {
									t.Fatalf("cache of %q: %q", from, c.id)
								}
							}
							gsku, gerr := VisitCartLineFrom(in, sku, &c, func(d Dot, l Line) { got = append(got, visit{d, l}) })
							if (werr == nil) != (gerr == nil) || gsku != wsku {
								t.Fatalf("%x from %q: VisitCartLine %q, %v; VisitCartLineFrom %q, %v", in, from, wsku, werr, gsku, gerr)
							}
							rep := c.id
							if werr == nil && (len(got) != len(want) || rep != got[len(got)-1].d.Replica) {
								t.Fatalf("%x from %q: visited %v, want %v; left %q", in, from, got, want, rep)
							}
							for i := range got {
								if werr == nil && got[i] != want[i] {
									t.Fatalf("%x from %q: visited %v, want %v", in, from, got, want)
								}
							}
						}
					}
				}
			}
		}
	})
}

// FuzzCartHeadCounts compares CartHeadCounts and HeadContext with
// DecodeCartHead.
func FuzzCartHeadCounts(f *testing.F) {
	var c Cart
	c.Ctx.Insert(Dot{"us-east", 3})
	c.Ctx.Insert(Dot{"eu-west+17", 9})
	f.Add(EncodeCartHead(&CartHead{Ctx: c.Ctx, Entries: 3, Lines: 2, Sum: 7}))
	f.Add(EncodeCartHead(&CartHead{}))
	f.Fuzz(func(t *testing.T, b []byte) { checkHeadCounts(t, b) })
}
