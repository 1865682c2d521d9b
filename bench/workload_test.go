package bench

import (
	"math"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/latticedb/lattice/region/config"
)

func testWorkload(seed uint64) Workload {
	names := RegionNames(3)
	return Workload{Seed: seed, Rate: 2000, Span: 10 * time.Second, Regions: names,
		Home: func(sku string) string { return config.RendezvousHome(names, sku) }}
}

func TestGenerateIsAFunctionOfTheSeed(t *testing.T) {
	a, err := Generate(testWorkload(1))
	if err != nil {
		t.Fatal(err)
	}
	b, err := Generate(testWorkload(1))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(a, b) {
		t.Fatal("seed 1 gave two different schedules")
	}
	c, err := Generate(testWorkload(2))
	if err != nil {
		t.Fatal(err)
	}
	if reflect.DeepEqual(a.Ops, c.Ops) {
		t.Fatal("seeds 1 and 2 gave the same operations")
	}
	if !reflect.DeepEqual(a.Hot, c.Hot) || !reflect.DeepEqual(a.AddCarts, c.AddCarts) {
		t.Fatal("the keys depend on the seed; they should depend only on the config")
	}
}

func TestGenerateSchedule(t *testing.T) {
	w := testWorkload(7)
	s, err := Generate(w)
	if err != nil {
		t.Fatal(err)
	}
	// A Poisson process of rate λ over T has λT ± sqrt(λT) arrivals.
	want := w.Rate * w.Span.Seconds()
	if got := float64(len(s.Ops)); math.Abs(got-want) > 4*math.Sqrt(want) {
		t.Fatalf("%v operations, want about %v", got, want)
	}
	for i, op := range s.Ops {
		if op.Index != i {
			t.Fatalf("op %d has index %d", i, op.Index)
		}
		if op.At < 0 || op.At >= w.Span || i > 0 && op.At < s.Ops[i-1].At {
			t.Fatalf("op %d at %v: out of order or outside [0, %v)", i, op.At, w.Span)
		}
		if op.Region < 0 || op.Region >= len(w.Regions) {
			t.Fatalf("op %d: region %d", i, op.Region)
		}
		switch op.Kind {
		case CartAdd:
			if !slices.Contains(s.AddCarts, op.Cart) || op.Qty != 1 {
				t.Fatalf("add-only add %+v: want an add-only cart and qty 1", op)
			}
		case CartMixAdd, CartSet, CartRemove:
			if !slices.Contains(s.MixCarts, op.Cart) {
				t.Fatalf("%+v: want a mixed cart", op)
			}
		case Restock, Reserve:
			if !slices.Contains(s.Hot, op.SKU) || op.Qty < 1 {
				t.Fatalf("%+v: want a hot sku and qty ≥ 1", op)
			}
		}
		if op.Kind == Reserve {
			if home := w.Home(op.SKU); op.FromHome != (w.Regions[op.Region] == home) {
				t.Fatalf("%+v: FromHome is wrong (home %s)", op, home)
			}
		}
	}
	// One hot sku homed at each region, in region order.
	if len(s.Hot) != len(w.Regions) {
		t.Fatalf("hot skus %v, want one per region", s.Hot)
	}
	for i, sku := range s.Hot {
		if w.Home(sku) != w.Regions[i] {
			t.Fatalf("hot sku %s is homed at %s, want %s", sku, w.Home(sku), w.Regions[i])
		}
	}
}

func TestGenerateMixProportions(t *testing.T) {
	w := testWorkload(3)
	w.Rate, w.Span = 10_000, 10*time.Second
	s, err := Generate(w)
	if err != nil {
		t.Fatal(err)
	}
	n := float64(len(s.Ops))
	count := map[Kind]float64{}
	var reserves, commits, fromHome float64
	for _, op := range s.Ops {
		count[op.Kind]++
		if op.Kind == Reserve {
			reserves++
			if op.Commit {
				commits++
			}
			if op.FromHome {
				fromHome++
			}
		}
	}
	mix := DefaultMix()
	total := 0.0
	for _, k := range Kinds() {
		total += mix.Share(k)
	}
	// Binomial proportions over ~100,000 draws: 4 standard deviations is
	// well under 1 %.
	near := func(what string, got, want, of float64) {
		t.Helper()
		if sd := math.Sqrt(want * (1 - want) / of); math.Abs(got-want) > 4*sd {
			t.Errorf("%s: %.4f, want %.4f ± %.4f", what, got, want, 4*sd)
		}
	}
	for _, k := range Kinds() {
		near(k.String(), count[k]/n, mix.Share(k)/total, n)
	}
	near("commit fraction", commits/reserves, mix.CommitFrac, reserves)
	near("from-home fraction", fromHome/reserves, mix.HomeFrac, reserves)
}

func TestGenerateOneRegionReservesAtHome(t *testing.T) {
	w := testWorkload(1)
	w.Regions = []string{"solo"}
	w.Home = func(string) string { return "solo" }
	w.Span = time.Second
	s, err := Generate(w)
	if err != nil {
		t.Fatal(err)
	}
	for _, op := range s.Ops {
		if op.Kind == Reserve && !op.FromHome {
			t.Fatalf("%+v: with one region every reservation is at home", op)
		}
	}
}

