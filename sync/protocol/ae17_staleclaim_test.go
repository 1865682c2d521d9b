package protocol_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/latticedb/lattice/crdt"
	"github.com/latticedb/lattice/sync/protocol"
)

// TestLateOldDigestDoesNotHideDamageFromRound: us-east holds carts A, B, C
// and K (dot us-east:4); eu-west holds A, B, C. eu-west's round reaches
// us-east, which answers step 1 showing its applied context (claiming
// us-east:4). Then a first digest of an earlier round of eu-west arrives
// late (answered, as any digest is), and us-east finds K damaged. When
// eu-west's pull of K's slot arrives, us-east must not answer it as if
// its claim still held: the claim it must honour is the one of the round
// the pull belongs to, not that of whichever first digest it answered
// last. Answered (without K), eu-west's round closes final and eu-west
// adopts a context claiming us-east:4 whose state it never received.
func TestLateOldDigestDoesNotHideDamageFromRound(t *testing.T) {
	cfg := protocol.DefaultConfig()
	cfg.Buckets = 64
	const bucket = 9
	var keys []string
	for i := 0; len(keys) < 4; i++ {
		k := fmt.Sprintf("%scart-%d", crdt.CartPrefix, i)
		if crdt.KeyBucket(k, cfg.Buckets) == bucket {
			keys = append(keys, k)
		}
	}
	us := crdt.ReplicaID("us-east")
	r, i := newMemStore(cfg.Buckets), newMemStore(cfg.Buckets)
	for n, k := range keys[:3] {
		s := ae17Cart(crdt.Dot{Replica: us, Counter: uint64(n + 1)})
		r.put(k, s)
		i.put(k, s)
	}
	kDam, kDot := keys[3], crdt.Dot{Replica: us, Counter: 4}
	r.put(kDam, ae17Cart(kDot))
	r.applied = crdt.Context{VV: map[crdt.ReplicaID]uint64{us: 4}}
	i.applied = crdt.Context{VV: map[crdt.ReplicaID]uint64{us: 3}}

	p := newAEPair(t, cfg, r, i)
	dam := &ae17DamStore{memStore: r, damaged: map[string]bool{}}
	p.ps[0] = protocol.New(p.names[0], p.names[:], r.applied, dam, cfg)
	p.ps[0].PeerUp(p.names[1], p.now)

	// Until us-east has answered the first step of eu-west's round; keep
	// that step's digest.
	var first *protocol.Message
	answered := false
	for end := p.now.Add(2 * time.Second); !answered && p.now.Before(end); {
		for _, pk := range p.net {
			m, err := protocol.Decode(pk.b, cfg.Buckets)
			if err != nil {
				t.Fatal(err)
			}
			switch {
			case pk.to == 0 && m.Kind == protocol.KindDigest && m.Step == 1:
				first = m
			case pk.to == 1 && m.Kind == protocol.KindDiff && m.Step == 1:
				answered = true
			}
		}
		if !answered {
			p.run(time.Millisecond)
		}
	}
	if !answered || first == nil {
		t.Fatal("us-east did not answer a first digest of eu-west within 2 s")
	}
	// The same first digest, of a round eu-west ran a while ago.
	old := *first
	old.Round -= uint64(time.Minute)
	p.ps[0].Step(p.names[1], &old, p.now)
	p.collect(0)
	dam.damage(kDam)
	p.run(3 * time.Second)

	_, held := i.states[kDam]
	if i.applied.Contains(kDot) && !held {
		st := p.ps[1].Status()[0]
		t.Fatalf("eu-west claims %v (adopted from us-east's round) but never received the cart that write made, which us-east found damaged mid-round; eu-west ran %d rounds, pulled %d keys",
			kDot, st.AERounds, st.AEKeysPulled)
	}
}
