package region

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/latticedb/lattice/crdt"
	"github.com/latticedb/lattice/region/store"
)

// reconfRig runs regions in one process on real store files, each opened
// with the cluster config of the moment: the region list, the homes and
// the escrow skus. A test stops every region (a clean stop), changes the
// config and opens them again, as an operator's rolling restart does.
// Deltas are queued by each region's publisher and delivered to the
// regions running when the test says; home requests are answered at once
// by the home if it runs and both ends have each other in their config.
type reconfRig struct {
	t     *testing.T
	dir   string
	clock *fakeClock

	// The config of the moment.
	regions []string
	home    func(sku string) string
	escrow  func(sku string) bool

	nodes map[string]*testNode
	// cfg is the region list each running region was opened with.
	cfg map[string][]string

	mu    sync.Mutex
	queue []queued
}

func newReconfRig(t *testing.T, regions []string, home func(string) string, escrow func(string) bool) *reconfRig {
	return &reconfRig{t: t, dir: t.TempDir(), clock: newFakeClock(), regions: regions, home: home, escrow: escrow,
		nodes: map[string]*testNode{}, cfg: map[string][]string{}}
}

type reconfPub struct {
	r    *reconfRig
	name string
}

func (p reconfPub) Publish(d Delta) {
	p.r.mu.Lock()
	p.r.queue = append(p.r.queue, queued{from: p.name, d: d})
	p.r.mu.Unlock()
}

type reconfFwd struct {
	r    *reconfRig
	from string
}

func (f reconfFwd) Forward(ctx context.Context, home string, req *HomeRequest) (*HomeResponse, error) {
	to, ok := f.r.nodes[home]
	if !ok || !slices.Contains(f.r.cfg[home], f.from) || !slices.Contains(f.r.cfg[f.from], home) {
		return nil, &Error{Code: CodeHomeUnavailable, RetryAfter: 1, Detail: home + " is not reachable"}
	}
	c := *req
	c.Escrow = false // never travels
	return to.ServeForwarded(ctx, &c), nil
}

// open starts region name on its store with the config of the moment.
func (r *reconfRig) open(name string) *testNode {
	r.t.Helper()
	return r.openWith(name, store.Options{})
}

// openWith is open with the store opened with opts.
func (r *reconfRig) openWith(name string, opts store.Options) *testNode {
	r.t.Helper()
	path := filepath.Join(r.dir, name, "data.db")
	st, err := OpenStore(path, opts)
	if err != nil {
		r.t.Fatal(err)
	}
	var peers []string
	for _, p := range r.regions {
		if p != name {
			peers = append(peers, p)
		}
	}
	regions := slices.Clone(r.regions)
	// What decides the homes, as config.Config.HomesID names it: here the
	// homes of the skus the tests use, and the regions.
	homesID := fmt.Sprint(r.home("p1"), r.home("e1"), regions)
	n, err := NewNode(Options{Name: name, Store: st, Clock: r.clock, ExpiryInterval: time.Hour,
		Home:        r.home,
		HomesID:     homesID,
		Escrow:      r.escrow,
		IsRegion:    func(x string) bool { return slices.Contains(regions, x) },
		Publisher:   reconfPub{r, name},
		Forwarder:   reconfFwd{r, name},
		PeerRegions: peers,
		Background:  func(f func()) { f() },
	})
	if err != nil {
		r.t.Fatal(err)
	}
	tn := &testNode{Node: n, store: st, path: path, clock: r.clock}
	r.nodes[name] = tn
	r.cfg[name] = regions
	// The running regions whose configs name each other show each other
	// their homes, as their first anti-entropy rounds would (only that:
	// the state the rounds would ship is the tests' to move).
	for o, on := range r.nodes {
		switch {
		case o == name || !slices.Contains(regions, o):
		case slices.Contains(r.cfg[o], name):
			n.noteHomes(o, on.HomesID())
			on.noteHomes(name, n.HomesID())
		default:
			n.PeerRefused(o) // o's config has no name: it turns name down
		}
	}
	r.t.Cleanup(tn.close)
	return tn
}

// stop stops region name cleanly. The deltas it had not sent yet are lost
// with its process (its store holds them: anti-entropy ships them later).
func (r *reconfRig) stop(name string) {
	r.t.Helper()
	tn := r.nodes[name]
	tn.close()
	delete(r.nodes, name)
	delete(r.cfg, name)
	r.mu.Lock()
	keep := r.queue[:0]
	for _, q := range r.queue {
		if q.from != name {
			keep = append(keep, q)
		}
	}
	r.queue = keep
	r.mu.Unlock()
}

// deliver applies every queued delta at every running region whose config
// and the sender's name each other; the others never get it (their
// sender's buffer for them is lost at its next stop).
func (r *reconfRig) deliver() {
	r.t.Helper()
	r.mu.Lock()
	q := r.queue
	r.queue = nil
	r.mu.Unlock()
	for _, x := range q {
		for to, n := range r.nodes {
			if to == x.from || !slices.Contains(r.cfg[to], x.from) || !slices.Contains(r.cfg[x.from], to) {
				continue
			}
			dots := &crdt.Context{}
			dots.Insert(crdt.Dot{Replica: x.d.Origin, Counter: x.d.Seq})
			if err := n.ApplyRemote(dots, x.d.Group); err != nil {
				r.t.Fatalf("apply at %s: %v", to, err)
			}
		}
	}
}

