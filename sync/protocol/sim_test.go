package protocol_test

import (
	"bytes"
	"container/heap"
	"flag"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/latticedb/lattice/crdt"
	"github.com/latticedb/lattice/region"
	"github.com/latticedb/lattice/sync/protocol"
)

var (
	simSeeds = flag.Int("sim.seeds", 150, "number of seeds TestSimulation runs")
	simSeed  = flag.Uint64("sim.seed", 0, "run TestSimulation for this seed only (replay)")
	simFirst = flag.Uint64("sim.first", 1, "first seed TestSimulation runs")
)

type simClock struct{ t time.Time }

func (c *simClock) Now() time.Time { return c.t }

type pub struct{ ds []region.Delta }

func (p *pub) Publish(d region.Delta) { p.ds = append(p.ds, d) }

type simRegion struct {
	name  crdt.ReplicaID
	store *region.Store
	node  *region.Node
	pub   *pub
	proto *protocol.Protocol
	alive bool
	// held holds the dots whose deltas the region's state was checked to
	// hold (states only grow, so a check stays true).
	held crdt.Context
	// holds are the deltas its state was checked to hold.
	holds map[*crdt.Group]bool
	// failing is how many more of the region's non-empty applies fail,
	// as a store that cannot write would.
	failing int
}

type packet struct {
	at       time.Time
	from, to int
	b        []byte
	seq      int
}

type queue []*packet

func (q queue) Len() int { return len(q) }
func (q queue) Less(i, j int) bool {
	if !q[i].at.Equal(q[j].at) {
		return q[i].at.Before(q[j].at)
	}
	return q[i].seq < q[j].seq
}
func (q queue) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *queue) Push(x any)   { *q = append(*q, x.(*packet)) }
func (q *queue) Pop() any {
	old := *q
	p := old[len(old)-1]
	*q = old[:len(old)-1]
	return p
}

// sim is a cluster of regions running the real protocol and real region
// nodes (BuntDB in memory) over a seeded network that delays, drops,
// duplicates and reorders messages, partitions links and crashes regions.
type sim struct {
	t       *testing.T
	seed    uint64
	rng     *rand.Rand
	clock   *simClock
	cfg     protocol.Config
	regions []*simRegion
	net     queue
	pseq    int
	cut     map[[2]int]bool
	loss    float64
	dup     float64
	delay   [2]time.Duration // base, jitter
	ref     crdt.Group       // join of every acknowledged delta
	dots    crdt.Context     // every acknowledged write
	deltas  map[crdt.Dot]*crdt.Group
	carts   []string
	skus    []string
	trace   bool
	sent    func(m *protocol.Message, n int) // sees every encoded message, if set
	// deliver, if set, decides whether a due message is delivered (a
	// scenario holds some back or drops them).
	deliver func(from, to int, m *protocol.Message) bool
	// unchecked names regions whose claims check does not verify.
	unchecked map[int]bool
	// hostile is the chance per step that a region is handed a forged
	// message from another (see forge).
	hostile  float64
	lastTick time.Time
}

// simTick is how often protocols tick, as the driver's ticker does.
const simTick = 20 * time.Millisecond

func (s *sim) index(r *simRegion) int { return slices.Index(s.regions, r) }

var names = []crdt.ReplicaID{"ap-south", "eu-west", "us-east"}

func simConfig() protocol.Config {
	c := protocol.DefaultConfig()
	c.Buckets = 64
	c.MaxBufferEntries = 40 // small, so overflow and anti-entropy happen
	c.RetransmitAfter = 300 * time.Millisecond
	c.RelayDelay = 200 * time.Millisecond
	c.AntiEntropyEvery = 3 * time.Second
	c.AntiEntropyTimeout = 2 * time.Second
	c.MaxRoundKeys = 8
	c.Window = 4
	return c
}

func newSim(t *testing.T, seed uint64) *sim { return newSimWith(t, seed, simConfig()) }

