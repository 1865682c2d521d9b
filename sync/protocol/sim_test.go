package protocol_test

import (
	"bytes"
	"container/heap"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/latticedb/lattice/crdt"
	"github.com/latticedb/lattice/region"
	"github.com/latticedb/lattice/region/config"
	"github.com/latticedb/lattice/region/store"
	"github.com/latticedb/lattice/sync/protocol"
	"github.com/latticedb/lattice/sync/replication"
)

var (
	simSeeds   = flag.Int("sim.seeds", 150, "number of seeds TestSimulation runs")
	simSeed    = flag.Uint64("sim.seed", 0, "run TestSimulation for this seed only (replay)")
	simFirst   = flag.Uint64("sim.first", 1, "first seed TestSimulation runs")
	simInstant = flag.Bool("sim.instantrestart", false, "restart a region the moment a fault took part of its store, so that messages in flight to or from its previous run reach the new one")
	simkSeeds  = flag.Int("simk.seeds", 150, "number of seeds TestSimulationSketches runs")
	simkSeed   = flag.Uint64("simk.seed", 0, "run TestSimulationSketches for this seed only (replay)")
	simStrict  = flag.Bool("sim.strictclaims", false, "require every region to claim the writes a fault took from the region that made them, too (see sim.orphans)")
	simDir     = flag.String("sim.dir", "", "directory for the simulation's store files (default /dev/shm if it can be written, else the test's temporary directory)")
)

type simClock struct{ t time.Time }

func (c *simClock) Now() time.Time { return c.t }

type pub struct{ ds []region.Delta }

func (p *pub) Publish(d region.Delta) { p.ds = append(p.ds, d) }

