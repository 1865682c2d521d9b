package protocol

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"

	"github.com/latticedb/lattice/crdt"
)

// The anti-entropy tree. Every replicated key has a slot (crdt.KeySlot):
// its digest bucket in the high 32 bits, a second hash of the key in the
// low 32. A node of the tree is a range [Lo, Hi) of slots: the root holds
// every bucket; a node of several buckets has up to TreeFanout children
// of whole buckets each; a node within one bucket has up to TreeFanout
// children that share its slots equally. A node's fingerprint is the XOR
// of the state hashes of its keys (a bucket's is the digest's), so two
// regions hold the same states in a node when their fingerprints are
// equal, and a round descends only into the nodes whose fingerprints
// differ: O(d · log N) hashes for d differing keys among N.
const (
	// TreeFanout is the number of children of a node of the tree.
	TreeFanout = 16
	// ListKeys is how many keys a node may hold for a region to list
	// them (key and state hash) rather than split the node further.
	ListKeys = 16
	// MaxNodeEntries bounds the hashes and listed keys of one message's
	// nodes.
	MaxNodeEntries = 1 << 15
	// MaxNodes bounds the nodes of one message.
	MaxNodes = 1 << 13
)

// RangeNode is a node of the anti-entropy tree, [Lo, Hi) in slots, as
// one region describes it to another. A split carries the fingerprints
// (Hashes) and key counts (Counts) of the node's children, in order; a
// list (List) carries the sender's keys in the node as their slots'
// offsets from Lo (Offs) with their state hashes (Hashes), and in Counts
// the number it holds there (more than it lists if the list was cut
// short); a node with neither asks for a list (from the initiator) or
// says that the sender holds Counts[0] keys where the receiver holds
// none (from the responder). Slots name keys well enough (two keys share
// one with odds of 2^-32 in a bucket); a slot whose keys differ is
// pulled as a span of one slot, so a key's name never crosses only to be
// compared.
type RangeNode struct {
	_      struct{} `cbor:",toarray"`
	Lo     uint64
	Hi     uint64
	Hashes []uint64
	Counts []uint32
	Offs   []uint64
	List   bool
}

// Span is a range [Lo, Hi) of slots whose keys are pulled at once.
type Span struct {
	_  struct{} `cbor:",toarray"`
	Lo uint64
	Hi uint64
}

const slotBits = 32

var (
	errBadNode      = errors.New("protocol: invalid anti-entropy tree node or span")
	errTooManyNodes = fmt.Errorf("protocol: more than %d tree nodes or %d hashes and keys", MaxNodes, MaxNodeEntries)
)

func bucketStart(b uint64) uint64 { return b << slotBits }

func aligned(x uint64) bool { return x&(1<<slotBits-1) == 0 }

// rootHi is the end of the slot space of buckets buckets.
func rootHi(buckets int) uint64 { return bucketStart(uint64(buckets)) }

// validRange reports whether [lo, hi) is a node of the tree of buckets
// buckets: whole buckets, or a part of one.
func validRange(lo, hi uint64, buckets int) bool {
	if lo >= hi || hi > rootHi(buckets) {
		return false
	}
	return (aligned(lo) && aligned(hi)) || lo>>slotBits == (hi-1)>>slotBits
}

// children returns the bounds of the children of [lo, hi): k+1 slots
// for k children, nil if it cannot be split (one slot).
func children(lo, hi uint64) []uint64 {
	if hi-lo > 1<<slotBits {
		nb := (hi - lo) >> slotBits
		k := min(TreeFanout, nb)
		b := make([]uint64, k+1)
		for i := range k + 1 {
			b[i] = lo + bucketStart(nb*i/k)
		}
		return b
	}
	w := hi - lo
	if w < 2 {
		return nil
	}
	k := min(TreeFanout, w)
	b := make([]uint64, k+1)
	for i := range k + 1 {
		b[i] = lo + w*i/k
	}
	return b
}

// slotKey is a key of a loaded bucket, with its slot and state hash.
type slotKey struct {
	slot uint64
	key  string
	hash uint64
}

// view is one region's tree at one instant: a snapshot of its digest,
// with the keys of the buckets it loaded, sorted by slot.
type view struct {
	snap *Snapshot
	keys map[uint64][]slotKey // by bucket
}

// counts returns the keys of [lo, hi) by the digest's counts (0 if the
// storage gives none), without loading buckets.
func countOf(counts []uint32, lo, hi uint64) uint64 {
	var n uint64
	for b := lo >> slotBits; b < (hi+(1<<slotBits)-1)>>slotBits && b < uint64(len(counts)); b++ {
		n += uint64(counts[b])
	}
	return n
}

