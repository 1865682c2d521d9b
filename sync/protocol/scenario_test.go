package protocol_test

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/latticedb/lattice/crdt"
	"github.com/latticedb/lattice/region"
	"github.com/latticedb/lattice/region/store"
	"github.com/latticedb/lattice/sync/protocol"
)

// Scripted scenarios: the simulation's regions and checks, with no loss,
// duplication or jitter (every message takes 10 ms), and with messages
// held back or dropped where a scenario needs them to be. Region 0 is
// ap-south, 1 eu-west, 2 us-east; most scenarios leave us-east cut off.
//
// Scenarios that a script can state are in testdata/*.txt (TestScenarios,
// datadriven_test.go); those here need what the script language lacks:
// a message held and handed over after a restart with the clock set to
// match its round, messages made by hand, a store file damaged in place,
// thousands of writes in one batch, random operations under loss.

// newQuietSim returns a scripted simulation (seed 1) with configuration
// cfg.
func newQuietSim(t *testing.T, cfg protocol.Config) *sim {
	s := newSimWith(t, 1, cfg)
	s.loss, s.dup = 0, 0
	s.delay = [2]time.Duration{10 * time.Millisecond, 1}
	return s
}

// setCut cuts or restores the link between regions a and b.
func (s *sim) setCut(a, b int, cut bool) {
	s.cut[[2]int{min(a, b), max(a, b)}] = cut
	s.connectivity(a)
}

// isolate cuts region i off from the others.
func (s *sim) isolate(i int) {
	for j := range s.regions {
		if j != i {
			s.setCut(i, j, true)
		}
	}
}

// crash stops region i (its store stays).
func (s *sim) crash(i int) {
	r := s.regions[i]
	r.alive = false
	r.node.Close()
	s.connectivity(i)
}

// restart starts region i again on its store.
func (s *sim) restart(i int) {
	s.start(i)
	s.connectivity(i)
}

// run advances virtual time by d in steps of 1 ms.
func (s *sim) run(d time.Duration) {
	for end := s.clock.t.Add(d); s.clock.t.Before(end); {
		s.step(time.Millisecond)
	}
}

// add adds a line to a cart at region i.
func (s *sim) add(i int, cart string) {
	if _, err := s.regions[i].node.AddItem(bg, cart, "sku-1", 1); err != nil {
		s.t.Fatal(err)
	}
	s.process(i)
}

// cartsInBuckets returns n cart ids whose keys fall in distinct digest
// buckets.
func cartsInBuckets(n, buckets int) []string {
	var out []string
	used := map[uint32]bool{}
	for i := 0; len(out) < n; i++ {
		id := fmt.Sprintf("cart-%d", i)
		if b := crdt.KeyBucket("c/"+id, buckets); !used[b] {
			used[b] = true
			out = append(out, id)
		}
	}
	return out
}

// pending returns how many buffered deltas p still has to deliver to peer.
func pending(t *testing.T, p *protocol.Protocol, peer crdt.ReplicaID) int {
	t.Helper()
	for _, ps := range p.Status() {
		if ps.Region == string(peer) {
			return ps.PendingDeltas
		}
	}
	t.Fatalf("no status for %s", peer)
	return 0
}

