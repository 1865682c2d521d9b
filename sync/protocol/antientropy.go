package protocol

import (
	"cmp"
	"maps"
	"math"
	"slices"
	"time"

	"github.com/latticedb/lattice/crdt"
)

// Anti-entropy rounds. The initiator sends its applied context and the
// split of the tree's root (a digest, step 1); the responder answers each
// digest with a diff (from a snapshot of its own, step 1's with its
// applied context): for every child whose fingerprint differs, a list of
// its keys (when it holds few), a split, or word that one side holds
// nothing there. The initiator descends into what still differs with
// further digests (several in flight), compares the listed keys with its
// own, and then ships: it pushes the states of keys the responder lacks or
// holds differently (whole ranges where the responder holds nothing) and
// pulls the responder's (whole ranges where it holds nothing), within
// Config.AntiEntropyRate. A digest, a pull without an answer is sent again
// after RetransmitAfter; a round that hears nothing for
// AntiEntropyTimeout is abandoned.
//
// A round ends with objects marked Final when it covered every
// difference: the initiator then adopts the responder's applied context
// of step 1, if every answer came from the same run of the responder
// (Message.Run: one that restarted may have lost what it answered
// before); the responder adopts the initiator's, if this run of it
// answered every digest and received every push of the round.

// DefaultAntiEntropyRate is the default Config.AntiEntropyRate: 8 MiB of
// states a second with each peer.
const DefaultAntiEntropyRate = 8 << 20

const (
	// aeWindow bounds the digests and the pulls of a round in flight.
	aeWindow = 8
	// stepNodes bounds the nodes of one digest: the responder's answer to
	// each is at most TreeFanout nodes of TreeFanout entries.
	stepNodes = MaxNodeEntries / (TreeFanout * (TreeFanout + 1))
	// loadLimit is how many keys a node may hold for the initiator to
	// compare them one by one with a list; past it, it pushes the node's
	// keys but those listed with equal hashes.
	loadLimit = 1024
	// maxRecorded bounds the digests and pushes a responder records of a
	// round.
	maxRecorded = 1 << 16
)

// aeRound is a round this region runs with a peer.
type aeRound struct {
	round   uint64
	started time.Time
	heard   time.Time // when the round last made progress
	needed  bool      // the peer needed anti-entropy when the round began
	// myApplied is our applied context, sent with step 1; theirApplied
	// the peer's, from its answer to step 1 by run theirRun.
	myApplied    crdt.Context
	theirApplied crdt.Context
	theirRun     uint64
	// theirHomes is what the peer's answer to step 1 showed
	// (Message.Homes); homesShown, that Ready.Homes reported it.
	theirHomes string
	homesShown bool
	answered   bool
	final      bool // nothing was left out so far

	queue []RangeNode // nodes to send in digests
	// ranged says the round opened with bucket ranges (this version's
	// form): rqueue holds the ranges to send, sketches the peer's
	// sketches to decode, retries how many ranges went again.
	ranged   bool
	rqueue   []*rangeReq
	sketches []aeSketch
	retries  int
	counts   []uint32    // the digest's counts, as last seen here
	answers  []RangeNode // the peer's answers not yet acted on
	steps    map[uint64]*aeStep
	nextStep uint64

	pushKeys  []string
	pushSpans []pushSpan
	pushes    uint64
	pushSum   uint64 // XOR of the pushIDs of the pushes
	pullSpans []aeSpan
	pulls     map[uint64]*aePull
	nextPull  uint64
	batch     int // keys to read for one message

	// ours and theirs are the hashes of keys both sides hold
	// differently (for unrepaired keys).
	ours, theirs map[string]uint64
}

type aeStep struct {
	nodes  []RangeNode
	ranges []*rangeReq
	salt   uint64 // of its ranges' fingerprints and their sketches
	id     uint64 // requestID of its digest
	sentAt time.Time
}

type aePull struct {
	spans  []aeSpan
	id     uint64 // requestID of the pull
	sentAt time.Time
}

// requestID identifies a digest or a pull by its content, which its
// answer names (Message.Of): an answer to a message of an earlier run
// that bore the same round and step (the clock went back) answers
// something else, and is ignored.
func requestID(m *Message) uint64 {
	h := crdt.NewFNV64()
	word := func(v uint64) {
		for i := 0; i < 8; i++ {
			h.Byte(byte(v >> (8 * i)))
		}
	}
	word(uint64(m.Kind))
	word(m.Round)
	word(m.Step)
	word(uint64(len(m.Nodes)))
	for _, n := range m.Nodes {
		word(n.Lo)
		word(n.Hi)
		for _, v := range n.Hashes {
			word(v)
		}
		for _, c := range n.Counts {
			word(uint64(c))
		}
		if n.List {
			h.Byte(1)
		}
	}
	for _, r := range m.Ranges {
		word(r.Lo)
		word(r.Hi)
		h.Bytes(r.FPs)
		h.Byte(0xff)
		h.Bytes(r.Counts)
		word(uint64(r.Width))
	}
	for _, k := range m.Pull {
		h.String(k)
		h.Byte(0xff)
	}
	for _, sp := range m.Spans {
		word(sp.Lo)
		word(sp.Hi)
	}
	h.Bytes(m.Applied)
	return uint64(h)
}

// pushID is what a push of step step with a group of encoding enc adds
// (by XOR) to the sum the closing objects carry in Of.
func pushID(step uint64, enc []byte) uint64 {
	h := crdt.NewFNV64()
	for i := 0; i < 8; i++ {
		h.Byte(byte(step >> (8 * i)))
	}
	h.Bytes(enc)
	return uint64(h)
}

// pullSpans bounds the spans of one pull, spanKeys its keys.
const (
	pullSpans    = 1024
	pullSpanKeys = 4096
	// maxPullSpans bounds the pieces a round queues to pull (pullSpan):
	// 4,096 pieces of pullSpanKeys/2 keys are 8 million keys.
	maxPullSpans = 4096
)

// aeSpan is a span to pull and the keys the peer said it holds there.
type aeSpan struct {
	Span
	n uint64
}

// pullSpan queues the pull of [lo, hi), where the peer holds n keys, in
// pieces of about pullSpanKeys/2 keys, which several pulls in flight
// fetch at once.
//
// The pieces are for pulling in parallel only (a pull of a span answers a
// part and where to go on, Next), so how many are queued is bounded by
// maxPullSpans, not by the peer's count n, which a peer states as it
// likes: past the bound a span is queued whole.
func (ae *aeRound) pullSpan(lo, hi, n uint64) {
	k := max(1, (n+pullSpanKeys/2-1)/(pullSpanKeys/2))
	k = min(k, uint64(max(1, maxPullSpans-len(ae.pullSpans))))
	var bs []uint64
	if hi-lo > 1<<slotBits && aligned(lo) && aligned(hi) {
		nb := (hi - lo) >> slotBits
		k = min(k, nb)
		for i := range k + 1 {
			bs = append(bs, lo+bucketStart(nb*i/k))
		}
	} else {
		k = min(k, hi-lo, 1<<16)
		for i := range k + 1 {
			bs = append(bs, lo+(hi-lo)/k*i)
		}
		bs[k] = hi
	}
	for i := range len(bs) - 1 {
		ae.pullSpans = append(ae.pullSpans, aeSpan{Span: Span{Lo: bs[i], Hi: bs[i+1]}, n: n / k})
	}
}

