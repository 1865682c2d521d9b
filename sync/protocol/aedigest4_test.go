package protocol_test

import (
	"bytes"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/latticedb/lattice/crdt"
	"github.com/latticedb/lattice/sync/protocol"
)

// diffCase is two memStores that hold the same carts but for a seeded
// mix of differences: carts only one side holds, and carts both hold in
// different states (each side added an entry the other lacks).
type diffCase struct {
	a, b  *memStore
	diffs int // keys held differently
	ideal int // bytes of the differing states, shipped once each way
	ships int // states to ship: one per key one side lacks, two per key held differently
}

func cartWith(r crdt.ReplicaID, tag string, n int) *crdt.Cart {
	c := &crdt.Cart{}
	for l := range n {
		c.Join(c.Add(r, fmt.Sprintf("sku-%s-%d", tag, l), 1))
	}
	return c
}

func newDiffCase(seed uint64, buckets, keys int, pOnlyA, pOnlyB, pBoth float64, keyOf func(i int) string) *diffCase {
	rng := rand.New(rand.NewPCG(seed, 99))
	dc := &diffCase{a: newMemStore(buckets), b: newMemStore(buckets)}
	ra, rb := crdt.ReplicaID("us-east"), crdt.ReplicaID("eu-west")
	var na, nb uint64
	for i := range keys {
		k := keyOf(i)
		base := cartWith(ra, fmt.Sprint(i), 1+rng.IntN(3))
		na++
		x := rng.Float64()
		switch {
		case x < pOnlyA:
			s := crdt.EncodeCart(base)
			dc.a.put(k, s)
			dc.diffs++
			dc.ships++
			dc.ideal += len(s)
		case x < pOnlyA+pOnlyB:
			s := crdt.EncodeCart(base)
			dc.b.put(k, s)
			dc.diffs++
			dc.ships++
			dc.ideal += len(s)
		case x < pOnlyA+pOnlyB+pBoth:
			ca, cb := base.Clone(), base.Clone()
			ca.Join(ca.Add(ra, "extra-a", 1))
			na++
			cb.Join(cb.Add(rb, "extra-b", 1))
			nb++
			sa, sb := crdt.EncodeCart(ca), crdt.EncodeCart(cb)
			dc.a.put(k, sa)
			dc.b.put(k, sb)
			dc.diffs++
			dc.ships += 2
			dc.ideal += len(sa) + len(sb)
		default:
			s := crdt.EncodeCart(base)
			dc.a.put(k, s)
			dc.b.put(k, s)
		}
	}
	_ = na
	_ = nb
	return dc
}

// joinedStates returns, for every key of either store, the join of the
// two stores' decoded states, encoded.
func joinedStates(t *testing.T, a, b *memStore) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	for _, st := range []*memStore{a, b} {
		for k, s := range st.states {
			c, err := crdt.DecodeCart(s)
			if err != nil {
				t.Fatal(err)
			}
			if prev, ok := out[k]; ok {
				p, err := crdt.DecodeCart(prev)
				if err != nil {
					t.Fatal(err)
				}
				c.Join(p)
			}
			out[k] = crdt.EncodeCart(c)
		}
	}
	return out
}

func running(p *aePair) bool {
	for _, ps := range p.ps {
		for _, s := range ps.Status() {
			if s.AntiEntropy == "running" {
				return true
			}
		}
	}
	return false
}

// settleStates runs the pair until both stores hold want for every key
// and no round runs, or until limit; it returns what still differs.
func settleStates(t *testing.T, p *aePair, want map[string][]byte, limit time.Duration) []string {
	t.Helper()
	end := p.now.Add(limit)
	var bad []string
	for p.now.Before(end) {
		p.run(5 * time.Second)
		bad = bad[:0]
		for k, w := range want {
			for i, st := range p.st {
				s, ok := st.states[k]
				if !ok {
					bad = append(bad, fmt.Sprintf("%s missing at %s", k, p.names[i]))
					continue
				}
				c, err := crdt.DecodeCart(s)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(crdt.EncodeCart(c), w) {
					bad = append(bad, fmt.Sprintf("%s differs at %s", k, p.names[i]))
				}
			}
		}
		if len(bad) == 0 && !running(p) && len(p.net) == 0 {
			return nil
		}
	}
	slices.Sort(bad)
	return bad
}

