package bench

import (
	"math/rand/v2"
	"testing"
	"time"
)

// holdTimelineByPairs is HoldTimeline as its doc states it: every span
// checked against every other, at each grant's instant.
func holdTimelineByPairs(base int64, spans []HoldSpan, steps []StockStep) int64 {
	var worst int64
	for _, at := range spans {
		t := at.From
		var held int64
		for _, h := range spans {
			if !h.From.After(t) && !h.To.Before(t) {
				held += h.Qty
			}
		}
		stock := base
		for _, st := range steps {
			if !st.At.After(t) {
				stock += st.Qty
			}
		}
		worst = max(worst, held-stock)
	}
	return worst
}

// TestHoldTimelineSweepMatchesPairs checks the sweep against the
// definition on random spans and restocks, ties and empty spans (To
// before From) included. Seeds 1–2000.
func TestHoldTimelineSweepMatchesPairs(t *testing.T) {
	t0 := time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC)
	for seed := uint64(1); seed <= 2000; seed++ {
		rng := rand.New(rand.NewPCG(seed, 0))
		ms := func() time.Time { return t0.Add(time.Duration(rng.IntN(40)) * time.Millisecond) }
		spans := make([]HoldSpan, rng.IntN(30))
		for i := range spans {
			f := ms()
			spans[i] = HoldSpan{Qty: 1 + rng.Int64N(5), From: f, To: f.Add(time.Duration(rng.IntN(25)-3) * time.Millisecond)}
		}
		steps := make([]StockStep, rng.IntN(8))
		for i := range steps {
			steps[i] = StockStep{Qty: rng.Int64N(10), At: ms()}
		}
		base := rng.Int64N(20)
		if got, want := HoldTimeline(base, spans, steps), holdTimelineByPairs(base, spans, steps); got != want {
			t.Fatalf("seed %d: HoldTimeline = %d, by pairs %d (base %d, spans %v, steps %v)", seed, got, want, base, spans, steps)
		}
	}
}

// BenchmarkHoldTimeline compares the sweep with the pairwise definition
// on one sku's holds of a long run (20,000 holds over 10 minutes).
func BenchmarkHoldTimeline(b *testing.B) {
	t0 := time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC)
	rng := rand.New(rand.NewPCG(1, 0))
	spans := make([]HoldSpan, 20000)
	for i := range spans {
		f := t0.Add(time.Duration(rng.IntN(600_000)) * time.Millisecond)
		spans[i] = HoldSpan{Qty: 1, From: f, To: f.Add(time.Duration(rng.IntN(5000)) * time.Millisecond)}
	}
	steps := []StockStep{{Qty: 100, At: t0}}
	for _, c := range []struct {
		name string
		fn   func(int64, []HoldSpan, []StockStep) int64
	}{{"sweep", HoldTimeline}, {"pairs", holdTimelineByPairs}} {
		b.Run(c.name, func(b *testing.B) {
			for b.Loop() {
				c.fn(0, spans, steps)
			}
		})
	}
}