// pushSpan is a range of slots whose keys are pushed, but skip.
type pushSpan struct {
	lo, hi uint64
	skip   map[string]bool
}

// aeResp is what a responder records of the peer's running round.
type aeResp struct {
	round  uint64
	heard  time.Time
	steps  map[uint64]bool
	pushes map[uint64]uint64 // step → pushID
	final  *Message          // the closing objects, while pushes are missing
	done   bool
}

// listLimit is how many keys a node may hold to be listed.
func (p *Protocol) listLimit() int { return min(ListKeys, p.cfg.MaxRoundKeys) }

// ensureRun names this run, from the clock and the incarnation.
func (p *Protocol) ensureRun() {
	if p.run == 0 {
		h := crdt.NewFNV64()
		h.String(string(p.self))
		p.run = uint64(h) ^ uint64(p.now.UnixNano()) | 1
	}
}

// tickAE abandons a round that heard nothing for AntiEntropyTimeout,
// starts one when due, and carries the running one on.
func (p *Protocol) tickAE(pr *peer) {
	if ae := pr.ae; ae != nil && p.now.Sub(ae.heard) >= p.cfg.AntiEntropyTimeout && !p.starved(pr) {
		pr.needAE = pr.needAE || ae.needed
		pr.ae = nil
	}
	if pr.ae == nil && (pr.needAE || p.now.Sub(pr.lastAE) >= p.cfg.AntiEntropyEvery) {
		p.startAE(pr)
	}
	p.pumpAE(pr)
}

// starved reports whether pr's round is waiting for its rate's tokens
// with nothing asked of the peer: its silence is the rate's, not the
// peer's, and the round is not abandoned for it.
func (p *Protocol) starved(pr *peer) bool {
	ae := pr.ae
	if p.cfg.AntiEntropyRate <= 0 || len(ae.pulls) > 0 || len(ae.steps) > 0 {
		return false
	}
	refill := pr.aeTokens + p.now.Sub(pr.aeRefilled).Seconds()*float64(p.cfg.AntiEntropyRate)
	return refill <= 0 && (len(ae.pullSpans) > 0 || len(ae.pushKeys) > 0 || len(ae.pushSpans) > 0)
}

// answering reports whether the peer runs a round with us that is not
// over: it repairs both ways, so we start none of our own meanwhile.
func (p *Protocol) answering(pr *peer) bool {
	r := pr.resp
	return r != nil && !r.done && p.now.Sub(r.heard) < p.cfg.AntiEntropyTimeout
}

// startAE opens a round with pr: our applied context and the split of
// the root, from one snapshot.
func (p *Protocol) startAE(pr *peer) {
	if p.answering(pr) {
		return
	}
	p.ensureRun()
	hi := rootHi(p.cfg.Buckets)
	v, err := p.loadView(func([]uint32) []uint64 { return needSplit(0, hi) })
	if err != nil {
		p.err = err
		return
	}
	if len(v.snap.Buckets) != p.cfg.Buckets {
		return
	}
	// Round numbers go on from the clock, so that a message of a round of
	// an earlier run names no round of this one.
	p.round = max(p.round+1, uint64(p.now.UnixNano()))
	ae := &aeRound{round: p.round, started: p.now, heard: p.now, needed: pr.needAE, myApplied: p.bounded(&v.snap.Applied),
		final: true, steps: map[uint64]*aeStep{}, pulls: map[uint64]*aePull{}, batch: 256,
		ours: map[string]uint64{}, theirs: map[string]uint64{}}
	if pr.aeRefilled.IsZero() {
		// The balance is the peer's, kept from round to round: a round
		// abandoned while it waited for tokens gives the next no fresh
		// burst.
		pr.aeTokens, pr.aeRefilled = p.burst(), p.now
	}
	if len(v.snap.Counts) == len(v.snap.Buckets) && len(v.snap.Buckets) <= MaxRangeBuckets {
		ae.ranged, ae.rqueue = true, bucketRanges(v)
	} else {
		ae.queue = []RangeNode{v.split(0, hi)}
	}
	ae.counts = v.snap.Counts
	pr.ae = ae
	pr.needAE = false
	pr.aeCount++
	p.pumpAE(pr)
}

// needSplit returns the bucket to load to split [lo, hi): its own if it
// lies within one (its children's fingerprints need its keys), none if
// its children are whole buckets.
func needSplit(lo, hi uint64) []uint64 {
	if hi-lo <= 1<<slotBits {
		return []uint64{lo >> slotBits}
	}
	return nil
}

// burst is the most bytes a round may ship at once.
func (p *Protocol) burst() float64 {
	if p.cfg.AntiEntropyRate == 0 {
		return math.Inf(1)
	}
	return float64(max(p.cfg.AntiEntropyRate/4, p.cfg.MaxMessageBytes/4))
}

// aeFirstRTO is the least wait before a round's unanswered first step is
// sent again.
const aeFirstRTO = 250 * time.Millisecond

