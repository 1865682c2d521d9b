package protocol_test

import (
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/latticedb/lattice/crdt"
	"github.com/latticedb/lattice/region"
	"github.com/latticedb/lattice/region/config"
	"github.com/latticedb/lattice/region/store"
	"github.com/latticedb/lattice/sync/protocol"
	"github.com/latticedb/lattice/sync/replication"
)

// edgeRegion is one region of an edgeMesh: a real store and node, its
// protocol and the production driver's step.
type edgeRegion struct {
	name  crdt.ReplicaID
	path  string
	store *store.Store
	node  *region.Node
	pub   *pub
	proto *protocol.Protocol
	drv   *replication.Driver
}

type edgePacket struct {
	from, to int
	b        []byte
}

// edgeMesh is a full mesh of the regions of names over a lossless network
// that delivers in order; rewrite, if set, may change a message of one
// region to another before it is delivered (a peer that sends what it
// should not).
type edgeMesh struct {
	t       *testing.T
	dir     string
	cfg     protocol.Config
	clock   *simClock
	regions []*edgeRegion
	net     []edgePacket
	rewrite func(from, to int, m *protocol.Message)
}

func newEdgeMesh(t *testing.T) *edgeMesh {
	cfg := protocol.DefaultConfig()
	cfg.Buckets = 64
	m := &edgeMesh{t: t, dir: t.TempDir(), cfg: cfg, clock: &simClock{t: time.Unix(1_800_000_000, 0)}}
	for i, n := range names {
		m.regions = append(m.regions, &edgeRegion{name: n, path: filepath.Join(m.dir, string(n)+".db")})
		m.start(i)
	}
	t.Cleanup(func() {
		for i := range m.regions {
			m.stop(i)
		}
	})
	for i := range m.regions {
		for j := range m.regions {
			if i != j {
				m.regions[i].proto.PeerUp(names[j], m.clock.t)
			}
		}
	}
	return m
}

func (m *edgeMesh) index(name crdt.ReplicaID) int { return slices.Index(names, name) }

// start opens region i's store (if closed), node and protocol.
func (m *edgeMesh) start(i int) {
	r := m.regions[i]
	if r.store == nil {
		st, err := region.OpenStore(r.path, store.Options{Durability: config.DurabilityEverySec})
		if err != nil {
			m.t.Fatalf("open the store of %s: %v", r.name, err)
		}
		r.store = st
	}
	r.pub = &pub{}
	n, err := region.NewNode(region.Options{Name: string(r.name), Store: r.store, Clock: m.clock, Publisher: r.pub,
		Home: func(string) string { return string(names[0]) }, DigestBuckets: m.cfg.Buckets, ExpiryInterval: time.Hour, PeerRegions: peersOf(i)})
	if err != nil {
		m.t.Fatalf("start %s: %v", r.name, err)
	}
	r.node = n
	r.proto = protocol.New(n.Self(), names, n.Applied(), n, m.cfg)
	r.drv = &replication.Driver{Protocol: r.proto, Node: n, Peers: peersOf(i), Now: m.clock.Now,
		Send: func(to crdt.ReplicaID, msg *protocol.Message, b []byte) error {
			m.net = append(m.net, edgePacket{from: i, to: m.index(to), b: b})
			return nil
		}}
}

// stop closes region i's node and store.
func (m *edgeMesh) stop(i int) {
	r := m.regions[i]
	if r.node != nil {
		r.node.Close()
		r.node = nil
	}
	if r.store != nil {
		r.store.Close()
		r.store = nil
	}
}

// process hands region i's published writes to its protocol and carries
// out its output.
func (m *edgeMesh) process(i int) {
	r := m.regions[i]
	for _, d := range r.pub.ds {
		r.drv.Local(d, m.clock.t)
	}
	r.pub.ds = nil
	if err := r.drv.Process(); err != nil {
		m.t.Fatalf("%s: %v", r.name, err)
	}
}

