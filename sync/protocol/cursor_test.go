package protocol_test

import (
	"slices"
	"testing"
	"time"

	"github.com/latticedb/lattice/crdt"
	"github.com/latticedb/lattice/sync/protocol"
)

// sentDots returns the dots (origin:counter, origin "" for the sender)
// the delta messages of a Ready carry to peer to.
func sentDots(r protocol.Ready, to crdt.ReplicaID) []string {
	var out []string
	for _, env := range r.Messages {
		if env.To != to || env.Msg.Kind != protocol.KindDelta {
			continue
		}
		for _, d := range env.Msg.DotRuns {
			for c := d.From; c <= d.From+d.Span; c++ {
				out = append(out, d.Origin+":"+string(rune('0'+c)))
			}
		}
	}
	slices.Sort(out)
	return out
}

// TestResendBehindLaterDeltas checks that a delta message lost after
// later ones went out is sent again: the buffer's look-ahead for a peer
// (what it has sent) moves back for what retransmission takes back.
func TestResendBehindLaterDeltas(t *testing.T) {
	cfg := protocol.DefaultConfig()
	ids := []crdt.ReplicaID{"us-east", "eu-west"}
	now := time.Unix(1_800_000_000, 0)
	p := protocol.New("us-east", ids, crdt.Context{}, nullStorage{}, cfg)
	p.PeerUp("eu-west", now)
	p.Ready()
	for seq := uint64(1); seq <= 3; seq++ {
		now = now.Add(cfg.BatchDelay) // each leaves on its own
		localAdd(p, seq, "cart-1", now)
	}
	if got := sentDots(p.Ready(), "eu-west"); !slices.Equal(got, []string{":1", ":2", ":3"}) {
		t.Fatalf("sent %v, want :1 :2 :3", got)
	}
	// Nothing acknowledged: after RetransmitAfter all three go again,
	// and a fourth written meanwhile goes too.
	now = now.Add(cfg.RetransmitAfter)
	localAdd(p, 4, "cart-1", now)
	p.Tick(now)
	if got := sentDots(p.Ready(), "eu-west"); !slices.Equal(got, []string{":1", ":2", ":3", ":4"}) {
		t.Fatalf("sent again %v, want :1 :2 :3 :4", got)
	}
	if st := p.Status()[0]; st.PendingDeltas != 4 {
		t.Fatalf("%d deltas pending, want 4", st.PendingDeltas)
	}
}

// TestDueRelayAheadOfYoungerOnes checks that a relay comes due after
// RelayDelay while younger relays still wait, and is sent alone; the
// younger ones follow when their own delay is over.
func TestDueRelayAheadOfYoungerOnes(t *testing.T) {
	cfg := protocol.DefaultConfig()
	ids := []crdt.ReplicaID{"us-east", "eu-west", "ap-south"}
	now := time.Unix(1_800_000_000, 0)
	a := protocol.New("us-east", ids, crdt.Context{}, nullStorage{}, cfg)
	b := protocol.New("eu-west", ids, crdt.Context{}, nullStorage{}, cfg)
	for _, id := range ids[1:] {
		a.PeerUp(id, now)
	}
	for _, id := range []crdt.ReplicaID{"us-east", "ap-south"} {
		b.PeerUp(id, now)
	}
	a.Ready()
	b.Ready()
	// us-east writes twice, half a RelayDelay apart; eu-west receives
	// each at once and holds it for ap-south, which never reports it.
	deliver := func() {
		for _, env := range a.Ready().Messages {
			if env.To != "eu-west" || env.Msg.Kind != protocol.KindDelta {
				continue
			}
			enc, err := protocol.Encode(env.Msg)
			if err != nil {
				t.Fatal(err)
			}
			m, err := protocol.Decode(enc, cfg.Buckets)
			if err != nil {
				t.Fatal(err)
			}
			b.Step("us-east", m, now)
		}
	}
	localAdd(a, 1, "cart-1", now)
	deliver()
	b.Ready()
	now = now.Add(cfg.RelayDelay / 2)
	localAdd(a, 2, "cart-2", now)
	deliver()
	b.Ready()
	now = now.Add(cfg.RelayDelay / 2)
	b.Tick(now)
	if got := sentDots(b.Ready(), "ap-south"); !slices.Equal(got, []string{"us-east:1"}) {
		t.Fatalf("relayed %v, want us-east:1 alone", got)
	}
	now = now.Add(cfg.RelayDelay / 2)
	b.Tick(now)
	if got := sentDots(b.Ready(), "ap-south"); !slices.Equal(got, []string{"us-east:2"}) {
		t.Fatalf("relayed %v, want us-east:2", got)
	}
}