// loadView snapshots the storage, loading the buckets need picks (given
// the digest's counts from a first look); the second snapshot is the
// view: its fingerprints, counts, keys and applied context are of one
// instant.
func (p *Protocol) loadView(need func(counts []uint32) []uint64) (*view, error) {
	return p.loadViewOf(func(counts []uint32, _ []uint64) []uint64 { return need(counts) })
}

// loadViewOf is loadView whose need sees the first look's fingerprints
// too.
func (p *Protocol) loadViewOf(need func(counts []uint32, digest []uint64) []uint64) (*view, error) {
	first, err := p.st.Snapshot(nil)
	if err != nil {
		return nil, err
	}
	counts := first.Counts
	if len(counts) != len(first.Buckets) {
		counts = nil
	}
	want := need(counts, first.Buckets)
	slices.Sort(want)
	want = slices.Compact(want)
	var chosen []uint32
	for _, b := range want {
		if b < uint64(len(first.Buckets)) {
			chosen = append(chosen, uint32(b))
		}
	}
	snap, err := p.st.Snapshot(func([]uint64) []uint32 { return chosen })
	if err != nil {
		return nil, err
	}
	v := &view{snap: snap, keys: make(map[uint64][]slotKey, len(chosen))}
	for _, b := range chosen {
		v.keys[uint64(b)] = []slotKey{}
	}
	n := len(snap.Buckets)
	for k, h := range snap.Keys {
		s := crdt.KeySlot(k, n)
		b := s >> slotBits
		if _, ok := v.keys[b]; ok {
			v.keys[b] = append(v.keys[b], slotKey{slot: s, key: k, hash: h})
		}
	}
	for b, ks := range v.keys {
		slices.SortFunc(ks, func(x, y slotKey) int {
			if c := cmp.Compare(x.slot, y.slot); c != 0 {
				return c
			}
			return cmp.Compare(x.key, y.key)
		})
		v.keys[b] = ks
	}
	return v, nil
}

// needFor returns the buckets a view must load to describe [lo, hi) (its
// fingerprint and, if it holds few keys, its list, or its children's
// fingerprints): the bucket of a node within one, every bucket of a
// node that holds at most limit keys.
func needFor(counts []uint32, lo, hi uint64, limit int) []uint64 {
	if hi-lo <= 1<<slotBits {
		return []uint64{lo >> slotBits}
	}
	if counts != nil && countOf(counts, lo, hi) > uint64(limit) {
		return nil
	}
	var out []uint64
	for b := lo >> slotBits; b < hi>>slotBits; b++ {
		out = append(out, b)
	}
	return out
}

// loaded reports whether the keys of every bucket of [lo, hi) are in v.
func (v *view) loaded(lo, hi uint64) bool {
	for b := lo >> slotBits; b < (hi+(1<<slotBits)-1)>>slotBits; b++ {
		if _, ok := v.keys[b]; !ok {
			return false
		}
	}
	return true
}

// fp returns the fingerprint and key count of [lo, hi).
func (v *view) fp(lo, hi uint64) (uint64, uint64) {
	if aligned(lo) && aligned(hi) {
		var h uint64
		for b := lo >> slotBits; b < hi>>slotBits; b++ {
			h ^= v.snap.Buckets[b]
		}
		if v.snap.Counts != nil {
			return h, countOf(v.snap.Counts, lo, hi)
		}
		if v.loaded(lo, hi) {
			return h, uint64(len(v.list(lo, hi, -1)))
		}
		return h, 1 << 32 // unknown: not listed
	}
	var h, n uint64
	for _, k := range v.within(lo, hi) {
		h ^= k.hash
		n++
	}
	return h, n
}

// within returns the loaded keys of [lo, hi), a node within one bucket.
func (v *view) within(lo, hi uint64) []slotKey {
	ks := v.keys[lo>>slotBits]
	i, _ := slices.BinarySearchFunc(ks, lo, func(k slotKey, s uint64) int { return cmp.Compare(k.slot, s) })
	j, _ := slices.BinarySearchFunc(ks, hi, func(k slotKey, s uint64) int { return cmp.Compare(k.slot, s) })
	return ks[i:j]
}

// list returns the keys of [lo, hi), at most limit (limit < 0: all), in
// slot order; the buckets must be loaded.
func (v *view) list(lo, hi uint64, limit int) []slotKey {
	var out []slotKey
	for b := lo >> slotBits; b < (hi+(1<<slotBits)-1)>>slotBits; b++ {
		l, h := max(lo, bucketStart(b)), min(hi, bucketStart(b+1))
		for _, k := range v.within(l, h) {
			if limit >= 0 && len(out) >= limit {
				return out
			}
			out = append(out, k)
		}
	}
	return out
}