type simRegion struct {
	name crdt.ReplicaID
	// path is the region's store file; store is nil while it is closed
	// (the region crashed).
	path  string
	store *store.Store
	node  *region.Node
	pub   *pub
	proto *protocol.Protocol
	// drv carries out the protocol's output: the production driver's
	// step (replication.Driver), over the simulated network and a node
	// whose applies fail while failing > 0 (failingNode).
	drv   *replication.Driver
	alive bool
	// held holds the dots whose deltas the region's state was checked to
	// hold (states only grow, so a check stays true).
	held crdt.Context
	// holds are the deltas its state was checked to hold.
	holds map[*crdt.Group]bool
	// failing is how many more of the region's transactions of remote
	// applies fail, as a store that cannot write would (each one it is
	// asked to make fails with chance 1/2 while failing > 0).
	failing int
	// synced is the size of the store file at the last fsync the
	// simulation made (everysec: one a virtual second, see step); a power
	// loss cuts the file back to it. nextSync is when the next is due.
	synced   int64
	nextSync time.Time
	// backup is a snapshot of the store file (region.Backup), "" if none
	// was taken yet; backupState is the state it holds.
	backup      string
	backupState *crdt.Group
	// frozen and frozenApplied are the state and the applied context of
	// the region when it last went down (or of its store after a fault
	// took part of it): what it has while down.
	frozen        *crdt.Group
	frozenApplied crdt.Context
	// self is the replica id of the region's last incarnation.
	self crdt.ReplicaID
	// unapplied are the groups of remote deltas the region's protocol took
	// (and may relay) but whose apply failed.
	unapplied []*crdt.Group
	// restartAt is when a region that a fault took down starts again
	// (zero if none is due).
	restartAt time.Time
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

// sim is a cluster of regions running the real protocol, the real
// driver step that carries out its output (replication.Driver, as the
// replicator runs it) and real region nodes (BuntDB files with durability
// everysec, in a directory of their own) over a seeded network that delays, drops, duplicates and reorders
// messages, partitions links and crashes regions; chaos also makes
// regions lose the tail of their store (cut or torn), lose power, and
// restore a snapshot taken earlier.
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
	ref     crdt.Group       // join of every acknowledged delta not lost
	refEnc  []byte           // ref encoded, nil until needed after it changed
	dots    crdt.Context     // every acknowledged write not lost
	deltas  map[crdt.Dot]*crdt.Group
	// After a fault took writes from a store, every acknowledged write
	// is settled (settle): held if some region's state holds it; else
	// uncertain if something that may still bring it to a region has it
	// (a message in flight, the relay buffer of a protocol that could not
	// apply it, a snapshot a restore may bring back); else lost: nothing
	// can bring it back, and no region may ever hold it again. ref and
	// dots leave out the lost writes and, until a region is seen holding
	// them (promote), the uncertain ones; uncertain writes that no region
	// holds once the regions converged count as lost.
	lost      map[crdt.Dot]bool
	uncertain map[crdt.Dot]bool
	// orphans are writes whose dots a fault took from the applied context
	// of the region that made them. Their dots may end up claimed by no
	// region, or only by some: the dots of a region's earlier incarnations
	// are claimed in order only (protocol.outOfOrder), so one lost write,
	// or a claim lost with the only store that had it (the other regions
	// may hold the write's effect without its dot: they held it unclaimed,
	// or other writes repeat it), leaves it and the later ones unclaimable
	// where they were not claimed yet. claimsAll does not require them
	// (unless -sim.strictclaims); their deltas must still reach every
	// region, and no region may claim one it does not hold (check).
	orphans map[crdt.Dot]bool
	// lines is the line of every cart entry a published delta made, by
	// cart and dot: a dot is never issued twice.
	lines map[entryKey]crdt.Line
	dir   string
	// stores are every store the simulation opened, closed at the end.
	stores []*store.Store
	stats  simStats
	carts  []string
	skus   []string
	trace  bool
	sent   func(m *protocol.Message, n int) // sees every encoded message, if set
	// link sees every encoded message with the link it goes on (from
	// region index, to region), in the order sent, if set.
	link func(from int, to crdt.ReplicaID, b []byte)
	// deliver, if set, decides whether a due message is delivered (a
	// scenario holds some back or drops them).
	deliver func(from, to int, m *protocol.Message) bool
	// unchecked names regions whose claims check does not verify.
	unchecked map[int]bool
	// hostile is the chance per step that a region is handed a forged
	// message from another (see forge).
	hostile  float64
	lastTick time.Time
	// applyKeys bounds the keys of a region's transactions of remote
	// applies (replication.Driver.ApplyKeys; 0: the production bound).
	applyKeys int
	// nodeOpts, if set, completes the options of region i's nodes (a
	// partitioned simulation sets their partition and forwarder); tag
	// prefixes the simulation's trace.
	nodeOpts func(i int, o *region.Options)
	tag      string
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

// entryKey names a cart entry: the cart and the entry's dot.
type entryKey struct {
	cart string
	dot  crdt.Dot
}

var (
	simBaseOnce sync.Once
	simBase     string
)

// simBaseDir returns the directory under which simulations keep their
// store files: -sim.dir, else /dev/shm if it can be written (the stores
// fsync at every open and the identity file at every change; tmpfs makes
// that cheap), else "" (the test's temporary directory).
func simBaseDir() string {
	simBaseOnce.Do(func() {
		if *simDir != "" {
			simBase = *simDir
			return
		}
		if d, err := os.MkdirTemp("/dev/shm", "lattice-sim-probe-"); err == nil {
			os.Remove(d)
			simBase = "/dev/shm"
		}
	})
	return simBase
}

func newSimWith(t *testing.T, seed uint64, cfg protocol.Config) *sim {
	s := &sim{t: t, seed: seed, rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)), clock: &simClock{t: time.Unix(1_800_000_000, 0)},
		cfg: cfg, cut: map[[2]int]bool{}, deltas: map[crdt.Dot]*crdt.Group{}, lost: map[crdt.Dot]bool{}, orphans: map[crdt.Dot]bool{}, lines: map[entryKey]crdt.Line{}}
	if base := simBaseDir(); base != "" {
		dir, err := os.MkdirTemp(base, "lattice-sim-")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(dir) })
		s.dir = dir
	} else {
		s.dir = t.TempDir()
	}
	s.loss = s.rng.Float64() * 0.2
	s.dup = s.rng.Float64() * 0.1
	s.delay = [2]time.Duration{time.Duration(5+s.rng.IntN(95)) * time.Millisecond, time.Duration(1+s.rng.IntN(60)) * time.Millisecond}
	for i := range 4 {
		s.carts = append(s.carts, fmt.Sprintf("cart-%d", i))
	}
	for i := range 5 {
		s.skus = append(s.skus, fmt.Sprintf("sku-%d", i))
	}
	t.Cleanup(func() {
		for _, r := range s.regions {
			if r.node != nil {
				r.node.Close()
			}
		}
		for _, st := range s.stores {
			st.Close()
		}
	})
	for _, n := range names {
		s.regions = append(s.regions, &simRegion{name: n, path: filepath.Join(s.dir, string(n)+".db")})
		s.start(len(s.regions) - 1)
	}
	for i := range s.regions {
		s.connectivity(i)
	}
	return s
}

func (s *sim) home(sku string) string { return string(names[int(sku[len(sku)-1]-'0')%len(names)]) }

// open opens region i's store file, as a region starting does.
func (s *sim) open(i int) {
	r := s.regions[i]
	st, err := region.OpenStore(r.path, store.Options{Durability: config.DurabilityEverySec})
	if err != nil {
		s.t.Fatalf("seed %d: open the store of %s: %v", s.seed, r.name, err)
	}
	r.store = st
	s.stores = append(s.stores, st)
	// The open fsynced whatever it wrote (a new incarnation); the rest of
	// the file is taken as durable too.
	s.sync(i)
}

// sync fsyncs region i's store, as its everysec ticker would, and
// records the size of the file the fsync covered.
func (s *sim) sync(i int) {
	r := s.regions[i]
	size, err := r.store.SyncNow()
	if err != nil {
		s.t.Fatalf("seed %d: fsync the store of %s: %v", s.seed, r.name, err)
	}
	r.synced = size
	r.nextSync = s.clock.t.Add(time.Second)
}

