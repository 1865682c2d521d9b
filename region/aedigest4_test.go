package region

import (
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/latticedb/lattice/crdt"
	"github.com/latticedb/lattice/region/store"
)

// openNamedNode opens a region of the given name on a store file in dir.
func openNamedNode(t *testing.T, dir, name string, clock *fakeClock) *testNode {
	t.Helper()
	path := filepath.Join(dir, name, "data.db")
	st, err := OpenStore(path, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	n, err := NewNode(Options{Name: name, Store: st, Clock: clock, ExpiryInterval: time.Hour})
	if err != nil {
		st.Close()
		t.Fatal(err)
	}
	tn := &testNode{Node: n, store: st, path: path, clock: clock}
	t.Cleanup(tn.close)
	return tn
}

// digestKeys returns the node's digest: buckets and every key's hash.
func digestKeys(t *testing.T, n *Node) ([]uint64, map[string]uint64) {
	t.Helper()
	s, err := n.Snapshot(func(d []uint64) []uint32 {
		all := make([]uint32, len(d))
		for i := range all {
			all[i] = uint32(i)
		}
		return all
	})
	if err != nil {
		t.Fatal(err)
	}
	return s.Buckets, s.Keys
}

// randomOps runs a seeded mix of cart and stock writes on n.
func randomOps(t *testing.T, n *Node, seed uint64, ops int) []string {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, 1))
	carts := []string{"c1", "c2", "c3", "c4"}
	skus := []string{"sku-1", "sku-2", "sku-3"}
	for range ops {
		id, sku := carts[rng.IntN(len(carts))], skus[rng.IntN(len(skus))]
		var err error
		switch rng.IntN(6) {
		case 0, 1:
			_, err = n.AddItem(bg, id, sku, int64(1+rng.IntN(3)))
		case 2:
			_, err = n.SetItem(bg, id, sku, int64(rng.IntN(4)))
		case 3:
			_, err = n.RemoveItem(bg, id, sku)
		case 4:
			_, err = n.ClearCart(bg, id)
		case 5:
			_, err = n.Restock(bg, sku, int64(1+rng.IntN(5)))
		}
		if err != nil {
			t.Fatalf("op: %v", err)
		}
	}
	var keys []string
	for _, c := range carts {
		keys = append(keys, prefixCart+c)
	}
	for _, s := range skus {
		keys = append(keys, prefixItem+s)
	}
	return keys
}

// TestDigestEqualForEqualStates: a region that received another's whole
// states by repair holds the same states; its digest must then equal the
// other's, or anti-entropy finds a difference that no repair removes.
func TestDigestEqualForEqualStates(t *testing.T) {
	for seed := uint64(1); seed <= 2; seed++ {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			clock := newFakeClock()
			a := openNamedNode(t, t.TempDir(), "us-east", clock)
			b := openNamedNode(t, t.TempDir(), "eu-west", clock)
			keys := randomOps(t, a.Node, seed, 200)
			g, ctx, err := a.Read(keys)
			if err != nil {
				t.Fatal(err)
			}
			if err := b.ApplyGroup(&crdt.Context{}, g, &ctx, true); err != nil {
				t.Fatal(err)
			}
			gb, _, err := b.Read(keys)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(crdt.EncodeGroup(g), crdt.EncodeGroup(gb)) {
				t.Fatalf("states differ after repair")
			}
			_, ka := digestKeys(t, a.Node)
			_, kb := digestKeys(t, b.Node)
			for k, h := range ka {
				if kb[k] != h {
					t.Errorf("key %s: hash %x at us-east, %x at eu-west, with equal states", k, h, kb[k])
				}
			}
			for k := range kb {
				if _, ok := ka[k]; !ok {
					t.Errorf("key %s only in eu-west's digest", k)
				}
			}
		})
	}
}

// TestDigestSameAfterRestart: the digest rebuilt from the store at start
// must equal the one kept up to date by the writes before.
func TestDigestSameAfterRestart(t *testing.T) {
	clock := newFakeClock()
	dir := t.TempDir()
	a := openNamedNode(t, dir, "us-east", clock)
	randomOps(t, a.Node, 7, 300)
	before, kb := digestKeys(t, a.Node)
	a.close()
	a2 := openNamedNode(t, dir, "us-east", clock)
	after, ka := digestKeys(t, a2.Node)
	for k, h := range kb {
		if ka[k] != h {
			t.Errorf("key %s: hash %x before restart, %x after", k, h, ka[k])
		}
	}
	for k := range ka {
		if _, ok := kb[k]; !ok {
			t.Errorf("key %s only after restart", k)
		}
	}
	if !slices.Equal(before, after) {
		t.Errorf("buckets differ after restart")
	}
}

