package protocol_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/latticedb/lattice/crdt"
	"github.com/latticedb/lattice/sync/protocol"
)

// fmix64 is MurmurHash3's 64-bit finalizer, as the protocol mixes
// fingerprints with it.
func fmix64(x uint64) uint64 {
	x ^= x >> 33
	x *= 0xff51afd7ed558ccd
	x ^= x >> 33
	x *= 0xc4ceb9fe1a85ec53
	x ^= x >> 33
	return x
}

// cutFingerprint is a bucket's fingerprint h as step step of round round
// carries it in a bucket range (ranges.go: cutFP of roundSalt).
func cutFingerprint(h, round, step uint64) uint16 {
	salt := fmix64(round ^ fmix64(step^0x5bd1e995))
	return uint16(fmix64(h^salt) >> 48)
}

// TestCutFingerprintCoincidenceShipsEachKeyOnce: a cluster of 64 buckets
// (its rounds open with one range of every bucket). Both regions hold
// the same 3,000 carts; eu-west alone holds 20 more, one in each of 20
// buckets, and us-east alone holds one more, in bucket 0, whose state
// makes us-east's fingerprint of bucket 0 cut to the same 16 bits as
// eu-west's under the salt of eu-west's first digest (a coincidence of
// odds 2^-16 a differing bucket). The range's check of its equal buckets
// finds the coincidence and the range goes again (ranges.go: it "costs
// the range one more round trip"); every key must still cross once: 21
// states in all.
func TestCutFingerprintCoincidenceShipsEachKeyOnce(t *testing.T) {
	const buckets = 64
	cfg := protocol.DefaultConfig()
	cfg.Buckets = buckets
	us, eu := newMemStore(buckets), newMemStore(buckets)
	ra, rb := crdt.ReplicaID("us-east"), crdt.ReplicaID("eu-west")
	for i := range 3000 {
		k := fmt.Sprintf("%scart-%06d", crdt.CartPrefix, i)
		s := crdt.EncodeCart(cartWith(ra, fmt.Sprint(i), 2))
		us.put(k, s)
		eu.put(k, s)
	}
	for b := range buckets {
		if n := len(us.keys[b]); n <= protocol.ListKeys {
			t.Fatalf("bucket %d holds %d keys: want more than %d, so that it is answered with a sketch", b, n, protocol.ListKeys)
		}
	}
	const x = 0 // the bucket of the coincidence
	onlyEU := map[uint32]bool{}
	for i := 0; len(onlyEU) < 20; i++ {
		k := fmt.Sprintf("%seu-only-%d", crdt.CartPrefix, i)
		b := crdt.KeyBucket(k, buckets)
		if b == x || onlyEU[b] {
			continue
		}
		onlyEU[b] = true
		eu.put(k, crdt.EncodeCart(cartWith(rb, fmt.Sprint("e", i), 1)))
	}
	p := newAEPair(t, cfg, us, eu)
	p.run(20 * time.Millisecond) // the first tick: both open a round, eu-west's goes on
	var round uint64
	for _, pk := range p.net {
		m, err := protocol.Decode(pk.b, buckets)
		if err != nil {
			t.Fatal(err)
		}
		if pk.to == 0 && m.Kind == protocol.KindDigest && m.Step == 1 && len(m.Ranges) > 0 {
			round = m.Round
		}
	}
	if round == 0 {
		t.Fatal("eu-west sent no first digest of bucket ranges")
	}
	// us-east's key of bucket 0, in a state whose fingerprint cuts to
	// eu-west's.
	var key string
	for i := 0; key == ""; i++ {
		if k := fmt.Sprintf("%sus-only-%d", crdt.CartPrefix, i); crdt.KeyBucket(k, buckets) == x {
			key = k
		}
	}
	want := cutFingerprint(eu.digest[x], round, 1)
	found := false
	for v := range 1 << 22 {
		s := crdt.EncodeCart(cartWith(ra, fmt.Sprint("v", v), 1))
		h := us.digest[x] ^ crdt.StateHash(key, s)
		if h != eu.digest[x] && cutFingerprint(h, round, 1) == want {
			us.put(key, s)
			found = true
			break
		}
	}
	if !found {
		t.Fatal("no state of the key makes the cut fingerprints coincide")
	}
	ideal := uint64(len(onlyEU) + 1)
	joined := joinedStates(t, us, eu)
	if bad := settleStates(t, p, joined, time.Minute); len(bad) > 0 {
		t.Fatalf("after a minute the regions still differ: %v", bad[:min(5, len(bad))])
	}
	s0, s1 := p.ps[0].Status()[0], p.ps[1].Status()[0]
	shipped := s0.AEKeysPushed + s1.AEKeysPushed
	if shipped > ideal {
		t.Errorf("round %d: %d states shipped (us-east sent %d, eu-west %d) to repair %d keys held by one side only: the range sent again for a cut fingerprint's coincidence shipped the keys of its other differing buckets again",
			round, shipped, s0.AEKeysPushed, s1.AEKeysPushed, ideal)
	}
}
