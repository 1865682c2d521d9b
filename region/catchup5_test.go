package region

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/latticedb/lattice/region/store"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// openShared starts region name of the reconfiguration rig as a server
// starts a region of a cluster of several: its store opened with
// store.Options.Shared, so that a new, empty store begins a new
// incarnation in catch-up.
func (r *reconfRig) openShared(name string) *testNode {
	r.t.Helper()
	return r.openWith(name, store.Options{Shared: true})
}

// catchUpAll runs a complete anti-entropy round over items between every
// two running regions and reports each round to both ends, as the
// replication driver does, so that every region ends its catch-up.
func (r *reconfRig) catchUpAll(items []string) {
	r.t.Helper()
	var names []string
	for n := range r.nodes {
		names = append(names, n)
	}
	slices.Sort(names)
	for i, a := range names {
		for _, b := range names[i+1:] {
			r.antiEntropy(a, b, nil, items)
		}
	}
	for _, a := range names {
		var peers []string
		for _, p := range r.cfg[a] {
			if p != a {
				peers = append(peers, p)
			}
		}
		for _, p := range peers {
			homes := ""
			if pn, ok := r.nodes[p]; ok {
				homes = pn.HomesID()
			}
			r.nodes[a].SyncedWith(p, homes, peers)
		}
		if r.nodes[a].CatchingUp() {
			r.t.Fatalf("%s is still catching up after a round with every peer", a)
		}
	}
}

// TestRegionReAddedUnderItsNameSellsNoRightsTheHomeResold: region a holds
// unused rights to escrow sku e1 (stock 10, home h) when it is removed
// as operations.md says (stopped once its peers hold what it wrote, then
// dropped from the config). The home keeps a's rights out of its sale
// (they are written off nowhere) and sells the rest. Later a region is
// added under the name a again, on an empty data directory
// (operations.md: "A removed region's name may be reused this way"); it
// starts as a new incarnation in catch-up and pulls e1 from its peers.
// Whatever it then sells from those rights, held + committed <= stock:
// the stock never goes below 0. (When the home counted a removed region's
// rights as its own, it sold all 10 and the re-added region 5 more.)
func TestRegionReAddedUnderItsNameSellsNoRightsTheHomeResold(t *testing.T) {
	r := newReconfRig(t, []string{"h", "a", "b"}, homeAt("h"), escrowOnE(true))
	h, a := r.openShared("h"), r.openShared("a")
	r.openShared("b")
	r.catchUpAll(nil)
	must[Item](t)(h.Restock(bg, "e1", 10))
	r.deliver()
	res := must[Reservation](t)(a.Reserve(bg, "e1", 2, time.Minute, Idem{}))
	if !strings.HasPrefix(res.ID, "a:") {
		t.Fatalf("the reservation was decided at %s, not from a's rights", res.ID)
	}
	must[Reservation](t)(a.Release(bg, res.ID, Idem{}))
	r.deliver()
	granted := *r.item("h", "e1").Granted
	if granted == 0 {
		t.Fatal("the home shows no rights granted to a")
	}

	// Removing a: its peers hold what it wrote; stop it, drop it from
	// the config, restart the others.
	r.stop("a")
	r.stop("h")
	r.stop("b")
	r.regions = []string{"h", "b"}
	h = r.openShared("h")
	r.openShared("b")
	r.catchUpAll([]string{"e1"})
	if _, err := h.Reserve(bg, "e1", 10, time.Minute, Idem{}); err == nil {
		t.Fatalf("with a removed, the home sold all 10 units, %d of them granted to a", granted)
	}
	sold := must[Reservation](t)(h.Reserve(bg, "e1", 10-granted, time.Minute, Idem{}))
	must[Reservation](t)(h.Commit(bg, sold.ID, Idem{}))
	r.deliver()
	view := r.item("h", "e1")
	t.Logf("with a removed, the home sold the %d units not granted to a: stock %d, available %d", 10-granted, view.Stock, view.Available)

	// Adding a region under the name a, on an empty data directory.
	r.stop("h")
	r.stop("b")
	if err := os.RemoveAll(filepath.Join(r.dir, "a")); err != nil {
		t.Fatal(err)
	}
	r.regions = []string{"h", "a", "b"}
	h = r.openShared("h")
	r.openShared("b")
	a = r.openShared("a")
	if !a.CatchingUp() {
		t.Fatal("the re-added region does not start in catch-up")
	}
	r.catchUpAll([]string{"e1"})
	if got, err := a.Reserve(bg, "e1", granted, time.Minute, Idem{}); err != nil {
		t.Logf("the re-added region refused: %v", err)
	} else {
		must[Reservation](t)(a.Commit(bg, got.ID, Idem{}))
	}
	if _, err := h.Reserve(bg, "e1", 1, time.Minute, Idem{}); err == nil {
		t.Errorf("the home sold a unit more")
	}
	r.deliver()
	for _, name := range []string{"h", "a", "b"} {
		if st := r.item(name, "e1").Stock; st < 0 {
			t.Fatalf("stock at %s %d: more than the 10 restocked were committed", name, st)
		}
	}
}

