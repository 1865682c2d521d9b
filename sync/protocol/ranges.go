package protocol

import (
	"encoding/binary"
	"math"
)

// Rounds that open with bucket ranges. The initiator's first digest
// carries every bucket's fingerprint (cut to 16 bits after mixing in the
// digest's salt) and key count, in ranges of buckets. The responder
// answers each bucket whose fingerprint differs with a set sketch of its
// keys there (sketch.go), sized for the difference the two counts
// suggest, or with the answers the tree has (a list of a bucket of few
// keys, word that one side holds none there, a split of a bucket the
// sketch of which would cost more than the tree). The initiator decodes
// each sketch against its own keys of the bucket and knows at once
// which slots to pull and which keys to push: states flow after one
// round trip, whatever the number of keys. A sketch that fails to
// decode is asked for again twice as wide (from the widest sketch on,
// the bucket is split as in the tree).
//
// Nothing is missed for a cut fingerprint: for every range it answered,
// the responder sends the XOR of its whole fingerprints of the buckets
// it found equal, and the initiator compares it with the XOR of its own
// for those buckets; a coincidence makes them differ (but for odds of
// 2^-64), and the range goes again with a fresh salt. A decoded sketch
// is exact but for odds of 2^-64 (sketch.go).

// aeSketch is a peer's sketch waiting to be decoded.
type aeSketch struct {
	w    Sketch
	salt uint64
}

// maxRetries bounds the ranges a round sends again (sketches that did
// not decode, coincidences, buckets the peer could not load).
func (p *Protocol) maxRetries() int { return 2*p.cfg.Buckets + 64 }

// answerRanges answers a digest of bucket ranges (see onDigest).
func (p *Protocol) answerRanges(pr *peer, r *aeResp, m *Message) {
	salt := roundSalt(m.Round, m.Step)
	counts := make([][]uint32, len(m.Ranges))
	for i := range m.Ranges {
		counts[i] = rangeCounts(&m.Ranges[i])
	}
	fp := func(i int, b uint64) uint16 {
		return binary.BigEndian.Uint16(m.Ranges[i].FPs[rangeFP*(b-m.Ranges[i].Lo):])
	}
	fit := len(m.Ranges)
	v, err := p.loadViewOf(func(cs []uint32, digest []uint64) []uint64 {
		l := loadBudget{counts: cs, answering: true}
		for i, w := range m.Ranges {
			var need []uint64
			for b := w.Lo; b < w.Hi && b < uint64(len(digest)); b++ {
				if cutFP(digest[b], salt) == fp(i, b) || counts[i][b-w.Lo] == 0 || (cs != nil && cs[b] == 0) {
					continue // equal, or one side holds nothing: no keys needed
				}
				need = append(need, b)
			}
			if !l.add(need, i == 0) {
				fit = i
				break
			}
		}
		return l.out
	})
	if err != nil {
		p.err = err
		return
	}
	if len(v.snap.Buckets) != p.cfg.Buckets {
		return
	}
	limit := p.listLimit()
	var nodes []RangeNode
	var sketches []Sketch
	var eq []uint64
	entries := 0
	for i, w := range m.Ranges[:fit] {
		var x uint64
		for b := w.Lo; b < w.Hi; b++ {
			h := v.snap.Buckets[b]
			if cutFP(h, salt) == fp(i, b) {
				x ^= h
				continue
			}
			lo, hi := bucketStart(b), bucketStart(b+1)
			loaded := v.loaded(lo, hi)
			var ours uint64
			switch {
			case v.snap.Counts != nil:
				ours = uint64(v.snap.Counts[b])
			case loaded:
				ours = uint64(len(v.keys[b]))
			default:
				ours = math.MaxUint32 // unknown
			}
			theirs := uint64(counts[i][b-w.Lo])
			switch {
			case ours == 0:
				nodes = append(nodes, RangeNode{Lo: lo, Hi: hi, List: true, Counts: []uint32{0}})
				continue
			case theirs == 0:
				nodes = append(nodes, RangeNode{Lo: lo, Hi: hi, Counts: []uint32{uint32(min(ours, math.MaxUint32))}})
				continue
			case !loaded:
				sketches = append(sketches, Sketch{Bucket: b}) // ask again
				continue
			}
			ours = uint64(len(v.keys[b]))
			var a RangeNode
			var s *Sketch
			cost := 0
			if ours <= uint64(limit) {
				a = p.listNode(v, lo, hi)
				cost = len(a.Hashes)
			} else {
				n := int(min(max(ours, theirs)-min(ours, theirs), MaxSketchWidth*sketchTables))
				if n == 0 {
					n = 2 // one key held differently
				}
				k, wd := sketchSize(n)
				if w.Width > 0 {
					k, wd = sketchTables, max(wd, int(w.Width))
				}
				if k*wd*sketchCell > int(ours)*(rangeFP+9) {
					// A sketch would cost more than the tree below.
					a = v.split(lo, hi)
					cost = len(a.Hashes)
				} else {
					sk := newSketch(k, wd, bucketSalt(salt, b))
					for _, key := range v.keys[b] {
						sk.add(uint32(key.slot), key.hash, 1)
					}
					s = &Sketch{Bucket: b, Width: uint32(wd), Cells: sk.encode(), Sum: sk.sum}
					cost = k * wd
				}
			}
			if entries+cost > MaxNodeEntries {
				sketches = append(sketches, Sketch{Bucket: b}) // no room: ask again
				continue
			}
			entries += cost
			if s != nil {
				sketches = append(sketches, *s)
			} else {
				nodes = append(nodes, a)
			}
		}
		eq = append(eq, x)
	}
	d := &Message{Kind: KindDiff, Round: m.Round, Step: m.Step, Of: requestID(m), Run: p.run, Nodes: nodes, Sketches: sketches, Eq: eq, Next: uint64(fit)}
	if m.Step == 1 {
		d.Applied, d.Homes = p.wire(&v.snap.Applied), p.cfg.Homes
		p.noteClaim(pr, m.Round, &v.snap.Applied)
	}
	if r.round == m.Round {
		r.heard = p.now
		if len(r.steps) < maxRecorded {
			r.steps[m.Step] = true
		}
	}
	p.send(pr, d)
}

