package region

import (
	"testing"
	"time"

	"github.com/latticedb/lattice/crdt"
	"github.com/latticedb/lattice/sync/protocol"
)

// damage8Mesh runs the replication protocol between the regions of a
// semRig, in process and in virtual time: each region's protocol reads
// its node (Storage), its applies go into the node before its messages
// leave (as replication.Driver does), and every message is encoded and
// decoded on its way. Local deltas are not fed to the protocols: only
// anti-entropy carries states between the regions.
type damage8Mesh struct {
	t      *testing.T
	r      *semRig
	cfg    protocol.Config
	now    time.Time
	protos map[string]*protocol.Protocol
	queue  []damage8Msg
}

type damage8Msg struct {
	from, to string
	m        *protocol.Message
}

func newDamage8Mesh(t *testing.T, r *semRig) *damage8Mesh {
	cfg := protocol.DefaultConfig()
	cfg.Buckets = DefaultDigestBuckets
	cfg.AntiEntropyEvery = time.Second
	cfg.AntiEntropyRate = 0
	mh := &damage8Mesh{t: t, r: r, cfg: cfg, now: r.clock.Now(), protos: map[string]*protocol.Protocol{}}
	ids := make([]crdt.ReplicaID, len(r.regions))
	for i, name := range r.regions {
		ids[i] = crdt.ReplicaID(name)
	}
	for _, name := range r.regions {
		n := r.nodes[name]
		mh.protos[name] = protocol.New(n.Self(), ids, n.Applied(), n.Node, cfg)
	}
	for _, name := range r.regions {
		for _, peer := range r.regions {
			if peer != name {
				mh.protos[name].PeerUp(crdt.ReplicaID(peer), mh.now)
			}
		}
	}
	return mh
}

// process carries out region name's protocol output.
func (mh *damage8Mesh) process(name string) {
	p := mh.protos[name]
	rd := p.Ready()
	for _, a := range rd.Applies {
		if err := mh.r.nodes[name].ApplyGroup(&a.Dots, a.Group, &a.Reflects, a.State); err != nil {
			mh.t.Logf("%s: apply from %s failed: %v", name, a.From, err)
			p.Discard(mh.r.nodes[name].Applied(), mh.now)
			return
		}
	}
	var peers []string
	for _, p := range mh.r.regions {
		if p != name {
			peers = append(peers, p)
		}
	}
	for _, s := range rd.Synced {
		mh.r.nodes[name].SyncedWith(string(s.Peer), s.Homes, peers)
	}
	for _, e := range rd.Messages {
		b, err := protocol.Encode(e.Msg)
		if err != nil {
			mh.t.Fatalf("%s: encode: %v", name, err)
		}
		m, err := protocol.Decode(b, mh.cfg.Buckets)
		if err != nil {
			mh.t.Fatalf("%s: decode: %v", name, err)
		}
		mh.queue = append(mh.queue, damage8Msg{from: name, to: string(e.To), m: m})
	}
}

// run advances virtual time by d in steps of 50 ms, ticking every
// protocol and delivering every message at once.
func (mh *damage8Mesh) run(d time.Duration) {
	for end := mh.now.Add(d); mh.now.Before(end); {
		mh.now = mh.now.Add(50 * time.Millisecond)
		for _, name := range mh.r.regions {
			mh.protos[name].Tick(mh.now)
			mh.process(name)
		}
		for len(mh.queue) > 0 {
			msg := mh.queue[0]
			mh.queue = mh.queue[1:]
			mh.protos[msg.to].Step(crdt.ReplicaID(msg.from), msg.m, mh.now)
			mh.process(msg.to)
		}
	}
}

// TestDamage8CartNoPeerHoldsIsNeverRepaired: a cart written only at
// us-east (its deltas never reached eu-west) is damaged on disk. It is
// refused with 503 and Retry-After 5, "awaits repair from a peer"
// (docs/operations.md, Damaged values), and left out of the digest. But
// no peer holds it, so no digest differs at its key and anti-entropy
// never ships a state for it: the cart is refused for good. The README's
// Limitations say what a repair loses (the key's own writes that had not
// replicated), not that the key stays refused forever.
func TestDamage8CartNoPeerHoldsIsNeverRepaired(t *testing.T) {
	r := newSemRig(t, "us-east", "eu-west")
	a := r.nodes["us-east"]
	must[Cart](t)(a.AddItem(bg, "solo", "apple", 1))
	must[Cart](t)(a.AddItem(bg, "solo", "pear", 1))
	must[Cart](t)(a.AddItem(bg, "shared", "fig", 1))
	for _, d := range damage8Deltas(r, "us-east", r.published("us-east")-1) {
		r.apply("eu-west", d) // only the last write (shared) reaches eu-west
	}
	a = damage8Reopen(t, r, "us-east", "e/solo/apple")
	wantCode(t, second(a.GetCart(bg, "solo")), CodeUnavailable)
	must[Cart](t)(r.nodes["eu-west"].AddItem(bg, "west", "plum", 1)) // reaches us-east by anti-entropy only

	mh := newDamage8Mesh(t, r)
	mh.run(20 * time.Second)
	var rounds uint64
	for _, ps := range mh.protos["us-east"].Status() {
		rounds += ps.AERounds
	}
	t.Logf("anti-entropy rounds of us-east: %d", rounds)
	if c := r.cart("us-east", "west"); qtyOf(c, "plum") != 1 {
		t.Fatalf("anti-entropy did not run: us-east holds %s of cart west", itemsString(c.Items))
	}
	_, getErr := a.GetCart(bg, "solo")
	_, addErr := a.AddItem(bg, "solo", "kiwi", 1)
	if getErr != nil && addErr != nil {
		t.Errorf("after 20 s of anti-entropy with every peer, cart solo (which no peer holds) is still refused: read %v; add %v; corrupt keys %v",
			getErr, addErr, r.nodes["us-east"].store.Corrupt())
	}
}

// TestDamage8CartDamagedAtBothRegionsIsNeverRepaired: both regions hold
// cart v, and both find a line of it damaged on disk. Neither digest
// holds it, so anti-entropy ships nothing for it and it stays refused at
// both regions for good, new writes included.
func TestDamage8CartDamagedAtBothRegionsIsNeverRepaired(t *testing.T) {
	r := newSemRig(t, "us-east", "eu-west")
	a := r.nodes["us-east"]
	must[Cart](t)(a.AddItem(bg, "v", "apple", 1))
	must[Cart](t)(a.AddItem(bg, "v", "pear", 1))
	must[Cart](t)(a.AddItem(bg, "other", "fig", 1))
	for _, d := range damage8Deltas(r, "us-east", 0) {
		r.apply("eu-west", d)
	}
	must[Cart](t)(r.nodes["eu-west"].AddItem(bg, "other", "plum", 1))
	damage8Reopen(t, r, "us-east", "e/v/apple")
	damage8Reopen(t, r, "eu-west", "e/v/pear")

	mh := newDamage8Mesh(t, r)
	mh.run(20 * time.Second)
	if c := r.cart("us-east", "other"); qtyOf(c, "plum") != 1 {
		t.Fatalf("anti-entropy did not run: us-east holds %s of cart other", itemsString(c.Items))
	}
	for _, name := range r.regions {
		_, getErr := r.nodes[name].GetCart(bg, "v")
		_, addErr := r.nodes[name].AddItem(bg, "v", "kiwi", 1)
		if getErr != nil && addErr != nil {
			t.Errorf("%s: after 20 s of anti-entropy, cart v is still refused: read %v; add %v", name, getErr, addErr)
		}
	}
}
