package protocol_test

import (
	"slices"
	"testing"
	"time"

	"github.com/latticedb/lattice/crdt"
	"github.com/latticedb/lattice/sync/protocol"
)

// nullStorage is a store with nothing in it: these tests exchange deltas
// only, never anti-entropy.
type nullStorage struct{}

func (nullStorage) Snapshot(func([]uint64) []uint32) (*protocol.Snapshot, error) {
	return &protocol.Snapshot{}, nil
}
func (nullStorage) Read([]string) (*crdt.Group, crdt.Context, error) {
	return &crdt.Group{}, crdt.Context{}, nil
}

// pair is two protocols whose messages the test carries by hand.
type pair struct {
	a, b *protocol.Protocol
	now  time.Time
}

func newPair() *pair {
	cfg := protocol.DefaultConfig()
	ids := []crdt.ReplicaID{"us-east", "eu-west"}
	p := &pair{now: time.Unix(1_800_000_000, 0)}
	p.a = protocol.New("us-east", ids, crdt.Context{}, nullStorage{}, cfg)
	p.b = protocol.New("eu-west", ids, crdt.Context{}, nullStorage{}, cfg)
	p.a.PeerUp("eu-west", p.now)
	p.b.PeerUp("us-east", p.now)
	return p
}

// carry delivers the delta and acknowledgement messages of one side's
// Ready to the other and returns them.
func (p *pair) carry(from, to *protocol.Protocol, fromID crdt.ReplicaID) []*protocol.Message {
	var out []*protocol.Message
	for _, env := range from.Ready().Messages {
		if env.Msg.Kind != protocol.KindDelta && env.Msg.Kind != protocol.KindAck {
			continue // anti-entropy of empty stores
		}
		b, err := protocol.Encode(env.Msg)
		if err != nil {
			panic(err)
		}
		m, err := protocol.Decode(b, protocol.DefaultConfig().Buckets)
		if err != nil {
			panic(err)
		}
		out = append(out, m)
		to.Step(fromID, m, p.now)
	}
	return out
}

func localAdd(p *protocol.Protocol, seq uint64, cart string, now time.Time) {
	var c crdt.Cart
	g := &crdt.Group{}
	g.AddCart(cart, c.Add("us-east", "sku-1", 1))
	p.Local(protocol.LocalDelta{Seq: seq, Group: g, At: now}, now)
}

// TestHoldersFromAcknowledgements checks that a peer counts as holding a
// local dot only once it acknowledged the message that carried it, and
// that without urgency the acknowledgement waits for the first tick
// AckDelay after the delta came (with nothing to ride on).
func TestHoldersFromAcknowledgements(t *testing.T) {
	p := newPair()
	d := crdt.Dot{Replica: "us-east", Counter: 1}
	localAdd(p.a, 1, "cart-1", p.now)
	if h := p.a.Holders(d); len(h) != 0 {
		t.Fatalf("holders %v before any acknowledgement", h)
	}
	sent := p.carry(p.a, p.b, "us-east")
	if len(sent) != 1 || sent[0].Kind != protocol.KindDelta || sent[0].Urgent {
		t.Fatalf("sent %+v, want one delta that is not urgent", sent)
	}
	if back := p.carry(p.b, p.a, "eu-west"); len(back) != 0 {
		t.Fatalf("eu-west answered %d messages before a tick; a delta that is not urgent is acknowledged with a tick", len(back))
	}
	p.now = p.now.Add(protocol.DefaultConfig().AckDelay / 2)
	p.b.Tick(p.now)
	if back := p.carry(p.b, p.a, "eu-west"); len(back) != 0 {
		t.Fatalf("eu-west answered %d messages before AckDelay passed", len(back))
	}
	p.now = p.now.Add(protocol.DefaultConfig().AckDelay / 2)
	p.b.Tick(p.now)
	p.carry(p.b, p.a, "eu-west")
	if h := p.a.Holders(d); !slices.Equal(h, []crdt.ReplicaID{"eu-west"}) {
		t.Fatalf("holders %v after the acknowledgement, want [eu-west]", h)
	}
	if h := p.a.Holders(crdt.Dot{Replica: "us-east", Counter: 2}); len(h) != 0 {
		t.Fatalf("holders %v of a dot never sent", h)
	}
}

// TestUrgeBeforeSend checks that a delta urged before it leaves asks for
// its acknowledgement at once, which comes in the receiver's next Ready.
func TestUrgeBeforeSend(t *testing.T) {
	p := newPair()
	p.a.PeerDown("eu-west", p.now) // the delta waits in the buffer
	localAdd(p.a, 1, "cart-1", p.now)
	d := crdt.Dot{Replica: "us-east", Counter: 1}
	if !p.a.Urge(d, p.now) {
		t.Fatal("Urge did not find the buffered delta")
	}
	p.a.PeerUp("eu-west", p.now)
	sent := p.carry(p.a, p.b, "us-east")
	if len(sent) != 1 || !sent[0].Urgent {
		t.Fatalf("sent %+v, want one urgent delta", sent)
	}
	back := p.carry(p.b, p.a, "eu-west")
	if len(back) != 1 || back[0].Kind != protocol.KindAck || len(back[0].AckTags()) != 1 {
		t.Fatalf("eu-west answered %+v, want one acknowledgement at once", back)
	}
	if h := p.a.Holders(d); len(h) != 1 {
		t.Fatalf("holders %v, want eu-west", h)
	}
}

// TestUrgeInFlight checks that urging a delta already in flight asks the
// peer to acknowledge now, without sending the delta again.
func TestUrgeInFlight(t *testing.T) {
	p := newPair()
	localAdd(p.a, 1, "cart-1", p.now)
	p.carry(p.a, p.b, "us-east") // delivered; its ack waits for a tick
	d := crdt.Dot{Replica: "us-east", Counter: 1}
	if !p.a.Urge(d, p.now) {
		t.Fatal("Urge did not find the delta in flight")
	}
	sent := p.carry(p.a, p.b, "us-east")
	if len(sent) != 1 || sent[0].Kind != protocol.KindAck || !sent[0].Urgent {
		t.Fatalf("sent %+v, want one urgent acknowledgement request", sent)
	}
	p.carry(p.b, p.a, "eu-west")
	if h := p.a.Holders(d); len(h) != 1 {
		t.Fatalf("holders %v, want eu-west", h)
	}
	if p.a.Urge(d, p.now) {
		t.Error("Urge found a delta every peer acknowledged")
	}
}