func newSimWith(t *testing.T, seed uint64, cfg protocol.Config) *sim {
	s := &sim{t: t, seed: seed, rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)), clock: &simClock{t: time.Unix(1_800_000_000, 0)},
		cfg: cfg, cut: map[[2]int]bool{}, deltas: map[crdt.Dot]*crdt.Group{}}
	s.loss = s.rng.Float64() * 0.2
	s.dup = s.rng.Float64() * 0.1
	s.delay = [2]time.Duration{time.Duration(5+s.rng.IntN(95)) * time.Millisecond, time.Duration(1+s.rng.IntN(60)) * time.Millisecond}
	for i := range 4 {
		s.carts = append(s.carts, fmt.Sprintf("cart-%d", i))
	}
	for i := range 5 {
		s.skus = append(s.skus, fmt.Sprintf("sku-%d", i))
	}
	for _, n := range names {
		st, err := region.OpenStore(":memory:", region.StoreOptions{})
		if err != nil {
			t.Fatal(err)
		}
		r := &simRegion{name: n, store: st}
		s.regions = append(s.regions, r)
		s.start(len(s.regions) - 1)
		t.Cleanup(func() { r.node.Close(); st.Close() })
	}
	for i := range s.regions {
		s.connectivity(i)
	}
	return s
}

func (s *sim) home(sku string) string { return string(names[int(sku[len(sku)-1]-'0')%len(names)]) }

func (s *sim) start(i int) {
	r := s.regions[i]
	r.pub = &pub{}
	n, err := region.NewNode(region.Options{Name: string(r.name), Store: r.store, Clock: s.clock, Publisher: r.pub,
		Home: s.home, DigestBuckets: s.cfg.Buckets, ExpiryInterval: time.Hour})
	if err != nil {
		s.t.Fatal(err)
	}
	r.node = n
	r.proto = protocol.New(n.Self(), names, n.Applied(), n, s.cfg)
	r.alive = true
	s.check(i)
}

func (s *sim) connected(i, j int) bool {
	return i != j && s.regions[i].alive && s.regions[j].alive && !s.cut[[2]int{min(i, j), max(i, j)}]
}

// connectivity tells region i's protocol which peers it reaches (as the
// transport would).
func (s *sim) connectivity(i int) {
	for j := range s.regions {
		if j == i {
			continue
		}
		for _, pair := range [][2]int{{i, j}, {j, i}} {
			a, b := pair[0], pair[1]
			if !s.regions[a].alive {
				continue
			}
			if s.connected(a, b) {
				s.regions[a].proto.PeerUp(names[b], s.clock.t)
			} else {
				s.regions[a].proto.PeerDown(names[b], s.clock.t)
			}
		}
	}
}

func (s *sim) logf(format string, args ...any) {
	if s.trace {
		s.t.Logf("%s "+format, append([]any{s.clock.t.Format("05.000")}, args...)...)
	}
}

// process drains a region's local deltas and protocol output: applies
// first, then messages onto the network.
func (s *sim) process(i int) {
	r := s.regions[i]
	for _, d := range r.pub.ds {
		s.ref.Join(d.Group)
		s.dots.Insert(crdt.Dot{Replica: d.Origin, Counter: d.Seq})
		s.deltas[crdt.Dot{Replica: d.Origin, Counter: d.Seq}] = d.Group
		r.proto.Local(protocol.LocalDelta{Seq: d.Seq, Group: d.Group, At: d.At}, s.clock.t)
	}
	r.pub.ds = nil
	rd := r.proto.Ready()
	if err := r.proto.Err(); err != nil {
		s.t.Fatalf("storage error: %v", err)
	}
	fail := -1
	if r.failing > 0 && len(rd.Applies) > 0 {
		r.failing--
		fail = s.rng.IntN(len(rd.Applies))
	}
	for k, a := range rd.Applies {
		if k == fail {
			// As the driver does: nothing of this Ready is sent, and the
			// protocol hears what the store holds.
			s.logf("%s: apply fails", r.name)
			r.proto.Discard(r.node.Applied(), s.clock.t)
			s.check(i)
			return
		}
		if err := r.node.ApplyRemote(&a.Dots, a.Group); err != nil {
			s.t.Fatalf("apply: %v", err)
		}
	}
	s.check(i)
	for _, env := range rd.Messages {
		b, err := protocol.Encode(env.Msg)
		if err != nil {
			s.t.Fatal(err)
		}
		if s.sent != nil {
			s.sent(env.Msg, len(b))
		}
		j := slices.Index(names, env.To)
		if !s.connected(i, j) || s.rng.Float64() < s.loss {
			continue
		}
		copies := 1
		if s.rng.Float64() < s.dup {
			copies = 2
		}
		for range copies {
			s.pseq++
			at := s.clock.t.Add(s.delay[0] + time.Duration(s.rng.Int64N(int64(s.delay[1]))))
			heap.Push(&s.net, &packet{at: at, from: i, to: j, b: b, seq: s.pseq})
		}
	}
}

