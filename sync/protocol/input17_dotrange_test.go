package protocol_test

import (
	"runtime"
	"testing"

	"github.com/latticedb/lattice/crdt"
	"github.com/latticedb/lattice/sync/protocol"
)

// TestDeltaDotRangeCostFollowsSize: receiving a delta must cost at most a
// small multiple of its size beyond the fixed cost of any delta (the
// decoders' allocation tests allow 64×). A dot range is three integers on
// the wire, From and a span of up to MaxRangeLen − 1, so a delta of a few
// dozen bytes may name 65,536 dots; the receiver must not allocate per
// dot named, only per byte received. The delta here carries an empty
// group and one range of the sender's own dots that starts past its first
// dot; the one-dot delta of the same shape gives the fixed cost.
func TestDeltaDotRangeCostFollowsSize(t *testing.T) {
	const factor = 64
	buckets := protocol.DefaultConfig().Buckets
	encode := func(span uint64) []byte {
		b, err := crdt.Marshal(&protocol.Message{
			Kind:    protocol.KindDelta,
			Tag:     1,
			DotRuns: []protocol.DotRun{{From: 2, Span: span}},
			Group:   &crdt.Group{},
		})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	received := func(b []byte) uint64 {
		p := newPair()
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		m, err := protocol.Decode(b, buckets)
		if err != nil {
			t.Fatalf("Decode(%x): %v", b, err)
		}
		p.b.Step("us-east", m, p.now)
		runtime.ReadMemStats(&after)
		return after.TotalAlloc - before.TotalAlloc
	}
	small := encode(0)
	base := received(small)
	big := encode(protocol.MaxRangeLen - 1)
	alloc := received(big)
	t.Logf("a delta of %d bytes naming one dot: %d bytes allocated; of %d bytes naming %d dots: %d bytes",
		len(small), base, len(big), protocol.MaxRangeLen, alloc)
	if alloc > base+uint64(factor*len(big)) {
		t.Fatalf("receiving a delta of %d bytes that names %d dots allocated %d bytes, %d more than the same delta naming one dot: more than %d× its size",
			len(big), protocol.MaxRangeLen, alloc, alloc-base, factor)
	}
}
