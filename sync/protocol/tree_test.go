package protocol

import (
	"fmt"
	"testing"

	"github.com/latticedb/lattice/crdt"
)

// TestTreeChildren checks that every node's children are valid nodes
// that cover it exactly, in order, at most TreeFanout of them, down to
// single slots, for bucket counts that do and do not divide evenly.
func TestTreeChildren(t *testing.T) {
	for _, buckets := range []int{1, 7, 64, 1024, MaxBuckets} {
		// Walk the first child, a middle child and the last child at
		// every level.
		lo, hi := uint64(0), rootHi(buckets)
		for depth := 0; ; depth++ {
			if !validRange(lo, hi, buckets) {
				t.Fatalf("buckets %d depth %d: [%x, %x) is not a valid node", buckets, depth, lo, hi)
			}
			bs := children(lo, hi)
			if bs == nil {
				if hi-lo != 1 {
					t.Fatalf("buckets %d: [%x, %x) has no children but %d slots", buckets, lo, hi, hi-lo)
				}
				break
			}
			if len(bs) < 3 || len(bs) > TreeFanout+1 || bs[0] != lo || bs[len(bs)-1] != hi {
				t.Fatalf("buckets %d: children of [%x, %x): %x", buckets, lo, hi, bs)
			}
			for i := 1; i < len(bs); i++ {
				if bs[i] <= bs[i-1] || !validRange(bs[i-1], bs[i], buckets) {
					t.Fatalf("buckets %d: child [%x, %x) of [%x, %x)", buckets, bs[i-1], bs[i], lo, hi)
				}
			}
			k := (depth % 3) * (len(bs) - 2) / 2
			lo, hi = bs[k], bs[k+1]
		}
	}
}

// TestValidateNodes checks that the decoder's check of tree nodes
// accepts what a region sends and rejects malformed nodes.
func TestValidateNodes(t *testing.T) {
	const buckets = 64
	root := RangeNode{Lo: 0, Hi: rootHi(buckets), Hashes: make([]uint64, 16), Counts: make([]uint32, 16)}
	list := RangeNode{Lo: 3 << 32, Hi: 4 << 32, List: true, Offs: []uint64{0, 5}, Hashes: []uint64{1, 2}, Counts: []uint32{2}}
	have := RangeNode{Lo: 8 << 32, Hi: 12 << 32, Counts: []uint32{9}}
	if err := validateNodes([]RangeNode{root, list, have}, buckets); err != nil {
		t.Fatalf("valid nodes rejected: %v", err)
	}
	bad := map[string]RangeNode{
		"empty range":           {Lo: 5, Hi: 5, List: true},
		"past the root":         {Lo: 0, Hi: rootHi(buckets) + 1, List: true},
		"across a bucket edge":  {Lo: 1<<32 + 1, Hi: 2<<32 + 1, List: true},
		"split of wrong arity":  {Lo: 0, Hi: rootHi(buckets), Hashes: make([]uint64, 15), Counts: make([]uint32, 15)},
		"split without counts":  {Lo: 0, Hi: rootHi(buckets), Hashes: make([]uint64, 16)},
		"split of one slot":     {Lo: 7, Hi: 8, Hashes: []uint64{1}, Counts: []uint32{1}},
		"list offset outside":   {Lo: 3 << 32, Hi: 3<<32 + 10, List: true, Offs: []uint64{10}, Hashes: []uint64{1}},
		"list offsets unpaired": {Lo: 3 << 32, Hi: 4 << 32, List: true, Offs: []uint64{1, 2}, Hashes: []uint64{1}},
		"have with offsets":     {Lo: 3 << 32, Hi: 4 << 32, Offs: []uint64{1}},
	}
	for name, n := range bad {
		if err := validateNodes([]RangeNode{n}, buckets); err == nil {
			t.Errorf("%s: accepted %+v", name, n)
		}
	}
	if err := validateSpans([]Span{{Lo: 1, Hi: 1}}, buckets); err == nil {
		t.Error("an empty span was accepted")
	}
	if err := validateSpans([]Span{{Lo: 1<<32 + 5, Hi: 9 << 32}}, buckets); err != nil {
		t.Errorf("a span across buckets was rejected: %v", err)
	}
}

// TestKeySlotsSpreadWithinBuckets checks that the keys of one bucket
// spread over its slots: splitting a bucket of 4,096 keys into TreeFanout
// children leaves none of them empty or holding more than twice its
// share.
func TestKeySlotsSpreadWithinBuckets(t *testing.T) {
	const buckets = 1
	counts := make([]int, TreeFanout)
	bs := children(0, rootHi(buckets))
	for i := range 4096 {
		s := crdt.KeySlot(fmt.Sprintf("c/cart-%07d", i), buckets)
		for j := range TreeFanout {
			if s >= bs[j] && s < bs[j+1] {
				counts[j]++
			}
		}
	}
	for j, n := range counts {
		if n == 0 || n > 2*4096/TreeFanout {
			t.Errorf("child %d holds %d of 4096 keys: %v", j, n, counts)
		}
	}
}
