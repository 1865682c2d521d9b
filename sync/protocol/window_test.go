package protocol_test

import (
	"slices"
	"testing"
	"time"

	"github.com/latticedb/lattice/crdt"
	"github.com/latticedb/lattice/sync/protocol"
)

// deltas returns the delta messages of a Ready, dropping the rest.
func deltas(r protocol.Ready) int {
	n := 0
	for _, env := range r.Messages {
		if env.Msg.Kind == protocol.KindDelta {
			n++
		}
	}
	return n
}

// TestWindowSizedToThePath checks that a peer 200 ms away gets more than
// Window messages in flight once the round trip is measured, that the
// bytes in flight stay within the window, and that the window, full,
// holds deltas back until acknowledgements free it.
func TestWindowSizedToThePath(t *testing.T) {
	p := newPair()
	cfg := protocol.DefaultConfig()
	// One delta and its acknowledgement 200 ms later: the round trip.
	localAdd(p.a, 1, "cart-0", p.now)
	p.carry(p.a, p.b, "us-east")
	p.now = p.now.Add(200 * time.Millisecond)
	p.b.Tick(p.now)
	p.carry(p.b, p.a, "eu-west")
	st := p.a.Status()[0]
	if st.RTT != 200*time.Millisecond || st.InflightMsgs != 0 {
		t.Fatalf("status %+v, want a round trip of 200 ms and nothing in flight", st)
	}
	// 2,000 writes a second for 2 s, never acknowledged.
	sent := 0
	for seq := uint64(2); seq <= 4001; seq++ {
		p.now = p.now.Add(500 * time.Microsecond)
		localAdd(p.a, seq, "cart-1", p.now)
		if seq%40 == 0 {
			p.a.Tick(p.now)
		}
		sent += deltas(p.a.Ready())
		st = p.a.Status()[0]
		if st.InflightMsgs > cfg.Window && st.InflightBytes > st.WindowBytes+200 {
			t.Fatalf("after write %d: %d bytes in flight, window %d", seq, st.InflightBytes, st.WindowBytes)
		}
	}
	if sent <= cfg.Window {
		t.Fatalf("%d messages in flight, no more than the floor of %d: the window did not open", sent, cfg.Window)
	}
	if st.PendingDeltas == 0 || st.InflightBytes < st.WindowBytes-200 {
		t.Fatalf("status %+v: 2 s of writes unacknowledged should have filled the window", st)
	}
	if st.WindowBytes < protocol.MinWindowBytes || st.WindowBytes > cfg.MaxWindowBytes {
		t.Fatalf("window %d out of %d..%d", st.WindowBytes, protocol.MinWindowBytes, cfg.MaxWindowBytes)
	}
}

// TestAckRuns checks the compact form of acknowledgements: Decode gives
// back the set of tags Encode was given, in fewer bytes than a list, and
// refuses runs that overflow or name too many tags.
func TestAckRuns(t *testing.T) {
	tags := []uint64{1 << 31, 1<<31 + 2, 1<<31 + 1, 1<<31 + 3, 1<<31 + 9, 1<<31 + 10, 1 << 40}
	m := &protocol.Message{Kind: protocol.KindAck, Acks: tags}
	b, err := protocol.Encode(m)
	if err != nil {
		t.Fatal(err)
	}
	legacy, _ := crdt.Marshal(m)
	if len(b) >= len(legacy) {
		t.Errorf("runs take %d bytes, a list %d", len(b), len(legacy))
	}
	got, err := protocol.Decode(b, 64)
	if err != nil {
		t.Fatal(err)
	}
	want := slices.Sorted(slices.Values(tags))
	if !slices.Equal(got.AckTags(), want) || got.Acks != nil {
		t.Fatalf("decoded acks %v (list %v), want %v", got.AckTags(), got.Acks, want)
	}
	for name, runs := range map[string][]uint64{
		"odd length":    {5},
		"overflow":      {1<<64 - 2, 0, 0, 0},
		"too many":      {1, protocol.MaxKeys},
		"too many runs": slices.Repeat([]uint64{1, protocol.MaxKeys / 2}, 2),
	} {
		b, _ := crdt.Marshal(&protocol.Message{Kind: protocol.KindAck, AckRuns: runs})
		if _, err := protocol.Decode(b, 64); err == nil {
			t.Errorf("%s: runs %v accepted", name, runs)
		}
	}
}