// check verifies the causal-token invariant of region i: every dot in its
// applied context (what tokens promise and WaitToken checks), in its
// digest's applied context (what peers adopt) and in its protocol's seen
// set (what it drops as redundant and reports to peers) names a delta its
// durable state holds.
func (s *sim) check(i int) {
	r := s.regions[i]
	if !r.alive || s.unchecked[i] {
		return
	}
	applied := r.node.Applied()
	snap, err := r.node.Snapshot(nil)
	if err != nil {
		s.t.Fatal(err)
	}
	seen := r.proto.Seen()
	for _, c := range []struct {
		what string
		ctx  *crdt.Context
	}{{"applied context", &applied}, {"digest's applied context", &snap.Applied}, {"protocol's seen set", &seen}} {
		for _, d := range unheld(c.ctx, &r.held) {
			g := s.deltas[d]
			if g == nil && d.Counter >= forgedDots {
				continue // a forged claim taken on trust
			}
			if g == nil {
				s.t.Fatalf("seed %d at %s: the %s of %s claims %v, a write never made", s.seed, s.clock.t.Format("05.000"), c.what, r.name, d)
			}
			if !r.holds[g] && !s.holds(i, g) {
				s.t.Fatalf("seed %d at %s: the %s of %s claims %v, whose delta its state does not hold", s.seed, s.clock.t.Format("05.000"), c.what, r.name, d)
			}
			r.held.Insert(d)
			if r.holds == nil {
				r.holds = make(map[*crdt.Group]bool)
			}
			r.holds[g] = true
		}
	}
}

// unheld lists the dots of c that held lacks.
func unheld(c, held *crdt.Context) []crdt.Dot {
	var out []crdt.Dot
	for r, v := range c.VV {
		for k := held.VV[r] + 1; k <= v; k++ {
			if d := (crdt.Dot{Replica: r, Counter: k}); !held.Contains(d) {
				out = append(out, d)
			}
		}
	}
	for d := range c.Cloud {
		if !held.Contains(d) {
			out = append(out, d)
		}
	}
	return out
}

// holds reports whether region i's stored state already includes g.
func (s *sim) holds(i int, g *crdt.Group) bool {
	carts, items := g.Keys()
	st, err := s.regions[i].node.ReadObjects(carts, items)
	if err != nil {
		s.t.Fatal(err)
	}
	for id, d := range g.Carts {
		c := st.Carts[id]
		if c == nil {
			c = &crdt.Cart{}
		}
		if c.Brings(d) {
			return false
		}
	}
	for sku, d := range g.Items {
		it := st.Items[sku]
		if it == nil {
			it = &crdt.Item{}
		}
		if it.Brings(d) {
			return false
		}
	}
	return true
}

func (s *sim) deliverDue() {
	for len(s.net) > 0 && !s.net[0].at.After(s.clock.t) {
		p := heap.Pop(&s.net).(*packet)
		if !s.connected(p.from, p.to) {
			continue
		}
		m, err := protocol.Decode(p.b, s.cfg.Buckets)
		if err != nil {
			s.t.Fatalf("a message the protocol made does not decode: %v", err)
		}
		if s.deliver != nil && !s.deliver(p.from, p.to, m) {
			continue
		}
		s.stepMsg(p.from, p.to, m)
	}
}

// stepMsg hands region to a message from region from.
func (s *sim) stepMsg(from, to int, m *protocol.Message) {
	s.logf("%s -> %s %s tag=%d round=%d", names[from], names[to], m.Kind, m.Tag, m.Round)
	s.regions[to].proto.Step(names[from], m, s.clock.t)
	s.process(to)
}

