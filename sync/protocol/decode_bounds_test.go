package protocol_test

import (
	"bytes"
	"fmt"
	"runtime"
	"testing"

	"github.com/latticedb/lattice/crdt"
	"github.com/latticedb/lattice/sync/protocol"
)

// TestDeltaReferringPastSenderTableRefused: a delta's GroupRefs refers to
// entries of a replica table that begins with the sender's region and
// goes on with the distinct origins of its dot ranges (Message.GroupRefs).
// Decode checks the references against a table whose first entry is a
// stand-in for the sender, so a delta whose dot ranges name the sender's
// own region explicitly passes with one entry more than the table Resolve
// builds once the sender is known. Such a delta from a peer (hostile, or
// an encoder that counts itself as an origin) must be refused, by Decode
// or by Step, not index past the table: Step runs on the replication
// loop, and a panic there ends the region.
func TestDeltaReferringPastSenderTableRefused(t *testing.T) {
	var c crdt.Cart
	g := &crdt.Group{}
	g.AddCart("cart-0", c.Add("us-east", "sku-1", 1))
	enc := crdt.EncodeGroup(g)
	name := append([]byte{0x60 | byte(len("us-east"))}, "us-east"...) // CBOR text "us-east"
	if !bytes.Contains(enc, name) {
		t.Fatalf("test setup: the group's encoding does not name us-east: %x", enc)
	}
	// The replica name as a reference to entry 1 of the table
	// [sender, "us-east"], as an encoder that lists the sender among the
	// origins would write it.
	refs := bytes.ReplaceAll(enc, name, []byte{0xe0 | 1})
	b, err := crdt.Marshal(&protocol.Message{
		Tag:       1,
		DotRuns:   []protocol.DotRun{{Origin: "us-east", From: 1}},
		GroupRefs: refs,
	})
	if err != nil {
		t.Fatal(err)
	}
	m, err := protocol.Decode(b, protocol.DefaultConfig().Buckets)
	if err != nil {
		t.Logf("Decode refused it: %v", err)
		return
	}
	p := newPair()
	defer func() {
		if r := recover(); r != nil {
			t.Fatalf("Step of a delta from us-east whose dots name us-east and whose group refers to table entry 1 panicked: %v", r)
		}
	}()
	p.b.Step("us-east", m, p.now)
}

// TestDecodeAckRunsCostFollowsSize: decoding a message must cost at most
// a small multiple of its size (the crdt decoders' allocation tests allow
// 64×), beyond the fixed cost of any message. The compact form of
// acknowledgements (AckRuns) lets [first tag, run length − 1] name up to
// MaxKeys tags in a few bytes, and Decode expands it into Acks, a slice
// of 8 bytes a tag: 9 bytes of input become 64 KiB held by the decoded
// message (and the replication loop's inbound queue, which counts a
// message by its payload's length, holds up to MaxInbound of them).
func TestDecodeAckRunsCostFollowsSize(t *testing.T) {
	const factor = 64
	encode := func(runs []uint64) []byte {
		b, err := crdt.Marshal(&protocol.Message{Kind: protocol.KindAck, AckRuns: runs})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	allocated := func(b []byte) (uint64, *protocol.Message) {
		var m *protocol.Message
		var err error
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		m, err = protocol.Decode(b, 64)
		runtime.ReadMemStats(&after)
		if err != nil {
			t.Fatalf("Decode(%x): %v", b, err)
		}
		return after.TotalAlloc - before.TotalAlloc, m
	}
	// The fixed cost: an acknowledgement of one tag, in the same form.
	base, _ := allocated(encode([]uint64{1, 0}))
	for _, n := range []uint64{1024, protocol.MaxKeys} {
		t.Run(fmt.Sprint(n, " tags"), func(t *testing.T) {
			b := encode([]uint64{1, n - 1})
			alloc, m := allocated(b)
			t.Logf("%d bytes decode to %d acknowledgements, %d bytes allocated (one tag: %d)", len(b), len(m.AckTags()), alloc, base)
			if alloc > base+uint64(factor*len(b)) {
				t.Fatalf("decoding an acknowledgement of %d bytes allocated %d bytes, %d more than one of a single tag: more than %d× its size",
					len(b), alloc, alloc-base, factor)
			}
		})
	}
}
