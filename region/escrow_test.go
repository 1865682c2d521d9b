package region

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/latticedb/lattice/crdt"
	"github.com/latticedb/lattice/region/store"
)

// escrowRig is three regions in one process: h, the home of every sku,
// and a and b; sku "e" is an escrow sku, "p" is not. Deltas are queued by
// each region's publisher and delivered when the test says (in any order,
// duplicated or not); home requests are answered at once unless the
// asking region is cut off.
type escrowRig struct {
	t     *testing.T
	dir   string
	clock *fakeClock
	nodes map[string]*testNode

	mu      sync.Mutex
	queue   []queued
	cut     map[string]bool
	grants  int
	forward int
	// loseGrants is how many more answers to grants are lost on the way
	// back (the home decided them).
	loseGrants int
}

type queued struct {
	from string
	d    Delta
}

type rigPub struct {
	r    *escrowRig
	name string
}

func (p rigPub) Publish(d Delta) {
	p.r.mu.Lock()
	p.r.queue = append(p.r.queue, queued{from: p.name, d: d})
	p.r.mu.Unlock()
}

type rigFwd struct {
	r    *escrowRig
	from string
}

func (f rigFwd) Forward(ctx context.Context, home string, req *HomeRequest) (*HomeResponse, error) {
	f.r.mu.Lock()
	cut := f.r.cut[f.from] || f.r.cut[home]
	f.r.forward++
	if req.Op == OpGrant {
		f.r.grants++
	}
	f.r.mu.Unlock()
	if cut {
		return nil, &Error{Code: CodeHomeUnavailable, RetryAfter: 1, Detail: "cut off"}
	}
	c := *req
	c.Escrow = false // never travels
	resp := f.r.nodes[home].ServeForwarded(ctx, &c)
	f.r.mu.Lock()
	defer f.r.mu.Unlock()
	if req.Op == OpGrant && f.r.loseGrants > 0 {
		f.r.loseGrants--
		return nil, &Error{Code: CodeHomeUnavailable, RetryAfter: 1, Detail: "the answer was lost"}
	}
	return resp, nil
}

var escrowRegions = []string{"h", "a", "b"}

func newEscrowRig(t *testing.T) *escrowRig {
	r := &escrowRig{t: t, dir: t.TempDir(), clock: newFakeClock(), nodes: map[string]*testNode{}, cut: map[string]bool{}}
	for _, name := range escrowRegions {
		r.open(name)
	}
	return r
}

func (r *escrowRig) open(name string) {
	path := filepath.Join(r.dir, name, "data.db")
	st, err := OpenStore(path, store.Options{})
	if err != nil {
		r.t.Fatal(err)
	}
	var peers []string
	for _, p := range escrowRegions {
		if p != name {
			peers = append(peers, p)
		}
	}
	n, err := NewNode(Options{Name: name, Store: st, Clock: r.clock, ExpiryInterval: time.Hour,
		Home:        func(string) string { return "h" },
		Escrow:      func(sku string) bool { return strings.HasPrefix(sku, "e") },
		Publisher:   rigPub{r, name},
		Forwarder:   rigFwd{r, name},
		PeerRegions: peers,
		Background:  func(f func()) { f() }, // in line: the test's network is single-threaded
		Peers: func() []PeerStatus {
			var st []PeerStatus
			for _, p := range peers {
				st = append(st, PeerStatus{Region: p, Connected: !r.cut[name] && !r.cut[p]})
			}
			return st
		},
	})
	if err != nil {
		r.t.Fatal(err)
	}
	tn := &testNode{Node: n, store: st, path: path, clock: r.clock}
	r.nodes[name] = tn
	r.t.Cleanup(tn.close)
}

