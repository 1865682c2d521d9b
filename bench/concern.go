package bench

import (
	"context"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"sync"
	"time"
)

// The concern probe measures what a write concern (Lattice-Replicas) and
// a quorum read (?quorum=) cost, after the workload has settled, so that
// it measures latency, not queueing: each region sends, every
// ProbeInterval, the next request of a cycle of a write (a cart add)
// with Lattice-Replicas 1, a read with quorum 1, then the same with 2
// and 3 (at most the number of regions), each request on its own, open
// loop. The reads are of a cart the region's probe wrote a few cycles
// earlier, so that they measure a quorum read of regions that agree, not
// one racing a write (which adds a read repair's round trip). Each is
// set against its floor: the round trip to the nearest other region for
// 2, to the farthest for 3.

// Probe defaults.
const (
	// DefaultProbe is how long the concern probe runs by default
	// (DefaultConfig, the --probe flag).
	DefaultProbe = 3 * time.Second
	// ProbeInterval is the time between two requests of the probe at
	// one region.
	ProbeInterval = 20 * time.Millisecond
	// MaxConcern is the largest write concern and quorum probed.
	MaxConcern = 3
	// probeCarts is the number of carts each region's probe writes and
	// reads, in turn: the writes of a cycle go to one cart, its reads to
	// the cart written probeReadBehind cycles earlier, whose writes are
	// answered by then (a cycle is 2 × MaxConcern × ProbeInterval).
	probeCarts      = 8
	probeReadBehind = 4
)

// ConcernResult is what the concern probe measured.
type ConcernResult struct {
	// DurationS is how long the probe ran; IntervalMS the time between
	// two of its requests at one region.
	DurationS  float64 `json:"duration_s"`
	IntervalMS float64 `json:"interval_ms"`
	// Regions holds, per answering region, a row per concern level.
	Regions []RegionConcerns `json:"regions"`
}

// RegionConcerns is the probe's latencies at one answering region.
type RegionConcerns struct {
	Region string         `json:"region"`
	Levels []ConcernLevel `json:"levels"`
}

// ConcernLevel is the latency of writes with Lattice-Replicas N and of
// reads with quorum N at one region, answered 2xx, from sending the
// request to reading the answer.
type ConcernLevel struct {
	N int `json:"n"`
	// FloorMS is the emulated round trip to the (N−1)-th nearest other
	// region: the least a concern of N adds to a local write or read (0
	// for N = 1).
	FloorMS float64 `json:"floor_ms"`
	Write   Summary `json:"write"`
	Read    Summary `json:"read"`
	// WriteOverFloorP50MS and ReadOverFloorP50MS are the p50 less the
	// floor.
	WriteOverFloorP50MS float64 `json:"write_over_floor_p50_ms"`
	ReadOverFloorP50MS  float64 `json:"read_over_floor_p50_ms"`
	// WriteErrors and ReadErrors count the requests not answered 2xx
	// (replication_timeout, quorum_unavailable, no answer), by code.
	WriteErrors map[string]int `json:"write_errors,omitempty"`
	ReadErrors  map[string]int `json:"read_errors,omitempty"`
}

// concernFloors returns, per region of names, the floor of each concern
// level 1..levels: 0, then twice the one-way latency (latency, as
// LatencyMatrix; nil is none) to the nearest other region, the next
// nearest, and so on.
func concernFloors(names []string, latency map[string]int, levels int) map[string][]float64 {
	out := map[string][]float64{}
	for _, a := range names {
		var oneWay []int
		for _, b := range names {
			if a == b {
				continue
			}
			oneWay = append(oneWay, oneWayMS(latency, a, b))
		}
		slices.Sort(oneWay)
		floors := make([]float64, levels)
		for n := 2; n <= levels; n++ {
			floors[n-1] = float64(2 * oneWay[n-2])
		}
		out[a] = floors
	}
	return out
}

// probeSample is one request of the probe.
type probeSample struct {
	region, n int
	write     bool
	call      call
}

// probeConcerns runs the concern probe for d against every region of
// names and summarizes it.
func probeConcerns(ctx context.Context, cl *client, names []string, latency map[string]int, d time.Duration) *ConcernResult {
	levels := min(MaxConcern, len(names))
	floors := concernFloors(names, latency, levels)
	var mu sync.Mutex
	var samples []probeSample
	var wg sync.WaitGroup
	start := time.Now()
	for r, name := range names {
		wg.Go(func() {
			tick := time.NewTicker(ProbeInterval)
			defer tick.Stop()
			for i := 0; time.Since(start) < d; i++ {
				n, write := i/2%levels+1, i%2 == 0
				cycle := i / (2 * levels)
				// A read is of the cart written probeReadBehind cycles
				// before: none in the first cycles.
				if write || cycle >= probeReadBehind {
					if !write {
						cycle += probeCarts - probeReadBehind
					}
					cart := "/v1/carts/" + url.PathEscape("probe-"+name+"-"+strconv.Itoa(cycle%probeCarts))
					wg.Go(func() {
						var c call
						if write {
							hdr := http.Header{"Lattice-Replicas": {strconv.Itoa(n)}}
							c = cl.doHeader(ctx, r, "POST", cart+"/items", hdr, map[string]any{"sku": "probe", "qty": 1}, nil)
						} else {
							c = cl.do(ctx, r, "GET", cart+"?quorum="+strconv.Itoa(n), nil, nil)
						}
						mu.Lock()
						samples = append(samples, probeSample{region: r, n: n, write: write, call: c})
						mu.Unlock()
					})
				}
				select {
				case <-tick.C:
				case <-ctx.Done():
					return
				}
			}
		})
	}
	wg.Wait()
	res := &ConcernResult{DurationS: time.Since(start).Seconds(), IntervalMS: ms(ProbeInterval)}
	for r, name := range names {
		rc := RegionConcerns{Region: name}
		for n := 1; n <= levels; n++ {
			lv := ConcernLevel{N: n, FloorMS: floors[name][n-1]}
			var w, rd []float64
			for _, s := range samples {
				if s.region != r || s.n != n {
					continue
				}
				lat, errs := &rd, &lv.ReadErrors
				if s.write {
					lat, errs = &w, &lv.WriteErrors
				}
				if s.call.Outcome == OK {
					*lat = append(*lat, ms(s.call.Latency))
					continue
				}
				if *errs == nil {
					*errs = map[string]int{}
				}
				(*errs)[s.call.Code]++
			}
			lv.Write, lv.Read = Summarize(w), Summarize(rd)
			// Only from answers: a level with none has no figure (not
			// minus the floor).
			if lv.Write.Count > 0 {
				lv.WriteOverFloorP50MS = lv.Write.P50 - lv.FloorMS
			}
			if lv.Read.Count > 0 {
				lv.ReadOverFloorP50MS = lv.Read.P50 - lv.FloorMS
			}
			rc.Levels = append(rc.Levels, lv)
		}
		res.Regions = append(res.Regions, rc)
	}
	return res
}