// start starts region i: its store (opened if closed), node and protocol.
func (s *sim) start(i int) {
	r := s.regions[i]
	if r.store == nil {
		s.open(i)
	}
	r.frozen, r.frozenApplied, r.restartAt, r.unapplied = nil, crdt.Context{}, time.Time{}, nil
	r.pub = &pub{}
	n, err := region.NewNode(s.nodeOptions(i, region.Options{Name: string(r.name), Store: r.store, Clock: s.clock, Publisher: r.pub,
		Home: s.home, DigestBuckets: s.cfg.Buckets, ExpiryInterval: time.Hour, PeerRegions: peersOf(i)}))
	if err != nil {
		s.t.Fatal(err)
	}
	r.node = n
	if r.self != "" && n.Self() != r.self {
		s.stats.incarnations++
		s.logf("%s goes on as %s", r.name, n.Self())
	}
	r.self = n.Self()
	if n.Self().Region() != string(r.name) {
		s.t.Fatalf("seed %d: region %s runs as %s", s.seed, r.name, n.Self())
	}
	r.proto = protocol.New(n.Self(), names, n.Applied(), n, s.cfg)
	r.drv = &replication.Driver{Protocol: r.proto, Node: failingNode{n, s, r}, Peers: peersOf(i), Now: s.clock.Now,
		ApplyKeys: s.applyKeys, Send: func(to crdt.ReplicaID, m *protocol.Message, b []byte) error { return s.send(i, to, m, b) }}
	r.alive = true
	s.check(i)
}

// nodeOptions returns o completed by nodeOpts, if set.
func (s *sim) nodeOptions(i int, o region.Options) region.Options {
	if s.nodeOpts != nil {
		s.nodeOpts(i, &o)
	}
	return o
}

// peersOf returns the names of region i's peers.
func peersOf(i int) []string {
	var out []string
	for j, n := range names {
		if j != i {
			out = append(out, string(n))
		}
	}
	return out
}

// setApplyKeys sets the bound on the keys of the regions' transactions of
// remote applies.
func (s *sim) setApplyKeys(n int) {
	s.applyKeys = n
	for _, r := range s.regions {
		if r.drv != nil {
			r.drv.ApplyKeys = n
		}
	}
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
		s.t.Logf("%s%s "+format, append([]any{s.clock.t.Format("05.000"), s.tag}, args...)...)
	}
}

// process drains a region's local deltas and carries out its protocol's
// output with the production driver's step (replication.Driver.Process):
// applies first, then messages onto the network.
func (s *sim) process(i int) {
	r := s.regions[i]
	s.drain(i)
	if err := r.proto.Err(); err != nil {
		s.t.Fatalf("storage error: %v", err)
	}
	err := r.drv.Process()
	if ae := (*replication.ApplyError)(nil); errors.As(err, &ae) {
		// Nothing of this Ready was sent, and the protocol heard what
		// the store holds. Its relay buffer may still hold the deltas
		// it could not apply.
		s.logf("%s: apply fails", r.name)
		s.stats.failedApplies++
		for _, a := range ae.Unapplied {
			if a.Group != nil && a.Group.Len() > 0 {
				r.unapplied = append(r.unapplied, a.Group)
			}
		}
		s.check(i)
		return
	}
	if err != nil {
		s.t.Fatalf("seed %d: %s: %v", s.seed, r.name, err)
	}
	s.drain(i) // a restored region that caught up writes
	s.check(i)
}

