package bench

import (
	"sync"
	"time"

	"github.com/latticedb/lattice/crdt"
	"github.com/latticedb/lattice/sync/protocol"
)

// Tracker measures cross-region convergence exactly, dot by dot: it
// records when each local write became durable at its origin (its
// acknowledgement, from replication's publish hook) and when each remote
// region durably applied it (the apply hook), and gives one convergence
// time per (write, remote region). Its methods are safe for concurrent
// use; the hooks only take a lock and write to maps.
//
// In a partitioned cluster every partition of a region is a replica of
// its own, with its own sequence of region-level dots under the region's
// replica id: origin's dot 7 exists once per partition. A write is then
// known by (origin, partition, seq). The publish hook's delta names its
// partition (its keys'); the apply hook's ranges do not, so Applied finds
// the partition among those that published (origin, seq) and that region
// has not been seen to apply: the one whose applied causal context now
// holds the dot (see NewPartitionedTracker).
type Tracker struct {
	regions    []string
	index      map[string]int
	partitions int
	applied    func(region, part int) crdt.Context

	mu    sync.Mutex
	since time.Time
	dots  map[dotKey]*dotRec
	// parts lists, per (origin, seq), the partitions that published it
	// (partitioned trackers only).
	parts map[seqKey][]int
}

type dotKey struct {
	origin int
	part   int
	seq    uint64
}

type seqKey struct {
	origin int
	seq    uint64
}

// Has reports whether partition part of region (indexes into the
// tracker's regions) holds origin's region-level dot seq.
type Has func(region, part, origin int, seq uint64) bool

// dotRec is what the tracker knows of one dot. A zero time means "not
// seen".
type dotRec struct {
	published time.Time
	applied   []time.Time // by region index
}

// NewTracker returns a tracker of the given regions, each one replica
// (one partition).
func NewTracker(regions []string) *Tracker {
	return NewPartitionedTracker(regions, 1, nil)
}

// NewPartitionedTracker returns a tracker of the given regions of a
// cluster of partitions partitions. applied returns the applied causal
// context of partition part at region (its region-level dots, whose
// replica ids are the region names): Applied reads it, once per
// partition and call, to tell which partition an apply hook's dots
// belong to. It is not used when partitions is 1.
func NewPartitionedTracker(regions []string, partitions int, applied func(region, part int) crdt.Context) *Tracker {
	idx := make(map[string]int, len(regions))
	for i, r := range regions {
		idx[r] = i
	}
	return &Tracker{regions: regions, index: idx, partitions: max(partitions, 1), applied: applied,
		dots: make(map[dotKey]*dotRec), parts: make(map[seqKey][]int)}
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

// Published records that origin's write seq of partition part was
// durable (acknowledged) at at.
func (t *Tracker) Published(origin string, part int, seq uint64, at time.Time) {
	o, ok := t.index[origin]
	if !ok || part < 0 || part >= t.partitions {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	k := dotKey{o, part, seq}
	if t.partitions > 1 && t.dots[k] == nil {
		sk := seqKey{o, seq}
		t.parts[sk] = append(t.parts[sk], part)
	}
	r := t.rec(k)
	if r.published.IsZero() {
		r.published = at
	}
}

// Applied records that region durably applied the dots of ranges at at.
// Only the first application of a dot at a region counts. In a
// partitioned cluster a dot counts for every partition that published it,
// that region was not yet seen to apply, and whose applied context at
// region holds it: the partition that applied it, and, rarely, another
// that applied its own dot of the same number at the same moment or by
// anti-entropy (whose time is then this one).
func (t *Tracker) Applied(region string, ranges []protocol.DotRange, at time.Time) {
	ri, ok := t.index[region]
	if !ok {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	var ctxs map[int]*crdt.Context // by partition, read once per call
	for _, rg := range ranges {
		// The origin is a replica id: its region's name, with the
		// incarnation a region of several starts at (NAME+K).
		o, ok := t.index[crdt.ReplicaID(rg.Origin).Region()]
		if !ok || rg.To < rg.From {
			continue
		}
		for seq := rg.From; seq <= rg.To; seq++ {
			if t.partitions == 1 {
				r := t.rec(dotKey{o, 0, seq})
				if r.applied[ri].IsZero() {
					r.applied[ri] = at
				}
				continue
			}
			for _, p := range t.parts[seqKey{o, seq}] {
				r := t.dots[dotKey{o, p, seq}]
				if r == nil || !r.applied[ri].IsZero() {
					continue
				}
				c, ok := ctxs[p]
				if !ok {
					if ctxs == nil {
						ctxs = map[int]*crdt.Context{}
					}
					applied := t.applied(ri, p)
					c = &applied
					ctxs[p] = c
				}
				if c.Contains(crdt.Dot{Replica: crdt.ReplicaID(rg.Origin), Counter: seq}) {
					r.applied[ri] = at
				}
			}
		}
	}
}

// Pending returns how many (published dot, remote region) pairs are
// neither seen applied nor reported present by has, which tells whether
// a region's partition holds a dot (its applied causal context).
func (t *Tracker) Pending(has Has) int {
	return t.PendingBy(has, func(int) {})
}

// PendingBy is Pending that also calls missing with the index of each
// region that lacks a dot (once per dot it lacks).
func (t *Tracker) PendingBy(has Has, missing func(region int)) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := 0
	for k, r := range t.dots {
		if r.published.IsZero() {
			continue
		}
		for ri := range t.regions {
			if ri != k.origin && r.applied[ri].IsZero() && !has(ri, k.part, k.origin, k.seq) {
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
func (t *Tracker) Pairs(has Has, oneWay func(a, b string) time.Duration) (pairs []PairResult, measured int) {
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
			case has(ri, k.part, k.origin, k.seq):
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