// takeRanges takes the peer's answer to a digest of bucket ranges: it
// sends again the ranges not answered and those whose equal buckets do
// not check, and queues the answers of the differing buckets.
func (p *Protocol) takeRanges(ae *aeRound, st *aeStep, m *Message) {
	done := min(m.Next, uint64(len(st.ranges)), uint64(len(m.Eq)))
	for _, r := range st.ranges[done:] {
		p.again(ae, r)
	}
	answered := map[uint64]bool{}
	in := func(b uint64) bool {
		for _, r := range st.ranges[:done] {
			if r.lo <= b && b < r.hi {
				return true
			}
		}
		return false
	}
	for _, n := range m.Nodes {
		b := n.Lo >> slotBits
		if n.Lo != bucketStart(b) || n.Hi != bucketStart(b+1) || !in(b) || answered[b] {
			continue // not an answer of this version
		}
		answered[b] = true
		ae.answers = append(ae.answers, n)
	}
	for _, s := range m.Sketches {
		b := s.Bucket
		if !in(b) || answered[b] {
			continue
		}
		answered[b] = true
		if s.Width == 0 {
			p.againBucket(ae, st, b, 0)
			continue
		}
		ae.sketches = append(ae.sketches, aeSketch{w: s, salt: bucketSalt(st.salt, b)})
	}
	for i, r := range st.ranges[:done] {
		var x uint64
		for b := r.lo; b < r.hi; b++ {
			if !answered[b] {
				x ^= r.fps[b-r.lo]
			}
		}
		if x != m.Eq[i] {
			// A cut fingerprint hid a difference (or the peer's state
			// moved) among the buckets the peer found equal: those go
			// again. The others are answered: their keys are on their
			// way, and asking for them again would ship them twice.
			p.againUnanswered(ae, r, answered)
		}
	}
}

// againUnanswered queues again, as one retry of the round, the runs of r's
// buckets that the peer did not answer.
func (p *Protocol) againUnanswered(ae *aeRound, r *rangeReq, answered map[uint64]bool) {
	if ae.retries >= p.maxRetries() {
		ae.final = false
		return
	}
	ae.retries++
	for b := r.lo; b < r.hi; {
		if answered[b] {
			b++
			continue
		}
		e := b
		for e < r.hi && !answered[e] {
			e++
		}
		ae.rqueue = append(ae.rqueue, &rangeReq{lo: b, hi: e, fps: r.fps[b-r.lo : e-r.lo], counts: r.counts[b-r.lo : e-r.lo], width: r.width})
		b = e
	}
}

