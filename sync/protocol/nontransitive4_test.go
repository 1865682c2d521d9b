package protocol_test

import (
	"fmt"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/latticedb/lattice/crdt"
	"github.com/latticedb/lattice/region/store"
	"github.com/latticedb/lattice/sync/protocol"
)

// TestAcksOwedToUnreachablePeerStayBounded cuts one direction of the link
// between eu-west and us-east: us-east cannot reach eu-west (its own
// connection to it is down, as the transport reports when its dial
// fails), while eu-west's connection to us-east stays up and its deltas
// keep arriving there. us-east can send eu-west nothing, so eu-west
// sends its unacknowledged deltas again and again, each time under a new
// tag. The acknowledgements us-east owes eu-west must stay bounded: a
// one-way cut lasting hours must not cost memory that grows with the
// messages received.
func TestAcksOwedToUnreachablePeerStayBounded(t *testing.T) {
	cfg := simConfig()
	cfg.MaxWindow = 64
	s := newQuietSim(t, cfg)
	for i := range 50 {
		s.carts = append(s.carts, fmt.Sprintf("oneway-%d", i))
	}
	s.run(2 * time.Second) // the start-up rounds are over
	// us-east's connection to eu-west breaks; eu-west's to us-east stays.
	s.regions[2].proto.PeerDown(names[1], s.clock.t)
	s.deliver = func(from, to int, m *protocol.Message) bool { return !(from == 2 && to == 1) }
	owed := func(d time.Duration) int {
		for end := s.clock.t.Add(d); s.clock.t.Before(end); {
			if _, err := s.regions[1].node.AddItem(bg, s.carts[s.rng.IntN(len(s.carts))], "sku-1", 1); err != nil {
				t.Fatal(err)
			}
			s.process(1)
			s.step(10 * time.Millisecond)
		}
		// us-east's connection comes back: count the acknowledgements it
		// sends eu-west at once.
		n := 0
		s.deliver = func(from, to int, m *protocol.Message) bool {
			if from == 2 && to == 1 {
				n += len(m.AckTags())
			}
			return true
		}
		s.regions[2].proto.PeerUp(names[1], s.clock.t)
		s.process(2)
		s.run(200 * time.Millisecond)
		return n
	}
	// eu-west remembers the tags of at most 2 × MaxWindow messages it
	// sent again; an acknowledgement of any older tag is of no use to it.
	n := owed(20 * time.Second)
	if limit := 2 * s.cfg.MaxWindow; n > limit {
		t.Fatalf("after a one-way cut of 20 virtual seconds us-east sent eu-west %d acknowledgements it had kept, want at most %d (2 × MaxWindow): the acknowledgements owed to a peer it cannot reach grow with every message received", n, limit)
	}
}

// peerStatus returns region i's status of peer.
func peerStatus(t *testing.T, s *sim, i int, peer crdt.ReplicaID) protocol.PeerStatus {
	t.Helper()
	for _, ps := range s.regions[i].proto.Status() {
		if ps.Region == string(peer) {
			return ps
		}
	}
	t.Fatalf("%s has no status for %s", names[i], peer)
	return protocol.PeerStatus{}
}

// TestSilentPeerLagCoversTheSilence makes the link from us-east to
// eu-west lose every message (both regions still see it connected, and
// both reach ap-south), while eu-west keeps writing: us-east receives
// eu-west's deltas but none of its acknowledgements arrive. The lag
// eu-west reports for us-east (lattice_replication_lag_seconds, "age of
// the oldest delta the peer has not acknowledged", lag_ms in /v1/cluster)
// must then be about as old as the silence, whatever the buffer dropped
// for anti-entropy to repair later: with the peer shown connected, the
// lag alert is the only sign that it acknowledges nothing.
func TestSilentPeerLagCoversTheSilence(t *testing.T) {
	s := newQuietSim(t, simConfig())
	for i := range 50 {
		s.carts = append(s.carts, fmt.Sprintf("lag-%d", i))
	}
	s.run(2 * time.Second)
	s.deliver = func(from, to int, m *protocol.Message) bool { return !(from == 2 && to == 1) }
	silent := s.clock.t
	for s.clock.t.Sub(silent) < 40*time.Second {
		if _, err := s.regions[1].node.AddItem(bg, s.carts[s.rng.IntN(len(s.carts))], "sku-1", 1); err != nil {
			t.Fatal(err)
		}
		s.process(1)
		s.step(20 * time.Millisecond)
	}
	ps := peerStatus(t, s, 1, names[2])
	since := s.clock.t.Sub(silent)
	if lag := time.Duration(ps.LagMs) * time.Millisecond; lag < since-5*time.Second {
		t.Fatalf("eu-west reports a lag of %s for us-east (connected %v, %d deltas pending), which has acknowledged nothing for %s: want at least %s",
			lag, ps.Connected, ps.PendingDeltas, since, since-5*time.Second)
	}
}