// TestDotRunsDatedBack checks that the receiver of a delta dates its
// dots back by the age the sender gave them and by half the round trip
// it measured to the sender.
func TestDotRunsDatedBack(t *testing.T) {
	p := newPair()
	origin := p.now
	p.now = p.now.Add(3 * time.Millisecond) // sent 3 ms after the write
	var c crdt.Cart
	g := &crdt.Group{}
	g.AddCart("cart-0", c.Add("us-east", "sku-1", 1))
	p.a.Local(protocol.LocalDelta{Seq: 1, Group: g, At: origin}, p.now)
	m := p.a.Ready().Messages[0].Msg
	if m.Kind != protocol.KindDelta || len(m.DotRuns) != 1 || m.Dots != nil {
		t.Fatalf("sent %+v, want a delta with dot runs", m)
	}
	b, _ := protocol.Encode(m)
	got, err := protocol.Decode(b, protocol.DefaultConfig().Buckets)
	if err != nil {
		t.Fatal(err)
	}
	p.b.Step("us-east", got, p.now.Add(40*time.Millisecond))
	r := p.b.Ready()
	if len(r.Applies) != 1 || len(r.Applies[0].Ranges) != 1 {
		t.Fatalf("applies %+v, want one with one range", r.Applies)
	}
	// No round trip measured yet: dated back by the age only.
	if at := time.UnixMicro(r.Applies[0].Ranges[0].AtUs); !at.Equal(origin.Add(40 * time.Millisecond)) {
		t.Fatalf("dated %s after the write, want 40 ms (received 43 ms after it, 3 ms old when sent)", at.Sub(origin))
	}
	// With a round trip of 50 ms measured, 25 ms more.
	p.now = p.now.Add(50 * time.Millisecond)
	p.b.Tick(p.now)
	p.carry(p.b, p.a, "eu-west") // acknowledges tag 1; a measures its round trip
	localAdd(p.b, 1, "cart-1", p.now)
	p.carry(p.b, p.a, "eu-west")
	p.now = p.now.Add(protocol.DefaultConfig().AckDelay)
	p.a.Tick(p.now)
	p.carry(p.a, p.b, "us-east")
	if rtt := p.b.Status()[0].RTT; rtt != protocol.DefaultConfig().AckDelay {
		t.Fatalf("round trip %s, want %s", rtt, protocol.DefaultConfig().AckDelay)
	}
	sentAt := p.now
	localAdd(p.a, 2, "cart-2", sentAt)
	m = p.a.Ready().Messages[0].Msg
	b, _ = protocol.Encode(m)
	got, _ = protocol.Decode(b, protocol.DefaultConfig().Buckets)
	p.b.Step("us-east", got, sentAt.Add(protocol.DefaultConfig().AckDelay/2))
	r = p.b.Ready()
	if len(r.Applies) != 1 || len(r.Applies[0].Ranges) != 1 {
		t.Fatalf("applies %+v, want one with one range", r.Applies)
	}
	if at := time.UnixMicro(r.Applies[0].Ranges[0].AtUs); !at.Equal(sentAt) {
		t.Fatalf("dated %s after the write, want 0 (received half a round trip later)", at.Sub(sentAt))
	}
}

// TestLocalBytes checks that LocalBytes counts the canonical encodings of
// the region's own deltas, and not the deltas it receives and relays.
func TestLocalBytes(t *testing.T) {
	p := newPair()
	want := 0
	for i := range 5 {
		var c crdt.Cart
		g := &crdt.Group{}
		g.AddCart("cart-"+string(rune('a'+i)), c.Add("us-east", "sku-1", int64(i+1)))
		want += len(crdt.EncodeGroup(g))
		p.a.Local(protocol.LocalDelta{Seq: uint64(i + 1), Group: g, At: p.now}, p.now)
	}
	if got := p.a.LocalBytes(); got != uint64(want) {
		t.Fatalf("LocalBytes %d after 5 local deltas, want %d (their encodings)", got, want)
	}
	p.carry(p.a, p.b, "us-east")
	if got := p.b.LocalBytes(); got != 0 {
		t.Fatalf("the receiver counts %d local bytes for deltas it received, want 0", got)
	}
}
