package bench

import (
	"sync"
	"time"

	"github.com/latticedb/lattice/sync/protocol"
)

// Tracker measures cross-region convergence exactly, dot by dot: it
// records when each local write became durable at its origin (its
// acknowledgement, from replication's publish hook) and when each remote
// region durably applied it (the apply hook), and gives one convergence
// time per (write, remote region). Its methods are safe for concurrent
// use; the hooks only take a lock and write to maps.
type Tracker struct {
	regions []string
	index   map[string]int

	mu    sync.Mutex
	since time.Time
	dots  map[dotKey]*dotRec
}

type dotKey struct {
	origin int
	seq    uint64
}

// dotRec is what the tracker knows of one dot. A zero time means "not
// seen".
type dotRec struct {
	published time.Time
	applied   []time.Time // by region index
}

// NewTracker returns a tracker of the given regions.
func NewTracker(regions []string) *Tracker {
	idx := make(map[string]int, len(regions))
	for i, r := range regions {
		idx[r] = i
	}
	return &Tracker{regions: regions, index: idx, dots: make(map[dotKey]*dotRec)}
}

// Measure makes Pairs measure only the dots published at or after since;
// earlier ones (the set-up's, the warm-up's) are still tracked for
// Pending. The zero since, the default, measures every dot.
func (t *Tracker) Measure(since time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.since = since
}

func (t *Tracker) rec(k dotKey) *dotRec {
	r := t.dots[k]
	if r == nil {
		r = &dotRec{applied: make([]time.Time, len(t.regions))}
		t.dots[k] = r
	}
	return r
}

// Published records that origin's write seq was durable (acknowledged)
// at at.
func (t *Tracker) Published(origin string, seq uint64, at time.Time) {
	o, ok := t.index[origin]
	if !ok {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	r := t.rec(dotKey{o, seq})
	if r.published.IsZero() {
		r.published = at
	}
}

// Applied records that region durably applied the dots of ranges at at.
// Only the first application of a dot at a region counts.
func (t *Tracker) Applied(region string, ranges []protocol.DotRange, at time.Time) {
	ri, ok := t.index[region]
	if !ok {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, rg := range ranges {
		o, ok := t.index[rg.Origin]
		if !ok || rg.To < rg.From {
			continue
		}
		for seq := rg.From; seq <= rg.To; seq++ {
			r := t.rec(dotKey{o, seq})
			if r.applied[ri].IsZero() {
				r.applied[ri] = at
			}
		}
	}
}

// Pending returns how many (published dot, remote region) pairs are
// neither seen applied nor reported present by has, which tells whether
// region holds origin's dot seq (the region's applied causal context).
func (t *Tracker) Pending(has func(region int, origin int, seq uint64) bool) int {
	return t.PendingBy(has, func(int) {})
}

// PendingBy is Pending that also calls missing with the index of each
// region that lacks a dot (once per dot it lacks).
func (t *Tracker) PendingBy(has func(region int, origin int, seq uint64) bool, missing func(region int)) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := 0
	for k, r := range t.dots {
		if r.published.IsZero() {
			continue
		}
		for ri := range t.regions {
			if ri != k.origin && r.applied[ri].IsZero() && !has(ri, k.origin, k.seq) {
				n++
				missing(ri)
			}
		}
	}
	return n
}

// PairResult is the convergence of the writes of one origin at one
// remote region.
type PairResult struct {
	From string `json:"from"`
	To   string `json:"to"`
	// OneWayMS is the emulated one-way latency of the pair: no write can
	// become visible at To sooner after its acknowledgement at From.
	OneWayMS float64 `json:"one_way_ms"`
	Summary
	// OverFloorP50MS is P50 − OneWayMS: what the protocol, the
	// transport and the store add to the physical floor.
	OverFloorP50MS float64 `json:"over_floor_p50_ms"`
	// ViaAntiEntropy counts writes present at To at the end that no
	// delta made visible there (anti-entropy shipped them).
	ViaAntiEntropy int `json:"via_anti_entropy"`
	// Missing counts writes never seen at To.
	Missing int `json:"missing"`
	// Samples are the convergence times (ms), for plots.
	Samples []float64 `json:"-"`
}

// Pairs returns the convergence of the measured writes per ordered pair
// of regions, in region order. has reports whether a region holds a dot
// at the end (see Pending); oneWay gives a pair's emulated latency.
func (t *Tracker) Pairs(has func(region int, origin int, seq uint64) bool, oneWay func(a, b string) time.Duration) (pairs []PairResult, measured int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := len(t.regions)
	res := make([]PairResult, n*n)
	for k, r := range t.dots {
		if r.published.IsZero() || r.published.Before(t.since) {
			continue
		}
		measured++
		for ri := range t.regions {
			if ri == k.origin {
				continue
			}
			p := &res[k.origin*n+ri]
			switch {
			case !r.applied[ri].IsZero():
				p.Samples = append(p.Samples, ms(r.applied[ri].Sub(r.published)))
			case has(ri, k.origin, k.seq):
				p.ViaAntiEntropy++
			default:
				p.Missing++
			}
		}
	}
	for a := range t.regions {
		for b := range t.regions {
			if a == b {
				continue
			}
			p := res[a*n+b]
			p.From, p.To = t.regions[a], t.regions[b]
			p.OneWayMS = ms(oneWay(p.From, p.To))
			p.Summary = Summarize(p.Samples)
			if p.Count > 0 {
				p.OverFloorP50MS = p.P50 - p.OneWayMS
			}
			pairs = append(pairs, p)
		}
	}
	return pairs, measured
}