// TestStaleDiffAfterRestartIsIgnored delivers to a restarted region the
// diff its peer computed for a round of its previous run, with the same
// round number (its clock went back): the diff describes the old digest,
// and acting on it would ship too little while the peer adopts the new
// applied context.
func TestStaleDiffAfterRestartIsIgnored(t *testing.T) {
	s := newQuietSim(t, simConfig())
	s.isolate(2)
	carts := cartsInBuckets(2, s.cfg.Buckets)
	var stale *protocol.Message
	s.deliver = func(from, to int, m *protocol.Message) bool {
		if from == 1 && to == 0 && m.Kind == protocol.KindDiff && stale == nil {
			stale = m // held back
			return false
		}
		return true
	}
	s.add(1, carts[0])
	s.run(100 * time.Millisecond)
	if stale == nil {
		t.Fatal("no diff was held")
	}
	s.crash(0)
	s.restart(0)
	// From now on eu-west hears nothing from ap-south but anti-entropy,
	// and ap-south hears nothing from eu-west but the stale diff.
	var round uint64
	s.deliver = func(from, to int, m *protocol.Message) bool {
		if from == 0 && m.Kind == protocol.KindDigest {
			round = m.Round
		}
		return from == 0 && m.Kind != protocol.KindDelta
	}
	s.add(0, carts[1]) // in a bucket the stale diff does not name
	// ap-south begins a round when its clock reads what it read when it
	// began the round of the stale diff.
	s.clock.t = time.Unix(0, int64(stale.Round)).Add(-time.Millisecond)
	s.lastTick = time.Time{}
	s.step(time.Millisecond)
	s.stepMsg(1, 0, stale)
	s.run(500 * time.Millisecond) // eu-west must not claim ap-south's write
	if round != stale.Round {
		t.Fatalf("the new round is %d, the stale diff's %d", round, stale.Round)
	}
}

// TestStaleReplyAfterRestartIsIgnored delivers to a restarted region the
// objects its peer sent in answer to a pull of a round of its previous
// run: they may be older than the states the running round pulled, so
// they must not complete it.
func TestStaleReplyAfterRestartIsIgnored(t *testing.T) {
	s := newQuietSim(t, simConfig())
	s.isolate(2)
	var stale *protocol.Message
	s.deliver = func(from, to int, m *protocol.Message) bool {
		if m.Kind == protocol.KindDelta {
			return false
		}
		if from == 1 && to == 0 && m.Kind == protocol.KindObjects && m.Reply && stale == nil {
			stale = m // held back
			return false
		}
		return true
	}
	s.add(1, "cart-1")
	s.run(100 * time.Millisecond)
	if stale == nil {
		t.Fatal("no reply was held")
	}
	s.crash(0)
	s.add(1, "cart-1") // the cart changes: the held reply is now old
	s.restart(0)
	// ap-south's new round pulls the cart again; its answer is lost, and
	// the stale one arrives instead (eu-west runs no round of its own).
	s.deliver = func(from, to int, m *protocol.Message) bool {
		return m.Kind != protocol.KindDelta && !(from == 1 && (m.Kind == protocol.KindDigest || m.Reply))
	}
	s.run(100 * time.Millisecond)
	s.stepMsg(1, 0, stale)
	s.run(500 * time.Millisecond) // ap-south must not claim eu-west's second write
}

// TestStaleAckAfterRestart delivers to a restarted region an
// acknowledgement its peer sent for a delta message of its previous run:
// it must not acknowledge the message of this run that has the same
// place in the sequence.
func TestStaleAckAfterRestart(t *testing.T) {
	s := newQuietSim(t, simConfig())
	s.isolate(2)
	var stale *protocol.Message
	s.deliver = func(from, to int, m *protocol.Message) bool {
		if from == 1 && to == 0 && len(m.AckTags()) > 0 && stale == nil {
			stale = m
			return false
		}
		return true
	}
	s.add(0, "cart-1")
	s.run(100 * time.Millisecond)
	if stale == nil {
		t.Fatal("no acknowledgement was held")
	}
	s.crash(0)
	s.clock.t = s.clock.t.Add(time.Second)
	s.restart(0)
	s.deliver = func(from, to int, m *protocol.Message) bool { return m.Kind != protocol.KindDelta }
	s.add(0, "cart-2")
	if n := pending(t, s.regions[0].proto, names[1]); n != 1 {
		t.Fatalf("%d deltas pending for eu-west, want 1", n)
	}
	s.stepMsg(1, 0, stale)
	if n := pending(t, s.regions[0].proto, names[1]); n != 1 {
		t.Fatalf("after a stale acknowledgement %d deltas pending for eu-west, want 1", n)
	}
}