// TestCheckoutRolledForwardAfterRetentionCommitsEachLineOnce: a keyed
// checkout of one unit of a (home h1) and one of b (home h2) commits a,
// but h2 cannot be reached for b's commit, so the saga stays in its
// commit phase (its plan is kept past the idempotency retention for
// this). h2 comes back eight days later, when h1 has collected the
// settled record of a's reservation (ReservationRetention) and a's
// commit is long out of idempotency retention. The retry with the key
// rolls the checkout forward into its order; each line must be committed
// once: a's stock 9 of 10, not a second unit sold for the same line.
func TestCheckoutRolledForwardAfterRetentionCommitsEachLineOnce(t *testing.T) {
	r := newSagaRig(t)
	r.fill()
	r.homes.set(false, "commit b")
	_, err := r.checkout()
	wantCode(t, err, CodeHomeUnavailable)
	if it := r.item("h1", "a"); it.Stock != 9 {
		t.Fatalf("a after its commit: %+v", it)
	}
	r.clock.Advance(ReservationRetention + 24*time.Hour)
	for _, h := range r.homes.nodes {
		if err := h.ExpireDue(); err != nil {
			t.Fatal(err)
		}
		if err := h.CollectIdempotency(); err != nil {
			t.Fatal(err)
		}
		if err := h.CollectReservations(); err != nil {
			t.Fatal(err)
		}
	}
	r.homes.set(false)
	order, err := r.checkout()
	if err != nil {
		t.Fatalf("the retry of the checkout: %v", err)
	}
	if len(order.Lines) != 2 {
		t.Fatalf("order %+v", order)
	}
	a := r.item("h1", "a")
	b := r.item("h2", "b")
	if a.Stock != 9 || b.Stock != 9 {
		t.Fatalf("one order of one a and one b: a's stock %d, b's stock %d, want 9 each (the line of a was committed %d times)",
			a.Stock, b.Stock, 10-a.Stock)
	}
}

// TestCheckoutUndoneAfterRetentionReturnsItsUnits: as above, but by the
// time h2 answers b's stock has gone to another buyer, so the saga can
// no longer roll forward and undoes its lines: the unit of a it
// committed eight days earlier must go back to stock (a's stock 10), as
// it does when the saga settles within the retention.
func TestCheckoutUndoneAfterRetentionReturnsItsUnits(t *testing.T) {
	r := newSagaRig(t)
	r.fill()
	r.homes.set(false, "commit b")
	_, err := r.checkout()
	wantCode(t, err, CodeHomeUnavailable)
	r.clock.Advance(ReservationRetention + 24*time.Hour)
	for _, h := range r.homes.nodes {
		if err := h.ExpireDue(); err != nil {
			t.Fatal(err)
		}
		if err := h.CollectReservations(); err != nil {
			t.Fatal(err)
		}
	}
	r.homes.set(false)
	must[Reservation](t)(r.homes.nodes["h2"].Reserve(bg, "b", 10, time.Hour, Idem{}))
	_, err = r.checkout()
	wantCode(t, err, CodeInsufficientStock)
	if it := r.item("h1", "a"); it.Stock != 10 || it.Reserved != 0 {
		t.Fatalf("a after the checkout was undone: stock %d reserved %d, want its unit back (stock 10)", it.Stock, it.Reserved)
	}
}