// deliver applies the queued deltas to every other region: all of them
// (rng nil), or a random part, in random order, some twice.
func (r *escrowRig) deliver(rng *rand.Rand) {
	r.mu.Lock()
	q := r.queue
	r.queue = nil
	r.mu.Unlock()
	var keep []queued
	for _, x := range q {
		if rng != nil && rng.IntN(3) == 0 {
			keep = append(keep, x)
			continue
		}
		for _, to := range escrowRegions {
			if to == x.from {
				continue
			}
			if r.cut[to] || r.cut[x.from] {
				continue // delivered later, when healed
			}
			dots := &crdt.Context{}
			dots.Insert(crdt.Dot{Replica: x.d.Origin, Counter: x.d.Seq})
			if err := r.nodes[to].ApplyRemote(dots, x.d.Group); err != nil {
				r.t.Fatalf("apply at %s: %v", to, err)
			}
			if rng != nil && rng.IntN(5) == 0 {
				_ = r.nodes[to].ApplyRemote(dots, x.d.Group) // a duplicate
			}
		}
		if r.cut[x.from] || anyCut(r.cut) {
			keep = append(keep, x)
		}
	}
	r.mu.Lock()
	r.queue = append(keep, r.queue...)
	r.mu.Unlock()
}

func anyCut(m map[string]bool) bool {
	for _, v := range m {
		if v {
			return true
		}
	}
	return false
}

func (r *escrowRig) item(name, sku string) Item {
	r.t.Helper()
	it, err := r.nodes[name].GetItem(bg, sku, false)
	if err != nil {
		r.t.Fatal(err)
	}
	return it
}

// TestEscrowDecidesLocally: a region with rights reserves alone, its
// commit uses them and decrements stock everywhere, and its unused rights
// go back to the home once the sku is idle.
func TestEscrowDecidesLocally(t *testing.T) {
	r := newEscrowRig(t)
	h, a := r.nodes["h"], r.nodes["a"]
	must[Item](t)(h.Restock(bg, "e1", 100))
	r.deliver(nil)

	res := must[Reservation](t)(a.Reserve(bg, "e1", 3, time.Minute, Idem{}))
	if !strings.HasPrefix(res.ID, "a:") || r.grants != 1 {
		t.Fatalf("first reservation %s after %d grants", res.ID, r.grants)
	}
	granted := r.item("h", "e1").Granted
	if granted == nil || *granted < 3 || *granted > 50 {
		t.Fatalf("the home granted %v (at most half of 100, at least 3)", granted)
	}
	before := r.forward
	for range 5 {
		must[Reservation](t)(a.Reserve(bg, "e1", 1, time.Minute, Idem{}))
	}
	if r.forward != before {
		t.Fatalf("reservations within a's rights went to the home (%d forwards)", r.forward-before)
	}
	if it := r.item("a", "e1"); it.Rights == nil || *it.Rights != *granted-8 {
		t.Fatalf("a shows rights %v, want %d", it.Rights, *granted-8)
	}
	c := must[Reservation](t)(a.Commit(bg, res.ID, Idem{}))
	if c.State != StateCommitted {
		t.Fatalf("commit: %+v", c)
	}
	r.deliver(nil)
	if it := r.item("h", "e1"); it.Stock != 97 || *it.Granted != *granted-3 || it.Available != 97-(*granted-3) {
		t.Fatalf("home after a's commit: %+v granted %d", it, *it.Granted)
	}
	if it := r.item("b", "e1"); it.Stock != 97 {
		t.Fatalf("b after a's commit: stock %d", it.Stock)
	}
	// A non-escrow sku is decided at the home as ever.
	must[Item](t)(h.Restock(bg, "p1", 5))
	r.deliver(nil)
	if p := must[Reservation](t)(a.Reserve(bg, "p1", 1, time.Minute, Idem{})); !strings.HasPrefix(p.ID, "h:") {
		t.Fatalf("a non-escrow reservation was decided at %s", p.ID)
	}
	// Idle: the held units stay a's, the rest goes back.
	r.clock.Advance(EscrowIdle + time.Second)
	a.returnIdleRights()
	r.deliver(nil)
	if it := r.item("h", "e1"); *it.Granted != 5 {
		t.Fatalf("after a's idle return the home counts %d granted, want the 5 units a still holds", *it.Granted)
	}
}