// pumpAE carries the running round with pr on: it sends again what got
// no answer, sends digests for queued nodes, pulls and pushes within the
// rate, and ends the round when nothing is left.
func (p *Protocol) pumpAE(pr *peer) {
	ae := pr.ae
	if ae == nil || !pr.up {
		return
	}
	rto := p.cfg.RetransmitAfter
	if !ae.answered {
		// The round's first step, unanswered: it may have crossed a
		// link whose other direction was not up yet (every first
		// connection: the peer's answer had nowhere to go). It goes
		// again soon, a few round trips later, rather than after
		// RetransmitAfter.
		rto = min(rto, max(aeFirstRTO, 4*pr.srtt))
	}
	for _, id := range slices.Sorted(maps.Keys(ae.steps)) {
		if s := ae.steps[id]; p.now.Sub(s.sentAt) >= rto {
			s.sentAt = p.now
			p.sendStep(pr, id, s)
		}
	}
	for _, id := range slices.Sorted(maps.Keys(ae.pulls)) {
		if r := ae.pulls[id]; p.now.Sub(r.sentAt) >= p.cfg.RetransmitAfter {
			r.sentAt = p.now
			p.sendPull(pr, id, r)
		}
	}
	p.takeAnswers(pr)
	if pr.ae != ae {
		return // abandoned
	}
	p.takeSketches(pr)
	if pr.ae != ae {
		return
	}
	for len(ae.steps) < aeWindow && len(ae.rqueue) > 0 && (ae.answered || ae.nextStep == 0) {
		// Step 1 carries every range: the responder answers as many as
		// it loads the differing buckets of at once. Later digests carry
		// as many as it loads should every bucket differ.
		n, keys, buckets := 0, uint64(0), uint64(0)
		for _, r := range ae.rqueue {
			var k uint64
			for _, c := range r.counts {
				k += uint64(c)
			}
			if n > 0 && ((ae.nextStep > 0 && keys+k > aeLoadKeys) || buckets+r.hi-r.lo > MaxRangeBuckets) {
				break
			}
			n, keys, buckets = n+1, keys+k, buckets+r.hi-r.lo
		}
		st := &aeStep{ranges: slices.Clone(ae.rqueue[:n]), sentAt: p.now}
		ae.rqueue = ae.rqueue[n:]
		ae.nextStep++
		st.salt = roundSalt(ae.round, ae.nextStep)
		ae.steps[ae.nextStep] = st
		st.id = p.sendStep(pr, ae.nextStep, st)
	}
	for len(ae.steps) < aeWindow && len(ae.queue) > 0 && (ae.answered || ae.nextStep == 0) {
		// As many nodes as the peer answers from one snapshot (by our
		// counts, which are close to its own).
		n := min(len(ae.queue), stepNodes)
		l := loadBudget{counts: ae.counts}
		for i := range n {
			if !l.add(answerNeed(ae.counts, ae.queue[i], p.listLimit()), i == 0) {
				n = i
				break
			}
		}
		nodes := slices.Clone(ae.queue[:n])
		ae.queue = ae.queue[n:]
		ae.nextStep++
		st := &aeStep{nodes: nodes, sentAt: p.now}
		ae.steps[ae.nextStep] = st
		st.id = p.sendStep(pr, ae.nextStep, st)
	}
	if p.cfg.AntiEntropyRate > 0 {
		pr.aeTokens = min(p.burst(), pr.aeTokens+p.now.Sub(pr.aeRefilled).Seconds()*float64(p.cfg.AntiEntropyRate))
		pr.aeRefilled = p.now
	}
	for len(ae.pulls) < aeWindow && pr.aeTokens > 0 && len(ae.pullSpans) > 0 {
		r := &aePull{sentAt: p.now}
		var sum uint64
		for len(ae.pullSpans) > 0 && len(r.spans) < pullSpans && (len(r.spans) == 0 || sum+ae.pullSpans[0].n <= pullSpanKeys) {
			r.spans = append(r.spans, ae.pullSpans[0])
			sum += ae.pullSpans[0].n
			ae.pullSpans = ae.pullSpans[1:]
		}
		slices.SortFunc(r.spans, func(a, b aeSpan) int { return cmp.Compare(a.Lo, b.Lo) })
		// Spans that overlap (a slot found different twice) go as one.
		merged := r.spans[:0]
		for _, s := range r.spans {
			if l := len(merged) - 1; l >= 0 && s.Lo < merged[l].Hi {
				merged[l].Hi, merged[l].n = max(merged[l].Hi, s.Hi), merged[l].n+s.n
				continue
			}
			merged = append(merged, s)
		}
		r.spans = merged
		ae.nextPull++
		ae.pulls[ae.nextPull] = r
		r.id = p.sendPull(pr, ae.nextPull, r)
	}
	for pr.aeTokens > 0 && (len(ae.pushKeys) > 0 || len(ae.pushSpans) > 0) {
		if !p.pushSome(pr, ae) {
			break
		}
		ae.heard = p.now
	}
	compared := len(ae.queue) == 0 && len(ae.rqueue) == 0 && len(ae.sketches) == 0 && len(ae.answers) == 0 && len(ae.steps) == 0
	pulled := compared && len(ae.pulls) == 0 && len(ae.pullSpans) == 0 && ae.answered
	if pulled && ae.final && !ae.homesShown {
		// Everything the peer held at the round's start that we lacked
		// is among the applies: its homes may count now, without waiting
		// for what we push (Ready.Homes).
		ae.homesShown = true
		p.out.Homes = append(p.out.Homes, Synced{Peer: pr.id, Homes: ae.theirHomes})
	}
	if pulled && len(ae.pushKeys) == 0 && len(ae.pushSpans) == 0 {
		p.closeAE(pr)
	}
}

// sendStep sends the digest of step id (step 1 carries our applied
// context) and returns its requestID.
func (p *Protocol) sendStep(pr *peer, id uint64, st *aeStep) uint64 {
	m := &Message{Kind: KindDigest, Round: pr.ae.round, Step: id, Nodes: st.nodes}
	for _, r := range st.ranges {
		m.Ranges = append(m.Ranges, r.wire(st.salt))
	}
	if id == 1 {
		m.Applied = crdt.EncodeContext(&pr.ae.myApplied)
	}
	p.send(pr, m)
	return requestID(m)
}

// sendPull sends the pull id and returns its requestID.
func (p *Protocol) sendPull(pr *peer, id uint64, r *aePull) uint64 {
	m := &Message{Kind: KindObjects, Round: pr.ae.round, Step: id, Spans: make([]Span, len(r.spans)), compactSpans: pr.ae.ranged}
	for i, s := range r.spans {
		m.Spans[i] = s.Span
	}
	p.send(pr, m)
	return requestID(m)
}

// pushSome pushes one message of keys; false if there was nothing to
// read.
func (p *Protocol) pushSome(pr *peer, ae *aeRound) bool {
	var keys []string
	var sp *pushSpan
	var next uint64
	if len(ae.pushKeys) > 0 {
		keys = ae.pushKeys[:min(len(ae.pushKeys), ae.batch)]
	} else {
		sp = &ae.pushSpans[0]
		var err error
		keys, next, err = p.spanKeys([]Span{{Lo: sp.lo, Hi: sp.hi}}, ae.batch, sp.skip)
		if err != nil {
			p.err = err
			return false
		}
	}
	g, reflects, n := p.readPrefix(keys)
	if g == nil {
		return false
	}
	if sp != nil {
		if n < len(keys) {
			next = crdt.KeySlot(keys[n], p.cfg.Buckets)
		}
		if sp.lo = next; sp.lo >= sp.hi {
			ae.pushSpans = ae.pushSpans[1:]
		}
	} else {
		ae.pushKeys = ae.pushKeys[n:]
	}
	p.adaptBatch(ae, g, n, len(keys))
	if g.Len() == 0 {
		return true
	}
	ae.pushes++
	pr.pushed += uint64(g.Len())
	enc := crdt.EncodeGroup(g)
	pr.aeTokens -= float64(len(enc))
	id := pushID(ae.pushes, enc)
	ae.pushSum ^= id
	p.send(pr, &Message{Kind: KindObjects, Round: ae.round, Step: ae.pushes, Of: id, Group: g, Reflects: reflects})
	return true
}

func groupBytes(g *crdt.Group) int { return len(crdt.EncodeGroup(g)) }