func TestGenerateRaisesCartsForLongRuns(t *testing.T) {
	w := testWorkload(1)
	w.Rate, w.Span = 1000, 10*time.Second // ~10,000 adds to add-only carts
	w.Mix = Mix{CartAdd: 1, CommitFrac: 0.5, HomeFrac: 0.5}
	w.Carts = 1
	s, err := Generate(w)
	if err != nil {
		t.Fatal(err)
	}
	if len(s.AddCarts) != 10 || len(s.MixCarts) != 10 {
		t.Fatalf("%d add-only and %d mixed carts for ~10,000 adds, want 10 (1,000 adds a cart)", len(s.AddCarts), len(s.MixCarts))
	}
}

func TestGenerateRefusesBadWorkloads(t *testing.T) {
	bad := map[string]func(*Workload){
		"zero rate":      func(w *Workload) { w.Rate = 0 },
		"NaN rate":       func(w *Workload) { w.Rate = math.NaN() },
		"zero span":      func(w *Workload) { w.Span = 0 },
		"no regions":     func(w *Workload) { w.Regions = nil },
		"no home":        func(w *Workload) { w.Home = nil },
		"negative share": func(w *Workload) { w.Mix = DefaultMix(); w.Mix.Restock = -1 },
		"empty mix":      func(w *Workload) { w.Mix = Mix{CommitFrac: 1} },
		"commit > 1":     func(w *Workload) { w.Mix = DefaultMix(); w.Mix.CommitFrac = 2 },
		"negative carts": func(w *Workload) { w.Carts = -1 },
		"home elsewhere": func(w *Workload) { w.Home = func(string) string { return "mars" } },
	}
	for name, mutate := range bad {
		t.Run(name, func(t *testing.T) {
			w := testWorkload(1)
			w.Span = time.Second
			mutate(&w)
			if _, err := Generate(w); err == nil {
				t.Fatal("accepted")
			}
		})
	}
}

// TestGenerateEscrowTwins checks the schedule with escrow skus: one escrow
// sku homed at each region beside each hot sku, and the operations of the
// schedule without them but for the sku of about half the restocks and
// reservations, which takes the twin homed at the same region.
func TestGenerateEscrowTwins(t *testing.T) {
	cfg := config.DefaultConfig()
	cfg.Homes = EscrowHomes(cfg.RegionNames())
	w := testWorkload(5)
	w.Home = cfg.Home
	plain, err := Generate(w)
	if err != nil {
		t.Fatal(err)
	}
	w.Escrow = true
	s, err := Generate(w)
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Escrow) != len(w.Regions) || !reflect.DeepEqual(s.Hot, append(slices.Clone(plain.Hot), s.Escrow...)) {
		t.Fatalf("hot %v, escrow %v (without escrow: hot %v)", s.Hot, s.Escrow, plain.Hot)
	}
	twin := map[string]string{}
	for i, e := range s.Escrow {
		if !cfg.Escrow(e) || cfg.Escrow(plain.Hot[i]) || cfg.Home(e) != w.Regions[i] || cfg.Home(plain.Hot[i]) != w.Regions[i] {
			t.Fatalf("escrow sku %s (escrow %v, home %s) beside %s (home %s): want an escrow sku and a home-decided one homed at %s",
				e, cfg.Escrow(e), cfg.Home(e), plain.Hot[i], cfg.Home(plain.Hot[i]), w.Regions[i])
		}
		twin[e] = plain.Hot[i]
	}
	if len(s.Ops) != len(plain.Ops) {
		t.Fatalf("%d operations, %d without escrow skus", len(s.Ops), len(plain.Ops))
	}
	var reserves, escrowReserves, nonHome [2]float64
	for i, op := range s.Ops {
		back := op
		if op.Escrow {
			back.SKU, back.Escrow = twin[op.SKU], false
			if back.SKU == "" {
				t.Fatalf("%+v: an escrow operation on %s, not an escrow sku", op, op.SKU)
			}
		}
		if back != plain.Ops[i] {
			t.Fatalf("op %d: %+v, without escrow skus %+v", i, op, plain.Ops[i])
		}
		if op.Kind == Reserve {
			k := 0
			if op.Escrow {
				k = 1
				escrowReserves[0]++
			}
			reserves[k]++
			if !op.FromHome {
				nonHome[k]++
			}
		}
	}
	n := reserves[0] + reserves[1]
	if sd := math.Sqrt(0.25 / n); math.Abs(escrowReserves[0]/n-0.5) > 4*sd {
		t.Errorf("%v of %v reservations on escrow skus, want half", escrowReserves[0], n)
	}
	for k, name := range []string{"home-decided", "escrow"} {
		if f := nonHome[k] / reserves[k]; math.Abs(f-0.5) > 0.05 {
			t.Errorf("%s: %.3f of the reservations sent to a non-home region, want 0.5", name, f)
		}
	}

	// Escrow skus that the homes rules do not place at their region.
	w.Home = func(sku string) string { return config.RendezvousHome(w.Regions, sku) }
	if _, err := Generate(w); err == nil {
		t.Fatal("escrow skus homed elsewhere accepted")
	}
}