// TestEscrowCutOff: a region cut off from the home keeps reserving within
// its rights, then refuses; a retry with an Idempotency-Key of a
// reservation sent to the home goes to the home again.
func TestEscrowCutOff(t *testing.T) {
	r := newEscrowRig(t)
	h, a := r.nodes["h"], r.nodes["a"]
	must[Item](t)(h.Restock(bg, "e1", 10))
	r.deliver(nil)
	must[Reservation](t)(a.Reserve(bg, "e1", 1, time.Minute, Idem{}))
	rights := *r.item("a", "e1").Rights
	r.cut["a"] = true
	for i := range rights {
		if _, err := a.Reserve(bg, "e1", 1, time.Minute, Idem{}); err != nil {
			t.Fatalf("reservation %d of %d within a's rights while cut off: %v", i+1, rights, err)
		}
	}
	idem := Idem{Key: "k1", Fingerprint: [32]byte{1}}
	wantCode(t, second3(a.Reserve(bg, "e1", 1, time.Minute, idem)), CodeHomeUnavailable)
	delete(r.cut, "a")
	r.deliver(nil)
	res := must[Reservation](t)(a.Reserve(bg, "e1", 1, time.Minute, idem))
	if !strings.HasPrefix(res.ID, "h:") {
		t.Fatalf("the retry of an escalated key was decided at %s", res.ID)
	}
	if again := must[Reservation](t)(a.Reserve(bg, "e1", 1, time.Minute, idem)); again.ID != res.ID {
		t.Fatalf("the retry decided anew: %s then %s", res.ID, again.ID)
	}
}

// TestEscrowRecall: a home about to refuse a reservation that rights
// another region holds unused would cover recalls them and decides it.
func TestEscrowRecall(t *testing.T) {
	r := newEscrowRig(t)
	h, a := r.nodes["h"], r.nodes["a"]
	must[Item](t)(h.Restock(bg, "e1", 10))
	r.deliver(nil)
	must[Reservation](t)(a.Reserve(bg, "e1", 1, time.Minute, Idem{}))
	free := *r.item("a", "e1").Rights
	granted := *r.item("h", "e1").Granted
	if free == 0 || 10-granted >= 8 {
		t.Fatalf("a holds %d unused of %d granted; the test needs the home short of 8", free, granted)
	}
	res := must[Reservation](t)(h.Reserve(bg, "e1", 8, time.Minute, Idem{Key: "big", Fingerprint: [32]byte{2}}))
	if !strings.HasPrefix(res.ID, "h:") {
		t.Fatalf("the home's reservation %s", res.ID)
	}
	r.deliver(nil)
	if it := r.item("h", "e1"); it.Reserved != 8 || *it.Granted+it.Reserved > 10 {
		t.Fatalf("after the recall the home shows %+v, granted %d", it, *it.Granted)
	}
	// Nothing left to recall: a refusal, recorded under its key.
	wantCode(t, second3(h.Reserve(bg, "e1", 5, time.Minute, Idem{Key: "more", Fingerprint: [32]byte{3}})), CodeInsufficientStock)
}