// split returns the node [lo, hi) as a split: its children's
// fingerprints and counts.
func (v *view) split(lo, hi uint64) RangeNode {
	bs := children(lo, hi)
	n := RangeNode{Lo: lo, Hi: hi, Hashes: make([]uint64, len(bs)-1), Counts: make([]uint32, len(bs)-1)}
	for i := range len(bs) - 1 {
		h, c := v.fp(bs[i], bs[i+1])
		n.Hashes[i], n.Counts[i] = h, uint32(min(c, 1<<32-1))
	}
	return n
}

// validateNodes checks the nodes of a message: valid ranges, splits
// with one fingerprint and count per child, valid keys within their
// node, and at most MaxNodes nodes and MaxNodeEntries hashes and keys.
func validateNodes(ns []RangeNode, buckets int) error {
	if len(ns) > MaxNodes {
		return errTooManyNodes
	}
	entries := 0
	for _, n := range ns {
		if !validRange(n.Lo, n.Hi, buckets) {
			return errBadNode
		}
		entries += len(n.Hashes)
		if entries > MaxNodeEntries {
			return errTooManyNodes
		}
		switch {
		case n.List:
			if len(n.Offs) != len(n.Hashes) || len(n.Counts) > 1 {
				return errBadNode
			}
		case len(n.Hashes) > 0:
			bs := children(n.Lo, n.Hi)
			if len(bs) == 0 || len(n.Hashes) != len(bs)-1 || len(n.Counts) != len(n.Hashes) || len(n.Offs) != 0 {
				return errBadNode
			}
		default:
			if len(n.Counts) > 1 || len(n.Offs) != 0 {
				return errBadNode
			}
		}
		for _, o := range n.Offs {
			if o >= n.Hi-n.Lo {
				return errBadNode
			}
		}
	}
	return nil
}

// validateSpans checks pulled spans: non-empty ranges of slots.
func validateSpans(ss []Span, buckets int) error {
	if len(ss) > MaxNodes {
		return errTooManyNodes
	}
	for _, s := range ss {
		if s.Lo >= s.Hi || s.Hi > rootHi(buckets) {
			return errBadNode
		}
	}
	return nil
}

// BucketRange is a range of whole buckets [Lo, Hi) as the initiator
// describes it on a digest: every bucket's fingerprint, cut to 16 bits
// after mixing it with the digest's salt (FPs: 2 bytes a bucket, big
// endian), and its key count (Counts: a varint a bucket, the difference
// from the count of the bucket before, zigzag-encoded; the first from
// 0).
// Width, on a range sent again after a sketch failed to decode, is the
// least width of a sketch of its buckets.
type BucketRange struct {
	_      struct{} `cbor:",toarray"`
	Lo     uint64
	Hi     uint64
	FPs    []byte
	Counts []byte
	Width  uint32
}

// Sketch is a responder's set sketch of the keys of one bucket (see
// sketch.go): Width cells a table, one or three tables, Cells encoded
// cell by cell, Sum the sum of the elements' checks.
type Sketch struct {
	_      struct{} `cbor:",toarray"`
	Bucket uint64
	Width  uint32
	Cells  []byte
	Sum    uint64
}

// Bucket ranges (Message.Ranges) and their answers.
const (
	// MaxRangeBuckets bounds the buckets of a cluster whose rounds begin
	// with bucket ranges (more begin with the root's split).
	MaxRangeBuckets = 4096
	// rangeKeys bounds the keys (by the initiator's counts) of the
	// buckets of one range, so that a responder loads a range's
	// differing buckets in one snapshot.
	rangeKeys = aeLoadKeys / 2
	// rangeFP is the bytes of a bucket's fingerprint in a range: a
	// coincidence (odds of 2^-16 for a bucket that differs) costs the
	// range one more round trip (see ranges.go).
	rangeFP = 2
)

// roundSalt is the salt of the fingerprints and sketches of step step
// of round round: each digest a round sends has its own, so a
// coincidence of cut fingerprints does not repeat when a range is sent
// again.
func roundSalt(round, step uint64) uint64 { return mix64(round ^ mix64(step^0x5bd1e995)) }

// cutFP returns a bucket's fingerprint as a range carries it.
func cutFP(h, salt uint64) uint16 { return uint16(mix64(h^salt) >> 48) }

// bucketSalt is the salt of the sketch of bucket b of a digest of salt
// salt.
func bucketSalt(salt, b uint64) uint64 { return mix64(salt ^ b ^ 0x27d4eb2f165667c5) }

// rangeReq is a bucket range the initiator sends: its buckets' whole
// fingerprints and counts as it saw them.
type rangeReq struct {
	lo, hi uint64 // buckets
	fps    []uint64
	counts []uint32
	width  uint32
}

