package region

import (
	"context"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/latticedb/lattice/crdt"
	"github.com/latticedb/lattice/region/store"
)

// clockRig is three regions in one process, each with a clock of its own:
// h, the home of every sku, and a and b; skus starting with "e" are
// escrow skus. Deltas are queued and delivered when the test says; home
// requests are answered at once unless a region is cut off.
type clockRig struct {
	t      *testing.T
	dir    string
	clocks map[string]*fakeClock
	nodes  map[string]*testNode

	mu    sync.Mutex
	queue []clockQueued
	cut   map[string]bool
}

type clockQueued struct {
	from string
	d    Delta
}

type clockPub struct {
	r    *clockRig
	name string
}

func (p clockPub) Publish(d Delta) {
	p.r.mu.Lock()
	p.r.queue = append(p.r.queue, clockQueued{from: p.name, d: d})
	p.r.mu.Unlock()
}

type clockFwd struct {
	r    *clockRig
	from string
}

func (f clockFwd) Forward(ctx context.Context, home string, req *HomeRequest) (*HomeResponse, error) {
	f.r.mu.Lock()
	cut := f.r.cut[f.from] || f.r.cut[home]
	f.r.mu.Unlock()
	if cut {
		return nil, &Error{Code: CodeHomeUnavailable, RetryAfter: 1, Detail: "cut off"}
	}
	c := *req
	c.Escrow = false // never travels
	return f.r.nodes[home].ServeForwarded(ctx, &c), nil
}

var clockRegions = []string{"h", "a", "b"}

func newClockRig(t *testing.T) *clockRig {
	r := &clockRig{t: t, dir: t.TempDir(), clocks: map[string]*fakeClock{}, nodes: map[string]*testNode{}, cut: map[string]bool{}}
	for _, name := range clockRegions {
		r.clocks[name] = newFakeClock()
		r.open(name)
	}
	return r
}

func (r *clockRig) open(name string) {
	path := filepath.Join(r.dir, name, "data.db")
	st, err := OpenStore(path, store.Options{})
	if err != nil {
		r.t.Fatal(err)
	}
	var peers []string
	for _, p := range clockRegions {
		if p != name {
			peers = append(peers, p)
		}
	}
	n, err := NewNode(Options{Name: name, Store: st, Clock: r.clocks[name], ExpiryInterval: time.Hour,
		Home:        func(string) string { return "h" },
		IsRegion:    func(x string) bool { return x == "h" || x == "a" || x == "b" },
		Escrow:      func(sku string) bool { return strings.HasPrefix(sku, "e") },
		Publisher:   clockPub{r, name},
		Forwarder:   clockFwd{r, name},
		PeerRegions: peers,
		Background:  func(f func()) { f() },
	})
	if err != nil {
		r.t.Fatal(err)
	}
	tn := &testNode{Node: n, store: st, path: path, clock: r.clocks[name]}
	r.nodes[name] = tn
	r.t.Cleanup(tn.close)
}

// restart stops region name cleanly and opens it again on its store.
func (r *clockRig) restart(name string) {
	r.nodes[name].close()
	r.open(name)
}

// deliver applies every queued delta at every region not cut off (a delta
// of or to a region cut off waits).
func (r *clockRig) deliver() {
	r.mu.Lock()
	q := r.queue
	r.queue = nil
	r.mu.Unlock()
	var keep []clockQueued
	for _, x := range q {
		if r.cut[x.from] {
			keep = append(keep, x)
			continue
		}
		missed := false
		for _, to := range clockRegions {
			if to == x.from {
				continue
			}
			if r.cut[to] {
				missed = true
				continue
			}
			dots := &crdt.Context{}
			dots.Insert(crdt.Dot{Replica: x.d.Origin, Counter: x.d.Seq})
			if err := r.nodes[to].ApplyRemote(dots, x.d.Group); err != nil {
				r.t.Fatalf("apply at %s: %v", to, err)
			}
		}
		if missed {
			keep = append(keep, x)
		}
	}
	r.mu.Lock()
	r.queue = append(keep, r.queue...)
	r.mu.Unlock()
}

// ledgerHeld is every hold in region name's ledger of sku, expired or not
// (a hold past its expiry not yet swept still backs units until the
// region's next decision sweeps it).
func (r *clockRig) ledgerHeld(name, sku string) int64 {
	r.t.Helper()
	var held int64
	err := r.nodes[name].store.View([]string{prefixItem + sku}, func(rd store.Reader) error {
		l, err := loadLedger(rd, sku)
		if err != nil {
			return err
		}
		held = l.held()
		return nil
	})
	if err != nil {
		r.t.Fatal(err)
	}
	return held
}