// send puts a message from region i onto the network, as the transport
// would: refused while the peer is not reachable, else lost, delivered
// once or twice after a delay.
func (s *sim) send(i int, to crdt.ReplicaID, m *protocol.Message, b []byte) error {
	if s.sent != nil {
		s.sent(m, len(b))
	}
	if s.link != nil {
		s.link(i, to, b)
	}
	j := slices.Index(names, to)
	if !s.connected(i, j) {
		return errNotConnected
	}
	if s.rng.Float64() < s.loss {
		return nil
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
	return nil
}

var (
	errNotConnected = errors.New("sim: peer not connected")
	errStoreFails   = errors.New("sim: the store fails")
)

// failingNode is a region's node whose transactions of remote applies
// fail, each with chance 1/2, while its region's failing count lasts.
type failingNode struct {
	*region.Node
	s *sim
	r *simRegion
}

// ApplyGroup fails while the region's store is failing, else applies.
func (n failingNode) ApplyGroup(dots *crdt.Context, g *crdt.Group, reflects *crdt.Context, state bool) error {
	if n.r.failing > 0 && n.s.rng.IntN(2) == 0 {
		n.r.failing--
		return errStoreFails
	}
	return n.Node.ApplyGroup(dots, g, reflects, state)
}

// drain hands region i's published local deltas to its protocol and
// records them as acknowledged writes.
func (s *sim) drain(i int) {
	r := s.regions[i]
	for _, d := range r.pub.ds {
		s.published(i, d)
		s.ref.Join(d.Group)
		s.refEnc = nil
		s.dots.Insert(crdt.Dot{Replica: d.Origin, Counter: d.Seq})
		s.deltas[crdt.Dot{Replica: d.Origin, Counter: d.Seq}] = d.Group
		r.proto.Local(protocol.LocalDelta{Seq: d.Seq, Group: d.Group, At: d.At}, s.clock.t)
	}
	r.pub.ds = nil
}

// published checks a local delta region i published: its dot is the
// region's current incarnation's and was never issued before (a region
// that lost writes it had handed out must not make them again), and so is
// every cart entry it makes.
func (s *sim) published(i int, d region.Delta) {
	r := s.regions[i]
	dot := crdt.Dot{Replica: d.Origin, Counter: d.Seq}
	if d.Origin != r.node.Self() {
		s.t.Fatalf("seed %d at %s: %s (running as %s) published %v", s.seed, s.clock.t.Format("05.000"), r.name, r.node.Self(), dot)
	}
	if _, again := s.deltas[dot]; again {
		s.t.Fatalf("seed %d at %s: %s published the write %v again: a dot issued twice (it was %s)", s.seed, s.clock.t.Format("05.000"), r.name, dot, s.lostOrNot(dot))
	}
	for id, c := range d.Group.Carts {
		for e, l := range c.Entries {
			k := entryKey{id, e}
			if old, again := s.lines[k]; again {
				s.t.Fatalf("seed %d at %s: %s made entry %v of cart %s again (%+v, first %+v): a dot issued twice", s.seed, s.clock.t.Format("05.000"), r.name, e, id, l, old)
			}
			s.lines[k] = l
		}
	}
}

func (s *sim) lostOrNot(d crdt.Dot) string {
	switch {
	case s.lost[d]:
		return "lost everywhere"
	case s.uncertain[d]:
		return "held by no region"
	}
	return "not lost"
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
	return holdsIn(st, g)
}

// holdsIn reports whether the state st already includes g: joining g
// into it changes nothing.
func holdsIn(st, g *crdt.Group) bool {
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
	for i, r := range s.regions {
		if r.alive && r.store != nil && !s.clock.t.Before(r.nextSync) {
			s.sync(i) // everysec
		}
	}
	s.deliverDue()
	for i, r := range s.regions {
		// A held batch that came due leaves, as the replicator's flush
		// timer sends it.
		if !r.alive || r.proto == nil {
			continue
		}
		if due := r.proto.Due(); !due.IsZero() && !s.clock.t.Before(due) {
			r.proto.Flush(s.clock.t)
			s.process(i)
		}
	}
	for i, r := range s.regions {
		// After the messages due: those sent to its previous run are gone.
		if !r.alive && !r.restartAt.IsZero() && !s.clock.t.Before(r.restartAt) {
			s.logf("restart %s after the fault", r.name)
			s.restart(i)
		}
	}
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
			s.stats.cuts++
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
			// A process crash (everysec keeps what the page cache holds)
			// or a clean stop; the region stays down for a while.
			clean := s.rng.IntN(2) == 0
			s.logf("crash %s (clean stop %v)", r.name, clean)
			s.stats.crashes++
			s.down(i, clean)
		} else if r.restartAt.IsZero() { // else it restarts when due
			s.logf("restart %s", r.name)
			s.restart(i)
		}
	case 5, 6:
		// The last transactions of the store file are lost (a lost or
		// damaged tail of the file), or torn in the middle of one.
		i, k, torn := s.rng.IntN(3), 1+s.rng.IntN(6), s.rng.IntN(2) == 0
		s.fault(i, func(r *simRegion) {
			if torn {
				s.stats.tornTails++
			} else {
				s.stats.lostTails++
			}
			cut, err := store.CutTransactions(r.path, k, torn)
			if err != nil {
				s.t.Fatal(err)
			}
			s.logf("%s loses its last %d transactions (%d bytes, torn %v)", r.name, k, cut, torn)
		})
	case 7:
		// Power loss: everything written since the last fsync is gone.
		s.fault(s.rng.IntN(3), func(r *simRegion) {
			s.stats.powerLosses++
			if err := os.Truncate(r.path, r.synced); err != nil {
				s.t.Fatal(err)
			}
			s.logf("%s loses power: its file goes back to %d bytes", r.name, r.synced)
		})
	case 8:
		// A snapshot, taken while the region runs.
		i := s.rng.IntN(3)
		if r := s.regions[i]; r.alive && r.store != nil {
			path := filepath.Join(s.dir, string(r.name)+".backup")
			f, err := os.Create(path)
			if err != nil {
				s.t.Fatal(err)
			}
			n, err := store.Backup(r.path, f)
			if err == nil {
				err = f.Close()
			}
			if err != nil {
				s.t.Fatalf("seed %d: backup of %s: %v", s.seed, r.name, err)
			}
			r.backup, r.backupState = path, s.readState(i)
			s.stats.backups++
			s.logf("%s backed up (%d bytes)", r.name, n)
		}
	case 9:
		// The region is restored from its last snapshot.
		i := s.rng.IntN(3)
		if s.regions[i].backup == "" {
			return
		}
		s.fault(i, func(r *simRegion) {
			s.stats.restores++
			if err := store.Restore(r.path, r.backup); err != nil {
				s.t.Fatalf("seed %d: restore of %s: %v", s.seed, r.name, err)
			}
			s.logf("%s restored from its snapshot", r.name)
		})
	}
}