func (s *sim) randomOp() {
	i := s.rng.IntN(len(s.regions))
	r := s.regions[i]
	if !r.alive {
		return
	}
	n := r.node
	cart := s.carts[s.rng.IntN(len(s.carts))]
	sku := s.skus[s.rng.IntN(len(s.skus))]
	var err error
	switch op := s.rng.IntN(100); {
	case op < 35:
		_, err = n.AddItem(bg, cart, sku, int64(1+s.rng.IntN(3)))
	case op < 50:
		_, err = n.SetItem(bg, cart, sku, int64(s.rng.IntN(5)))
	case op < 60:
		_, err = n.RemoveItem(bg, cart, sku)
	case op < 65:
		_, err = n.ClearCart(bg, cart)
	case op < 80:
		_, err = n.Restock(bg, sku, int64(1+s.rng.IntN(5)))
	default:
		if s.home(sku) != string(r.name) {
			return
		}
		res, rerr := n.Reserve(bg, sku, int64(1+s.rng.IntN(3)), time.Minute, region.Idem{})
		if rerr == nil && s.rng.IntN(2) == 0 {
			_, err = n.Commit(bg, res.ID, region.Idem{})
		}
	}
	if err != nil {
		s.t.Fatalf("op at %s: %v", r.name, err)
	}
	s.process(i)
}

func (s *sim) step(dt time.Duration) {
	s.clock.t = s.clock.t.Add(dt)
	s.deliverDue()
	if s.clock.t.Sub(s.lastTick) < simTick {
		return
	}
	s.lastTick = s.clock.t
	for i, r := range s.regions {
		if r.alive {
			r.proto.Tick(s.clock.t)
			s.process(i)
		}
	}
}

func (s *sim) chaos() {
	switch s.rng.IntN(100) {
	case 0, 1:
		a, b := s.rng.IntN(3), s.rng.IntN(3)
		if a != b {
			k := [2]int{min(a, b), max(a, b)}
			s.cut[k] = !s.cut[k]
			s.logf("link %s-%s cut=%v", names[a], names[b], s.cut[k])
			totals.cuts++
			s.connectivity(a)
		}
	case 4:
		// A connection drops and comes back at once: both sides run
		// anti-entropy with each other at the next tick.
		a, b := s.rng.IntN(3), s.rng.IntN(3)
		if k := [2]int{min(a, b), max(a, b)}; a != b && !s.cut[k] {
			s.logf("link %s-%s flaps", names[a], names[b])
			s.cut[k] = true
			s.connectivity(a)
			s.cut[k] = false
			s.connectivity(a)
		}
	case 3:
		i := s.rng.IntN(3)
		if s.regions[i].alive {
			s.regions[i].failing = 1 + s.rng.IntN(4)
			s.logf("%s: store fails %d applies", s.regions[i].name, s.regions[i].failing)
		}
	case 2:
		i := s.rng.IntN(3)
		r := s.regions[i]
		if r.alive {
			s.logf("crash %s", r.name)
			totals.crashes++
			r.alive = false
			r.node.Close()
			s.connectivity(i)
		} else {
			s.logf("restart %s", r.name)
			s.start(i)
			s.connectivity(i)
		}
	}
}

// state returns a region's whole replicated state, encoded.
func (s *sim) state(i int) []byte {
	g, err := s.regions[i].node.ReadObjects(s.carts, s.skus)
	if err != nil {
		s.t.Fatal(err)
	}
	return crdt.EncodeGroup(g)
}

func (s *sim) converged() bool { return s.convergedAmong(0, 1, 2) }

// convergedAmong reports whether the regions named hold exactly the join
// of every acknowledged delta and have applied every acknowledged write.
func (s *sim) convergedAmong(regions ...int) bool {
	want := crdt.EncodeGroup(&s.ref)
	for _, i := range regions {
		r := s.regions[i]
		applied := r.node.Applied()
		if !bytes.Equal(s.state(i), want) || !applied.Covers(&s.dots) {
			return false
		}
	}
	return true
}

type simStats struct{ crashes, cuts, aeKeys, deltas int }

var totals simStats

func runSim(t *testing.T, seed uint64, trace bool) { runSimWith(t, seed, trace, 0) }

