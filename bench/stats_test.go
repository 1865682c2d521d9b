package bench

import (
	"math/rand/v2"
	"reflect"
	"testing"
)

func TestPercentileNearestRank(t *testing.T) {
	s := make([]float64, 1000)
	for i := range s {
		s[i] = float64(i + 1) // 1..1000
	}
	for _, c := range []struct{ p, want float64 }{
		{50, 500}, {90, 900}, {99, 990}, {99.9, 999}, {100, 1000}, {0.01, 1}, {0, 1},
	} {
		if got := Percentile(s, c.p); got != c.want {
			t.Errorf("p%v of 1..1000 = %v, want %v", c.p, got, c.want)
		}
	}
	if got := Percentile([]float64{7}, 99.9); got != 7 {
		t.Errorf("p99.9 of one sample = %v, want it", got)
	}
	if got := Percentile(nil, 50); got != 0 {
		t.Errorf("p50 of nothing = %v, want 0", got)
	}
	// p99.9 of 100 samples is the largest: fewer than 1,000 samples
	// cannot tell p99.9 from the maximum.
	if got := Percentile(s[:100], 99.9); got != 100 {
		t.Errorf("p99.9 of 1..100 = %v, want 100", got)
	}
}

func TestSummarize(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	s := make([]float64, 0, 100)
	for i := 100; i >= 1; i-- {
		s = append(s, float64(i))
	}
	rng.Shuffle(len(s), func(i, j int) { s[i], s[j] = s[j], s[i] })
	orig := append([]float64(nil), s...)
	got := Summarize(s)
	// No p99.9 from 100 samples (MinP999Samples): it would be the max.
	want := Summary{Count: 100, Min: 1, Mean: 50.5, P50: 50, P90: 90, P99: 99, P999: 0, Max: 100}
	if got != want {
		t.Fatalf("Summarize = %+v, want %+v", got, want)
	}
	if !reflect.DeepEqual(s, orig) {
		t.Fatal("Summarize reordered its input")
	}
	if (Summarize(nil) != Summary{}) {
		t.Fatal("Summarize(nil) is not zero")
	}
}

func TestCDF(t *testing.T) {
	got := CDF([]float64{3, 1, 2, 2})
	want := []Point{{1, 0.25}, {2, 0.75}, {3, 1}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("CDF = %v, want %v", got, want)
	}
	if CDF(nil) != nil {
		t.Fatal("CDF(nil) is not nil")
	}
}

func TestDownsample(t *testing.T) {
	var s []float64
	for i := range 10_000 {
		s = append(s, float64(i))
	}
	cdf := CDF(s)
	d := Downsample(cdf, 100)
	if len(d) > 101 || len(d) < 90 {
		t.Fatalf("%d points, want about 100", len(d))
	}
	if d[0] != cdf[0] || d[len(d)-1] != cdf[len(cdf)-1] {
		t.Fatal("the first and last points were not kept")
	}
	for i := 1; i < len(d); i++ {
		if d[i].X <= d[i-1].X || d[i].F <= d[i-1].F {
			t.Fatalf("not increasing at %d: %v %v", i, d[i-1], d[i])
		}
	}
	short := cdf[:50]
	if got := Downsample(short, 100); !reflect.DeepEqual(got, short) {
		t.Fatal("a short CDF was changed")
	}
}

func TestLogBins(t *testing.T) {
	s := []float64{1, 10, 100, 1000, 0, -5, 999, 1.5}
	bins := LogBins(s, 3, 0, 0)
	if len(bins) != 3 {
		t.Fatalf("%d bins", len(bins))
	}
	if bins[0].Lo != 1 || bins[2].Hi != 1000 {
		t.Fatalf("range [%v, %v], want [1, 1000]", bins[0].Lo, bins[2].Hi)
	}
	counts := []int{bins[0].Count, bins[1].Count, bins[2].Count}
	// [1, 10): 1, 1.5; [10, 100): 10; [100, 1000]: 100, 999, 1000 (10
	// and 100 may fall either side of a boundary by rounding: the total
	// is what matters there).
	if counts[0] != 2 || counts[0]+counts[1]+counts[2] != 6 || counts[2] < 2 {
		t.Fatalf("counts %v, want [2 1 3]", counts)
	}
	for i := 1; i < len(bins); i++ {
		if bins[i].Lo != bins[i-1].Hi {
			t.Fatalf("bins %d and %d do not touch", i-1, i)
		}
	}
	// A fixed range: samples outside count at the ends.
	fixed := LogBins([]float64{0.5, 2, 50, 5000}, 2, 1, 100)
	if fixed[0].Lo != 1 || fixed[1].Hi != 100 || fixed[0].Count != 2 || fixed[1].Count != 2 {
		t.Fatalf("fixed range: %+v", fixed)
	}
	if LogBins([]float64{0, -1}, 5, 0, 0) != nil {
		t.Fatal("bins for no positive sample")
	}
	if one := LogBins([]float64{4, 4}, 2, 0, 0); one[0].Count+one[1].Count != 2 {
		t.Fatalf("equal samples: %v", one)
	}
}