// down takes region i down, if it runs: its node and protocol stop and
// its store is closed, cleanly or as a killed process leaves it. frozen
// keeps its state (what it has while down).
func (s *sim) down(i int, clean bool) {
	r := s.regions[i]
	if r.alive {
		r.frozen, r.frozenApplied = s.readState(i), r.node.Applied()
		r.alive = false
		r.node.Close()
		s.connectivity(i)
	}
	if r.store == nil {
		return
	}
	var err error
	if clean {
		err = r.store.Close()
		r.synced = fileSize(s.t, r.path) // the close fsynced
	} else {
		err = r.store.CloseUnclean()
	}
	if err != nil {
		s.t.Fatalf("seed %d: close the store of %s: %v", s.seed, r.name, err)
	}
	r.store = nil
}

func fileSize(t *testing.T, path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

// readState returns region i's whole state.
func (s *sim) readState(i int) *crdt.Group {
	r := s.regions[i]
	if !r.alive {
		return r.frozen
	}
	g, err := r.node.ReadObjects(s.carts, s.skus)
	if err != nil {
		s.t.Fatal(err)
	}
	return g
}

// fault crashes region i (if it runs: a crash, not a clean stop) and
// damages its store file with damage while it is closed; the region
// opens its store again at once (which decides its incarnation), and
// starts once the messages in flight to and from its previous run are
// gone (a restart takes longer than a message), unless -sim.instantrestart.
// Then settle decides which writes are lost.
func (s *sim) fault(i int, damage func(r *simRegion)) {
	r := s.regions[i]
	s.down(i, false)
	before, beforeApplied := r.frozen, r.frozenApplied
	damage(r)
	// Its state may have shrunk: what check saw it hold no longer counts.
	r.held, r.holds = crdt.Context{}, nil
	// Longer than any message takes.
	downtime := s.delay[0] + s.delay[1] + time.Duration(1+s.rng.IntN(1000))*time.Millisecond
	if *simInstant {
		s.restart(i)
	} else {
		s.open(i)
		r.frozen, r.frozenApplied = s.peek(i)
		r.restartAt = s.clock.t.Add(downtime)
	}
	s.settle(i, before, &beforeApplied)
}

// peek returns the state and the applied context of region i's open
// store while the region is down.
func (s *sim) peek(i int) (*crdt.Group, crdt.Context) {
	r := s.regions[i]
	n, err := region.NewNode(s.nodeOptions(i, region.Options{Name: string(r.name), Store: r.store, Clock: s.clock,
		Home: s.home, DigestBuckets: s.cfg.Buckets, ExpiryInterval: time.Hour, PeerRegions: peersOf(i)}))
	if err != nil {
		s.t.Fatal(err)
	}
	defer n.Close()
	g, err := n.ReadObjects(s.carts, s.skus)
	if err != nil {
		s.t.Fatal(err)
	}
	return g, n.Applied()
}

// readApplied returns region i's applied context.
func (s *sim) readApplied(i int) crdt.Context {
	if r := s.regions[i]; r.alive {
		return r.node.Applied()
	}
	return s.regions[i].frozenApplied
}

// settle settles every acknowledged write not yet lost (see sim.lost)
// after a fault took part of region f's state (before and beforeApplied
// are what it held and claimed).
func (s *sim) settle(f int, before *crdt.Group, beforeApplied *crdt.Context) {
	afterApplied := s.readApplied(f)
	var holders, carriers []*crdt.Group
	for i, r := range s.regions {
		holders = append(holders, s.readState(i))
		if r.alive {
			carriers = append(carriers, r.unapplied...)
		}
		if r.backupState != nil {
			carriers = append(carriers, r.backupState)
		}
	}
	for _, p := range s.net {
		m, err := protocol.Decode(p.b, s.cfg.Buckets)
		if err == nil {
			err = m.Resolve(names[p.from])
		}
		if err != nil {
			s.t.Fatal(err)
		}
		if m.Group != nil && m.Group.Len() > 0 {
			carriers = append(carriers, m.Group)
		}
	}
	has := func(gs []*crdt.Group, g *crdt.Group) bool {
		return slices.ContainsFunc(gs, func(st *crdt.Group) bool { return holdsIn(st, g) })
	}
	was := s.uncertain
	s.uncertain = nil
	for d, g := range s.deltas {
		if s.lost[d] {
			continue
		}
		if before != nil && holdsIn(before, g) && !holdsIn(holders[f], g) {
			s.stats.cutWrites++
		}
		if d.Replica.Region() == string(s.regions[f].name) && beforeApplied.Contains(d) && !afterApplied.Contains(d) && !s.orphans[d] {
			s.orphans[d] = true
			s.stats.orphans++
		}
		switch {
		case has(holders, g):
			if was[d] {
				s.stats.rescued++
			}
		case has(carriers, g):
			if s.uncertain == nil {
				s.uncertain = make(map[crdt.Dot]bool)
			}
			s.uncertain[d] = true
		default:
			s.lost[d] = true
			s.stats.lostWrites++
			s.logf("write %v is lost", d)
		}
	}
	s.rebuild()
}

// promote moves the uncertain writes that some region now holds back
// into ref and dots.
func (s *sim) promote() {
	if len(s.uncertain) == 0 {
		return
	}
	states := make([]*crdt.Group, len(s.regions))
	for i := range s.regions {
		states[i] = s.readState(i)
	}
	changed := false
	for d := range s.uncertain {
		if slices.ContainsFunc(states, func(st *crdt.Group) bool { return holdsIn(st, s.deltas[d]) }) {
			delete(s.uncertain, d)
			s.stats.rescued++
			s.logf("write %v, held by no region at a fault, is back", d)
			changed = true
		}
	}
	if changed {
		s.rebuild()
	}
}

// rebuild makes ref and dots the join of every acknowledged delta
// neither lost nor uncertain.
func (s *sim) rebuild() {
	s.ref, s.dots, s.refEnc = crdt.Group{}, crdt.Context{}, nil
	for d, g := range s.deltas {
		if !s.lost[d] && !s.uncertain[d] {
			s.ref.Join(g)
			s.dots.Insert(d)
		}
	}
}

// checkLost verifies that no region holds a write that was lost, unless
// the writes not lost imply it (a removal that other removals repeat).
func (s *sim) checkLost() {
	for i := range s.regions {
		st := s.readState(i)
		for d := range s.lost {
			if g := s.deltas[d]; holdsIn(st, g) && !holdsIn(&s.ref, g) {
				s.t.Fatalf("seed %d: %s holds write %v, which nothing held or carried when a fault took it from the last store that had it", s.seed, s.regions[i].name, d)
			}
		}
	}
}

// checkEntries verifies at convergence that no dot was issued twice: no
// two regions hold one cart entry with different lines, and every entry a
// region holds has the line of the published write that made it. No
// region may have found a divergent key either.
func (s *sim) checkEntries() {
	states := make([]*crdt.Group, len(s.regions))
	for i := range s.regions {
		states[i] = s.readState(i)
		if d := s.regions[i].node.Divergent(); len(d) > 0 {
			s.t.Fatalf("seed %d: %s found keys holding a dot with other content than a peer's: %v", s.seed, s.regions[i].name, d)
		}
	}
	for i := range states {
		for id, c := range states[i].Carts {
			for j := i + 1; j < len(states); j++ {
				if o := states[j].Carts[id]; o != nil {
					if bad := c.Conflicts(o); len(bad) > 0 {
						s.t.Fatalf("seed %d: cart %s holds entries %v with different lines at %s and %s: a dot issued twice",
							s.seed, id, bad, s.regions[i].name, s.regions[j].name)
					}
				}
			}
			for e, l := range c.Entries {
				if want, ok := s.lines[entryKey{id, e}]; !ok || want != l {
					s.t.Fatalf("seed %d: %s holds entry %v of cart %s as %+v, which no write made (made: %v %+v)",
						s.seed, s.regions[i].name, e, id, l, ok, want)
				}
			}
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
	s.promote()
	for _, i := range regions { // the cheaper test first
		if applied := s.regions[i].node.Applied(); !s.claimsAll(&applied) {
			return false
		}
	}
	if s.refEnc == nil {
		s.refEnc = crdt.EncodeGroup(&s.ref)
	}
	for _, i := range regions {
		if !bytes.Equal(s.state(i), s.refEnc) {
			return false
		}
	}
	return true
}

// claimsAll reports whether applied covers every acknowledged write not
// lost, orphans aside (see sim.orphans).
func (s *sim) claimsAll(applied *crdt.Context) bool {
	if applied.Covers(&s.dots) {
		return true
	}
	if len(s.orphans) == 0 || *simStrict {
		return false
	}
	for _, d := range unheld(&s.dots, applied) {
		if !s.orphans[d] {
			return false
		}
	}
	return true
}

// simStats counts what the simulations exercised.
type simStats struct {
	seeds, crashes, cuts, aeKeys, deltas                 int
	failedApplies                                        int
	lostTails, tornTails, powerLosses, backups, restores int
	// incarnations counts restarts as a new incarnation; cutWrites the
	// writes a fault took from a region's store (however many regions
	// held them), lostWrites those gone from everywhere, rescued those
	// that no region held at a fault and that came back (from a message,
	// a relay buffer or a snapshot).
	incarnations, cutWrites, lostWrites, rescued int
	// orphans counts writes whose dots a fault took from the applied
	// context of the region that made them (see sim.orphans), unclaimed
	// those of them not lost that some region had not claimed when the
	// regions converged.
	orphans, unclaimed int
}

func (a *simStats) add(b simStats) {
	a.seeds += b.seeds
	a.crashes += b.crashes
	a.cuts += b.cuts
	a.aeKeys += b.aeKeys
	a.deltas += b.deltas
	a.failedApplies += b.failedApplies
	a.lostTails += b.lostTails
	a.tornTails += b.tornTails
	a.powerLosses += b.powerLosses
	a.backups += b.backups
	a.restores += b.restores
	a.incarnations += b.incarnations
	a.cutWrites += b.cutWrites
	a.lostWrites += b.lostWrites
	a.rescued += b.rescued
	a.orphans += b.orphans
	a.unclaimed += b.unclaimed
}

var (
	totalsMu sync.Mutex
	totals   simStats
)

func runSim(t *testing.T, seed uint64, trace bool) { runSimWith(t, seed, trace, 0) }

// runSimWith runs one seeded history and returns the healed, converged
// cluster.
func runSimWith(t *testing.T, seed uint64, trace bool, hostile float64) *sim {
	return runSimConfig(t, seed, trace, hostile, simConfig())
}

// runSimConfig is runSimWith with the protocol's configuration cfg.
func runSimConfig(t *testing.T, seed uint64, trace bool, hostile float64, cfg protocol.Config) *sim {
	s := newSimWith(t, seed, cfg)
	s.trace = trace
	s.hostile = hostile
	// A third of the seeds run the production bound on the keys of a
	// transaction of remote applies; the others bounds so small that a
	// Ready's applies take several transactions, and a failing store can
	// fail one after others were made durable.
	s.setApplyKeys([]int{0, 1, 3}[seed%3])
	ops := 60 + s.rng.IntN(120)
	for range ops {
		s.randomOp()
		s.chaos()
		if s.rng.Float64() < s.hostile {
			s.forge()
		}
		s.step(time.Duration(1+s.rng.IntN(40)) * time.Millisecond)
	}
	// A region a fault took down starts when its restart is due.
	for slices.ContainsFunc(s.regions, func(r *simRegion) bool { return !r.restartAt.IsZero() }) {
		s.step(10 * time.Millisecond)
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
			s.checkEntries() // a dot issued twice keeps regions apart
			s.checkLost()
			for _, r := range s.regions {
				a := r.node.Applied()
				g, _ := r.node.ReadObjects(s.carts, s.skus)
				t.Logf("%s (as %s) applied=%v and %d dots out of order", r.name, r.node.Self(), a.VV, len(a.Cloud))
				for _, d := range unheld(&s.dots, &a) {
					t.Logf("  has not applied %v (its state holds it: %v, orphan %v)", d, holdsIn(g, s.deltas[d]), s.orphans[d])
				}
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
			t.Logf("want dots=%v (%d writes lost, %d uncertain)", s.dots.VV, len(s.lost), len(s.uncertain))
			t.Fatalf("seed %d: regions did not converge within 5 virtual minutes after healing (replay with go test -v ./sync/protocol -run TestSimulation -args -sim.seed=%d)", seed, seed)
		}
		s.step(10 * time.Millisecond)
	}
	s.checkEntries()
	var applied []crdt.Context
	for _, r := range s.regions {
		applied = append(applied, r.node.Applied())
	}
	for d := range s.orphans {
		if !s.lost[d] && !s.uncertain[d] && slices.ContainsFunc(applied, func(a crdt.Context) bool { return !a.Contains(d) }) {
			s.stats.unclaimed++
		}
	}
	for d := range s.uncertain { // no region got it back
		s.lost[d] = true
		s.stats.lostWrites++
	}
	s.uncertain = nil
	s.checkLost()
	for _, r := range s.regions {
		for _, ps := range r.proto.Status() {
			s.stats.aeKeys += int(ps.AEKeysPushed + ps.AEKeysPulled)
			s.stats.deltas += int(ps.DeltasSent)
		}
	}
	s.stats.seeds++
	totalsMu.Lock()
	totals.add(s.stats)
	totalsMu.Unlock()
	return s
}

// runSeeds runs fn for seeds first, first+1, ... first+n-1 as subtests,
// as many at once as the process has Ps (each simulation is
// single-threaded). After a seed fails, the seeds not yet begun are
// skipped.
func runSeeds(t *testing.T, first uint64, n int, fn func(t *testing.T, seed uint64)) {
	// The simulations allocate fast and keep little: collecting less
	// often saves a third of their CPU time.
	defer debug.SetGCPercent(debug.SetGCPercent(400))
	var next atomic.Uint64
	var failed atomic.Bool
	next.Store(first)
	var wg sync.WaitGroup
	for range min(runtime.GOMAXPROCS(0), max(n, 1)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				seed := next.Add(1) - 1
				if seed >= first+uint64(n) || failed.Load() {
					return
				}
				if !t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) { fn(t, seed) }) {
					failed.Store(true)
				}
			}
		}()
	}
	wg.Wait()
}

