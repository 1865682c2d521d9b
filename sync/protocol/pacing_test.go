package protocol_test

import (
	"testing"
	"time"

	"github.com/latticedb/lattice/crdt"
	"github.com/latticedb/lattice/sync/protocol"
)

// pacingPeer returns a protocol of us-east whose peer eu-west is up, and
// a local delta maker.
func pacingPeer(t *testing.T) (*protocol.Protocol, func(seq uint64, at time.Time)) {
	t.Helper()
	p := protocol.New("us-east", []crdt.ReplicaID{"eu-west"}, crdt.Context{}, nil, protocol.DefaultConfig())
	t0 := time.Unix(1_800_000_000, 0)
	p.PeerUp("eu-west", t0)
	p.Ready()
	local := func(seq uint64, at time.Time) {
		var c crdt.Cart
		g := &crdt.Group{}
		g.AddCart("cart-1", c.Add("us-east", "sku-1", 1))
		p.Local(protocol.LocalDelta{Seq: seq, Group: g, At: at}, at)
	}
	return p, local
}

func deltaMsgs(r protocol.Ready) int {
	n := 0
	for _, env := range r.Messages {
		if env.Msg.Kind == protocol.KindDelta {
			n++
		}
	}
	return n
}

// TestPacingHoldsDenseDeltas sends a delta at once, holds the ones that
// follow within BatchDelay until Due, and sends them in one message at
// Flush; an urged delta is not held.
func TestPacingHoldsDenseDeltas(t *testing.T) {
	p, local := pacingPeer(t)
	t0 := time.Unix(1_800_000_001, 0)
	local(1, t0)
	if n := deltaMsgs(p.Ready()); n != 1 {
		t.Fatalf("first delta: %d messages, want 1", n)
	}
	t1 := t0.Add(100 * time.Microsecond)
	local(2, t1)
	local(3, t1.Add(100*time.Microsecond))
	if n := deltaMsgs(p.Ready()); n != 0 {
		t.Fatalf("dense deltas: %d messages, want them held", n)
	}
	want := t1.Add(protocol.DefaultConfig().BatchDelay)
	if due := p.Due(); !due.Equal(want) {
		t.Fatalf("Due %v, want %v", due, want)
	}
	p.Flush(want.Add(-time.Microsecond))
	if n := deltaMsgs(p.Ready()); n != 0 {
		t.Fatalf("flush before due: %d messages", n)
	}
	p.Flush(want)
	r := p.Ready()
	if n := deltaMsgs(r); n != 1 {
		t.Fatalf("flush at due: %d messages, want 1", n)
	}
	if got := r.Messages[0].Msg.DotRuns; len(got) != 1 || got[0].From != 2 || got[0].Span != 1 {
		t.Fatalf("held batch carries %+v, want dots 2..3", got)
	}
	if !p.Due().IsZero() {
		t.Fatalf("Due %v after the flush, want none", p.Due())
	}
	// An urged delta leaves at once.
	t2 := want.Add(100 * time.Microsecond)
	local(4, t2)
	if !p.Urge(crdt.Dot{Replica: "us-east", Counter: 4}, t2) {
		t.Fatal("urged delta not in the buffer")
	}
	if n := deltaMsgs(p.Ready()); n != 1 {
		t.Fatalf("urged delta: %d messages, want 1", n)
	}
}

// TestPacingSparseDeltasLeaveAtOnce: deltas further apart than
// BatchDelay are never held.
func TestPacingSparseDeltasLeaveAtOnce(t *testing.T) {
	p, local := pacingPeer(t)
	at := time.Unix(1_800_000_001, 0)
	for seq := uint64(1); seq <= 5; seq++ {
		local(seq, at)
		if n := deltaMsgs(p.Ready()); n != 1 {
			t.Fatalf("delta %d: %d messages, want 1", seq, n)
		}
		at = at.Add(2 * protocol.DefaultConfig().BatchDelay)
	}
}

// TestGroupRefsRoundTrip encodes a delta the protocol made (its group
// with references to the sender's name), decodes it and resolves it
// from the sender: the group is the one sent, and smaller on the wire.
func TestGroupRefsRoundTrip(t *testing.T) {
	p, local := pacingPeer(t)
	local(1, time.Unix(1_800_000_001, 0))
	r := p.Ready()
	m := r.Messages[0].Msg
	b, err := protocol.Encode(m)
	if err != nil {
		t.Fatal(err)
	}
	plain, _ := crdt.Marshal(m)
	if len(b) >= len(plain) {
		t.Fatalf("with references %d bytes, without %d", len(b), len(plain))
	}
	got, err := protocol.Decode(b, protocol.DefaultConfig().Buckets)
	if err != nil {
		t.Fatal(err)
	}
	if got.Kind != protocol.KindDelta || got.Group != nil || got.GroupRefs == nil {
		t.Fatalf("decoded %s, group %v, refs %x", got.Kind, got.Group, got.GroupRefs)
	}
	if err := got.Resolve("us-east"); err != nil {
		t.Fatal(err)
	}
	if string(crdt.EncodeGroup(got.Group)) != string(crdt.EncodeGroup(m.Group)) {
		t.Fatal("the resolved group differs from the one sent")
	}
	// A group that resolves from another sender names that sender: a
	// different, still valid, group.
	again, _ := protocol.Decode(b, protocol.DefaultConfig().Buckets)
	if err := again.Resolve("eu-west"); err != nil {
		t.Fatal(err)
	}
	if _, ok := again.Group.Carts["cart-1"]; !ok {
		t.Fatal("cart-1 missing")
	}
}

// TestGroupRefsRejected: malformed references are refused by Decode.
func TestGroupRefsRejected(t *testing.T) {
	dots := []protocol.DotRange{{From: 1, To: 1}}
	for name, refs := range map[string][]byte{
		"reference past the table": {0x82, 0x81, 0x82, 0xe5, 0x80, 0x80},
		"two-byte simple value":    {0xf8, 0x20},
		"byte string":              {0x41, 0x00},
		"map":                      {0xa0},
		"truncated text":           {0x65, 'a'},
	} {
		b, err := crdt.Marshal(&protocol.Message{Tag: 1, Dots: dots, GroupRefs: refs})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := protocol.Decode(b, 64); err == nil {
			t.Errorf("%s: decoded", name)
		}
	}
	// References that are well formed but resolve to no valid group are
	// refused by Resolve.
	b, _ := crdt.Marshal(&protocol.Message{Tag: 1, Dots: dots, GroupRefs: []byte{0x81, 0xe0}})
	m, err := protocol.Decode(b, 64)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Resolve("us-east"); err == nil {
		t.Error("an ill-shaped group resolved")
	}
}