// bucketRanges cuts the buckets of v into ranges of at most rangeKeys
// keys (by its counts) and at most TreeFanout*TreeFanout buckets.
func bucketRanges(v *view) []*rangeReq {
	var out []*rangeReq
	var cur *rangeReq
	var keys uint64
	for b := range uint64(len(v.snap.Buckets)) {
		c := v.snap.Counts[b]
		if cur == nil || (len(cur.fps) > 0 && keys+uint64(c) > rangeKeys) || len(cur.fps) >= TreeFanout*TreeFanout {
			cur = &rangeReq{lo: b}
			out = append(out, cur)
			keys = 0
		}
		cur.hi = b + 1
		cur.fps = append(cur.fps, v.snap.Buckets[b])
		cur.counts = append(cur.counts, c)
		keys += uint64(c)
	}
	return out
}

// wire returns r as a range of a digest of salt salt.
func (r *rangeReq) wire(salt uint64) BucketRange {
	w := BucketRange{Lo: r.lo, Hi: r.hi, FPs: make([]byte, 0, rangeFP*len(r.fps)), Width: r.width}
	prev := int64(0)
	for i, h := range r.fps {
		w.FPs = binary.BigEndian.AppendUint16(w.FPs, cutFP(h, salt))
		w.Counts = binary.AppendVarint(w.Counts, int64(r.counts[i])-prev)
		prev = int64(r.counts[i])
	}
	return w
}

// rangeCounts returns the counts of a range (checked by validate).
func rangeCounts(w *BucketRange) []uint32 {
	out := make([]uint32, 0, w.Hi-w.Lo)
	c := int64(0)
	for b := w.Counts; len(b) > 0; {
		d, n := binary.Varint(b)
		c += d
		out = append(out, uint32(c))
		b = b[n:]
	}
	return out
}

// validateRanges checks the ranges of a digest: valid bucket ranges, one
// cut fingerprint and one count (at most 2^32−1) a bucket, at most
// MaxRangeBuckets buckets in all, sketch widths within bounds.
func validateRanges(rs []BucketRange, buckets int) error {
	if len(rs) > MaxRangeBuckets {
		return errTooManyNodes
	}
	total := uint64(0)
	for _, r := range rs {
		if r.Lo >= r.Hi || r.Hi > uint64(buckets) || r.Width > MaxSketchWidth {
			return errBadNode
		}
		n := r.Hi - r.Lo
		if total += n; total > MaxRangeBuckets {
			return errTooManyNodes
		}
		if uint64(len(r.FPs)) != rangeFP*n || uint64(len(r.Counts)) > 5*n {
			return errBadNode
		}
		k, c := uint64(0), int64(0)
		for b := r.Counts; len(b) > 0; k++ {
			d, m := binary.Varint(b)
			if m <= 0 || d < -math.MaxUint32 || d > math.MaxUint32 {
				return errBadNode
			}
			if c += d; c < 0 || c > math.MaxUint32 {
				return errBadNode
			}
			b = b[m:]
		}
		if k != n {
			return errBadNode
		}
	}
	return nil
}

// validateSketches checks the sketches of a diff: valid buckets, widths
// and shapes (an empty sketch, width 0, asks for its bucket again), and
// at most MaxNodeEntries cells in all.
func validateSketches(ss []Sketch, buckets int) error {
	if len(ss) > MaxNodes {
		return errTooManyNodes
	}
	cells := 0
	for _, s := range ss {
		if s.Bucket >= uint64(buckets) {
			return errBadNode
		}
		if s.Width == 0 {
			if len(s.Cells) != 0 || s.Sum != 0 {
				return errBadSketch
			}
			continue
		}
		if _, err := sketchShape(s.Width, len(s.Cells)); err != nil {
			return err
		}
		if cells += len(s.Cells) / sketchCell; cells > MaxNodeEntries {
			return errTooManyNodes
		}
	}
	return nil
}

// appendSpanRuns returns the compact form of sorted, disjoint spans
// (Message.SpanRuns).
func appendSpanRuns(b []byte, ss []Span) []byte {
	var end uint64
	for _, s := range ss {
		b = binary.AppendUvarint(b, s.Lo-end)
		b = binary.AppendUvarint(b, s.Hi-s.Lo-1)
		end = s.Hi
	}
	return b
}

// spanRuns decodes Message.SpanRuns: sorted disjoint spans within the
// slots of buckets buckets, at most MaxNodes.
func spanRuns(b []byte, buckets int) ([]Span, error) {
	var out []Span
	var end uint64
	top := rootHi(buckets)
	for len(b) > 0 {
		if len(out) >= MaxNodes {
			return nil, errTooManyNodes
		}
		gap, n := binary.Uvarint(b)
		if n <= 0 {
			return nil, errBadNode
		}
		b = b[n:]
		l, n := binary.Uvarint(b)
		if n <= 0 {
			return nil, errBadNode
		}
		b = b[n:]
		if gap > top-end || l >= top-end-gap {
			return nil, errBadNode
		}
		s := Span{Lo: end + gap, Hi: end + gap + l + 1}
		out = append(out, s)
		end = s.Hi
	}
	return out, nil
}