// TestOutOfOrderDotsStayBounded hands a region, from each of its peers,
// deltas whose dots lie far beyond what it has of their origin (as when a
// peer's buffer dropped a delta and thousands of later ones arrive before
// anti-entropy fills the gap): the region applies them, but
// its applied context must stay decodable in its messages and in its
// store, and its causal token within the size any region accepts.
func TestOutOfOrderDotsStayBounded(t *testing.T) {
	s := newQuietSim(t, simConfig())
	s.isolate(2)
	for _, from := range []int{0, 2} {
		var c crdt.Cart
		g := &crdt.Group{}
		g.AddCart("cart-1", c.Add(names[from], "sku-1", 1))
		for k := uint64(1); k <= 67537; k++ {
			s.deltas[crdt.Dot{Replica: names[from], Counter: k}] = g // stands for the writes
		}
		s.stepMsg(from, 1, &protocol.Message{Kind: protocol.KindDelta, Tag: 1, Dots: []protocol.DotRange{{From: 1, To: 65536}}, Group: g})
		// 65537 is missing.
		s.stepMsg(from, 1, &protocol.Message{Kind: protocol.KindDelta, Tag: 2, Dots: []protocol.DotRange{{From: 65538, To: 67537}}, Group: g})
	}
	applied := s.regions[1].node.Applied()
	if n := len(applied.Cloud); n == 0 || n > protocol.MaxCloudDots {
		t.Fatalf("%d dots beyond the version vector, want 1..%d", n, protocol.MaxCloudDots)
	}
	if _, err := crdt.ParseToken(s.regions[1].node.Token()); err != nil {
		t.Fatalf("the region's causal token is refused: %v", err)
	}
	s.setCut(0, 1, true) // eu-west sends its applied context on reconnection
	s.setCut(0, 1, false)
	s.run(500 * time.Millisecond) // every message is decoded on delivery
	s.crash(1)
	s.restart(1) // the stored applied context decodes
}

// TestForeignOriginsAreNotClaimed has a peer name dots of regions outside
// the cluster, in deltas and in its reported applied context: the state
// is applied, but no such dot is claimed or kept, so the applied context
// stays within the decoder's bound of regions and the region restarts.
func TestForeignOriginsAreNotClaimed(t *testing.T) {
	s := newQuietSim(t, simConfig())
	s.isolate(2)
	var c crdt.Cart
	g := &crdt.Group{}
	g.AddCart("cart-1", c.Add(names[0], "sku-1", 1))
	s.deltas[crdt.Dot{Replica: names[0], Counter: 1}] = g
	for i := range 3 {
		rs := []protocol.DotRange{{From: 1, To: 1}}
		var report crdt.Context
		for j := range 60 {
			origin := fmt.Sprintf("elsewhere-%d-%d", i, j)
			rs = append(rs, protocol.DotRange{Origin: origin, From: 1, To: 1})
			report.Insert(crdt.Dot{Replica: crdt.ReplicaID(origin + "-r"), Counter: 7})
		}
		s.stepMsg(0, 1, &protocol.Message{Kind: protocol.KindDelta, Tag: uint64(i + 1), Dots: rs, Group: g, Applied: crdt.EncodeContext(&report)})
	}
	applied := s.regions[1].node.Applied()
	if r := applied.Replicas(); len(r) != 1 || r[0] != names[0] {
		t.Fatalf("applied context names %v", r)
	}
	for _, ps := range s.regions[1].proto.Status() {
		if len(ps.PeerApplied) > len(names) {
			t.Fatalf("%s is recorded with %d regions", ps.Region, len(ps.PeerApplied))
		}
	}
	s.crash(1)
	s.restart(1)
}