// TestCutPeerOwnDeltasNotPending cuts the link between eu-west and
// us-east; us-east writes, and its deltas reach eu-west through
// ap-south. us-east needs none of its own deltas back (a region never
// sends a peer the peer's own deltas), so eu-west must not count them as
// pending for us-east: pending_deltas and lag_ms for a cut link would
// otherwise report, as a backlog that anti-entropy will have to repair,
// what the peer itself wrote.
func TestCutPeerOwnDeltasNotPending(t *testing.T) {
	s := newQuietSim(t, simConfig())
	s.run(2 * time.Second)
	s.setCut(1, 2, true)
	for i := range 20 {
		if _, err := s.regions[2].node.AddItem(bg, fmt.Sprintf("own-%d", i), "sku-1", 1); err != nil {
			t.Fatal(err)
		}
		s.process(2)
		s.run(50 * time.Millisecond)
	}
	s.run(2 * time.Second)
	got, want := s.regions[1].node.Applied(), s.regions[2].node.Applied()
	if !got.Covers(&want) {
		t.Fatalf("eu-west has %v, us-east %v: us-east's writes did not reach eu-west through ap-south", got.VV, want.VV)
	}
	if ps := peerStatus(t, s, 1, names[2]); ps.PendingDeltas != 0 || ps.LagMs != 0 {
		t.Fatalf("eu-west reports %d deltas (%d bytes) pending for us-east, lag %d ms, and its buffer holds only us-east's own writes: want 0 pending, lag 0",
			ps.PendingDeltas, ps.PendingBytes, ps.LagMs)
	}
}

// TestHealedPeerNotSentDeltasItReported cuts the link between eu-west
// and us-east while eu-west writes a backlog; every write reaches us-east
// through ap-south. When the link heals, the anti-entropy round that
// opens on the reconnection tells eu-west us-east's applied context,
// which covers the whole backlog: from then on eu-west must not go on
// sending us-east the buffered deltas it now knows us-east holds (the
// buffer sends each delta "to every peer that still needs it"). Only
// what left before that answer came may be sent in vain.
func TestHealedPeerNotSentDeltasItReported(t *testing.T) {
	cfg := simConfig()
	cfg.MaxBufferEntries = 4000
	cfg.MaxMessageBytes = 1024 // a backlog of many windows
	cfg.AntiEntropyEvery = time.Hour
	s := newQuietSim(t, cfg)
	s.run(2 * time.Second)
	s.setCut(1, 2, true)
	for i := range 2000 {
		if _, err := s.regions[1].node.AddItem(bg, fmt.Sprintf("backlog-%d", i), "sku-1", 1); err != nil {
			t.Fatal(err)
		}
		s.process(1)
		s.step(2 * time.Millisecond)
	}
	s.run(3 * time.Second)
	got, want := s.regions[2].node.Applied(), s.regions[1].node.Applied()
	if !got.Covers(&want) {
		t.Fatalf("us-east has %v, eu-west %v: eu-west's writes did not reach us-east through ap-south", got.VV, want.VV)
	}
	held := got
	// Counted as eu-west sends them: deltas of writes us-east held
	// before the heal, before and after eu-west heard its applied context.
	var before, after int
	knows := false
	s.deliver = func(from, to int, m *protocol.Message) bool {
		if from == 2 && to == 1 && m.Kind == protocol.KindDiff && m.Applied != nil {
			knows = true
		}
		return true
	}
	s.link = func(from int, to crdt.ReplicaID, b []byte) {
		if from != 1 || to != names[2] {
			return
		}
		m, err := protocol.Decode(b, s.cfg.Buckets)
		if err != nil || m.Kind != protocol.KindDelta {
			return
		}
		for _, r := range m.DotRuns {
			origin := crdt.ReplicaID(r.Origin)
			if origin == "" {
				origin = names[1]
			}
			for k := r.From; k <= r.From+r.Span; k++ {
				if !held.Contains(crdt.Dot{Replica: origin, Counter: k}) {
					continue
				}
				if knows {
					after++
				} else {
					before++
				}
			}
		}
	}
	s.setCut(1, 2, false)
	s.run(5 * time.Second)
	if !knows {
		t.Fatal("no anti-entropy answer from us-east reached eu-west after the heal")
	}
	if after > 0 {
		t.Fatalf("after us-east's anti-entropy answer told eu-west it holds them, eu-west still sent us-east %d of the deltas it already held (%d before the answer), want 0", after, before)
	}
}

