package protocol_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/latticedb/lattice/crdt"
	"github.com/latticedb/lattice/sync/protocol"
)

// aePair is two regions over memStores that exchange anti-entropy
// messages only (no deltas), over a network of fixed delay, ticking every
// 20 ms.
type aePair struct {
	t     *testing.T
	cfg   protocol.Config
	names [2]crdt.ReplicaID
	st    [2]*memStore
	ps    [2]*protocol.Protocol
	now   time.Time
	delay time.Duration
	net   []aePacket
	seq   int
	// bytes counts the bytes of states in objects messages.
	bytes int
	// synced and homes are what each side's Ready reported as Synced and
	// as Homes, in order.
	synced, homes [2][]protocol.Synced
	// syncedAt and homesAt are when each side first reported them.
	syncedAt, homesAt [2]time.Time
}

type aePacket struct {
	at  time.Time
	seq int
	to  int
	b   []byte
}

func newAEPair(t *testing.T, cfg protocol.Config, a, b *memStore) *aePair {
	return newAEPairOf(t, [2]protocol.Config{cfg, cfg}, a, b)
}

// newAEPairOf is newAEPair with a config for each side (the same
// Buckets).
func newAEPairOf(t *testing.T, cfgs [2]protocol.Config, a, b *memStore) *aePair {
	p := &aePair{t: t, cfg: cfgs[0], names: [2]crdt.ReplicaID{"us-east", "eu-west"}, st: [2]*memStore{a, b},
		now: time.Unix(1_800_000_000, 0), delay: 20 * time.Millisecond}
	for i := range 2 {
		p.ps[i] = protocol.New(p.names[i], p.names[:], p.st[i].applied, p.st[i], cfgs[i])
	}
	for i := range 2 {
		p.ps[i].PeerUp(p.names[1-i], p.now)
	}
	return p
}

func (p *aePair) collect(i int) {
	r := p.ps[i].Ready()
	if len(r.Synced) > 0 && p.syncedAt[i].IsZero() {
		p.syncedAt[i] = p.now
	}
	if len(r.Homes) > 0 && p.homesAt[i].IsZero() {
		p.homesAt[i] = p.now
	}
	p.synced[i] = append(p.synced[i], r.Synced...)
	p.homes[i] = append(p.homes[i], r.Homes...)
	for _, ap := range r.Applies {
		if err := p.st[i].apply(ap); err != nil {
			p.t.Fatal(err)
		}
	}
	for _, env := range r.Messages {
		m := env.Msg
		if m.Kind == protocol.KindDelta || m.Kind == protocol.KindAck {
			continue
		}
		if m.Group != nil {
			p.bytes += len(crdt.EncodeGroup(m.Group))
		}
		b, err := protocol.Encode(m)
		if err != nil {
			p.t.Fatal(err)
		}
		p.seq++
		p.net = append(p.net, aePacket{at: p.now.Add(p.delay), seq: p.seq, to: 1 - i, b: b})
	}
}

// run advances virtual time by d, delivering messages and ticking.
func (p *aePair) run(d time.Duration) {
	end := p.now.Add(d)
	const tick = 20 * time.Millisecond
	next := p.now.Truncate(tick).Add(tick)
	for p.now.Before(end) {
		slices.SortFunc(p.net, func(x, y aePacket) int {
			if c := x.at.Compare(y.at); c != 0 {
				return c
			}
			return x.seq - y.seq
		})
		at := next
		if len(p.net) > 0 && p.net[0].at.Before(at) {
			at = p.net[0].at
		}
		if at.After(end) {
			p.now = end
			break
		}
		p.now = at
		for len(p.net) > 0 && !p.net[0].at.After(p.now) {
			pk := p.net[0]
			p.net = p.net[1:]
			m, err := protocol.Decode(pk.b, p.cfg.Buckets)
			if err != nil {
				p.t.Fatalf("decode: %v", err)
			}
			p.ps[pk.to].Step(p.names[1-pk.to], m, p.now)
			p.collect(pk.to)
		}
		if !p.now.Before(next) {
			for i := range 2 {
				p.ps[i].Tick(p.now)
				p.collect(i)
			}
			next = next.Add(tick)
		}
	}
}

// TestAntiEntropyKeepsItsRate repairs a region that lacks every cart of
// its peer (about 15 MB of states) with AntiEntropyRate at its least,
// 4 KiB/s: over a minute, the states anti-entropy ships between the two
// must stay within the rate of each region (each bounds what it ships
// and pulls with its peer, and both run rounds), plus a burst each (a
// quarter of the rate, or at least one message of a quarter of
// MaxMessageBytes) and two messages past it (a message leaves while any
// of the burst is left).
func TestAntiEntropyKeepsItsRate(t *testing.T) {
	cfg := protocol.DefaultConfig()
	cfg.Buckets = 64
	const rate = 4 << 10
	setRate(&cfg, rate)
	a, b := newMemStore(cfg.Buckets), newMemStore(cfg.Buckets)
	r := crdt.ReplicaID("us-east")
	for i := range 8000 {
		c := &crdt.Cart{}
		for l := range 60 {
			c.Join(c.Add(r, fmt.Sprintf("sku-%06d-standard-size", (i+l)%5000), int64(1+l)))
		}
		a.put(fmt.Sprintf("%scart-%07d", crdt.CartPrefix, i), crdt.EncodeCart(c))
	}
	a.applied = crdt.Context{VV: map[crdt.ReplicaID]uint64{r: 8000}}
	p := newAEPair(t, cfg, a, b)
	const span = time.Minute
	p.run(span)
	burst := max(rate/4, cfg.MaxMessageBytes/4)
	allowed := 2 * (int(span.Seconds())*rate + burst + 2*cfg.MaxMessageBytes/4)
	if p.bytes > allowed {
		t.Fatalf("anti-entropy shipped %d bytes of states in %s at a rate of %d B/s (at most %d allowed); rounds begun: us-east %d, eu-west %d",
			p.bytes, span, rate, allowed, p.ps[0].Status()[0].AERounds, p.ps[1].Status()[0].AERounds)
	}
}