// TestEscrowNeverOversells drives random reservations, commits, releases,
// expiries, restocks, grants and returns at three regions over a network
// that loses, reorders and duplicates deltas and cuts regions off; after
// every step, held + committed never exceeds the stock restocked, and no
// region's rights exceed what the home granted it. After healing, every
// region's view of the rights agrees.
func TestEscrowNeverOversells(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d (replay: edit the seed)", seed)
	rng := rand.New(rand.NewPCG(seed, 1))
	r := newEscrowRig(t)
	const sku = "e-stock"
	restocked, committed := int64(0), int64(0)
	type held struct {
		id  string
		qty int64
		at  string
	}
	var holds []held
	for step := range 600 {
		switch op := rng.IntN(10); {
		case op == 0:
			q := int64(1 + rng.IntN(10))
			if _, err := r.nodes[escrowRegions[rng.IntN(3)]].Restock(bg, sku, q); err == nil {
				restocked += q
			}
		case op <= 4:
			at := escrowRegions[rng.IntN(3)]
			q := int64(1 + rng.IntN(4))
			res, err := r.nodes[at].Reserve(bg, sku, q, time.Duration(1+rng.IntN(5))*time.Second, Idem{})
			if err == nil {
				holds = append(holds, held{res.ID, q, at})
			}
		case op <= 6 && len(holds) > 0:
			i := rng.IntN(len(holds))
			x := holds[i]
			holds = append(holds[:i], holds[i+1:]...)
			home, _ := ReservationHome(x.id)
			if rng.IntN(2) == 0 {
				if res, err := r.nodes[home].Commit(bg, x.id, Idem{}); err == nil && res.State == StateCommitted {
					committed += x.qty
				}
			} else {
				_, _ = r.nodes[home].Release(bg, x.id, Idem{})
			}
		case op == 7:
			r.clock.Advance(time.Duration(rng.IntN(2000)) * time.Millisecond)
			for _, n := range r.nodes {
				_ = n.ExpireDue()
				n.returnIdleRights()
			}
		case op == 8:
			name := escrowRegions[1+rng.IntN(2)]
			r.cut[name] = !r.cut[name]
		default:
			r.deliver(rng)
		}
		// The invariant, from the regions' own ledgers.
		var open int64
		for _, n := range r.nodes {
			err := n.store.View([]string{prefixItem + sku}, func(rd store.Reader) error {
				l, err := loadLedger(rd, sku)
				if err != nil {
					return err
				}
				for _, h := range l.Holds {
					if r.clock.Now().UnixMilli() < h.ExpMs {
						open += h.Qty
					}
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
		}
		if open+committed > restocked {
			t.Fatalf("step %d: %d held + %d committed > %d restocked (seed %d)", step, open, committed, restocked, seed)
		}
	}
	clear(r.cut)
	for range 3 {
		r.deliver(nil)
	}
	deref := func(p *int64) string {
		if p == nil {
			return "none"
		}
		return fmt.Sprint(*p)
	}
	home := r.item("h", sku)
	want := deref(home.Granted)
	if home.Stock != restocked-committed {
		t.Fatalf("after healing the home counts stock %d, want %d restocked − %d committed (seed %d)", home.Stock, restocked, committed, seed)
	}
	for _, name := range escrowRegions[1:] {
		if got := deref(r.item(name, sku).Granted); got != want {
			t.Fatalf("after healing, %s counts %s granted, the home %s (seed %d)", name, got, want, seed)
		}
	}
}

// TestEscrowNoReturnWhileCatchingUp: a region restored from a snapshot
// taken before it returned idle rights must not return them again while
// it catches up: its store lacks the return its peers hold, so what it
// sees as unused was given back already. Returned twice, the rights the
// regions count as outstanding fall short of its holds, and the home
// reserves the units a hold of the region then commits.
func TestEscrowNoReturnWhileCatchingUp(t *testing.T) {
	r := newEscrowRig(t)
	h, a := r.nodes["h"], r.nodes["a"]
	must[Item](t)(h.Restock(bg, "e1", 100))
	r.deliver(nil)
	held := must[Reservation](t)(a.Reserve(bg, "e1", 2, time.Hour, Idem{}))
	granted := *r.item("a", "e1").Rights + 2
	var snap bytes.Buffer
	if _, err := store.Backup(a.path, &snap); err != nil {
		t.Fatal(err)
	}
	// Idle: a returns all but its hold, and the home counts it.
	r.clock.Advance(EscrowIdle + time.Second)
	a.returnIdleRights()
	r.deliver(nil)
	if it := r.item("h", "e1"); *it.Granted != 2 {
		t.Fatalf("after a's return the home counts %d granted, want a's hold of 2 (of %d granted)", *it.Granted, granted)
	}

	// a is restored from the snapshot: it holds its rights unreturned.
	a.close()
	backup := filepath.Join(t.TempDir(), "a.backup")
	if err := os.WriteFile(backup, snap.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := store.Restore(a.path, backup); err != nil {
		t.Fatal(err)
	}
	r.open("a")
	a = r.nodes["a"]
	if !a.CatchingUp() {
		t.Fatal("a restored from a snapshot is not catching up")
	}
	r.clock.Advance(EscrowIdle + time.Second)
	a.returnIdleRights()
	r.deliver(nil)

	// Anti-entropy brings a what the others hold: its own return too.
	g, err := h.ReadObjects(nil, []string{"e1"})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.ApplyRemote(&crdt.Context{}, g); err != nil {
		t.Fatal(err)
	}
	a.SyncedWith("h", "", []string{"h", "b"})
	a.SyncedWith("b", "", []string{"h", "b"})
	if a.CatchingUp() {
		t.Fatal("a still catching up after syncing with both peers")
	}
	a.returnIdleRights()
	r.deliver(nil)
	for _, name := range escrowRegions {
		if it := r.item(name, "e1"); *it.Granted != 2 {
			t.Fatalf("%s counts %d of rights outstanding at a, want a's hold of 2", name, *it.Granted)
		}
	}
	// So the home leaves a's hold its units.
	if _, err := h.Reserve(bg, "e1", 99, time.Hour, Idem{}); err == nil {
		t.Fatal("the home reserved 99 of the 100 units while a holds 2")
	}
	must[Reservation](t)(h.Reserve(bg, "e1", 98, time.Hour, Idem{}))
	if c := must[Reservation](t)(a.Commit(bg, held.ID, Idem{})); c.State != StateCommitted {
		t.Fatalf("a's hold: %+v", c)
	}
}

// TestEscrowGrantAnswerLost: rights the home granted in an answer that was
// lost reach the region by replication, and go back once idle like any
// others — also after the region restarted in between.
func TestEscrowGrantAnswerLost(t *testing.T) {
	r := newEscrowRig(t)
	h := r.nodes["h"]
	must[Item](t)(h.Restock(bg, "e1", 100))
	must[Item](t)(h.Restock(bg, "e2", 100))
	r.deliver(nil)
	ask := func(sku string) {
		t.Helper()
		r.loseGrants = 1
		res := must[Reservation](t)(r.nodes["a"].Reserve(bg, sku, 1, time.Minute, Idem{}))
		if !strings.HasPrefix(res.ID, "h:") || r.loseGrants != 0 {
			t.Fatalf("a reserved %s as %s, its grant's answer lost: want it decided at the home", sku, res.ID)
		}
		if g := r.item("h", sku).Granted; g == nil || *g == 0 {
			t.Fatalf("the home granted a no rights to %s", sku)
		}
		r.deliver(nil) // the grant reaches a by replication
		if rights := r.item("a", sku).Rights; rights == nil || *rights == 0 {
			t.Fatalf("the grant of %s did not reach a", sku)
		}
	}
	// Rights to e2, then a restart: only its store tells a of them.
	ask("e2")
	r.nodes["a"].close()
	r.open("a")
	ask("e1")
	r.clock.Advance(EscrowIdle + time.Second)
	r.nodes["a"].returnIdleRights()
	r.deliver(nil)
	for _, sku := range []string{"e1", "e2"} {
		if g := r.item("h", sku).Granted; *g != 0 {
			t.Fatalf("a idle: the home counts %d of rights to %s outstanding, want 0", *g, sku)
		}
	}
}
