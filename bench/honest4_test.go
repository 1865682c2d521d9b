package bench

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/latticedb/lattice/region"
)

// TestConcernOverFloorLeftOutWithoutAnswers checks that a concern level
// whose requests were all refused reports no "p50 − floor": with no 2xx
// answer there is no p50, and p50 (0) − floor is a negative figure that
// reads as a write or read faster than the emulated round trip. The
// convergence table leaves the same figure at 0 for a pair with no
// sample (Tracker.Pairs).
func TestConcernOverFloorLeftOutWithoutAnswers(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/problem+json")
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprint(w, `{"code":"replication_timeout"}`)
	}))
	defer srv.Close()
	names := RegionNames(3)
	urls := [][]string{{srv.URL}, {srv.URL}, {srv.URL}}
	cl := newClient(urls, 8, 2*time.Second)
	defer cl.close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res := probeConcerns(ctx, cl, names, LatencyMatrix(names), 300*time.Millisecond)
	checked := 0
	for _, rc := range res.Regions {
		for _, lv := range rc.Levels {
			if lv.FloorMS == 0 {
				continue
			}
			if lv.Write.Count == 0 {
				checked++
				if lv.WriteOverFloorP50MS != 0 {
					t.Errorf("%s N=%d: no 2xx write (errors %v), write p50 − floor = %v ms, want 0 (not measured)",
						rc.Region, lv.N, lv.WriteErrors, lv.WriteOverFloorP50MS)
				}
			}
			if lv.Read.Count == 0 {
				checked++
				if lv.ReadOverFloorP50MS != 0 {
					t.Errorf("%s N=%d: no 2xx read (errors %v), read p50 − floor = %v ms, want 0 (not measured)",
						rc.Region, lv.N, lv.ReadErrors, lv.ReadOverFloorP50MS)
				}
			}
		}
	}
	if checked == 0 {
		t.Fatalf("no level without answers and with a floor: %+v", res)
	}
}

// TestEscrowRefusedGoalValueMatchesVerdict checks that the goal "holds
// refused while the stock was available elsewhere" shows, as this run's
// value, the share it is judged by. The verdict counts the refusals whose
// stock could not be read against the goal; the value shown beside it
// must too, or summary.md and results.json show "0.00 %" against a
// target of "≤ 1 %" and say "not met".
func TestEscrowRefusedGoalValueMatchesVerdict(t *testing.T) {
	names := []string{"us-east", "eu-west", "ap-south"}
	sched := &Schedule{Hot: []string{"hot-0", "esc-us-east-0"}, Escrow: []string{"esc-us-east-0"}}
	var results []opResult
	add := func(op Op, r opResult) {
		op.Index = len(sched.Ops)
		sched.Ops = append(sched.Ops, op)
		results = append(results, r)
	}
	hold := Op{Kind: Reserve, At: time.Second, SKU: "esc-us-east-0", Region: 0, Home: 0, FromHome: true, Escrow: true, Qty: 1, Commit: true}
	for i := range 9 {
		add(hold, opResult{First: call{Outcome: OK, Latency: time.Millisecond}, Second: call{Outcome: OK, Latency: time.Millisecond}, ID: fmt.Sprintf("us-east:%d", i)})
	}
	// One refusal whose stock read failed: unchecked.
	add(hold, opResult{First: call{Outcome: Refused, Code: "insufficient_stock", Latency: time.Millisecond}})
	e := analyzeEscrow(sched, results, names, func(a, b int) float64 { return 68 }, 0, map[string]int64{}, map[string]int64{})
	if e.Escrow.Holds != 10 || e.Escrow.RefusalsUnchecked != 1 {
		t.Fatalf("escrow holds %d unchecked %d, want 10 and 1", e.Escrow.Holds, e.Escrow.RefusalsUnchecked)
	}
	var g *Goal
	for i := range e.Goals {
		if e.Goals[i].Kind == "escrow" && strings.HasPrefix(e.Goals[i].Goal, "holds refused") {
			g = &e.Goals[i]
		}
	}
	if g == nil {
		t.Fatalf("no refusal goal in %+v", e.Goals)
	}
	want := 0.1 // (0 refused while available + 1 unchecked) / 10 holds
	if g.Met || g.Value != want {
		t.Errorf("refusal goal: value %v met %v, want value %v (the share judged) and not met", g.Value, g.Met, want)
	}
	if !g.Met && g.Value <= EscrowRefusedGoal {
		t.Errorf("refusal goal shows %s against target %s yet is not met", pct(g.Value), g.Target)
	}
}