// TestRandomDifferencesAreRepaired: for a spread of bucket counts and
// shapes of difference (carts only one side holds, carts both hold
// differently, many keys a bucket so that rounds answer with sketches),
// anti-entropy between the two regions must bring both to the join of
// their states for every key, and ship about the differing states only.
func TestRandomDifferencesAreRepaired(t *testing.T) {
	type shape struct {
		buckets, keys       int
		onlyA, onlyB, pBoth float64
		roundKeys, rate     int
	}
	shapes := []shape{
		{1024, 3000, 0.01, 0.01, 0.01, 0, 0},
		{64, 4000, 0.005, 0.005, 0.02, 0, 0},
		{16, 3000, 0.0, 0.0, 0.05, 0, 0},
		{4, 2000, 0.02, 0.0, 0.0, 0, 0},
		{1, 1500, 0.0, 0.0, 0.3, 0, 0},
		{8192, 6000, 0.01, 0.01, 0.01, 0, 0},
		{16, 3000, 0.01, 0.01, 0.01, 3, 0},
		{8192, 3000, 0.01, 0.01, 0.01, 3, 0},
		{64, 3000, 0.01, 0.01, 0.05, 0, 4096},
		{2, 5000, 0.0, 0.0, 0.6, 0, 0},
		{1000, 3000, 0.01, 0.01, 0.01, 0, 0},
		{4097, 6000, 0.01, 0.01, 0.01, 0, 0},
		{3, 3000, 0.0, 0.0, 0.2, 2, 0},
	}
	for i, sh := range shapes {
		seed := uint64(100 + i)
		t.Run(fmt.Sprintf("b%d-k%d-%v-%v-%v-r%d-%d", sh.buckets, sh.keys, sh.onlyA, sh.onlyB, sh.pBoth, sh.roundKeys, sh.rate), func(t *testing.T) {
			dc := newDiffCase(seed, sh.buckets, sh.keys, sh.onlyA, sh.onlyB, sh.pBoth, func(i int) string { return fmt.Sprintf("%scart-%06d", crdt.CartPrefix, i) })
			want := joinedStates(t, dc.a, dc.b)
			cfg := protocol.DefaultConfig()
			cfg.Buckets = sh.buckets
			setRate(&cfg, sh.rate)
			if sh.roundKeys > 0 {
				cfg.MaxRoundKeys = sh.roundKeys
			}
			p := newAEPair(t, cfg, dc.a, dc.b)
			bad := settleStates(t, p, want, 5*time.Minute)
			if len(bad) > 0 {
				t.Fatalf("seed %d: after 5 minutes %d keys still differ (of %d differing at the start), e.g. %v", seed, len(bad), dc.diffs, bad[:min(5, len(bad))])
			}
			shipped := p.ps[0].Status()[0].AEKeysPushed + p.ps[1].Status()[0].AEKeysPushed
			t.Logf("seed %d: %d differing keys, %d bytes of states shipped, ideal %d; %d states shipped, ideal %d", seed, dc.diffs, p.bytes, dc.ideal, shipped, dc.ships)
			if p.bytes > 4*dc.ideal+4096 {
				t.Errorf("seed %d: %d bytes of states shipped to repair %d differing keys of %d bytes (want at most %d)", seed, p.bytes, dc.diffs, dc.ideal, 4*dc.ideal+4096)
			}
		})
	}
}