// TestEmptyRemoteStatesLeaveDigestsEqual: a repair that carries an empty
// cart or item state must leave the receiving region's digest as the
// sender's would be for the same state, and a region that receives that
// state back must agree too.
func TestEmptyRemoteStatesLeaveDigestsEqual(t *testing.T) {
	clock := newFakeClock()
	a := openNamedNode(t, t.TempDir(), "us-east", clock)
	b := openNamedNode(t, t.TempDir(), "eu-west", clock)
	g := &crdt.Group{Carts: map[string]*crdt.Cart{"empty": {}}, Items: map[string]*crdt.Item{"sku-e": {}}}
	if err := a.ApplyGroup(&crdt.Context{}, g, &crdt.Context{}, true); err != nil {
		t.Fatal(err)
	}
	_, ka := digestKeys(t, a.Node)
	t.Logf("us-east digest after empty states: %v", ka)
	keys := []string{prefixCart + "empty", prefixItem + "sku-e"}
	ga, ctx, err := a.Read(keys)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("read back %d", ga.Len())
	if err := b.ApplyGroup(&crdt.Context{}, ga, &ctx, true); err != nil {
		t.Fatal(err)
	}
	_, kb := digestKeys(t, b.Node)
	for _, k := range keys {
		if ka[k] != kb[k] {
			t.Errorf("key %s: hash %x at us-east, %x at eu-west after its state was shipped", k, ka[k], kb[k])
		}
	}
}

type aeDeltaLog struct {
	mu sync.Mutex
	ds []Delta
}

func (l *aeDeltaLog) Publish(d Delta) {
	l.mu.Lock()
	l.ds = append(l.ds, d)
	l.mu.Unlock()
}

func openPublishing(t *testing.T, dir, name string, clock *fakeClock, pub Publisher) *testNode {
	t.Helper()
	path := filepath.Join(dir, name, "data.db")
	st, err := OpenStore(path, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	n, err := NewNode(Options{Name: name, Store: st, Clock: clock, ExpiryInterval: time.Hour, Publisher: pub})
	if err != nil {
		st.Close()
		t.Fatal(err)
	}
	tn := &testNode{Node: n, store: st, path: path, clock: clock}
	t.Cleanup(tn.close)
	return tn
}

// TestDigestAgreesForDeltasInAnyOrder: two regions receive the same
// deltas of a third, in different orders (one in order, one shuffled);
// once both hold every delta their decoded states are equal, and so must
// their digests be — and each digest must be the one a restart rebuilds.
// A digest that differs for equal states makes every round ship the key
// again, and one that a restart changes makes the region differ from a
// peer that holds the same states.
func TestDigestAgreesForDeltasInAnyOrder(t *testing.T) {
	clock := newFakeClock()
	log := &aeDeltaLog{}
	src := openPublishing(t, t.TempDir(), "ap-south", clock, log)
	keys := randomOps(t, src.Node, 11, 300)
	dirA, dirB := t.TempDir(), t.TempDir()
	a := openNamedNode(t, dirA, "us-east", clock)
	b := openNamedNode(t, dirB, "eu-west", clock)
	ds := slices.Clone(log.ds)
	apply := func(n *Node, ds []Delta) {
		for _, d := range ds {
			dots := crdt.Context{}
			dots.Insert(crdt.Dot{Replica: d.Origin, Counter: d.Seq})
			if err := n.ApplyGroup(&dots, d.Group, &crdt.Context{}, false); err != nil {
				t.Fatal(err)
			}
		}
	}
	apply(a.Node, ds)
	rng := rand.New(rand.NewPCG(11, 2))
	rng.Shuffle(len(ds), func(i, j int) { ds[i], ds[j] = ds[j], ds[i] })
	apply(b.Node, ds)
	ga, _, err := a.Read(keys)
	if err != nil {
		t.Fatal(err)
	}
	gb, _, err := b.Read(keys)
	if err != nil {
		t.Fatal(err)
	}
	gs, _, err := src.Read(keys)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(crdt.EncodeGroup(ga), crdt.EncodeGroup(gb)) || !slices.Equal(crdt.EncodeGroup(ga), crdt.EncodeGroup(gs)) {
		t.Fatalf("decoded states differ after every delta was applied")
	}
	_, ks := digestKeys(t, src.Node)
	_, ka := digestKeys(t, a.Node)
	_, kb := digestKeys(t, b.Node)
	for _, k := range keys {
		if ka[k] != kb[k] || ka[k] != ks[k] {
			t.Errorf("key %s: equal states, hashes %x at ap-south, %x at us-east (in order), %x at eu-west (shuffled)", k, ks[k], ka[k], kb[k])
		}
	}
	b.close()
	b2 := openNamedNode(t, dirB, "eu-west", clock)
	_, kb2 := digestKeys(t, b2.Node)
	for _, k := range keys {
		if kb2[k] != kb[k] {
			t.Errorf("key %s: hash %x at eu-west before its restart, %x after", k, kb[k], kb2[k])
		}
	}
}

// TestDigestUnderConcurrentSnapshots: snapshots that hold buckets' key
// maps while writes go on must neither see torn maps nor leave the
// digest different from the one a restart rebuilds from the store.
func TestDigestUnderConcurrentSnapshots(t *testing.T) {
	clock := newFakeClock()
	dir := t.TempDir()
	a := openNamedNode(t, dir, "us-east", clock)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var snaps int
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			s, err := a.Snapshot(func(d []uint64) []uint32 {
				out := make([]uint32, 0, len(d))
				for i := range d {
					if i%3 == snaps%3 {
						out = append(out, uint32(i))
					}
				}
				return out
			})
			if err != nil {
				t.Error(err)
				return
			}
			// Each snapshot's keys must XOR to its buckets.
			x := make(map[uint32]uint64)
			for k, h := range s.Keys {
				x[crdt.KeyBucket(k, len(s.Buckets))] ^= h
			}
			for b, h := range x {
				if s.Buckets[b] != h {
					t.Errorf("snapshot %d: bucket %d is %x, its keys XOR to %x", snaps, b, s.Buckets[b], h)
					return
				}
			}
			snaps++
		}
	}()
	var ww sync.WaitGroup
	for w := range 2 {
		ww.Add(1)
		go func() {
			defer ww.Done()
			for i := range 150 {
				id := fmt.Sprintf("w%d-%d", w, i%40)
				if _, err := a.AddItem(bg, id, fmt.Sprintf("sku-%d", i%5), 1); err != nil {
					t.Error(err)
					return
				}
				if i%7 == 0 {
					if _, err := a.RemoveItem(bg, id, fmt.Sprintf("sku-%d", (i+1)%5)); err != nil {
						t.Error(err)
						return
					}
				}
			}
		}()
	}
	ww.Wait()
	close(stop)
	wg.Wait()
	before, kb := digestKeys(t, a.Node)
	a.close()
	a2 := openNamedNode(t, dir, "us-east", clock)
	after, ka := digestKeys(t, a2.Node)
	if !slices.Equal(before, after) || len(ka) != len(kb) {
		t.Fatalf("after %d snapshots the digest differs from the one a restart rebuilds (%d keys before, %d after)", snaps, len(kb), len(ka))
	}
}

