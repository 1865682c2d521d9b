package protocol_test

import (
	"fmt"
	"testing"

	"github.com/latticedb/lattice/crdt"
	"github.com/latticedb/lattice/sync/protocol"
)

func seedMessages() []*protocol.Message {
	var c crdt.Cart
	d := c.Add("us-east", "book", 2)
	g := &crdt.Group{}
	g.AddCart("cart-1", d)
	var it crdt.Item
	g.AddItem("sku-1", it.Restock("eu-west", 5))
	var ctx crdt.Context
	ctx.Insert(crdt.Dot{Replica: "us-east", Counter: 1})
	applied := crdt.EncodeContext(&ctx)
	return []*protocol.Message{
		{Kind: protocol.KindDelta, Tag: 7, Dots: []protocol.DotRange{{From: 1, To: 1, AtUs: 1}}, Group: g, Acks: []uint64{3}},
		{Kind: protocol.KindAck, Acks: []uint64{1, 2}, Applied: applied},
		{Kind: protocol.KindDigest, Round: 1, Buckets: make([]uint64, 64), Applied: applied},
		{Kind: protocol.KindDiff, Round: 1, Diff: []uint32{3, 9}, Keys: []protocol.KeyHash{{Key: "c/cart-1", Hash: 42}}, Applied: applied, Final: true},
		{Kind: protocol.KindObjects, Round: 1, Group: g, Pull: []string{"i/sku-1"}, Applied: applied, Final: true},
		{Kind: protocol.KindDigest, Round: 1, Step: 1, Applied: applied,
			Nodes: []protocol.RangeNode{{Lo: 0, Hi: 64 << 32, Hashes: make([]uint64, 16), Counts: make([]uint32, 16)}}},
		{Kind: protocol.KindDiff, Round: 1, Step: 1, Run: 9, Of: 3, Applied: applied, Nodes: []protocol.RangeNode{
			{Lo: 5 << 32, Hi: 6 << 32, List: true, Offs: []uint64{7, 1 << 20}, Hashes: []uint64{1, 2}, Counts: []uint32{2}},
			{Lo: 8 << 32, Hi: 12 << 32, Counts: []uint32{4000}}}},
		{Kind: protocol.KindObjects, Round: 1, Step: 2, Spans: []protocol.Span{{Lo: 1, Hi: 2}, {Lo: 3 << 32, Hi: 9 << 32}}},
		{Kind: protocol.KindObjects, Round: 1, Step: 2, Pushes: 3, Of: 77, Final: true, Applied: applied},
		{Kind: protocol.KindDigest, Round: 1, Step: 1, Applied: applied,
			Ranges: []protocol.BucketRange{{Lo: 0, Hi: 3, FPs: make([]byte, 6), Counts: []byte{0x80, 0x0f, 0x01, 0x02}}, {Lo: 60, Hi: 64, FPs: make([]byte, 8), Counts: make([]byte, 4), Width: 6}}},
		{Kind: protocol.KindDiff, Round: 1, Step: 1, Run: 9, Of: 3, Applied: applied, Eq: []uint64{1, 2}, Next: 2,
			Sketches: []protocol.Sketch{{Bucket: 2, Width: 1, Cells: make([]byte, 15), Sum: 5}, {Bucket: 61, Width: 2, Cells: make([]byte, 90)}, {Bucket: 62}},
			Nodes:    []protocol.RangeNode{{Lo: 1 << 32, Hi: 2 << 32, Counts: []uint32{4000}}}},
		{Kind: protocol.KindObjects, Round: 1, Step: 3, SpanRuns: []byte{0x01, 0x00, 0x80, 0x80, 0x04, 0x00}},
	}
}