// TestSimulation runs many seeded histories of random cart and inventory
// operations under loss, duplication, reordering, partitions, crashes,
// lost and torn store tails, power losses and restores from snapshots.
// After healing every region must hold exactly the join of every
// acknowledged delta that was not lost (see sim.lost: one is lost when a
// fault took it from the last store that held it while no message,
// relay buffer or snapshot had it) and have applied every such write
// (orphans aside, see sim.orphans); every claim is checked after every
// step, and no dot may ever be issued twice: every published write and
// cart entry has a dot never published before, and at convergence no two
// regions hold one entry with different lines.
func TestSimulation(t *testing.T) {
	if *simSeed != 0 {
		runSim(t, *simSeed, testing.Verbose())
		return
	}
	totalsMu.Lock()
	totals = simStats{}
	totalsMu.Unlock()
	start := time.Now()
	runSeeds(t, *simFirst, *simSeeds, func(t *testing.T, seed uint64) { runSim(t, seed, false) })
	if t.Failed() {
		return
	}
	took := time.Since(start)
	st := totals
	t.Logf("over %d seeds in %s (%.0f seeds/s): %d crashes, %d link cuts, %d failed applies, %d delta messages, %d keys repaired by anti-entropy; "+
		"%d lost tails, %d torn tails, %d power losses, %d restores of %d snapshots, %d new incarnations; "+
		"%d writes cut from a store, %d of them lost everywhere, %d back from a message, a relay buffer or a snapshot, %d orphaned (%d of them unclaimed somewhere at the end)",
		st.seeds, took.Round(time.Millisecond), float64(st.seeds)/took.Seconds(), st.crashes, st.cuts, st.failedApplies, st.deltas, st.aeKeys,
		st.lostTails, st.tornTails, st.powerLosses, st.restores, st.backups, st.incarnations,
		st.cutWrites, st.lostWrites, st.rescued, st.orphans, st.unclaimed)
	if *simSeeds >= 50 && (st.crashes == 0 || st.cuts == 0 || st.aeKeys == 0 || st.failedApplies == 0) {
		t.Fatal("the simulation did not exercise crashes, partitions, failed applies and anti-entropy repairs")
	}
	if *simSeeds >= 50 && (st.lostTails == 0 || st.tornTails == 0 || st.powerLosses == 0 || st.restores == 0 ||
		st.incarnations == 0 || st.cutWrites == 0 || st.lostWrites == 0) {
		t.Fatal("the simulation did not exercise lost and torn tails, power losses, restores, new incarnations and lost writes")
	}
}