// TestDamagedKeyIsNotAdoptedAway damages, on disk, the only copy of a
// write: the region leaves the key out of its digest, and must then not
// offer its applied context (which has the write's dot) for adoption,
// since its state no longer reflects it. A peer that adopted it (after a
// round that shipped it the undamaged cart) would drop the write's delta
// as redundant if it still came from elsewhere, and serve a token that
// covers the write without it.
func TestDamagedKeyIsNotAdoptedAway(t *testing.T) {
	s := newQuietSim(t, simConfig())
	s.isolate(2)
	s.setCut(0, 1, true)
	path := filepath.Join(t.TempDir(), "ap-south.db")
	reopen := func() {
		st, err := region.OpenStore(path, store.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		s.regions[0].store = st
	}
	s.crash(0)
	reopen()
	s.restart(0)
	s.add(0, "victim")
	s.add(0, "other") // the damaged write is not the file's last
	s.crash(0)
	s.regions[0].store.Close()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	i := bytes.LastIndex(b, []byte("c/victim\r\n$"))
	if i < 0 {
		t.Fatal("stored cart not found in file")
	}
	j := i + len("c/victim\r\n$")
	j += bytes.Index(b[j:], []byte("\r\n")) + 2
	b[j+20] ^= 0x40 // inside the stored value, past its header
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	reopen()
	if c := s.regions[0].store.Corrupt(); len(c) != 1 || c[0] != "c/victim" {
		t.Fatalf("damaged keys: %v", c)
	}
	s.unchecked = map[int]bool{0: true} // it claims the write it lost
	s.restart(0)
	s.setCut(0, 1, false)
	s.run(3 * time.Second) // eu-west is checked after every message
}

// TestBacklogIsSentInDecodableMessages lets a backlog of deltas to
// distinct carts build up while a peer is cut off, then restores the
// link: the batches the region sends must stay within what a peer
// accepts (crdt.MaxGroupKeys keys in a group), or they are refused every
// time they are sent again and the peer only catches up by
// anti-entropy.
func TestBacklogIsSentInDecodableMessages(t *testing.T) {
	cfg := simConfig()
	cfg.MaxBufferEntries = 1 << 15
	cfg.MaxMessageBytes = protocol.DefaultConfig().MaxMessageBytes
	cfg.AntiEntropyEvery = time.Hour // deltas alone must do it
	s := newQuietSim(t, cfg)
	s.isolate(2)
	s.run(time.Second) // the first rounds are over
	s.setCut(0, 1, true)
	n := crdt.MaxGroupKeys + 100
	for i := range n {
		if _, err := s.regions[0].node.AddItem(bg, fmt.Sprintf("c%d", i), "s", 1); err != nil {
			t.Fatal(err)
		}
	}
	s.process(0)
	s.deliver = func(from, to int, m *protocol.Message) bool { return m.Kind != protocol.KindDigest }
	s.setCut(0, 1, false)
	s.run(2 * time.Second)
	got, want := s.regions[1].node.Applied(), s.regions[0].node.Applied()
	if !got.Covers(&want) {
		t.Fatalf("eu-west has %v of ap-south's %v", got.VV, want.VV)
	}
}

// TestLongPartitionCatchesUp cuts us-east off while every region writes
// to many carts (the buffers overflow many times over), then heals: the
// regions converge by anti-entropy in partial rounds, every claim checked
// after every step.
func TestLongPartitionCatchesUp(t *testing.T) {
	s := newQuietSim(t, simConfig())
	s.loss, s.dup = 0.05, 0.05
	s.delay = [2]time.Duration{20 * time.Millisecond, 30 * time.Millisecond}
	for i := range 200 {
		s.carts = append(s.carts, fmt.Sprintf("many-%d", i))
	}
	s.isolate(2)
	for range 1500 {
		s.randomOp()
		s.step(5 * time.Millisecond)
	}
	s.setCut(0, 2, false)
	s.setCut(1, 2, false)
	s.loss, s.dup = 0, 0
	deadline := s.clock.t.Add(5 * time.Minute)
	for !s.converged() {
		if s.clock.t.After(deadline) {
			t.Fatal("regions did not converge within 5 virtual minutes after healing")
		}
		s.step(10 * time.Millisecond)
	}
}