// TestCollectedReservationAnswersNotFoundAndChangesNothing: reservations
// committed, released and expired more than ReservationRetention ago are
// collected; a hold still open is kept. Afterwards a GET, a commit and a
// release of a collected id answer not_found and leave the stock and the
// held units as they were, and the open hold still commits.
func TestCollectedReservationAnswersNotFoundAndChangesNothing(t *testing.T) {
	n := newNode(t)
	must[Item](t)(n.Restock(bg, "s", 10))
	c := must[Reservation](t)(n.Reserve(bg, "s", 2, time.Minute, Idem{}))
	must[Reservation](t)(n.Commit(bg, c.ID, Idem{}))
	rel := must[Reservation](t)(n.Reserve(bg, "s", 1, time.Minute, Idem{}))
	must[Reservation](t)(n.Release(bg, rel.ID, Idem{}))
	exp := must[Reservation](t)(n.Reserve(bg, "s", 1, time.Minute, Idem{}))
	n.clock.Advance(ReservationRetention + 2*time.Minute)
	open := must[Reservation](t)(n.Reserve(bg, "s", 3, MaxTTL, Idem{}))
	if err := n.ExpireDue(); err != nil {
		t.Fatal(err)
	}
	if err := n.CollectReservations(); err != nil {
		t.Fatal(err)
	}
	before := must[Item](t)(n.GetItem(bg, "s", false))
	for _, id := range []string{c.ID, rel.ID, exp.ID} {
		_, err := n.GetReservation(bg, id)
		wantCode(t, err, CodeNotFound)
		_, err = n.Commit(bg, id, fp("c-"+id))
		wantCode(t, err, CodeNotFound)
		_, err = n.Release(bg, id, Idem{})
		wantCode(t, err, CodeNotFound)
	}
	after := must[Item](t)(n.GetItem(bg, "s", false))
	if before.Stock != after.Stock || before.Reserved != after.Reserved || after.Stock != 8 || after.Reserved != 3 {
		t.Fatalf("before %+v after %+v; want stock 8 and 3 held throughout", before, after)
	}
	if got := must[Reservation](t)(n.Commit(bg, open.ID, Idem{})); got.State != StateCommitted {
		t.Fatalf("the open hold after the collection: %+v", got)
	}
}