// adaptBatch grows the keys read for one message while they fill less
// than half of one.
func (p *Protocol) adaptBatch(ae *aeRound, g *crdt.Group, n, asked int) {
	if n < asked {
		ae.batch = max(1, n)
		return
	}
	if n == ae.batch && groupBytes(g) < p.cfg.MaxMessageBytes/8 {
		ae.batch = min(2*ae.batch, crdt.MaxGroupKeys)
	}
}

// closeAE ends our round with pr: if it covered every difference, we
// adopt the peer's applied context and tell it so that it adopts ours.
func (p *Protocol) closeAE(pr *peer) {
	ae := pr.ae
	pr.noteShipped(ae.ours, ae.theirs)
	m := &Message{Kind: KindObjects, Round: ae.round, Step: ae.nextStep, Pushes: ae.pushes, Of: ae.pushSum}
	if ae.final {
		p.adopt(pr, ae.theirApplied, ae.theirHomes)
		mine := &ae.myApplied
		if !p.claimsApplied() {
			// A key found damaged since the round began was left out of
			// what it shipped: the context taken at its start claims
			// that key's writes, which the peer may not hold. It gets
			// the empty one, as from a region damaged when a round
			// begins (Storage.Snapshot).
			mine = &crdt.Context{}
		}
		// Run names the responder's run that answered the round: one that
		// restarted since answers some later copy of a digest, but not
		// what this round compared against (tryAdopt).
		m.Final, m.Applied, m.Homes, m.Run = true, crdt.EncodeContext(mine), p.cfg.Homes, ae.theirRun
	}
	p.send(pr, m)
	p.finishAE(pr)
}

// abandonAE drops our round with pr (its answers cannot be trusted
// together); another runs soon.
func (p *Protocol) abandonAE(pr *peer) {
	pr.needAE = true
	pr.ae = nil
}