// antiEntropy is a complete round between two running regions over the
// keys named: each joins the other's whole states.
func (r *reconfRig) antiEntropy(a, b string, carts, items []string) {
	r.t.Helper()
	for _, p := range [][2]string{{a, b}, {b, a}} {
		from, to := r.nodes[p[0]], r.nodes[p[1]]
		g, err := from.ReadObjects(carts, items)
		if err != nil {
			r.t.Fatal(err)
		}
		if err := to.ApplyGroup(&crdt.Context{}, g, nil, true); err != nil {
			r.t.Fatalf("anti-entropy %s to %s: %v", p[0], p[1], err)
		}
	}
}

func (r *reconfRig) item(name, sku string) Item {
	r.t.Helper()
	it, err := r.nodes[name].GetItem(bg, sku, false)
	if err != nil {
		r.t.Fatal(err)
	}
	return it
}

func homeAt(region string) func(string) string { return func(string) string { return region } }

func escrowOnE(on bool) func(string) bool {
	return func(sku string) bool { return on && strings.HasPrefix(sku, "e") }
}

// TestEscrowTurnedOffLeavesNoUnitsStranded: a region holds rights to an
// escrow sku (granted by its home, unused: its hold was released) when
// the operator sets `escrow: false` on the sku's homes rule and restarts
// every region cleanly. Afterwards every unit is available at the home
// again: the home sells the whole stock, as a non-escrow sku's home does,
// once the region's unused rights have gone idle (EscrowIdle). The units
// granted out before the change must not be lost for sale for good, and
// the home's view must not promise units it then refuses.
func TestEscrowTurnedOffLeavesNoUnitsStranded(t *testing.T) {
	r := newReconfRig(t, []string{"h", "a"}, homeAt("h"), escrowOnE(true))
	h, a := r.open("h"), r.open("a")
	must[Item](t)(h.Restock(bg, "e1", 10))
	r.deliver()
	res := must[Reservation](t)(a.Reserve(bg, "e1", 1, time.Minute, Idem{}))
	if !strings.HasPrefix(res.ID, "a:") {
		t.Fatalf("the reservation was decided at %s, not from a's rights", res.ID)
	}
	must[Reservation](t)(a.Release(bg, res.ID, Idem{}))
	r.deliver()
	granted := *r.item("h", "e1").Granted
	if granted == 0 {
		t.Fatal("the home shows no rights granted to a")
	}
	t.Logf("before the change: the home granted a %d of 10 units", granted)

	// The config change: escrow off for e1; a clean rolling restart.
	r.stop("h")
	r.stop("a")
	r.escrow = escrowOnE(false)
	h, a = r.open("h"), r.open("a")
	h.SyncedWith("a", a.HomesID(), []string{"a"})
	a.SyncedWith("h", h.HomesID(), []string{"h"})

	// Long past the idle time of any rights a still holds.
	for range 3 {
		r.clock.Advance(EscrowIdle + time.Second)
		a.ReturnIdleRights()
		r.deliver()
		if err := h.ExpireDue(); err != nil {
			t.Fatal(err)
		}
	}
	view := r.item("h", "e1")
	_, err := h.Reserve(bg, "e1", 10, time.Minute, Idem{})
	if err != nil {
		var e *Error
		avail := "?"
		if errors.As(err, &e) && e.Available != nil {
			avail = strconv.FormatInt(*e.Available, 10)
		}
		t.Fatalf("after escrow was turned off the home shows stock %d, available %d, yet refuses a reservation of all 10: %v (it counts %s available; the %d units granted to a before the change never come back)",
			view.Stock, view.Available, err, avail, granted)
	}
}

// TestEscrowTurnedOffKeepsOpenHoldsCommittable: a region holds a
// reservation it decided from its rights when the operator turns escrow
// off for the sku and restarts every region. The hold names the region
// that decided it, which still commits it (using its rights and
// decrementing stock); the home, deciding the sku alone from then on,
// never sells the units the hold and the region's rights stand for, so
// held + committed <= stock throughout.
func TestEscrowTurnedOffKeepsOpenHoldsCommittable(t *testing.T) {
	r := newReconfRig(t, []string{"h", "a"}, homeAt("h"), escrowOnE(true))
	h, a := r.open("h"), r.open("a")
	must[Item](t)(h.Restock(bg, "e1", 10))
	r.deliver()
	res := must[Reservation](t)(a.Reserve(bg, "e1", 3, time.Minute, Idem{}))
	r.deliver()
	granted := *r.item("h", "e1").Granted
	r.stop("h")
	r.stop("a")
	r.escrow = escrowOnE(false)
	h, a = r.open("h"), r.open("a")
	h.SyncedWith("a", a.HomesID(), []string{"a"})
	a.SyncedWith("h", h.HomesID(), []string{"h"})
	if _, err := h.Reserve(bg, "e1", 8, time.Minute, Idem{}); err == nil {
		t.Fatal("the home sold 8 of 10 units while a holds 3 of them")
	}
	sold := must[Reservation](t)(h.Reserve(bg, "e1", 10-granted, time.Minute, Idem{}))
	c := must[Reservation](t)(a.Commit(bg, res.ID, Idem{}))
	if c.State != StateCommitted {
		t.Fatalf("a's hold after escrow was turned off: %+v", c)
	}
	must[Reservation](t)(h.Commit(bg, sold.ID, Idem{}))
	r.deliver()
	if st := r.item("h", "e1").Stock; st < 0 {
		t.Fatalf("stock %d after the commits", st)
	}
}