// TestSimulationSketches runs the simulation's histories with one
// digest bucket and lists of at most one key, so that the keys of the
// bucket are compared by set sketches (ranges.go) rather than listed
// (and split as in the tree where a sketch would cost more); odd seeds
// are also handed forged messages, among them forged bucket ranges and
// sketches.
func TestSimulationSketches(t *testing.T) {
	cfg := simConfig()
	cfg.Buckets, cfg.MaxRoundKeys = 1, 1
	run := func(t *testing.T, seed uint64) {
		runSimConfig(t, seed, testing.Verbose() && *simkSeed != 0, 0.1*float64(seed%2), cfg)
	}
	if *simkSeed != 0 {
		run(t, *simkSeed)
		return
	}
	runSeeds(t, *simFirst, *simkSeeds, run)
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
	switch s.rng.IntN(8) {
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
	case 6:
		// Bucket ranges of random fingerprints and counts: answered
		// with sketches of the region's keys, which change nothing.
		lo := s.rng.Uint64N(uint64(s.cfg.Buckets))
		hi := lo + 1 + s.rng.Uint64N(uint64(s.cfg.Buckets)-lo)
		r := protocol.BucketRange{Lo: lo, Hi: hi, FPs: make([]byte, 2*(hi-lo)), Width: uint32(s.rng.IntN(8))}
		for k := range r.FPs {
			r.FPs[k] = byte(s.rng.Uint32())
		}
		for range hi - lo {
			r.Counts = append(r.Counts, byte(2*s.rng.IntN(64))) // zigzag: counts that grow
		}
		m = &protocol.Message{Kind: protocol.KindDigest, Round: 1 + s.rng.Uint64(), Step: 1 + s.rng.Uint64N(3), Ranges: []protocol.BucketRange{r}, Applied: claim()}
	case 7:
		// A diff of random sketches for a round the region may run.
		var sk []protocol.Sketch
		for range s.rng.IntN(4) {
			w := uint32(s.rng.IntN(4))
			cells := make([]byte, 15*3*int(w))
			if w == 1 && s.rng.IntN(2) == 0 {
				cells = cells[:15]
			}
			for k := range cells {
				cells[k] = byte(s.rng.Uint32())
			}
			sk = append(sk, protocol.Sketch{Bucket: s.rng.Uint64N(uint64(s.cfg.Buckets)), Width: w, Cells: cells, Sum: s.rng.Uint64() * uint64(min(w, 1))})
		}
		m = &protocol.Message{Kind: protocol.KindDiff, Round: 1 + s.rng.Uint64(), Step: 1 + s.rng.Uint64N(3), Of: s.rng.Uint64(), Run: s.rng.Uint64(),
			Sketches: sk, Eq: []uint64{s.rng.Uint64()}, Next: s.rng.Uint64N(3), Applied: claim()}
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
// context a region keeps stays within the decoder's bounds (incarnations
// of cluster regions only, at most protocol.MaxCloudDots dots out of
// order), and every region restarts from its store.
func TestSimulationWithHostilePeer(t *testing.T) {
	runSeeds(t, *simFirst, max(*simSeeds/5, 10), runHostile)
}

func runHostile(t *testing.T, seed uint64) {
	s := runSimWith(t, seed, false, 0.3)
	member := func(r crdt.ReplicaID) bool { return slices.Contains(names, crdt.ReplicaID(r.Region())) }
	bounded := func(what string, c crdt.Context) {
		for _, r := range c.Replicas() {
			if !member(r) {
				t.Fatalf("seed %d: %s names %s, not an incarnation of a cluster region", seed, what, r)
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
			for id := range ps.PeerApplied {
				if !member(crdt.ReplicaID(id)) {
					t.Fatalf("seed %d: %s records %s with %s, not an incarnation of a cluster region", seed, r.name, ps.Region, id)
				}
			}
		}
		s.crash(i)
		s.restart(i) // the stored applied context decodes
	}
}