// run advances the virtual clock by d in ticks of 20 ms, delivering every
// message at once. It reports how many messages each region refused to
// decode.
func (m *edgeMesh) run(d time.Duration) (rejected map[crdt.ReplicaID]int) {
	rejected = map[crdt.ReplicaID]int{}
	end := m.clock.t.Add(d)
	for m.clock.t.Before(end) {
		for i := range m.regions {
			m.process(i)
		}
		for len(m.net) > 0 {
			pk := m.net[0]
			m.net = m.net[1:]
			msg, err := protocol.Decode(pk.b, m.cfg.Buckets)
			if err != nil {
				rejected[names[pk.to]]++
				continue
			}
			if m.rewrite != nil {
				m.rewrite(pk.from, pk.to, msg)
				// What the peer sends must still pass the receiver's
				// decoder.
				b, err := protocol.Encode(msg)
				if err != nil {
					m.t.Fatal(err)
				}
				if msg, err = protocol.Decode(b, m.cfg.Buckets); err != nil {
					m.t.Fatalf("a rewritten message does not decode: %v", err)
				}
			}
			m.regions[pk.to].proto.Step(names[pk.from], msg, m.clock.t)
			m.process(pk.to)
		}
		m.clock.t = m.clock.t.Add(20 * time.Millisecond)
		for i := range m.regions {
			m.regions[i].proto.Tick(m.clock.t)
		}
	}
	for i := range m.regions {
		m.process(i)
	}
	return rejected
}

// TestPeerContextClaimsNoOwnFutureDots: a peer's answer to an
// anti-entropy round carries its applied context, which the region
// adopts once the round is over. A context that claims the receiving
// region's own dots up to the largest counter (a buggy or compromised
// peer) must not be adopted: no counter near the codecs' range is
// claimed, and the region's next write still gets a dot that every
// region decodes, so that the write reaches the others by its delta.
func TestPeerContextClaimsNoOwnFutureDots(t *testing.T) {
	m := newEdgeMesh(t)
	us, eu, ap := m.index("us-east"), m.index("eu-west"), m.index("ap-south")
	victim := m.regions[us].node.Self()
	if _, err := m.regions[us].node.AddItem(bg, "cart-1", "apple", 1); err != nil {
		t.Fatal(err)
	}
	m.run(time.Second)

	// eu-west answers us-east's anti-entropy with a context claiming
	// every dot of us-east up to the largest counter.
	m.rewrite = func(from, to int, msg *protocol.Message) {
		if from != eu || to != us || msg.Applied == nil || msg.Kind != protocol.KindDiff {
			return
		}
		c, err := crdt.DecodeContext(msg.Applied)
		if err != nil {
			t.Fatal(err)
		}
		if c.VV == nil {
			c.VV = map[crdt.ReplicaID]uint64{}
		}
		c.VV[victim] = crdt.MaxCounter
		msg.Applied = crdt.EncodeContext(&c)
	}
	m.regions[us].proto.PeerDown(names[eu], m.clock.t)
	m.regions[us].proto.PeerUp(names[eu], m.clock.t) // a reconnection runs a round
	m.run(2 * time.Second)
	m.rewrite = nil

	applied := m.regions[us].node.Applied()
	if v := applied.Max(victim); v > 1 {
		t.Errorf("us-east made 1 write but its applied context claims its own dots up to %d", v)
	}
	// us-east's next write must reach ap-south by its delta.
	if _, err := m.regions[us].node.AddItem(bg, "cart-2", "pear", 1); err != nil {
		t.Fatal(err)
	}
	// ap-south writes too (us-east applies its delta), and anti-entropy
	// runs its periodic rounds.
	if _, err := m.regions[ap].node.AddItem(bg, "cart-3", "kiwi", 1); err != nil {
		t.Fatal(err)
	}
	rejected := m.run(40 * time.Second)
	if rejected["ap-south"] > 0 || rejected["eu-west"] > 0 {
		t.Errorf("the peers refused %d (ap-south) and %d (eu-west) messages of us-east after its next write", rejected["ap-south"], rejected["eu-west"])
	}
	got, err := m.regions[ap].node.GetCart(bg, "cart-2")
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Items) != 1 {
		t.Errorf("us-east's write of cart-2 did not reach ap-south: %+v", got.Items)
	}
	// And us-east must start again from its store.
	m.stop(us)
	st, err := region.OpenStore(m.regions[us].path, store.Options{})
	if err != nil {
		t.Fatalf("us-east does not reopen its store: %v", err)
	}
	m.regions[us].store = st
	n, err := region.NewNode(region.Options{Name: "us-east", Store: st, DigestBuckets: m.cfg.Buckets, ExpiryInterval: time.Hour, PeerRegions: peersOf(us)})
	if err != nil {
		t.Fatalf("us-east does not start again: %v", err)
	}
	m.regions[us].node = n
}