// FuzzDecodeMessage feeds arbitrary bytes to the decoder of peer
// messages: it must never panic, and what it accepts must be valid (it
// encodes and decodes again).
func FuzzDecodeMessage(f *testing.F) {
	for _, m := range seedMessages() {
		b, err := protocol.Encode(m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{0xa1, 0x01, 0x09})
	f.Add([]byte{0x9f, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := protocol.Decode(b, 64)
		if err != nil {
			return
		}
		again, err := protocol.Encode(m)
		if err != nil {
			t.Fatalf("accepted message does not encode: %v", err)
		}
		if _, err := protocol.Decode(again, 64); err != nil {
			t.Fatalf("accepted message does not decode again: %v", err)
		}
	})
}

func TestDecodeRejectsHostileMessages(t *testing.T) {
	valid := seedMessages()
	mutate := []struct {
		name string
		m    func() *protocol.Message
		want string
	}{
		{"unknown kind", func() *protocol.Message { return &protocol.Message{Kind: 9} }, "unknown message kind"},
		{"delta without group", func() *protocol.Message {
			return &protocol.Message{Kind: protocol.KindDelta, Tag: 1, Dots: []protocol.DotRange{{From: 1, To: 1}}}
		}, "delta without"},
		{"reversed range", func() *protocol.Message {
			m := *valid[0]
			m.Dots = []protocol.DotRange{{From: 5, To: 2}}
			return &m
		}, "invalid dot range"},
		{"too many dots", func() *protocol.Message {
			m := *valid[0]
			m.Dots = []protocol.DotRange{{From: 1, To: protocol.MaxRangeLen + 5}}
			return &m
		}, "dot"},
		{"bad origin", func() *protocol.Message {
			m := *valid[0]
			m.Dots = []protocol.DotRange{{Origin: "no/slash", From: 1, To: 1}}
			return &m
		}, "invalid origin"},
		{"wrong bucket count", func() *protocol.Message {
			m := *valid[2]
			m.Buckets = make([]uint64, 10)
			return &m
		}, "buckets"},
		{"diff out of range", func() *protocol.Message {
			m := *valid[3]
			m.Diff = []uint32{70}
			return &m
		}, "diff buckets"},
		{"bad key", func() *protocol.Message {
			m := *valid[4]
			m.Pull = []string{"x/whatever"}
			return &m
		}, "invalid key"},
		{"range fingerprints short", func() *protocol.Message {
			m := *valid[9]
			m.Ranges = []protocol.BucketRange{{Lo: 0, Hi: 3, FPs: make([]byte, 5), Counts: make([]byte, 3)}}
			return &m
		}, "invalid anti-entropy tree node"},
		{"range counts short", func() *protocol.Message {
			m := *valid[9]
			m.Ranges = []protocol.BucketRange{{Lo: 0, Hi: 3, FPs: make([]byte, 6), Counts: make([]byte, 2)}}
			return &m
		}, "invalid anti-entropy tree node"},
		{"range count negative", func() *protocol.Message {
			m := *valid[9]
			m.Ranges = []protocol.BucketRange{{Lo: 0, Hi: 1, FPs: make([]byte, 2), Counts: []byte{0x01}}}
			return &m
		}, "invalid anti-entropy tree node"},
		{"range beyond buckets", func() *protocol.Message {
			m := *valid[9]
			m.Ranges = []protocol.BucketRange{{Lo: 63, Hi: 65, FPs: make([]byte, 4), Counts: make([]byte, 2)}}
			return &m
		}, "invalid anti-entropy tree node"},
		{"sketch of a bad shape", func() *protocol.Message {
			m := *valid[10]
			m.Sketches = []protocol.Sketch{{Bucket: 2, Width: 2, Cells: make([]byte, 45)}}
			return &m
		}, "invalid sketch"},
		{"sketch too wide", func() *protocol.Message {
			m := *valid[10]
			m.Sketches = []protocol.Sketch{{Bucket: 2, Width: protocol.MaxSketchWidth + 1, Cells: make([]byte, 15*(protocol.MaxSketchWidth+1))}}
			return &m
		}, "invalid sketch"},
		{"empty sketch with cells", func() *protocol.Message {
			m := *valid[10]
			m.Sketches = []protocol.Sketch{{Bucket: 2, Cells: make([]byte, 15)}}
			return &m
		}, "invalid sketch"},
		{"span runs past the slots", func() *protocol.Message {
			m := *valid[11]
			m.SpanRuns = []byte{0x80, 0x80, 0x80, 0x80, 0x80, 0x20, 0x00}
			return &m
		}, "invalid anti-entropy tree node"},
		{"span runs truncated", func() *protocol.Message {
			m := *valid[11]
			m.SpanRuns = []byte{0x01}
			return &m
		}, "invalid anti-entropy tree node"},
		{"both span forms", func() *protocol.Message {
			m := *valid[11]
			m.Spans = []protocol.Span{{Lo: 1, Hi: 2}}
			return &m
		}, "both span forms"},
		{"bad applied context", func() *protocol.Message {
			m := *valid[1]
			m.Applied = []byte{0xff}
			return &m
		}, "applied context"},
		{"oversized applied context", func() *protocol.Message {
			c := crdt.Context{Cloud: map[crdt.Dot]struct{}{}}
			for r := range 8 {
				for k := range uint64(2000) {
					c.Cloud[crdt.Dot{Replica: crdt.ReplicaID(fmt.Sprintf("region-%d", r)), Counter: 1<<40 + 2*k}] = struct{}{}
				}
			}
			m := *valid[1]
			m.Applied = crdt.EncodeContext(&c)
			return &m
		}, "applied context of"},
	}
	for _, tc := range mutate {
		b, err := protocol.Encode(tc.m())
		if err != nil {
			t.Fatal(err)
		}
		_, err = protocol.Decode(b, 64)
		if err == nil || !contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want an error naming %q", tc.name, err, tc.want)
		}
	}
	if _, err := protocol.Decode(make([]byte, protocol.MaxMessageBytes+1), 64); err == nil || !contains(err.Error(), "exceeds limit") {
		t.Errorf("oversized message: %v", err)
	}
	for _, m := range valid {
		b, _ := protocol.Encode(m)
		if _, err := protocol.Decode(b, 64); err != nil {
			t.Errorf("valid %s message refused: %v", m.Kind, err)
		}
	}
}

func contains(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return true
		}
	}
	return false
}