// runSimWith runs one seeded history and returns the healed, converged
// cluster.
func runSimWith(t *testing.T, seed uint64, trace bool, hostile float64) *sim {
	s := newSim(t, seed)
	s.trace = trace
	s.hostile = hostile
	ops := 60 + s.rng.IntN(120)
	for range ops {
		s.randomOp()
		s.chaos()
		if s.rng.Float64() < s.hostile {
			s.forge()
		}
		s.step(time.Duration(1+s.rng.IntN(40)) * time.Millisecond)
	}
	// Heal: every region up, every link whole, no more loss.
	for i, r := range s.regions {
		if !r.alive {
			s.start(i)
		}
	}
	clear(s.cut)
	s.loss, s.dup = 0, 0
	for i := range s.regions {
		s.connectivity(i)
	}
	deadline := s.clock.t.Add(5 * time.Minute)
	for !s.converged() {
		if s.clock.t.After(deadline) {
			for _, r := range s.regions {
				a := r.node.Applied()
				g, _ := r.node.ReadObjects(s.carts, s.skus)
				t.Logf("%s applied=%v and %d dots out of order", r.name, a.VV, len(a.Cloud))
				for _, c := range s.carts {
					if got, want := g.Carts[c], s.ref.Carts[c]; got == nil || want == nil || !bytes.Equal(crdt.EncodeCart(got), crdt.EncodeCart(want)) {
						t.Logf("  cart %s: got %+v want %+v", c, got, want)
					}
				}
				for _, k := range s.skus {
					if got, want := g.Items[k], s.ref.Items[k]; (got == nil) != (want == nil) || (got != nil && !bytes.Equal(crdt.EncodeItem(got), crdt.EncodeItem(want))) {
						t.Logf("  item %s: got %+v want %+v", k, got, want)
					}
				}
			}
			t.Logf("want dots=%v", s.dots.VV)
			t.Fatalf("seed %d: regions did not converge within 5 virtual minutes after healing (replay with go test -v ./sync/protocol -run TestSimulation -args -sim.seed=%d)", seed, seed)
		}
		s.step(10 * time.Millisecond)
	}
	for _, r := range s.regions {
		for _, ps := range r.proto.Status() {
			totals.aeKeys += int(ps.AEKeysPushed + ps.AEKeysPulled)
			totals.deltas += int(ps.DeltasSent)
		}
	}
	return s
}

// TestSimulation runs many seeded histories of random cart and inventory
// operations under loss, duplication, reordering, partitions and crashes;
// after healing every region must hold exactly the join of every
// acknowledged delta and have applied every acknowledged write.
func TestSimulation(t *testing.T) {
	if *simSeed != 0 {
		runSim(t, *simSeed, testing.Verbose())
		return
	}
	for seed := *simFirst; seed < *simFirst+uint64(*simSeeds); seed++ {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) { runSim(t, seed, false) })
		if t.Failed() {
			return
		}
	}
	t.Logf("over %d seeds: %d crashes, %d link cuts, %d delta messages, %d keys repaired by anti-entropy",
		*simSeeds, totals.crashes, totals.cuts, totals.deltas, totals.aeKeys)
	if *simSeeds >= 50 && (totals.crashes == 0 || totals.cuts == 0 || totals.aeKeys == 0) {
		t.Fatal("the simulation did not exercise crashes, partitions and anti-entropy repairs")
	}
}

// forgedDots is where the counters of the dots forge claims begin: far
// beyond any write of a simulation, so that check tells them apart.
const forgedDots = 1 << 40