// onDigest answers a digest of the peer's round: for every node, a
// diff of our own snapshot.
func (p *Protocol) onDigest(pr *peer, m *Message) {
	if (len(m.Nodes) == 0 && len(m.Ranges) == 0) || m.Step == 0 {
		return // a digest of whole buckets: not answered
	}
	if m.Step > 1 && p.withholds(pr, m.Round) {
		// The damaged key left the digest: a later step would not show
		// it, and the peer would not pull it (answerPull).
		return
	}
	p.ensureRun()
	r := pr.resp
	if m.Step == 1 && len(m.Ranges) > 0 && pr.ae != nil && !pr.ae.answered && p.region < string(pr.id) && (r == nil || r.round != m.Round) {
		// Both regions opened a round at once: the peer gives its own up
		// when our first digest reaches it (below), so its first digest
		// goes unanswered rather than answered in vain.
		return
	}
	if r == nil || m.Round > r.round || (m.Round != r.round && p.now.Sub(r.heard) >= p.cfg.AntiEntropyTimeout) {
		r = &aeResp{round: m.Round, steps: map[uint64]bool{}, pushes: map[uint64]uint64{}}
		pr.resp = r
		// Both sides may begin a round at once; one round repairs both
		// ways, so the region whose name sorts last gives its own up.
		if pr.ae != nil && p.region > string(pr.id) {
			pr.needAE = pr.needAE || pr.ae.needed
			pr.ae = nil
		}
	}
	if len(m.Ranges) > 0 {
		p.answerRanges(pr, r, m)
		return
	}
	limit := p.listLimit()
	fit := len(m.Nodes)
	v, err := p.loadViewOf(func(counts []uint32, digest []uint64) []uint64 {
		l := loadBudget{counts: counts, answering: true}
		for i, n := range m.Nodes {
			if !l.add(answerNeedOf(counts, digest, n, limit), i == 0) {
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
	var out []RangeNode
	entries, done := 0, 0
	for _, n := range m.Nodes[:fit] {
		if entries+TreeFanout*(TreeFanout+1) > MaxNodeEntries || len(out)+TreeFanout > MaxNodes {
			break
		}
		done++
		if n.List {
			out = append(out, p.listNode(v, n.Lo, n.Hi))
			entries += len(out[len(out)-1].Hashes)
			continue
		}
		bs := children(n.Lo, n.Hi)
		if len(n.Hashes) == 0 || bs == nil {
			continue
		}
		for i := range len(bs) - 1 {
			lo, hi := bs[i], bs[i+1]
			// Within a bucket this answer did not load (past the budget,
			// or found equal at the first look), the keys are not known
			// here: such a child is answered as not loaded (a list cut
			// short, the round not final) rather than as the empty range
			// an unloaded view shows. A whole bucket's fingerprint is
			// known without its keys.
			unknown := hi-lo <= 1<<slotBits && !v.loaded(lo, hi)
			if unknown && !(aligned(lo) && aligned(hi)) {
				out = append(out, RangeNode{Lo: lo, Hi: hi, List: true, Counts: []uint32{math.MaxUint32}})
				continue
			}
			h, c := v.fp(lo, hi)
			if h == n.Hashes[i] {
				continue
			}
			if unknown {
				out = append(out, RangeNode{Lo: lo, Hi: hi, List: true, Counts: []uint32{math.MaxUint32}})
				continue
			}
			var a RangeNode
			switch {
			case c == 0:
				a = RangeNode{Lo: lo, Hi: hi, List: true, Counts: []uint32{0}}
			case c <= uint64(limit) || children(lo, hi) == nil:
				a = p.listNode(v, lo, hi)
			case n.Counts[i] == 0:
				a = RangeNode{Lo: lo, Hi: hi, Counts: []uint32{uint32(min(c, math.MaxUint32))}}
			default:
				a = v.split(lo, hi)
			}
			entries += len(a.Hashes)
			out = append(out, a)
		}
	}
	d := &Message{Kind: KindDiff, Round: m.Round, Step: m.Step, Of: requestID(m), Run: p.run, Nodes: out, Next: uint64(done)}
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

// listNode returns our keys in [lo, hi) as a list (cut short at
// MaxRoundKeys; Counts says how many there are).
func (p *Protocol) listNode(v *view, lo, hi uint64) RangeNode {
	if !v.loaded(lo, hi) {
		return RangeNode{Lo: lo, Hi: hi, List: true, Counts: []uint32{math.MaxUint32}}
	}
	all := v.list(lo, hi, -1)
	n := RangeNode{Lo: lo, Hi: hi, List: true, Counts: []uint32{uint32(min(len(all), math.MaxUint32))}}
	for _, k := range all[:min(len(all), p.cfg.MaxRoundKeys)] {
		n.Offs = append(n.Offs, k.slot-lo)
		n.Hashes = append(n.Hashes, k.hash)
	}
	return n
}

// onDiff takes the peer's answer to a digest of our round: where it
// differs, descend, compare listed keys, or ship whole ranges.
func (p *Protocol) onDiff(pr *peer, m *Message) {
	ae := pr.ae
	if ae == nil || ae.round != m.Round {
		return
	}
	st := ae.steps[m.Step]
	if st == nil || m.Of != st.id {
		return // answered already, or not an answer to this run's digest
	}
	if m.Step == 1 {
		c, err := crdt.DecodeContext(m.Applied)
		if err != nil || m.Applied == nil {
			p.abandonAE(pr)
			return
		}
		ae.theirApplied, ae.theirRun, ae.theirHomes, ae.answered = c, m.Run, m.Homes, true
		// What the peer has applied durably, for the write concern
		// (Holders): after a restart of ours, the first word of it.
		p.noteHas(pr, &c)
	}
	if !ae.answered || m.Run != ae.theirRun {
		p.abandonAE(pr) // the peer restarted within the round
		return
	}
	delete(ae.steps, m.Step)
	ae.heard = p.now
	if len(st.ranges) > 0 {
		p.takeRanges(ae, st, m)
		p.pumpAE(pr)
		return
	}
	done := min(m.Next, uint64(len(st.nodes)))
	if done < uint64(len(st.nodes)) {
		ae.queue = append(slices.Clone(st.nodes[done:]), ae.queue...)
	}
	ae.answers = append(ae.answers, askedOf(st.nodes[:done], m.Nodes)...)
	p.pumpAE(pr)
}

// askedOf returns the nodes of an answer that answer the asked ones, each
// at most once: a list of an asked list's range, and a child range of an
// asked split. Others are dropped: a peer answering what was not asked
// (the root's children again and again) would grow the round without end.
func askedOf(asked, answer []RangeNode) []RangeNode {
	open := make(map[[2]uint64]bool, len(asked)*TreeFanout)
	for _, n := range asked {
		if n.List {
			open[[2]uint64{n.Lo, n.Hi}] = true
			continue
		}
		bs := children(n.Lo, n.Hi)
		if len(n.Hashes) == 0 || bs == nil {
			continue
		}
		for i := range len(bs) - 1 {
			open[[2]uint64{bs[i], bs[i+1]}] = true
		}
	}
	out := answer[:0:0]
	for _, n := range answer {
		k := [2]uint64{n.Lo, n.Hi}
		if open[k] {
			delete(open, k)
			out = append(out, n)
		}
	}
	return out
}

// answerNeedOf is answerNeed less the children of a split whose whole
// buckets' fingerprints (digest, the responder's first look) equal the
// asker's: those are answered equal without their keys, and a budget
// spent on them could leave out a child that differs, round after round.
func answerNeedOf(counts []uint32, digest []uint64, n RangeNode, limit int) []uint64 {
	bs := children(n.Lo, n.Hi)
	if n.List || len(n.Hashes) == 0 || bs == nil {
		return answerNeed(counts, n, limit)
	}
	var need []uint64
	for i := range len(bs) - 1 {
		lo, hi := bs[i], bs[i+1]
		if i < len(n.Hashes) && aligned(lo) && aligned(hi) && hi>>slotBits <= uint64(len(digest)) {
			var h uint64
			for b := lo >> slotBits; b < hi>>slotBits; b++ {
				h ^= digest[b]
			}
			if h == n.Hashes[i] {
				continue
			}
		}
		need = append(need, needFor(counts, lo, hi, limit)...)
	}
	return need
}

// answerNeed returns the buckets a responder loads to answer n.
func answerNeed(counts []uint32, n RangeNode, limit int) []uint64 {
	bs := children(n.Lo, n.Hi)
	if n.List || len(n.Hashes) == 0 || bs == nil {
		return needFor(counts, n.Lo, n.Hi, 1<<30)
	}
	var need []uint64
	for i := range len(bs) - 1 {
		need = append(need, needFor(counts, bs[i], bs[i+1], limit)...)
	}
	return need
}

// loadBudget collects the buckets to load for a batch of nodes, holding
// at most aeLoadKeys keys by the digest's counts (but all of the first
// node's): a snapshot copies their keys while the store's commits wait.
// A responder's budget (answering) takes of the first node too only the
// buckets that fit, at least one: the node is a peer's, and one node
// (a range of every bucket, a list of the root) would otherwise load the
// whole store; the buckets left out are answered as not loaded (asked
// again, a list cut short).
type loadBudget struct {
	counts    []uint32
	answering bool
	seen      map[uint64]bool
	keys      uint64
	out       []uint64
}

// aeLoadKeys bounds the keys of the buckets one snapshot of
// anti-entropy loads.
const aeLoadKeys = 1 << 17

// add adds a node's buckets, or reports that they do not fit.
func (l *loadBudget) add(need []uint64, first bool) bool {
	if l.seen == nil {
		l.seen = map[uint64]bool{}
	}
	count := func(b uint64) uint64 {
		if b < uint64(len(l.counts)) {
			return uint64(l.counts[b])
		}
		return 1024 // not counted
	}
	if first && l.answering {
		for _, b := range need {
			if l.seen[b] {
				continue
			}
			if c := count(b); len(l.out) == 0 || l.keys+c <= aeLoadKeys {
				l.keys += c
				l.seen[b] = true
				l.out = append(l.out, b)
			}
		}
		return true
	}
	var fresh uint64
	for _, b := range need {
		if !l.seen[b] {
			fresh += count(b)
		}
	}
	if !first && l.keys+fresh > aeLoadKeys {
		return false
	}
	l.keys += fresh
	for _, b := range need {
		if !l.seen[b] {
			l.seen[b] = true
			l.out = append(l.out, b)
		}
	}
	return true
}

// takeAnswers acts on the peer's answers, a batch of nodes whose buckets
// one snapshot loads at a time (at most four batches a call): where they
// differ, descend, compare listed keys, or ship whole ranges.
func (p *Protocol) takeAnswers(pr *peer) {
	ae := pr.ae
	buckets := p.cfg.Buckets
	for batch := 0; batch < 4 && len(ae.answers) > 0; batch++ {
		fit := len(ae.answers)
		v, err := p.loadView(func(counts []uint32) []uint64 {
			l := loadBudget{counts: counts}
			for i, n := range ae.answers {
				var need []uint64
				switch {
				case n.List:
					for _, o := range n.Offs {
						need = append(need, (n.Lo+o)>>slotBits)
					}
					need = append(need, needFor(counts, n.Lo, n.Hi, loadLimit)...)
				case len(n.Hashes) > 0:
					bs := children(n.Lo, n.Hi)
					for i := range len(bs) - 1 {
						need = append(need, needSplit(bs[i], bs[i+1])...)
					}
				}
				// A list is the peer's: one naming slots in every bucket
				// of a wide node would load them all. Of a first list
				// only the buckets that fit are loaded (compareList pulls
				// the listed slots of the others and pushes our keys
				// there by spans); a first split needs its view whole.
				l.answering = n.List
				if !l.add(need, i == 0) {
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
		if len(v.snap.Buckets) != buckets {
			p.abandonAE(pr)
			return
		}
		nodes := ae.answers[:fit]
		ae.answers = ae.answers[fit:]
		ae.counts = v.snap.Counts
		p.takeNodes(ae, v, nodes)
	}
}

// takeNodes acts on answer nodes with view v.
func (p *Protocol) takeNodes(ae *aeRound, v *view, nodes []RangeNode) {
	for _, n := range nodes {
		switch {
		case n.List:
			p.compareList(ae, v, n)
		case len(n.Hashes) > 0:
			bs := children(n.Lo, n.Hi)
			for i := range len(bs) - 1 {
				lo, hi := bs[i], bs[i+1]
				h, c := v.fp(lo, hi)
				switch {
				case h == n.Hashes[i]:
				case c == 0:
					ae.pullSpan(lo, hi, uint64(n.Counts[i]))
				case n.Counts[i] == 0:
					p.pushAll(ae, v, lo, hi)
				case children(lo, hi) == nil || uint64(n.Counts[i]) <= uint64(p.listLimit()):
					// Few keys there on its side: its list costs less
					// than our split.
					ae.queue = append(ae.queue, RangeNode{Lo: lo, Hi: hi, List: true})
				default:
					ae.queue = append(ae.queue, v.split(lo, hi))
				}
			}
		default:
			// The peer holds keys where we hold none.
			var c uint64
			if len(n.Counts) == 1 {
				c = uint64(n.Counts[0])
			}
			ae.pullSpan(n.Lo, n.Hi, c)
		}
	}
}

// pushAll pushes every key of ours in [lo, hi): by name if v holds
// them, else as a span read bucket by bucket.
func (p *Protocol) pushAll(ae *aeRound, v *view, lo, hi uint64) {
	if !v.loaded(lo, hi) {
		ae.pushSpans = append(ae.pushSpans, pushSpan{lo: lo, hi: hi})
		return
	}
	for _, k := range v.list(lo, hi, -1) {
		ae.pushKeys = append(ae.pushKeys, k.key)
	}
}

// compareList compares the peer's list of a node with our keys there,
// slot by slot: we pull the slots where they differ and push our keys
// there and in the slots it lacks.
func (p *Protocol) compareList(ae *aeRound, v *view, n RangeNode) {
	if len(n.Counts) == 1 && uint64(len(n.Hashes)) < uint64(n.Counts[0]) {
		ae.final = false // a list cut short: the rest waits for the next round
	}
	if len(n.Hashes) == 0 && len(n.Counts) == 1 && n.Counts[0] == 0 {
		p.pushAll(ae, v, n.Lo, n.Hi)
		return
	}
	type slotSum struct {
		x, h uint64 // XOR of the hashes, the last hash
		n    int
	}
	theirs := map[uint64]*slotSum{}
	var order []uint64
	for i, o := range n.Offs {
		s := n.Lo + o
		t := theirs[s]
		if t == nil {
			t = &slotSum{}
			theirs[s] = t
			order = append(order, s)
		}
		t.x ^= n.Hashes[i]
		t.h = n.Hashes[i]
		t.n++
	}
	whole := v.loaded(n.Lo, n.Hi)
	skip := map[string]bool{}
	for _, s := range order {
		t := theirs[s]
		ks := v.within(s, s+1)
		var x uint64
		for _, k := range ks {
			x ^= k.hash
		}
		if len(ks) == t.n && x == t.x {
			for _, k := range ks {
				skip[k.key] = true
			}
			continue
		}
		ae.pullSpan(s, s+1, uint64(t.n))
		if len(ks) == 1 && t.n == 1 && len(ae.ours) < 4*MaxUnrepaired {
			ae.ours[ks[0].key], ae.theirs[ks[0].key] = ks[0].hash, t.h
		}
	}
	if !whole {
		ae.pushSpans = append(ae.pushSpans, pushSpan{lo: n.Lo, hi: n.Hi, skip: skip})
		return
	}
	for _, k := range v.list(n.Lo, n.Hi, -1) {
		if !skip[k.key] {
			ae.pushKeys = append(ae.pushKeys, k.key)
		}
	}
}

// onObjects handles anti-entropy objects: as the initiator, the answer to
// a pull; as the responder, pushed states, a pull to answer, or the end
// of the peer's round.
func (p *Protocol) onObjects(pr *peer, m *Message) {
	if m.Reply {
		p.onReply(pr, m)
		return
	}
	r := pr.resp
	mine := r != nil && r.round == m.Round
	switch {
	case len(m.Pull) > 0 || len(m.Spans) > 0:
		p.answerPull(pr, m)
		if mine {
			r.heard = p.now
		}
	case m.Group != nil && m.Group.Len() > 0:
		p.applyObjects(pr, m)
		pr.pulled += uint64(m.Group.Len())
		if mine {
			r.heard = p.now
			if len(r.pushes) < maxRecorded {
				r.pushes[m.Step] = m.Of
			}
			p.tryAdopt(pr)
		}
	case mine && m.Group == nil:
		// The end of the peer's round.
		r.done = true
		if m.Final && m.Applied != nil {
			r.final = m
			p.tryAdopt(pr)
		}
	}
}

// tryAdopt adopts the initiator's applied context once its round is
// over and complete, if this run answered each of its digests and
// received each of its pushes.
func (p *Protocol) tryAdopt(pr *peer) {
	r := pr.resp
	if r == nil || r.final == nil {
		return
	}
	f := r.final
	if f.Run != 0 && f.Run != p.run {
		// The round compared against an earlier run of ours, whose
		// state this one may not hold (a restore): its answers to copies
		// of the round's digests do not make the round ours.
		r.final = nil
		return
	}
	if f.Step == 0 || uint64(len(r.steps)) < f.Step || uint64(len(r.pushes)) < f.Pushes {
		return
	}
	for s := uint64(1); s <= f.Step; s++ {
		if !r.steps[s] {
			return
		}
	}
	var sum uint64
	for s := uint64(1); s <= f.Pushes; s++ {
		id, ok := r.pushes[s]
		if !ok {
			return
		}
		sum ^= id
	}
	if sum != f.Of {
		return // a push of an earlier run of the peer took the place of one of this round
	}
	r.final = nil
	if c, err := crdt.DecodeContext(f.Applied); err == nil {
		p.adopt(pr, c, f.Homes)
	}
}

// answerPull sends the states of the pulled keys, or of the keys of the
// pulled span, as far as one message holds them; Next says how far.
func (p *Protocol) answerPull(pr *peer, m *Message) {
	if p.withholds(pr, m.Round) {
		return
	}
	p.ensureRun()
	reply := &Message{Kind: KindObjects, Round: m.Round, Step: m.Step, Of: requestID(m), Reply: true, Run: p.run}
	if len(m.Spans) > 0 {
		// The spans in order, as far as about 4096 keys; Next is the slot
		// where the answer stopped.
		spans := slices.Clone(m.Spans)
		slices.SortFunc(spans, func(a, b Span) int { return cmp.Compare(a.Lo, b.Lo) })
		for i := 1; i < len(spans); i++ {
			if spans[i].Lo < spans[i-1].Hi {
				return // overlapping spans: not from a region of this version
			}
		}
		keys, next, err := p.spanKeys(spans, pullSpanKeys, nil)
		if err != nil {
			p.err = err
			return
		}
		g, reflects, n := p.readPrefix(keys)
		if g == nil || (g.Len() < n && !p.claimsApplied()) {
			return // unread, or a key found damaged as it was read
		}
		if n < len(keys) {
			next = crdt.KeySlot(keys[n], p.cfg.Buckets)
		}
		reply.Group, reply.Reflects, reply.Next = g, reflects, next
	} else {
		g, reflects, n := p.readPrefix(m.Pull)
		if g == nil || (g.Len() < n && !p.claimsApplied()) {
			return
		}
		reply.Group, reply.Reflects, reply.Next = g, reflects, uint64(n)
	}
	pr.pushed += uint64(reply.Group.Len())
	p.send(pr, reply)
}

// noteClaim records that our answer to step 1 of the peer's round showed
// applied (withholds). A late step 1 of an older round is recorded beside
// the live round's, not in its place.
func (p *Protocol) noteClaim(pr *peer, round uint64, applied *crdt.Context) {
	if applied.Empty() || slices.Contains(pr.claimed, round) {
		return
	}
	pr.claimed = append(pr.claimed, round)
	if len(pr.claimed) > maxClaimedRounds {
		pr.claimed = slices.Delete(pr.claimed, 0, len(pr.claimed)-maxClaimedRounds)
	}
}

// maxClaimedRounds bounds the rounds of one peer's whose claims are kept
// (noteClaim): a peer runs one round with us at a time, and a round's
// late messages come from the few before it.
const maxClaimedRounds = 8

// withholds reports whether this region answers no further digest or pull
// of the peer's round: a key found damaged since it showed its applied
// context at the round's start is left out of every answer (and of the
// digest), so the peer must not close that round as complete on that
// context. Unanswered, the round does not close (the peer's pushes still
// repair this region) and is abandoned after AntiEntropyTimeout; the next
// one is shown no applied context while the damage lasts.
func (p *Protocol) withholds(pr *peer, round uint64) bool {
	return slices.Contains(pr.claimed, round) && !p.claimsApplied()
}

// claimsApplied reports whether the store's state holds every key its
// applied context describes (ApplyClaimer); a store that does not say
// always does.
func (p *Protocol) claimsApplied() bool {
	c, ok := p.st.(ApplyClaimer)
	return !ok || c.ClaimsApplied()
}

// ApplyClaimer is a Storage that may hold keys it cannot read (found
// damaged): while it does, its applied context is claimed by no round
// (its Snapshot carries none, and a round under way ends incomplete).
type ApplyClaimer interface {
	ClaimsApplied() bool
}

// onReply takes the answer to one of our pulls.
func (p *Protocol) onReply(pr *peer, m *Message) {
	ae := pr.ae
	if ae == nil || ae.round != m.Round || !ae.answered {
		return
	}
	r := ae.pulls[m.Step]
	if r == nil || m.Of != r.id {
		return
	}
	if m.Run != ae.theirRun {
		p.abandonAE(pr)
		return
	}
	delete(ae.pulls, m.Step)
	ae.heard = p.now
	p.applyObjects(pr, m)
	if m.Group != nil {
		pr.pulled += uint64(m.Group.Len())
		pr.aeTokens -= float64(groupBytes(m.Group))
	}
	var rest []aeSpan
	for _, s := range r.spans {
		if s.Hi > m.Next {
			rest = append(rest, aeSpan{Span: Span{Lo: max(s.Lo, m.Next), Hi: s.Hi}, n: s.n})
		}
	}
	switch {
	case len(rest) == 0:
	case m.Next > r.spans[0].Lo:
		ae.pullSpans = append(rest, ae.pullSpans...)
	default:
		ae.final = false // no progress: left to the next round
	}
	p.pumpAE(pr)
}

// applyObjects applies the states m carries, as reflecting the context
// the sender read with them (Apply.Reflects; none from a sender that does
// not send it).
func (p *Protocol) applyObjects(pr *peer, m *Message) {
	g := m.Group
	if g == nil || g.Len() == 0 {
		return
	}
	a := Apply{From: pr.id, Group: g, State: true}
	if m.Reflects != nil {
		if c, err := crdt.DecodeContext(m.Reflects); err == nil {
			a.Reflects = c
		}
	}
	p.out.Applies = append(p.out.Applies, a)
}

// adopt records that our state now reflects c, the applied context of
// pr's state that a complete round has brought here, and homes, what
// the peer showed in the round.
func (p *Protocol) adopt(pr *peer, c crdt.Context, homes string) {
	if i := slices.IndexFunc(p.out.Synced, func(s Synced) bool { return s.Peer == pr.id }); i >= 0 {
		p.out.Synced[i].Homes = homes
	} else {
		p.out.Synced = append(p.out.Synced, Synced{Peer: pr.id, Homes: homes})
	}
	claim := p.admit(&p.seen, &c)
	if p.seen.Covers(&claim) {
		return
	}
	p.seen.Join(&claim)
	p.out.Applies = append(p.out.Applies, Apply{From: pr.id, Dots: claim})
	p.claimHeld(pr)
}

// finishAE ends the round with pr. The peer still needs anti-entropy if
// it came to need it during the round, or if the round it needed did not
// cover every difference.
func (p *Protocol) finishAE(pr *peer) {
	pr.needAE = pr.needAE || (pr.ae.needed && !pr.ae.final)
	if !pr.needAE {
		pr.dropped = time.Time{} // the round repaired what was dropped
	}
	pr.lastAE = p.now
	pr.ae = nil
}

// spanKeys returns, in slot order, our keys of the spans (sorted,
// disjoint) but skip, from the first buckets they cover until there are
// about want of them, and the slot where the next call goes on (the end
// of the last span when none is left).
func (p *Protocol) spanKeys(spans []Span, want int, skip map[string]bool) ([]string, uint64, error) {
	first, err := p.st.Snapshot(nil)
	if err != nil {
		return nil, 0, err
	}
	nb := uint64(len(first.Buckets))
	counted := len(first.Counts) == len(first.Buckets)
	var chosen []uint32
	var sum, loaded uint64
	end := spans[len(spans)-1].Hi
	last := uint64(math.MaxUint64)
pick:
	for _, s := range spans {
		for b := s.Lo >> slotBits; b < min((s.Hi+(1<<slotBits)-1)>>slotBits, nb); b++ {
			if b == last {
				continue
			}
			if len(chosen) > 0 && (sum >= uint64(want) || loaded >= aeLoadKeys) {
				end = max(s.Lo, bucketStart(b))
				break pick
			}
			chosen = append(chosen, uint32(b))
			last = b
			if counted {
				// The keys of the bucket that fall in the span, as its
				// share of the bucket's slots.
				w := min(s.Hi, bucketStart(b+1)) - max(s.Lo, bucketStart(b))
				sum += (uint64(first.Counts[b])*(w>>16))>>16 + 1
				loaded += uint64(first.Counts[b])
			} else {
				sum = uint64(want) // unknown: one bucket a time
			}
		}
	}
	snap, err := p.st.Snapshot(func([]uint64) []uint32 { return chosen })
	if err != nil {
		return nil, 0, err
	}
	var ks []slotKey
	for k, h := range snap.Keys {
		s := crdt.KeySlot(k, int(nb))
		if s >= end || skip[k] {
			continue
		}
		i, _ := slices.BinarySearchFunc(spans, s, func(sp Span, s uint64) int { return cmp.Compare(sp.Hi, s+1) })
		if i < len(spans) && spans[i].Lo <= s && s < spans[i].Hi {
			ks = append(ks, slotKey{slot: s, key: k, hash: h})
		}
	}
	slices.SortFunc(ks, func(x, y slotKey) int {
		if c := cmp.Compare(x.slot, y.slot); c != 0 {
			return c
		}
		return cmp.Compare(x.key, y.key)
	})
	next := end
	if len(ks) > want {
		// Stop between slots, so that the next call does not send a key
		// again.
		i := want
		for i < len(ks) && ks[i].slot == ks[want-1].slot {
			i++
		}
		if i < len(ks) {
			next, ks = ks[i].slot, ks[:i]
		}
	}
	out := make([]string, len(ks))
	for i, k := range ks {
		out[i] = k.key
	}
	return out, next, nil
}

// readPrefix reads a prefix of keys (at most crdt.MaxGroupKeys) whose
// states fit in a quarter of MaxMessageBytes (anti-entropy shares the
// ordered per-peer stream with deltas, so its batches stay small enough
// not to hold deltas up for long), at least one key; n is its length. It
// reads readChunkKeys keys at a time and stops before the chunk that
// would overflow, so it reads little more than it ships (a first chunk
// that overflows alone is halved until it fits). reflects is the
// encoding of a context that covers every write the states show (the
// join of each read's, Storage.Read), for Message.Reflects: not bounded
// by the claims window, which would leave out exactly the dots it is
// for, but replaced by its version vector ceiling (crdt.Context.Ceil,
// which covers it) if it would exceed MaxAppliedBytes. g is nil if the
// store could not be read.
func (p *Protocol) readPrefix(keys []string) (g *crdt.Group, reflects []byte, n int) {
	keys = keys[:min(len(keys), crdt.MaxGroupKeys)]
	budget := p.cfg.MaxMessageBytes / 4
	g = &crdt.Group{}
	var ctx crdt.Context
	size := 0
	for n < len(keys) {
		chunk := keys[n:min(len(keys), n+readChunkKeys)]
		cg, c, err := p.st.Read(chunk)
		if err != nil {
			p.err = err
			return nil, nil, 0
		}
		cs := groupBytes(cg)
		if n > 0 && size+cs > budget {
			break
		}
		for n == 0 && len(chunk) > 1 && cs > budget {
			chunk = chunk[:len(chunk)/2]
			if cg, c, err = p.st.Read(chunk); err != nil {
				p.err = err
				return nil, nil, 0
			}
			cs = groupBytes(cg)
		}
		joinGroup(g, cg)
		ctx.Join(&c)
		size += cs
		n += len(chunk)
		if size > budget {
			break // a first key larger than the budget travels alone
		}
	}
	// A read never stops inside a slot: a span goes on from the slot of
	// the first key left out (Next, pushSome), so the rest of a slot cut
	// here would be asked for from that slot again, and a slot whose keys
	// do not fit one message together would never get past its first.
	// The keys sharing a slot are few (distinct keys collide by chance),
	// so the message may go over the budget by a few states.
	if n > 0 && n < len(keys) {
		last := crdt.KeySlot(keys[n-1], p.cfg.Buckets)
		m := n
		for m < len(keys) && crdt.KeySlot(keys[m], p.cfg.Buckets) == last {
			m++
		}
		if m > n {
			cg, c, err := p.st.Read(keys[n:m])
			if err != nil {
				p.err = err
				return nil, nil, 0
			}
			joinGroup(g, cg)
			ctx.Join(&c)
			n = m
		}
	}
	if g.Len() == 0 {
		return g, nil, n
	}
	b := crdt.EncodeContext(&ctx)
	if len(b) > MaxAppliedBytes {
		ceil := ctx.Ceil()
		b = crdt.EncodeContext(&ceil)
	}
	return g, b, n
}

// readChunkKeys is how many keys readPrefix reads at a time.
const readChunkKeys = 256

// joinGroup moves the states of src, a group read for this call alone,
// into dst (a key in both keeps src's state, read later).
func joinGroup(dst, src *crdt.Group) {
	for id, c := range src.Carts {
		if dst.Carts == nil {
			dst.Carts = make(map[string]*crdt.Cart, len(src.Carts))
		}
		dst.Carts[id] = c
	}
	for sku, it := range src.Items {
		if dst.Items == nil {
			dst.Items = make(map[string]*crdt.Item, len(src.Items))
		}
		dst.Items[sku] = it
	}
}

// Unrepaired keys.
const (
	// UnrepairedRounds is how many anti-entropy rounds in a row must ship
	// a key with no effect before it counts as unrepaired (one lost
	// message can make one round ship a key in vain).
	UnrepairedRounds = 3
	// MaxUnrepaired bounds the unrepaired keys kept per peer.
	MaxUnrepaired = 64
)

// noteShipped records the keys a round found different (ours: their
// hashes here; theirs: at the peer). States only grow by joins, so a key
// that differs with the same pair of hashes as in the last round was
// shipped both ways and changed neither side: its two states hold a
// divergence no join repairs (for example one dot with two contents).
func (pr *peer) noteShipped(ours, theirs map[string]uint64) {
	next := make(map[string][2]uint64)
	streak := make(map[string]int)
	for k, h := range ours {
		if th, ok := theirs[k]; ok && th != h {
			pair := [2]uint64{h, th}
			if len(next) < 4*MaxUnrepaired {
				next[k] = pair
			}
			if last, ok := pr.shipped[k]; ok && last == pair {
				streak[k] = pr.unrepaired[k] + 1
			}
		}
	}
	pr.shipped, pr.unrepaired = next, streak
}

// unrepairedKeys lists (sorted, at most MaxUnrepaired) the keys shipped
// UnrepairedRounds rounds in a row in vain.
func (pr *peer) unrepairedKeys() []string {
	out := []string{}
	for k, n := range pr.unrepaired {
		if n+1 >= UnrepairedRounds {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	if len(out) > MaxUnrepaired {
		out = out[:MaxUnrepaired]
	}
	return out
}