// again queues a range to be sent again, unless the round sent too many
// again already (it is then not final).
func (p *Protocol) again(ae *aeRound, r *rangeReq) {
	if ae.retries >= p.maxRetries() {
		ae.final = false
		return
	}
	ae.retries++
	ae.rqueue = append(ae.rqueue, r)
}

// againBucket queues bucket b of a step's ranges again, its sketches at
// least width wide.
func (p *Protocol) againBucket(ae *aeRound, st *aeStep, b uint64, width int) {
	for _, r := range st.ranges {
		if r.lo <= b && b < r.hi {
			p.again(ae, &rangeReq{lo: b, hi: b + 1, fps: []uint64{r.fps[b-r.lo]}, counts: []uint32{r.counts[b-r.lo]}, width: uint32(width)})
			return
		}
	}
}

// takeSketches decodes the peer's sketches against our keys, a batch of
// buckets one snapshot loads at a time (at most four a call).
func (p *Protocol) takeSketches(pr *peer) {
	ae := pr.ae
	for batch := 0; batch < 4 && len(ae.sketches) > 0; batch++ {
		fit := len(ae.sketches)
		v, err := p.loadView(func(counts []uint32) []uint64 {
			l := loadBudget{counts: counts}
			for i, s := range ae.sketches {
				if !l.add([]uint64{s.w.Bucket}, i == 0) {
					fit = i
					break
				}
			}
			return l.out
		})
		if err != nil {
			p.err = err
			p.abandonAE(pr)
			return
		}
		if len(v.snap.Buckets) != p.cfg.Buckets {
			p.abandonAE(pr)
			return
		}
		todo := ae.sketches[:fit]
		ae.sketches = ae.sketches[fit:]
		ae.counts = v.snap.Counts
		for _, s := range todo {
			p.takeSketch(ae, v, s)
		}
	}
}

// takeSketch decodes one sketch of the peer's against our keys of its
// bucket: it pulls the slots where the peer holds what we do not and
// pushes our keys the peer does not hold.
func (p *Protocol) takeSketch(ae *aeRound, v *view, s aeSketch) {
	b := s.w.Bucket
	lo := bucketStart(b)
	d := decodeSketch(&s.w, s.salt)
	if d == nil {
		return
	}
	ours := newSketch(d.k, d.m, s.salt)
	keys := v.keys[b]
	for _, k := range keys {
		ours.add(uint32(k.slot), k.hash, 1)
	}
	d.subtract(ours)
	plus, minus, ok := d.peel()
	if !ok {
		wd := 2 * d.m
		if d.k == 1 {
			wd = max(wd, 3)
		}
		if wd > MaxSketchWidth || ae.retries >= p.maxRetries() {
			// Too wide, or the round has sent as many ranges again as it
			// may: the tree below, which always makes progress (a round
			// whose every bucket differs by keys changed on both sides
			// otherwise spent its retries on sketches too narrow to
			// decode, shipped nothing, and the next round did the same).
			ae.queue = append(ae.queue, v.split(lo, bucketStart(b+1)))
			return
		}
		var c uint32
		if v.snap.Counts != nil {
			c = v.snap.Counts[b]
		} else {
			c = uint32(len(keys))
		}
		p.again(ae, &rangeReq{lo: b, hi: b + 1, fps: []uint64{v.snap.Buckets[b]}, counts: []uint32{c}, width: uint32(wd)})
		return
	}
	theirs := map[uint32][]uint64{}
	for _, e := range plus {
		theirs[e.slot] = append(theirs[e.slot], e.hash)
	}
	for _, e := range minus {
		for _, k := range v.within(lo+uint64(e.slot), lo+uint64(e.slot)+1) {
			if k.hash != e.hash {
				continue
			}
			ae.pushKeys = append(ae.pushKeys, k.key)
			if t := theirs[e.slot]; len(t) == 1 && len(ae.ours) < 4*MaxUnrepaired {
				ae.ours[k.key], ae.theirs[k.key] = k.hash, t[0]
			}
		}
	}
	for _, e := range plus {
		if t := theirs[e.slot]; t != nil {
			ae.pullSpan(lo+uint64(e.slot), lo+uint64(e.slot)+1, uint64(len(t)))
			delete(theirs, e.slot)
		}
	}
}
