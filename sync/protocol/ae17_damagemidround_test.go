package protocol_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/latticedb/lattice/crdt"
	"github.com/latticedb/lattice/sync/protocol"
)

// ae17DamStore is a memStore that can find a key damaged while it runs
// (as region.Node.noteDamage does): the key leaves the digest and is no
// longer read, and while any key is damaged its snapshots carry no
// applied context and ClaimsApplied is false.
type ae17DamStore struct {
	*memStore
	damaged map[string]bool
}

func (d *ae17DamStore) Snapshot(choose func([]uint64) []uint32) (*protocol.Snapshot, error) {
	s, err := d.memStore.Snapshot(choose)
	if err == nil && len(d.damaged) > 0 {
		s.Applied = crdt.Context{}
	}
	return s, err
}

func (d *ae17DamStore) ClaimsApplied() bool { return len(d.damaged) == 0 }

func (d *ae17DamStore) damage(k string) {
	m := d.memStore
	b := crdt.KeyBucket(k, m.buckets)
	if h, ok := m.keys[b][k]; ok {
		m.digest[b] ^= h
		delete(m.keys[b], k)
	}
	delete(m.states, k)
	d.damaged[k] = true
}

// ae17Cart is the encoding of a cart of one line, written as dot d.
func ae17Cart(d crdt.Dot) []byte {
	c := &crdt.Cart{Entries: map[crdt.Dot]crdt.Line{d: {SKU: "sku-" + string(d.Replica), Kind: crdt.KindAdd, N: 1}}}
	c.Ctx.Insert(d)
	return crdt.EncodeCart(c)
}

// TestDamageFoundMidRoundWithoutPullIsNotAdopted: us-east holds, in one
// digest bucket, 17 carts eu-west holds too and cart K (dot us-east:18)
// that eu-west lacks; eu-west holds 10 carts there that us-east lacks. The
// bucket differs by too many keys for a sketch, so eu-west's round
// descends into it over further digests. us-east answers step 1 (showing
// an applied context that claims us-east:18) and then finds K damaged: K
// leaves its digest. The later digests find nothing for eu-west to pull
// (eu-west only pushes), so no pull is ever refused, and the round closes
// as final: eu-west adopts us-east's step-1 context and claims
// us-east:18, whose state it never received (docs/operations.md: "a round
// under way when the damage is found does not complete on the context it
// showed at its start").
func TestDamageFoundMidRoundWithoutPullIsNotAdopted(t *testing.T) {
	cfg := protocol.DefaultConfig()
	cfg.Buckets = 64
	const bucket = 5
	child := func(k string) uint64 { return (crdt.KeySlot(k, cfg.Buckets) & (1<<32 - 1)) >> 28 }
	var keys []string
	for i := 0; len(keys) < 200; i++ {
		k := fmt.Sprintf("%scart-%d", crdt.CartPrefix, i)
		if crdt.KeyBucket(k, cfg.Buckets) == bucket {
			keys = append(keys, k)
		}
	}
	common := keys[:17]
	// K: a key whose child of the bucket holds a common key (so that
	// eu-west lists that child rather than pulling it whole).
	var kDam string
	rest := keys[17:]
	for i, k := range rest {
		for _, c := range common {
			if child(c) == child(k) {
				kDam = k
				break
			}
		}
		if kDam != "" {
			rest = append(rest[:i:i], rest[i+1:]...)
			break
		}
	}
	if kDam == "" {
		t.Fatal("no key shares a child with a common key")
	}
	only := rest[:10]

	us := crdt.ReplicaID("us-east")
	eu := crdt.ReplicaID("eu-west")
	r, i := newMemStore(cfg.Buckets), newMemStore(cfg.Buckets)
	for n, k := range common {
		s := ae17Cart(crdt.Dot{Replica: us, Counter: uint64(n + 1)})
		r.put(k, s)
		i.put(k, s)
	}
	kDot := crdt.Dot{Replica: us, Counter: 18}
	r.put(kDam, ae17Cart(kDot))
	for n, k := range only {
		i.put(k, ae17Cart(crdt.Dot{Replica: eu, Counter: uint64(n + 1)}))
	}
	r.applied = crdt.Context{VV: map[crdt.ReplicaID]uint64{us: 18}}
	i.applied = crdt.Context{VV: map[crdt.ReplicaID]uint64{us: 17, eu: 10}}

	p := newAEPair(t, cfg, r, i)
	dam := &ae17DamStore{memStore: r, damaged: map[string]bool{}}
	p.ps[0] = protocol.New(p.names[0], p.names[:], r.applied, dam, cfg)
	p.ps[0].PeerUp(p.names[1], p.now)

	// Until us-east has answered the first step of eu-west's round.
	answered := false
	for end := p.now.Add(2 * time.Second); !answered && p.now.Before(end); {
		p.run(time.Millisecond)
		for _, pk := range p.net {
			if pk.to != 1 {
				continue
			}
			m, err := protocol.Decode(pk.b, cfg.Buckets)
			if err != nil {
				t.Fatal(err)
			}
			if m.Kind == protocol.KindDiff && m.Step == 1 {
				answered = true
			}
		}
	}
	if !answered {
		t.Fatal("us-east did not answer a first digest of eu-west within 2 s")
	}
	dam.damage(kDam)
	p.run(3 * time.Second)

	_, held := i.states[kDam]
	if i.applied.Contains(kDot) && !held {
		st := p.ps[1].Status()[0]
		t.Fatalf("eu-west claims %v (adopted from us-east's round) but never received the cart that write made, which us-east found damaged mid-round; eu-west ran %d rounds, pulled %d keys, pushed %d",
			kDot, st.AERounds, st.AEKeysPulled, st.AEKeysPushed)
	}
}