// TestRepairStatesReachTheJoin: two regions write the same carts and
// stock concurrently and then exchange whole states (as anti-entropy
// ships them) in both directions, in random order and at random times,
// with some of each other's deltas. Once each received the other's
// latest states, both must hold the join of the two for every key, with
// equal digests: a repair that stores less than the join leaves a
// difference every round finds and no round removes.
func TestRepairStatesReachTheJoin(t *testing.T) {
	for seed := uint64(1); seed <= 1; seed++ {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			clock := newFakeClock()
			la, lb := &aeDeltaLog{}, &aeDeltaLog{}
			a := openPublishing(t, t.TempDir(), "us-east", clock, la)
			b := openPublishing(t, t.TempDir(), "eu-west", clock, lb)
			rng := rand.New(rand.NewPCG(seed, 3))
			var keys []string
			ship := func(from, to *testNode) {
				g, ctx, err := from.Read(keys)
				if err != nil {
					t.Fatal(err)
				}
				if err := to.ApplyGroup(&crdt.Context{}, g, &ctx, true); err != nil {
					t.Fatal(err)
				}
			}
			for round := range 8 {
				keys = randomOps(t, a.Node, seed*100+uint64(round), 40)
				randomOps(t, b.Node, seed*200+uint64(round), 40)
				// Some deltas cross.
				for _, pair := range []struct {
					l  *aeDeltaLog
					to *testNode
				}{{la, b}, {lb, a}} {
					pair.l.mu.Lock()
					ds := slices.Clone(pair.l.ds)
					pair.l.ds = nil
					pair.l.mu.Unlock()
					for _, d := range ds {
						if rng.IntN(3) == 0 {
							continue
						}
						dots := crdt.Context{}
						dots.Insert(crdt.Dot{Replica: d.Origin, Counter: d.Seq})
						if err := pair.to.ApplyGroup(&dots, d.Group, &crdt.Context{}, false); err != nil {
							t.Fatal(err)
						}
					}
				}
				if rng.IntN(2) == 0 {
					ship(a, b)
				} else {
					ship(b, a)
				}
			}
			ga, _, err := a.Read(keys)
			if err != nil {
				t.Fatal(err)
			}
			gb, _, err := b.Read(keys)
			if err != nil {
				t.Fatal(err)
			}
			want := ga.Clone()
			want.Join(gb)
			ship(a, b)
			ship(b, a)
			ga2, _, err := a.Read(keys)
			if err != nil {
				t.Fatal(err)
			}
			gb2, _, err := b.Read(keys)
			if err != nil {
				t.Fatal(err)
			}
			w := crdt.EncodeGroup(want)
			if !slices.Equal(crdt.EncodeGroup(ga2), w) || !slices.Equal(crdt.EncodeGroup(gb2), w) {
				for id, c := range want.Carts {
					ca, cb := ga2.Carts[id], gb2.Carts[id]
					t.Errorf("cart %s: want %v\n us-east %v\n eu-west %v", id, c, ca, cb)
				}
				t.Fatalf("seed %d: after exchanging whole states the regions do not hold the join", seed)
			}
			_, ka := digestKeys(t, a.Node)
			_, kb := digestKeys(t, b.Node)
			for _, k := range keys {
				if ka[k] != kb[k] {
					t.Errorf("key %s: equal states, hashes %x and %x", k, ka[k], kb[k])
				}
			}
		})
	}
}