// bigCart returns the encoding of a cart of n lines of skus of 128
// characters (the longest sku allowed).
func bigCart(r crdt.ReplicaID, tag string, n int) []byte {
	c := &crdt.Cart{}
	for l := range n {
		sku := fmt.Sprintf("%s-%04d-", tag, l)
		sku += strings.Repeat("x", 128-len(sku))
		c.Join(c.Add(r, sku, 1))
	}
	return crdt.EncodeCart(c)
}

// TestKeysSharingASlotAreAllPulled: two carts of one region whose keys
// fall in the same slot of the anti-entropy tree (two keys share a slot
// with odds of 2^-32 within a bucket; at a thousand keys a bucket, some
// bucket of a large cluster holds such a pair), each of about 150 KB, so
// that one answer to a pull holds only one of them. The peer lacks both.
// Anti-entropy must bring both carts to the peer, and then stop finding
// differences.
func TestKeysSharingASlotAreAllPulled(t *testing.T) {
	cfg := protocol.DefaultConfig()
	k1, k2 := crdt.CartPrefix+"cart-4160237", crdt.CartPrefix+"cart-4484207"
	if crdt.KeySlot(k1, cfg.Buckets) != crdt.KeySlot(k2, cfg.Buckets) {
		t.Fatalf("%s and %s do not share a slot", k1, k2)
	}
	a, b := newMemStore(cfg.Buckets), newMemStore(cfg.Buckets)
	r := crdt.ReplicaID("us-east")
	a.put(k1, bigCart(r, "one", 1000))
	a.put(k2, bigCart(r, "two", 1000))
	a.put(crdt.CartPrefix+"small", bigCart(r, "small", 1))
	t.Logf("carts of %d and %d bytes", len(a.states[k1]), len(a.states[k2]))
	a.applied = crdt.Context{VV: map[crdt.ReplicaID]uint64{r: 3}}
	p := newAEPair(t, cfg, a, b)
	p.delay = 40 * time.Millisecond
	deadline := p.now.Add(30 * time.Second)
	for p.now.Before(deadline) {
		p.run(time.Second)
		if slices.Equal(a.digest, b.digest) {
			return
		}
	}
	var missing []string
	for _, k := range []string{k1, k2} {
		if _, ok := b.states[k]; !ok {
			missing = append(missing, k)
		}
	}
	st := p.ps[1].Status()[0]
	t.Fatalf("after 30 s eu-west still differs from us-east: lacks %v; %d rounds run, %d keys pulled, anti-entropy %s",
		missing, st.AERounds, st.AEKeysPulled, st.AntiEntropy)
}

// TestKeysSharingASlotAreAllPushed: a cluster of 8,192 digest buckets
// (its rounds descend the tree from the root). eu-west holds, in a part
// of the key space where us-east holds nothing, 1,100 small carts and two
// carts of about 135 KB whose keys share one slot, so that one push holds
// only one of the two. The round that eu-west runs pushes the whole part
// to us-east: both large carts must arrive, and the round must end.
func TestKeysSharingASlotAreAllPushed(t *testing.T) {
	cfg := protocol.DefaultConfig()
	cfg.Buckets = 8192
	k1, k2 := crdt.CartPrefix+"cart-9027094", crdt.CartPrefix+"cart-11718230"
	if crdt.KeySlot(k1, cfg.Buckets) != crdt.KeySlot(k2, cfg.Buckets) {
		t.Fatalf("%s and %s do not share a slot", k1, k2)
	}
	us, eu := newMemStore(cfg.Buckets), newMemStore(cfg.Buckets)
	r := crdt.ReplicaID("eu-west")
	eu.put(k1, bigCart(r, "one", 1000))
	eu.put(k2, bigCart(r, "two", 1000))
	// The root's child that holds the pair: 512 buckets.
	b := uint64(crdt.KeyBucket(k1, cfg.Buckets))
	lo, hi := b/512*512, b/512*512+512
	n := uint64(2)
	for i := 0; n < 1102; i++ {
		k := fmt.Sprintf("%sfill-%d", crdt.CartPrefix, i)
		if kb := uint64(crdt.KeyBucket(k, cfg.Buckets)); kb >= lo && kb < hi {
			eu.put(k, bigCart(r, "f", 1))
			n++
		}
	}
	eu.applied = crdt.Context{VV: map[crdt.ReplicaID]uint64{r: n}}
	p := newAEPair(t, cfg, us, eu)
	deadline := p.now.Add(5 * time.Second)
	for p.now.Before(deadline) {
		p.run(time.Second)
		if slices.Equal(us.digest, eu.digest) {
			return
		}
	}
	var missing []string
	for _, k := range []string{k1, k2} {
		if _, ok := us.states[k]; !ok {
			missing = append(missing, k)
		}
	}
	st := p.ps[1].Status()[0]
	t.Fatalf("after 5 s us-east still differs from eu-west: lacks %v; eu-west ran %d rounds, pushed %d keys (%d bytes of states), anti-entropy %s",
		missing, st.AERounds, st.AEKeysPushed, p.bytes, st.AntiEntropy)
}
