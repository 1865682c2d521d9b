package protocol

import (
	"cmp"
	"errors"
	"fmt"
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
	first, err := p.st.Snapshot(nil)
	if err != nil {
		return nil, err
	}
	counts := first.Counts
	if len(counts) != len(first.Buckets) {
		counts = nil
	}
	want := need(counts)
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