// TestRemovedRegionsRightsStayOut: region a holds rights to an escrow sku
// homed at h, with one hold open from them, when it is removed from the
// cluster following operations.md (its peers hold everything it wrote; a
// is home to nothing). Once a is gone its reservation ids answer
// not_found. Its rights are written off nowhere: a region added again
// under its name would decide from them, so the home keeps them out of
// what it sells (operations.md: let a region's rights come back before
// removing it). The home sells what is not granted, and refuses the rest.
func TestRemovedRegionsRightsStayOut(t *testing.T) {
	r := newReconfRig(t, []string{"h", "a", "b"}, homeAt("h"), escrowOnE(true))
	h, a := r.open("h"), r.open("a")
	r.open("b")
	must[Item](t)(h.Restock(bg, "e1", 10))
	r.deliver()
	res := must[Reservation](t)(a.Reserve(bg, "e1", 2, time.Minute, Idem{}))
	if !strings.HasPrefix(res.ID, "a:") {
		t.Fatalf("the reservation was decided at %s, not from a's rights", res.ID)
	}
	r.deliver() // a's peers hold everything it wrote
	granted := *r.item("h", "e1").Granted
	t.Logf("a holds %d rights and the hold %s of 2", granted, res.ID)

	// Removing a: stop it, drop it from the config, restart the others.
	r.stop("a")
	r.stop("h")
	r.stop("b")
	r.regions = []string{"h", "b"}
	h, b := r.open("h"), r.open("b")
	h.SyncedWith("b", b.HomesID(), []string{"b"})
	b.SyncedWith("h", h.HomesID(), []string{"h"})
	if _, err := b.GetReservation(bg, res.ID); err == nil {
		t.Fatalf("the removed region's reservation %s still answers", res.ID)
	}
	r.clock.Advance(2 * time.Minute) // past the hold's ttl
	if err := h.ExpireDue(); err != nil {
		t.Fatal(err)
	}
	view := r.item("h", "e1")
	if _, err := h.Reserve(bg, "e1", 10, time.Minute, Idem{}); err == nil {
		t.Fatalf("with a removed, the home (stock %d, available %d, granted %v) sold the %d units granted to a", view.Stock, view.Available, deref(view.Granted), granted)
	}
	must[Reservation](t)(h.Reserve(bg, "e1", 10-granted, time.Minute, Idem{}))
}

// TestNewHomeCountsTheOldHomesCommits: sku p is homed at h; b restocks
// 10 units; while b is stopped (a restart), h reserves and commits 8 of
// them, and then h stops cleanly for the rolling restart that moves p's
// home to b (`homes` edited; no reservation of p is open). b, started on
// the new config, is p's home. It has not seen h's commit yet (h is down
// and its deltas for b were lost with its process): it must not sell the
// 8 units already sold — it must wait for the old home's state (503) or
// refuse — so that held + committed <= stock holds once h is back.
func TestNewHomeCountsTheOldHomesCommits(t *testing.T) {
	r := newReconfRig(t, []string{"h", "b"}, homeAt("h"), escrowOnE(false))
	h, b := r.open("h"), r.open("b")
	must[Item](t)(b.Restock(bg, "p1", 10))
	r.deliver()
	r.stop("b")
	res := must[Reservation](t)(h.Reserve(bg, "p1", 8, time.Minute, Idem{}))
	must[Reservation](t)(h.Commit(bg, res.ID, Idem{}))
	r.stop("h") // its delta of the commit never reached b

	// The rolling restart with p1 homed at b: b first, h is still down.
	r.home = homeAt("b")
	b = r.open("b")
	t.Logf("b, p1's new home, shows %+v", r.item("b", "p1"))
	got, err := b.Reserve(bg, "p1", 10, time.Minute, Idem{})
	if err != nil {
		t.Logf("b refused: %v", err)
		return
	}
	must[Reservation](t)(b.Commit(bg, got.ID, Idem{}))
	h = r.open("h")
	r.deliver()
	r.antiEntropy("h", "b", nil, []string{"p1"})
	it := r.item("b", "p1")
	t.Fatalf("the new home sold 10 units of p1 although the old home had already sold 8 of the 10: stock once h is back %d (at h %d), committed 18 of 10 restocked",
		it.Stock, r.item("h", "p1").Stock)
}

func deref(p *int64) any {
	if p == nil {
		return nil
	}
	return *p
}
