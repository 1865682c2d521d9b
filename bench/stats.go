package bench

import (
	"math"
	"slices"
	"time"
)

// Summary describes a set of samples, in milliseconds.
type Summary struct {
	Count int     `json:"count"`
	Min   float64 `json:"min_ms"`
	Mean  float64 `json:"mean_ms"`
	P50   float64 `json:"p50_ms"`
	P90   float64 `json:"p90_ms"`
	P99   float64 `json:"p99_ms"`
	// P999 is set from MinP999Samples samples on (0 below: with fewer,
	// the 99.9th percentile is only the largest sample).
	P999 float64 `json:"p999_ms"`
	Max  float64 `json:"max_ms"`
}

// Summarize returns the summary of samples (milliseconds); every field is
// 0 for no samples. It does not modify samples.
func Summarize(samples []float64) Summary {
	if len(samples) == 0 {
		return Summary{}
	}
	s := slices.Clone(samples)
	slices.Sort(s)
	sum := 0.0
	for _, v := range s {
		sum += v
	}
	var p999 float64
	if len(s) >= MinP999Samples {
		p999 = Percentile(s, 99.9)
	}
	return Summary{
		Count: len(s),
		Min:   s[0],
		Mean:  sum / float64(len(s)),
		P50:   Percentile(s, 50),
		P90:   Percentile(s, 90),
		P99:   Percentile(s, 99),
		P999:  p999,
		Max:   s[len(s)-1],
	}
}

// Percentile returns the p-th percentile (0 < p ≤ 100) of sorted by the
// nearest-rank method: the smallest sample that at least p % of the
// samples are less than or equal to. It returns 0 for no samples.
func Percentile(sorted []float64, p float64) float64 {
	n := len(sorted)
	if n == 0 {
		return 0
	}
	// The epsilon keeps 99.9 % of 1,000 at rank 999 despite rounding.
	rank := int(math.Ceil(p/100*float64(n) - 1e-9))
	return sorted[min(max(rank, 1), n)-1]
}

// Point is a point of an empirical CDF: the fraction of samples ≤ X.
type Point struct {
	X float64 `json:"x"`
	F float64 `json:"f"`
}

// CDF returns the empirical cumulative distribution of samples: one
// point per distinct value, X increasing, F the fraction of samples ≤ X
// (the last F is 1). It returns nil for no samples.
func CDF(samples []float64) []Point {
	if len(samples) == 0 {
		return nil
	}
	s := slices.Clone(samples)
	slices.Sort(s)
	var pts []Point
	n := float64(len(s))
	for i, v := range s {
		if i+1 < len(s) && s[i+1] == v {
			continue
		}
		pts = append(pts, Point{X: v, F: float64(i+1) / n})
	}
	return pts
}

// Downsample returns at most n points of a CDF, evenly spaced in F,
// always keeping the first and last point; a CDF of n points or fewer is
// returned as is.
func Downsample(pts []Point, n int) []Point {
	if len(pts) <= n || n < 2 {
		return pts
	}
	out := make([]Point, 0, n)
	next := 0.0
	step := 1.0 / float64(n-1)
	for i, p := range pts {
		if i == 0 || i == len(pts)-1 || p.F >= next {
			out = append(out, p)
			for next <= p.F {
				next += step
			}
		}
	}
	return out
}

// ms returns d in milliseconds.
func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// MinP999Samples is the fewest samples a 99.9th percentile is reported
// from: with fewer, the nearest rank is the largest sample.
const MinP999Samples = 1000

// p999 formats s's 99.9th percentile, or "–" when s has too few samples
// for one.
func p999(s Summary) string {
	if s.Count < MinP999Samples {
		return "–"
	}
	return f(s.P999)
}