// TestCatchUpWaitEndsWhenCatchUpEnds: a region restarted with other homes
// (HomesID) is in catch-up; a reservation it would decide as the home
// waits (Options.CatchUpWait) and is decided as soon as the last peer's
// round is reported; one that waits past CatchUpWait is refused with
// 503 unavailable and decides nothing. A grant, a negative adjustment and
// a commit are refused alike during the catch-up.
func TestCatchUpWaitEndsWhenCatchUpEnds(t *testing.T) {
	dir := t.TempDir()
	clock := newFakeClock()
	open := func(homes string, wait time.Duration) *testNode {
		path := filepath.Join(dir, "h", "data.db")
		st, err := OpenStore(path, store.Options{})
		if err != nil {
			t.Fatal(err)
		}
		n, err := NewNode(Options{Name: "h", Store: st, Clock: clock, ExpiryInterval: time.Hour,
			HomesID: homes, CatchUpWait: wait, PeerRegions: []string{"a", "b"},
			Escrow:   func(sku string) bool { return strings.HasPrefix(sku, "e") },
			IsRegion: func(string) bool { return true }})
		if err != nil {
			t.Fatal(err)
		}
		tn := &testNode{Node: n, store: st, path: path, clock: clock}
		t.Cleanup(tn.close)
		return tn
	}
	h := open("homes-1", 0)
	h.SyncedWith("a", "homes-1", []string{"a", "b"})
	h.SyncedWith("b", "homes-1", []string{"a", "b"})
	must[Item](t)(h.Restock(bg, "s", 5))
	must[Item](t)(h.Restock(bg, "e1", 5))
	held := must[Reservation](t)(h.Reserve(bg, "s", 1, time.Hour, Idem{}))
	h.close()

	h = open("homes-2", 300*time.Millisecond)
	if !h.CatchingUp() {
		t.Fatal("a region opened with other homes does not catch up")
	}
	_, err := h.Reserve(bg, "s", 1, time.Minute, Idem{})
	wantCode(t, err, CodeUnavailable)
	_, err = h.Commit(bg, held.ID, Idem{})
	wantCode(t, err, CodeUnavailable)
	_, err = h.Adjust(bg, "s", -1, "")
	wantCode(t, err, CodeUnavailable)
	g := h.ServeForwarded(bg, &HomeRequest{Op: OpGrant, SKU: "e1", Qty: 2, Delta: 1, From: "a"})
	if g.Err == nil || g.Err.Code != CodeUnavailable {
		t.Fatalf("a grant during catch-up: %+v", g)
	}
	if it := must[Item](t)(h.GetItem(bg, "s", false)); it.Stock != 5 || it.Reserved != 1 {
		t.Fatalf("s after the refusals: %+v", it)
	}
	h.SyncedWith("a", "homes-2", []string{"a", "b"})

	h.opts.CatchUpWait = time.Minute
	type result struct {
		res Reservation
		err error
	}
	done := make(chan result, 1)
	go func() {
		res, err := h.Reserve(bg, "s", 1, time.Minute, Idem{})
		done <- result{res, err}
	}()
	waitUntil(t, 5*time.Second, "the reservation waits for the catch-up", func() bool {
		h.dmu.Lock()
		defer h.dmu.Unlock()
		return h.caughtUp != nil
	})
	select {
	case got := <-done:
		t.Fatalf("the reservation was answered during catch-up: %+v %v", got.res, got.err)
	default:
	}
	h.SyncedWith("b", "homes-2", []string{"a", "b"})
	select {
	case got := <-done:
		if got.err != nil {
			t.Fatalf("the waiting reservation after the catch-up: %v", got.err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the waiting reservation was not decided once the catch-up ended")
	}
}

// TestRefusedReservationCountedOnce: lattice_reservations_total counts the
// decisions of a region as a home (docs/operations.md). A reservation of
// a sku without escrow that its home refuses for want of stock is one
// decision and must add 1 to {op="reserve", result="insufficient_stock"}.
func TestRefusedReservationCountedOnce(t *testing.T) {
	n := newNode(t)
	must[Item](t)(n.Restock(bg, "s", 3))
	c := n.m.Reservations.WithLabelValues(OpReserve, CodeInsufficientStock)
	before := testutil.ToFloat64(c)
	_, err := n.Reserve(bg, "s", 5, time.Minute, Idem{})
	wantCode(t, err, CodeInsufficientStock)
	if got := testutil.ToFloat64(c) - before; got != 1 {
		t.Fatalf("one refused reservation added %v to lattice_reservations_total{op=reserve,result=insufficient_stock}, want 1", got)
	}
}

// TestStoreWithoutHomesRecordCatchesUp: a store written by a version
// that recorded no homes (m/homes) holds writes; opened with homes of
// its own (Options.HomesID) in a cluster of several, it cannot tell
// whether they changed, and catches up before deciding. A store with no
// write yet just records them.
func TestStoreWithoutHomesRecordCatchesUp(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "h", "data.db")
	open := func(homesID string) (*Node, *store.Store) {
		st, err := OpenStore(path, store.Options{})
		if err != nil {
			t.Fatal(err)
		}
		n, err := NewNode(Options{Name: "h", Store: st, Clock: newFakeClock(), ExpiryInterval: time.Hour,
			HomesID: homesID, PeerRegions: []string{"b"}})
		if err != nil {
			t.Fatal(err)
		}
		return n, st
	}
	n, st := open("")
	if n.CatchingUp() {
		t.Fatal("a new store without homes tracking starts in catch-up")
	}
	must[Item](t)(n.Restock(bg, "p1", 10))
	n.Close()
	st.Close()
	n, st = open("homes-1")
	defer st.Close()
	defer n.Close()
	if !n.CatchingUp() {
		t.Fatal("a store with writes and no homes record opened with homes does not catch up")
	}
	n.SyncedWith("b", "homes-1", []string{"b"})
	if n.CatchingUp() {
		t.Fatal("still catching up after a round with its one peer")
	}
}