// TestEscrowSkewedClocksNeverOversellNorStrand drives random restocks,
// reservations (escrow and home-decided skus), commits, releases, clock
// jumps forward and backward at each region independently, expiry sweeps,
// idle returns, clean restarts and cuts (fixed seed 3). After every step,
// the units held in every region's ledger plus those committed never
// exceed what was restocked. At the end, with every clock moved past every hold's expiry,
// every region swept and idle, and the network healed, nothing is
// stranded: the home shows no held units and no rights out, and its
// available stock is exactly restocked − committed.
func TestEscrowSkewedClocksNeverOversellNorStrand(t *testing.T) {
	for _, seed := range []uint64{3} {
		t.Run(fmt.Sprintf("seed%d", seed), func(t *testing.T) {
			t.Logf("seed %d", seed)
			rng := rand.New(rand.NewPCG(seed, 6))
			r := newClockRig(t)
			skus := []string{"e1", "p1"}
			restocked := map[string]int64{}
			committed := map[string]int64{}
			type held struct {
				id, sku string
				qty     int64
			}
			var holds []held
			for step := range 300 {
				sku := skus[rng.IntN(len(skus))]
				at := clockRegions[rng.IntN(3)]
				switch op := rng.IntN(14); {
				case op == 0:
					q := int64(1 + rng.IntN(8))
					if _, err := r.nodes[at].Restock(bg, sku, q); err == nil {
						restocked[sku] += q
					}
				case op <= 4:
					q := int64(1 + rng.IntN(4))
					if res, err := r.nodes[at].Reserve(bg, sku, q, time.Duration(1+rng.IntN(5))*time.Second, Idem{}); err == nil {
						holds = append(holds, held{res.ID, sku, q})
					}
				case op <= 6 && len(holds) > 0:
					i := rng.IntN(len(holds))
					x := holds[i]
					holds = append(holds[:i], holds[i+1:]...)
					if rng.IntN(2) == 0 {
						if res, err := r.nodes[at].Commit(bg, x.id, Idem{}); err == nil && res.State == StateCommitted {
							committed[x.sku] += x.qty
						}
					} else {
						_, _ = r.nodes[at].Release(bg, x.id, Idem{})
					}
				case op == 7:
					// A clock jumps, forward or back.
					r.clocks[at].Advance(time.Duration(rng.IntN(6000)-2000) * time.Millisecond)
				case op == 8:
					for _, name := range clockRegions {
						r.clocks[name].Advance(time.Duration(rng.IntN(1500)) * time.Millisecond)
						_ = r.nodes[name].ExpireDue()
						r.nodes[name].ReturnIdleRights()
					}
				case op == 9:
					name := clockRegions[1+rng.IntN(2)]
					r.cut[name] = !r.cut[name]
				case op == 10:
					r.restart(at)
				default:
					r.deliver()
				}
				for _, s := range skus {
					var open int64
					for _, name := range clockRegions {
						open += r.ledgerHeld(name, s)
					}
					if open+committed[s] > restocked[s] {
						t.Fatalf("step %d: %s: %d held + %d committed > %d restocked", step, s, open, committed[s], restocked[s])
					}
				}
			}
			// Heal, let every hold expire everywhere, sweep and go idle.
			clear(r.cut)
			for range 4 {
				r.deliver()
				for _, name := range clockRegions {
					r.clocks[name].Advance(time.Hour)
					if err := r.nodes[name].ExpireDue(); err != nil {
						t.Fatal(err)
					}
					r.nodes[name].ReturnIdleRights()
				}
			}
			r.deliver()
			for _, s := range skus {
				it, err := r.nodes["h"].GetItem(bg, s, false)
				if err != nil {
					t.Fatal(err)
				}
				var granted int64
				if it.Granted != nil {
					granted = *it.Granted
				}
				if it.Stock != restocked[s]-committed[s] || it.Reserved != 0 || granted != 0 || it.Available != it.Stock {
					t.Fatalf("%s at rest: home shows stock %d reserved %d granted %d available %d; want stock %d (restocked %d − committed %d), nothing reserved or granted",
						s, it.Stock, it.Reserved, granted, it.Available, restocked[s]-committed[s], restocked[s], committed[s])
				}
				for _, name := range clockRegions {
					if h := r.ledgerHeld(name, s); h != 0 {
						t.Fatalf("%s at rest: %s's ledger still holds %d", s, name, h)
					}
				}
			}
		})
	}
}

// TestEscrowConsistentReadAfterCommitFromRights: region a reserves 2
// units of an escrow sku from rights the home granted it and commits
// them; the commit's delta (stock −2 and 2 rights used, together) has not
// reached the home yet. A consistent read of the item through a then
// answers the home's item with a's stock counter joined in. Every state
// any region holds shows either both halves of the commit or neither
// (crdt/escrow.go: "any state that shows the commit's stock decrement
// shows its use"), and every region shows available = 10 − 2 committed −
// the rights still out; so must the consistent read: stock 8, granted
// (granted − 2), available unchanged from before the commit.
func TestEscrowConsistentReadAfterCommitFromRights(t *testing.T) {
	r := newClockRig(t)
	h, a := r.nodes["h"], r.nodes["a"]
	must[Item](t)(h.Restock(bg, "e1", 10))
	r.deliver()
	res := must[Reservation](t)(a.Reserve(bg, "e1", 2, time.Minute, Idem{}))
	if !strings.HasPrefix(res.ID, "a:") {
		t.Fatalf("reservation %s not decided from a's rights", res.ID)
	}
	r.deliver()
	before := must[Item](t)(h.GetItem(bg, "e1", false))
	if c := must[Reservation](t)(a.Commit(bg, res.ID, Idem{})); c.State != StateCommitted {
		t.Fatalf("commit: %+v", c)
	}
	// The commit's delta is still on its way to h.
	got := must[Item](t)(a.GetItem(bg, "e1", true))
	r.deliver()
	after := must[Item](t)(h.GetItem(bg, "e1", false))
	t.Logf("home before the commit: %+v granted %d; home after it arrived: %+v granted %d", before, *before.Granted, after, *after.Granted)
	if got.Stock != after.Stock || got.Available != after.Available || got.Granted == nil || *got.Granted != *after.Granted {
		g := int64(-1)
		if got.Granted != nil {
			g = *got.Granted
		}
		t.Fatalf("consistent read through a right after its commit from rights: stock %d granted %d available %d; "+
			"the home shows stock %d granted %d available %d once the commit reached it (and available %d before): "+
			"the read counts the 2 committed units twice, in the stock and as rights still out",
			got.Stock, g, got.Available, after.Stock, *after.Granted, after.Available, before.Available)
	}
}