// TestSharedSlotDifferencesAreRepaired: two carts whose keys share one
// slot of the tree, in a bucket of many other keys held alike (so that a
// round answers the bucket with a sketch, or with a list at few keys):
// whichever of the two is held differently, by one side or both, the
// round must bring both regions to the join of their states.
func TestSharedSlotDifferencesAreRepaired(t *testing.T) {
	k1, k2 := crdt.CartPrefix+"cart-4160237", crdt.CartPrefix+"cart-4484207"
	const buckets = 1024
	if crdt.KeySlot(k1, buckets) != crdt.KeySlot(k2, buckets) {
		t.Fatalf("%s and %s do not share a slot", k1, k2)
	}
	b1 := crdt.KeyBucket(k1, buckets)
	var fill []string
	for i := 0; len(fill) < 60; i++ {
		k := fmt.Sprintf("%sfill-%d", crdt.CartPrefix, i)
		if crdt.KeyBucket(k, buckets) == b1 {
			fill = append(fill, k)
		}
	}
	ra, rb := crdt.ReplicaID("us-east"), crdt.ReplicaID("eu-west")
	st := func(r crdt.ReplicaID, tag string) []byte { return crdt.EncodeCart(cartWith(r, tag, 1)) }
	type side map[string][]byte
	cases := []struct {
		name string
		a, b side
	}{
		{"k1-differs", side{k1: st(ra, "x"), k2: st(ra, "y")}, side{k1: st(rb, "z"), k2: st(ra, "y")}},
		{"k2-differs", side{k1: st(ra, "x"), k2: st(ra, "y")}, side{k1: st(ra, "x"), k2: st(rb, "w")}},
		{"crossed", side{k1: st(ra, "x")}, side{k2: st(rb, "w")}},
		{"a-holds-both", side{k1: st(ra, "x"), k2: st(ra, "y")}, side{}},
		{"b-holds-both", side{}, side{k1: st(rb, "x"), k2: st(rb, "y")}},
		{"a-one-b-both", side{k1: st(ra, "x")}, side{k1: st(ra, "x"), k2: st(rb, "y")}},
		{"both-differ", side{k1: st(ra, "x"), k2: st(ra, "y")}, side{k1: st(rb, "z"), k2: st(rb, "w")}},
	}
	for _, nfill := range []int{0, 10, 60} {
		for _, roundKeys := range []int{0, 1} {
			for _, c := range cases {
				t.Run(fmt.Sprintf("%s-fill%d-rk%d", c.name, nfill, roundKeys), func(t *testing.T) {
					a, b := newMemStore(buckets), newMemStore(buckets)
					for _, k := range fill[:nfill] {
						s := st(ra, fmt.Sprint(len(k)))
						a.put(k, s)
						b.put(k, s)
					}
					for k, s := range c.a {
						a.put(k, s)
					}
					for k, s := range c.b {
						b.put(k, s)
					}
					want := joinedStates(t, a, b)
					cfg := protocol.DefaultConfig()
					cfg.Buckets = buckets
					if roundKeys > 0 {
						cfg.MaxRoundKeys = roundKeys
					}
					p := newAEPair(t, cfg, a, b)
					if bad := settleStates(t, p, want, 3*time.Minute); len(bad) > 0 {
						t.Fatalf("after 3 minutes: %v", bad)
					}
				})
			}
		}
	}
}

// TestWritesDuringRoundsAreRepaired: while rounds run, both regions keep
// writing (new carts, and new entries in carts both hold), without
// deltas between them; one region's protocol also restarts mid-round.
// Once the writes stop, later rounds must bring both regions to the join
// of their states for every key: no write a round missed stays missing.
func TestWritesDuringRoundsAreRepaired(t *testing.T) {
	for _, sh := range []struct{ buckets, rate int }{{1024, 0}, {16, 0}, {64, 2048}, {8192, 0}} {
		t.Run(fmt.Sprintf("b%d-r%d", sh.buckets, sh.rate), func(t *testing.T) {
			seed := uint64(7 + sh.buckets)
			dc := newDiffCase(seed, sh.buckets, 2000, 0.02, 0.02, 0.02, func(i int) string { return fmt.Sprintf("%scart-%06d", crdt.CartPrefix, i) })
			cfg := protocol.DefaultConfig()
			cfg.Buckets = sh.buckets
			cfg.AntiEntropyEvery = 2 * time.Second
			setRate(&cfg, sh.rate)
			p := newAEPair(t, cfg, dc.a, dc.b)
			rng := rand.New(rand.NewPCG(seed, 5))
			names := [2]crdt.ReplicaID{"us-east", "eu-west"}
			ctr := [2]uint64{1000, 1000}
			write := func(i int) {
				st := p.st[i]
				k := fmt.Sprintf("%scart-%06d", crdt.CartPrefix, rng.IntN(2600))
				c := &crdt.Cart{}
				if s, ok := st.states[k]; ok {
					var err error
					if c, err = crdt.DecodeCart(s); err != nil {
						t.Fatal(err)
					}
				}
				ctr[i]++
				d := crdt.Dot{Replica: names[i], Counter: ctr[i]}
				c.Entries = maps.Clone(c.Entries)
				if c.Entries == nil {
					c.Entries = map[crdt.Dot]crdt.Line{}
				}
				c.Entries[d] = crdt.Line{SKU: fmt.Sprintf("w-%d", ctr[i]), Kind: crdt.KindAdd, N: 1}
				c.Ctx.Insert(d)
				st.put(k, crdt.EncodeCart(c))
			}
			for step := range 400 {
				p.run(25 * time.Millisecond)
				write(rng.IntN(2))
				if step == 150 {
					// eu-west's protocol restarts: what it had in flight is gone.
					p.ps[1] = protocol.New(p.names[1], p.names[:], p.st[1].applied, p.st[1], cfg)
					p.ps[1].PeerUp(p.names[0], p.now)
				}
			}
			want := joinedStates(t, dc.a, dc.b)
			if bad := settleStates(t, p, want, 5*time.Minute); len(bad) > 0 {
				t.Fatalf("seed %d: 5 minutes after the writes stopped, %d keys still differ, e.g. %v", seed, len(bad), bad[:min(6, len(bad))])
			}
		})
	}
}

