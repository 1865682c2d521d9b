package protocol_test

import (
	"strconv"
	"testing"
	"time"

	"github.com/latticedb/lattice/crdt"
	"github.com/latticedb/lattice/sync/protocol"
)

// TestToday18TreeRoundAdoptsContextWithoutKeys: two regions of 4,112
// digest buckets (over MaxRangeBuckets: rounds walk the tree). eu-west
// holds 9,000 carts in each of buckets 0..15 (144,000, more than the
// 131,072 keys one snapshot of anti-entropy loads) and has applied its
// writes; us-east holds the same carts but those of bucket 15 in its
// first sixteenth of slots (a few hundred). us-east opens a round. The
// responder's partial budget for the first node leaves buckets 14 and 15
// unloaded and answers bucket 15 as a split of 16 empty children, so
// us-east never pulls the carts it lacks, yet its round ends final and
// it adopts eu-west's applied context: its store then claims eu-west's
// writes (the write concern, relays, later rounds rely on that claim)
// while it lacks their carts. A round must not end final while a
// difference it saw is unrepaired.
func TestToday18TreeRoundAdoptsContextWithoutKeys(t *testing.T) {
	const buckets, perBucket, full = 4112, 9000, 16
	us, eu := newMemStore(buckets), newMemStore(buckets)
	writer := crdt.ReplicaID("eu-west")
	c := &crdt.Cart{}
	c.Join(c.Add(writer, "sku-1", 1))
	state := crdt.EncodeCart(c)
	var counts [full]int
	lacked := 0
	var lackedKey string
	for i, left := 0, full*perBucket; left > 0; i++ {
		k := crdt.CartPrefix + "c" + strconv.Itoa(i)
		b := crdt.KeyBucket(k, buckets)
		if b >= full || counts[b] == perBucket {
			continue
		}
		counts[b]++
		left--
		eu.put(k, state)
		if b == full-1 && uint32(crdt.KeySlot(k, buckets)) < 1<<28 {
			lacked++
			lackedKey = k
			continue
		}
		us.put(k, state)
	}
	eu.applied = crdt.Context{VV: map[crdt.ReplicaID]uint64{writer: full * perBucket}}
	t.Logf("us-east lacks %d of eu-west's %d carts (bucket %d)", lacked, full*perBucket, full-1)

	cfg := protocol.DefaultConfig()
	cfg.Buckets = buckets
	names := []crdt.ReplicaID{"us-east", "eu-west"}
	stores := []*memStore{us, eu}
	now := time.Unix(1_800_000_000, 0)
	ps := []*protocol.Protocol{
		protocol.New(names[0], names, us.applied, us, cfg),
		protocol.New(names[1], names, eu.applied, eu, cfg),
	}
	type packet struct {
		to int
		m  *protocol.Message
	}
	var net []packet
	final := false
	collect := func(i int) {
		r := ps[i].Ready()
		for _, ap := range r.Applies {
			if err := stores[i].apply(ap); err != nil {
				t.Fatal(err)
			}
		}
		for _, env := range r.Messages {
			if env.Msg.Kind == protocol.KindDelta || env.Msg.Kind == protocol.KindAck {
				continue
			}
			if i == 0 && env.Msg.Kind == protocol.KindObjects && env.Msg.Final {
				final = true
			}
			b, err := protocol.Encode(env.Msg)
			if err != nil {
				t.Fatal(err)
			}
			m, err := protocol.Decode(b, buckets)
			if err != nil {
				t.Fatal(err)
			}
			net = append(net, packet{to: 1 - i, m: m})
		}
	}
	for i := range ps {
		ps[i].PeerUp(names[1-i], now)
		collect(i)
	}
	// Only us-east opens rounds (eu-west is never ticked): the one round
	// of us-east's is what is judged.
	for step := 0; step < 20000 && !final; step++ {
		if len(net) == 0 {
			now = now.Add(20 * time.Millisecond)
			ps[0].Tick(now)
			collect(0)
			continue
		}
		pk := net[0]
		net = net[1:]
		ps[pk.to].Step(names[1-pk.to], pk.m, now)
		collect(pk.to)
	}
	for len(net) > 0 { // deliver what the round's end sent
		pk := net[0]
		net = net[1:]
		ps[pk.to].Step(names[1-pk.to], pk.m, now)
		collect(pk.to)
	}
	if !final {
		t.Fatal("us-east's round never ended final")
	}
	missing := 0
	for k := range eu.states {
		if _, ok := us.states[k]; !ok {
			missing++
		}
	}
	if missing > 0 && us.applied.VV[writer] >= full*perBucket {
		t.Fatalf("us-east's round ended final and us-east adopted eu-west's applied context (%s: %d) while it still lacks %d of eu-west's carts (e.g. %q)",
			writer, us.applied.VV[writer], missing, lackedKey)
	}
	if missing > 0 {
		t.Fatalf("us-east's round ended final while us-east lacks %d of eu-west's carts", missing)
	}
}