// ntChaos is the simulation's chaos but for the link between eu-west and
// us-east, which it leaves cut: ap-south's links break, mend and flap,
// regions crash (cleanly or not) and restart, stores fail applies, lose
// the tail of their file or lose power (a new incarnation).
func (s *sim) ntChaos() {
	switch s.rng.IntN(100) {
	case 0:
		k := [2]int{0, 1 + s.rng.IntN(2)}
		s.cut[k] = !s.cut[k]
		s.connectivity(0)
	case 1:
		if k := [2]int{0, 1 + s.rng.IntN(2)}; !s.cut[k] {
			s.cut[k] = true
			s.connectivity(0)
			s.cut[k] = false
			s.connectivity(0)
		}
	case 2:
		i := s.rng.IntN(3)
		if r := s.regions[i]; r.alive {
			s.down(i, s.rng.IntN(2) == 0)
		} else if r.restartAt.IsZero() {
			s.restart(i)
		}
	case 3:
		if i := s.rng.IntN(3); s.regions[i].alive {
			s.regions[i].failing = 1 + s.rng.IntN(4)
		}
	case 4:
		i, k, torn := s.rng.IntN(3), 1+s.rng.IntN(6), s.rng.IntN(2) == 0
		s.fault(i, func(r *simRegion) {
			if _, err := store.CutTransactions(r.path, k, torn); err != nil {
				s.t.Fatal(err)
			}
		})
	case 5:
		s.fault(s.rng.IntN(3), func(r *simRegion) {
			if err := os.Truncate(r.path, r.synced); err != nil {
				s.t.Fatal(err)
			}
		})
	}
}

// TestNonTransitiveCutConvergesThroughThird keeps eu-west and us-east cut
// from each other for the whole history while every region writes under
// loss, duplication, ap-south's links breaking and flapping, crashes,
// lost tails and power losses (every claim checked after every step by
// the simulation). Once ap-south's links are whole again, with eu-west
// and us-east still cut, every region must hold and claim every write
// not lost, through ap-south alone. Seeds 1..12.
func TestNonTransitiveCutConvergesThroughThird(t *testing.T) {
	for seed := uint64(1); seed <= 12; seed++ {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			s := newSimWith(t, seed, simConfig())
			s.setCut(1, 2, true)
			for range 200 + s.rng.IntN(200) {
				s.randomOp()
				s.ntChaos()
				s.step(time.Duration(1+s.rng.IntN(40)) * time.Millisecond)
			}
			for slices.ContainsFunc(s.regions, func(r *simRegion) bool { return !r.restartAt.IsZero() }) {
				s.step(10 * time.Millisecond)
			}
			for i, r := range s.regions {
				if !r.alive {
					s.start(i)
				}
			}
			s.cut[[2]int{0, 1}], s.cut[[2]int{0, 2}] = false, false
			s.loss, s.dup = 0, 0
			for i := range s.regions {
				s.connectivity(i)
			}
			deadline := s.clock.t.Add(2 * time.Minute)
			for !s.converged() {
				if s.clock.t.After(deadline) {
					for _, r := range s.regions {
						a := r.node.Applied()
						t.Logf("%s (as %s) applied %v, %d dots out of order", r.name, r.node.Self(), a.VV, len(a.Cloud))
					}
					t.Fatalf("seed %d: with eu-west and us-east still cut, the regions did not converge through ap-south within 2 virtual minutes (want every region to hold and claim %v)", seed, s.dots.VV)
				}
				s.step(10 * time.Millisecond)
			}
			s.checkEntries()
			s.checkLost()
		})
	}
}