func aeShipped(s *sim) uint64 {
	var n uint64
	for _, r := range s.regions {
		for _, ps := range r.proto.Status() {
			n += ps.AEKeysPushed
		}
	}
	return n
}

// TestConvergedRegionsShipNothing: three regions (real nodes) write
// carts, stock and reservations while one is cut off, then heal and
// converge. Once they hold the same states, their digests must be equal
// and further rounds must ship no state: a digest that differs for equal
// states would have every round ship the key again, for good.
func TestConvergedRegionsShipNothing(t *testing.T) {
	for _, seed := range []uint64{1, 2, 3} {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			s := newQuietSim(t, simConfig())
			s.rng = rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
			s.isolate(2)
			for range 300 {
				s.randomOp()
				s.step(time.Millisecond)
			}
			s.setCut(0, 2, false)
			s.setCut(1, 2, false)
			deadline := s.clock.t.Add(60 * time.Second)
			for !s.converged() {
				if !s.clock.t.Before(deadline) {
					t.Fatalf("seed %d: not converged 60 s after the heal", seed)
				}
				s.run(100 * time.Millisecond)
			}
			s.run(2 * time.Second) // rounds under way end
			var digests [3][]uint64
			for i, r := range s.regions {
				snap, err := r.node.Snapshot(nil)
				if err != nil {
					t.Fatal(err)
				}
				digests[i] = snap.Buckets
			}
			before := aeShipped(s)
			t.Logf("seed %d: converged at %s, %d states shipped so far", seed, s.clock.t.Format(time.TimeOnly), before)
			s.run(20 * time.Second)
			after := aeShipped(s)
			for i := 1; i < 3; i++ {
				if !slices.Equal(digests[0], digests[i]) {
					var diff []int
					for b := range digests[0] {
						if digests[0][b] != digests[i][b] {
							diff = append(diff, b)
						}
					}
					t.Errorf("seed %d: converged regions %s and %s have different digests in buckets %v", seed, names[0], names[i], diff)
				}
			}
			if after != before {
				t.Errorf("seed %d: converged regions shipped %d states in 20 s of rounds (want 0)", seed, after-before)
			}
		})
	}
}

// TestKeysChangedOnBothSidesAreRepaired: after a partition in which both
// regions changed the same carts, every digest bucket holds as many keys
// on both sides but about 50 of them (half) in different states. Bucket
// counts then suggest no difference, so each bucket is first answered
// with the smallest sketch, which fails and is asked for again twice as
// wide; every retry of every bucket counts against the round's retry
// budget (2 × buckets + 64). Anti-entropy must still repair the regions,
// in proportion to the difference: here it must bring both to the join
// within a minute, shipping each differing state about once.
func TestKeysChangedOnBothSidesAreRepaired(t *testing.T) {
	const buckets, keys = 64, 6400
	dc := newDiffCase(42, buckets, keys, 0, 0, 0.5, func(i int) string { return fmt.Sprintf("%scart-%07d", crdt.CartPrefix, i) })
	want := joinedStates(t, dc.a, dc.b)
	cfg := protocol.DefaultConfig()
	cfg.Buckets = buckets
	p := newAEPair(t, cfg, dc.a, dc.b)
	bad := settleStates(t, p, want, time.Minute)
	s0, s1 := p.ps[0].Status()[0], p.ps[1].Status()[0]
	if len(bad) > 0 {
		t.Fatalf("%d keys held differently (about %d a bucket): after a minute %d of the %d key states still differ; rounds us-east %d, eu-west %d; states shipped us-east %d, eu-west %d (want both regions at the join, %d states shipped)",
			dc.diffs, dc.diffs/buckets, len(bad), 2*len(want), s0.AERounds, s1.AERounds, s0.AEKeysPushed, s1.AEKeysPushed, dc.ships)
	}
}