// TestDownsampleKeepsAtMostN checks, over random CDFs, that Downsample
// returns at most n points, its first and its last, as it documents.
func TestDownsampleKeepsAtMostN(t *testing.T) {
	const seed = 4
	rng := rand.New(rand.NewPCG(seed, seed))
	for trial := range 3000 {
		size := 2 + rng.IntN(3000)
		samples := make([]float64, size)
		for i := range samples {
			samples[i] = float64(rng.IntN(size * 2))
		}
		cdf := CDF(samples)
		n := 2 + rng.IntN(300)
		got := Downsample(cdf, n)
		if len(cdf) > n && len(got) > n {
			t.Fatalf("seed %d trial %d: %d points downsampled to n=%d gave %d points", seed, trial, len(cdf), n, len(got))
		}
		if got[0] != cdf[0] || got[len(got)-1] != cdf[len(cdf)-1] {
			t.Fatalf("seed %d trial %d: first/last %v %v, want %v %v", seed, trial, got[0], got[len(got)-1], cdf[0], cdf[len(cdf)-1])
		}
	}
}

// TestSummaryP999NotClaimedFromFewSamples checks that summary.md does
// not print a p99.9 for a set of fewer than 1,000 samples as if it were
// measured: with 100 samples the nearest-rank p99.9 is just the maximum,
// so the table should mark it (say "–") rather than show a figure that
// reads as a tail percentile.
func TestSummaryP999NotClaimedFromFewSamples(t *testing.T) {
	samples := make([]float64, 100)
	for i := range samples {
		samples[i] = float64(i + 1)
	}
	s := Summarize(samples)
	r := &Result{Regions: RegionNames(3), DurationS: 1, WriteLatency: s}
	md := r.Markdown()
	row := fmt.Sprintf("| all local writes | %d | %s | %s | %s | %s |", s.Count, f(s.P50), f(s.P99), f(s.P999), f(s.Max))
	if strings.Contains(md, row) {
		t.Errorf("summary.md reports p99.9 = %s ms from %d samples (it is the max, %s ms): %q", f(s.P999), s.Count, f(s.Max), row)
	}
}

// TestFsyncsOverThresholdHasABucket checks that the duration past which
// the report counts a slow fsync (SlowFsync: "fsyncs > 50 ms" in
// summary.md, fsyncs_over_50ms in results.json) is a bound of the fsync
// histogram's buckets, so that the count is exact. It was headed 51 ms
// (51.2, a bound the buckets no longer have) while counting above 50.
func TestFsyncsOverThresholdHasABucket(t *testing.T) {
	if !slices.ContainsFunc(region.FsyncBuckets, func(b float64) bool { return math.Abs(b-SlowFsync) < 1e-9 }) {
		t.Errorf("slow fsyncs are counted over %v ms, not a bound of the histogram's buckets %v", SlowFsync*1000, region.FsyncBuckets)
	}
	r := &Result{Regions: RegionNames(1), DurationS: 1, Stores: []StoreStats{{Region: "us-east", Fsyncs: 1}}}
	if md := r.Markdown(); !strings.Contains(md, fmt.Sprintf("fsyncs > %v ms", SlowFsync*1000)) {
		t.Errorf("summary.md does not head the slow fsyncs with their threshold (%v ms)", SlowFsync*1000)
	}
}

// TestLogBinsPutsABinsLowerBoundInThatBin checks that each bin's lower
// bound, a sample of that value, is counted in that bin ([Lo, Hi)), not
// in the one before, as LogBins documents.
func TestLogBinsPutsABinsLowerBoundInThatBin(t *testing.T) {
	for _, r := range []struct {
		lo, hi float64
		n      int
	}{{1, 1000, 60}, {0.3, 250, 60}, {2, 7, 10}, {0.05, 3000, 60}} {
		bins := LogBins([]float64{r.lo, r.hi}, r.n, r.lo, r.hi)
		for i := 1; i < len(bins); i++ {
			v := bins[i].Lo
			got := LogBins([]float64{v}, r.n, r.lo, r.hi)
			for j, b := range got {
				if b.Count == 1 && j != i {
					t.Errorf("lo %v hi %v n %d: sample %v (bin %d's lower bound, [%v, %v)) counted in bin %d [%v, %v)",
						r.lo, r.hi, r.n, v, i, bins[i].Lo, bins[i].Hi, j, b.Lo, b.Hi)
				}
			}
		}
	}
}