// forge hands a live region a message that a hostile (but authenticated)
// peer could send: valid, with no state, but with random tags, rounds,
// digests and keys, and with contexts that claim dots of regions outside
// the cluster and dots of cluster regions that were never made.
func (s *sim) forge() {
	i, j := s.rng.IntN(3), s.rng.IntN(3)
	if i == j || !s.regions[i].alive {
		return
	}
	// At most 50 strangers in one message (a context names at most 64
	// regions), a thousand over all.
	base := s.rng.IntN(1000)
	stranger := func() string { return fmt.Sprintf("stranger-%d", base+s.rng.IntN(50)) }
	claim := func() []byte {
		var c crdt.Context
		for range s.rng.IntN(200) {
			r := names[s.rng.IntN(len(names))]
			if s.rng.IntN(2) == 0 {
				r = crdt.ReplicaID(stranger())
			}
			c.Insert(crdt.Dot{Replica: r, Counter: forgedDots + s.rng.Uint64N(1<<20)})
		}
		return crdt.EncodeContext(&c)
	}
	key := func() string { return "c/" + s.carts[s.rng.IntN(len(s.carts))] }
	var m *protocol.Message
	switch s.rng.IntN(6) {
	case 0:
		m = &protocol.Message{Kind: protocol.KindAck, Acks: []uint64{s.rng.Uint64(), s.rng.Uint64N(100)}, Applied: claim()}
	case 1:
		var rs []protocol.DotRange
		for range 1 + s.rng.IntN(50) {
			from := forgedDots + s.rng.Uint64N(1<<20)
			r := protocol.DotRange{Origin: string(names[s.rng.IntN(len(names))]), From: from, To: from + s.rng.Uint64N(400)}
			if s.rng.IntN(2) == 0 {
				r.Origin = stranger()
			}
			rs = append(rs, r)
		}
		m = &protocol.Message{Kind: protocol.KindDelta, Tag: 1 + s.rng.Uint64N(1<<40), Dots: rs, Group: &crdt.Group{}, Applied: claim()}
	case 2:
		b := make([]uint64, s.cfg.Buckets)
		for k := range b {
			b[k] = s.rng.Uint64()
		}
		m = &protocol.Message{Kind: protocol.KindDigest, Round: 1 + s.rng.Uint64(), Buckets: b, Applied: claim()}
	case 3:
		m = &protocol.Message{Kind: protocol.KindDiff, Round: 1 + s.rng.Uint64(), Of: s.rng.Uint64(), Diff: []uint32{uint32(s.rng.IntN(s.cfg.Buckets))},
			Keys: []protocol.KeyHash{{Key: key(), Hash: s.rng.Uint64()}}, Applied: claim(), Final: true}
	case 4:
		m = &protocol.Message{Kind: protocol.KindObjects, Round: 1 + s.rng.Uint64(), Group: &crdt.Group{}, Pull: []string{key()}, Applied: claim(), Final: true}
	default:
		m = &protocol.Message{Kind: protocol.KindObjects, Round: 1 + s.rng.Uint64(), Reply: true, Group: &crdt.Group{}, Final: true}
	}
	b, err := protocol.Encode(m)
	if err != nil {
		s.t.Fatal(err)
	}
	if m, err = protocol.Decode(b, s.cfg.Buckets); err != nil {
		s.t.Fatalf("a forged message does not decode: %v", err)
	}
	s.logf("forged %s from %s to %s", m.Kind, names[j], names[i])
	s.stepMsg(j, i, m)
}

// TestSimulationWithHostilePeer runs seeded histories in which regions are
// also handed forged messages (forge). What a forged context claims of
// cluster regions is taken on trust, but nothing else may give: every real
// claim is still checked after every step, the regions converge, every
// context a region keeps stays within the decoder's bounds (cluster
// regions only, at most protocol.MaxCloudDots dots out of order), and
// every region restarts from its store.
func TestSimulationWithHostilePeer(t *testing.T) {
	seeds := max(*simSeeds/5, 10)
	for seed := *simFirst; seed < *simFirst+uint64(seeds); seed++ {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) { runHostile(t, seed) })
		if t.Failed() {
			return
		}
	}
}

func runHostile(t *testing.T, seed uint64) {
	s := runSimWith(t, seed, false, 0.3)
	bounded := func(what string, c crdt.Context) {
		for _, r := range c.Replicas() {
			if !slices.Contains(names, r) {
				t.Fatalf("seed %d: %s names %s, not a cluster region", seed, what, r)
			}
		}
		if len(c.Cloud) > protocol.MaxCloudDots {
			t.Fatalf("seed %d: %s holds %d dots out of order", seed, what, len(c.Cloud))
		}
	}
	for i, r := range s.regions {
		bounded(string(r.name)+"'s applied context", r.node.Applied())
		bounded(string(r.name)+"'s seen set", r.proto.Seen())
		for _, ps := range r.proto.Status() {
			if len(ps.PeerApplied) > len(names) {
				t.Fatalf("seed %d: %s records %s with %d regions", seed, r.name, ps.Region, len(ps.PeerApplied))
			}
		}
		s.crash(i)
		s.restart(i) // the stored applied context decodes
	}
}
