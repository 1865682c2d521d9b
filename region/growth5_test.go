package region

import (
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/latticedb/lattice/crdt"
	"github.com/latticedb/lattice/region/regiontest"
	"github.com/latticedb/lattice/region/store"
)

// growthSizes is what a region's state of one cart and one sku takes.
type growthSizes struct {
	appliedReplicas int // replica ids in the applied context
	tokenBytes      int // the causal token of the region
	headBytes       int // the stored cart head
	headReplicas    int // replica ids in the cart's context
	itemBytes       int // the stored item
	storeKeys       int // keys in the store
}

func (s growthSizes) String() string {
	return fmt.Sprintf("applied context %d replicas, token %d B, cart head %d B (%d replicas), item %d B, %d store keys",
		s.appliedReplicas, s.tokenBytes, s.headBytes, s.headReplicas, s.itemBytes, s.storeKeys)
}

func measureGrowth(t *testing.T, n *testNode, cartID, sku string) growthSizes {
	t.Helper()
	var s growthSizes
	applied := n.Applied()
	s.appliedReplicas = len(applied.Replicas())
	s.tokenBytes = len(n.Token())
	err := n.store.View([]string{prefixCart + cartID, prefixItem + sku}, func(r store.Reader) error {
		if b, ok, err := r.Get(prefixCart + cartID); err != nil {
			return err
		} else if ok {
			s.headBytes = len(b)
			h, err := crdt.DecodeCartHead(b)
			if err != nil {
				return err
			}
			s.headReplicas = len(h.Ctx.Replicas())
		}
		if b, ok, err := r.Get(prefixItem + sku); err != nil {
			return err
		} else if ok {
			s.itemBytes = len(b)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := n.store.Scan("", func(string, []byte, error) bool { s.storeKeys++; return true }); err != nil {
		t.Fatal(err)
	}
	return s
}

// TestRegionReopensAfterManyUncleanStops: a region that takes writes and
// is killed (SIGKILL, an OOM, a power loss) again and again starts a new
// replica id each time, and contexts hold at most crdt.MaxReplicas of
// them. Every life within that budget opens and reads back the write it
// acknowledged; past it, the region refuses to open, naming the budget.
// It opened at life 257, acknowledged the cart set and then answered the
// cart 503 "damaged" for good (its head named 257 replicas, which no
// decoder accepts).
func TestRegionReopensAfterManyUncleanStops(t *testing.T) {
	const lives = crdt.MaxReplicas + 3
	dir := t.TempDir()
	clock := newFakeClock()
	path := filepath.Join(dir, "us-east", "data.db")
	for life := 1; life <= lives; life++ {
		st, err := OpenStore(path, store.Options{})
		if err != nil {
			t.Fatalf("life %d: the store does not open: %v", life, err)
		}
		n, err := NewNode(Options{Name: "us-east", Store: st, Clock: clock, ExpiryInterval: time.Hour})
		if life > crdt.MaxReplicas {
			st.Close()
			if err == nil {
				n.Close()
				t.Fatalf("life %d (after %d unclean stops): the region opened with its replica budget spent", life, life-1)
			}
			if !strings.Contains(err.Error(), "replica ids") {
				t.Fatalf("life %d: refused with %v; want the replica budget named", life, err)
			}
			continue
		}
		if err != nil {
			st.Close()
			t.Fatalf("life %d (after %d unclean stops): the region does not open: %v", life, life-1, err)
		}
		_, werr := n.SetItem(bg, "c", "x", 1)
		c, rerr := n.GetCart(bg, "c")
		n.Close()
		st.CloseUnclean()
		if werr != nil {
			t.Fatalf("life %d (after %d unclean stops): a cart set fails: %v", life, life-1, werr)
		}
		if rerr != nil || len(c.Items) != 1 {
			t.Fatalf("life %d (after %d unclean stops): the cart set was acknowledged, then the cart reads %+v, %v", life, life-1, c.Items, rerr)
		}
	}
}

// churnSizes is what a region's store and in-memory maps hold after a
// churn.
type churnSizes struct {
	byPrefix  map[string]int // store keys by prefix (up to the first '/')
	fileBytes int64          // the store file after a rewrite
	liveBytes int64
	digest    int // keys in the anti-entropy digest
	due       int // skus in the expiry index
	sagas     int // unsettled checkouts
	inflight  int // idempotency keys claimed
	// kept are the records of committed reservations checkouts made,
	// kept for good (CollectReservations), and their stored bytes; they
	// are not counted in byPrefix.
	kept, keptBytes int
}

func (s churnSizes) String() string {
	return fmt.Sprintf("keys %v, file %d B after a rewrite (live %d B), digest %d keys, due %d, sagas %d, inflight %d",
		s.byPrefix, s.fileBytes, s.liveBytes, s.digest, s.due, s.sagas, s.inflight)
}

func measureChurn(t *testing.T, n *testNode) churnSizes {
	t.Helper()
	s := churnSizes{byPrefix: map[string]int{}}
	err := n.store.Scan("", func(k string, v []byte, _ error) bool {
		p, _, _ := strings.Cut(k, "/")
		var rec ResRecord
		if p+"/" == prefixRes && decodeInto(v, &rec) == nil && rec.Saga && rec.State == StateCommitted {
			s.kept++
			s.keptBytes += len(k) + len(v) + 40 // the key, the value and their framing in the file
			return true
		}
		s.byPrefix[p]++
		return true
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := n.store.Shrink(); err != nil {
		t.Fatal(err)
	}
	s.fileBytes, s.liveBytes = n.store.Sizes()
	_, keys := digestKeys(t, n.Node)
	s.digest = len(keys)
	n.due.mu.Lock()
	s.due = len(n.due.exp)
	n.due.mu.Unlock()
	n.sagaMu.Lock()
	s.sagas = len(n.sagas)
	n.sagaMu.Unlock()
	n.imu.Lock()
	s.inflight = len(n.inflight)
	n.imu.Unlock()
	return s
}

// churn runs cycles of a shop's day on n: a line added to a cart and
// removed, a keyed reservation committed (its units restocked) or
// released, a reservation left to expire, and a keyed checkout of a cart
// of one line (its unit restocked). The live data after each cycle is the
// same: cart "keep" with one line, stock 10 of w, every cart but "keep"
// empty. Then a week passes: holds expire, idempotency and settled
// reservation records are swept and emptied cart lines deleted.
func churn(t *testing.T, n *testNode, from, cycles int) {
	t.Helper()
	for i := from; i < from+cycles; i++ {
		must[Cart](t)(n.AddItem(bg, "c", "a", 1))
		must[Cart](t)(n.RemoveItem(bg, "c", "a"))
		res := must[Reservation](t)(n.Reserve(bg, "w", 1, time.Minute, fp(fmt.Sprintf("r%d", i))))
		if i%2 == 0 {
			must[Reservation](t)(n.Commit(bg, res.ID, fp(fmt.Sprintf("c%d", i))))
			must[Item](t)(n.Restock(bg, "w", 1))
		} else {
			must[Reservation](t)(n.Release(bg, res.ID, fp(fmt.Sprintf("l%d", i))))
		}
		must[Reservation](t)(n.Reserve(bg, "w", 1, time.Second, Idem{}))
		must[Cart](t)(n.AddItem(bg, "co", "w", 1))
		must[Order](t)(n.Checkout(bg, "co", time.Minute, fp(fmt.Sprintf("o%d", i))))
		must[Item](t)(n.Restock(bg, "w", 1))
		n.clock.Advance(2 * time.Second)
	}
	n.clock.Advance(ReservationRetention + time.Hour)
	if err := n.ExpireDue(); err != nil {
		t.Fatal(err)
	}
	if err := n.CollectIdempotency(); err != nil {
		t.Fatal(err)
	}
	if err := n.CollectReservations(); err != nil {
		t.Fatal(err)
	}
	regiontest.WaitFor(t, 10*time.Second, "emptied cart lines deleted", func() bool {
		empty := 0
		err := n.store.Scan(prefixCartLine, func(_ string, v []byte, _ error) bool {
			if len(v) == 0 {
				empty++
			}
			return true
		})
		return err == nil && empty == 0
	})
}

// TestStateBoundedUnderChurn: a region serving the same live data (one
// cart of one line, one sku of 10 units) through K and then 2K cycles of
// adds and removes, reservations committed, released and expired, and
// checkouts, each followed by a week in which holds expire, idempotency
// records pass their 24 hours and settled reservations' records their 7
// days: its store (rewritten), its digest and its in-memory indexes are
// no larger after 2K cycles than after K, but for the records of the
// reservations checkouts committed, which are kept (an unsettled saga may
// need them for as long as its plan lives). Reservation records were
// never deleted: 300 r/ keys after 100 cycles, 600 after 200.
func TestStateBoundedUnderChurn(t *testing.T) {
	const k = 100
	n := newNode(t)
	must[Item](t)(n.Restock(bg, "w", 10))
	must[Cart](t)(n.AddItem(bg, "keep", "k", 1))
	churn(t, n, 0, k)
	first := measureChurn(t, n)
	churn(t, n, k, k)
	second := measureChurn(t, n)
	t.Logf("after %d cycles: %v", k, first)
	t.Logf("after %d cycles: %v", 2*k, second)
	if it := must[Item](t)(n.GetItem(bg, "w", false)); it.Stock != 10 || it.Reserved != 0 {
		t.Fatalf("item %+v, want stock 10, none reserved", it)
	}
	for p, c := range second.byPrefix {
		if c > first.byPrefix[p] {
			t.Errorf("store keys %s/…: %d after %d cycles, %d after %d, with the same live data", p, first.byPrefix[p], k, c, 2*k)
		}
	}
	if grown := int(second.fileBytes-first.fileBytes) - (second.keptBytes - first.keptBytes); grown > int(first.fileBytes)/4 {
		t.Errorf("the rewritten store file: %d B after %d cycles, %d B after %d, with the same live data (and %d more checkout records kept, %d B)",
			first.fileBytes, k, second.fileBytes, 2*k, second.kept-first.kept, second.keptBytes-first.keptBytes)
	}
	if second.kept != 2*k {
		t.Errorf("%d records of committed checkout reservations kept after %d checkouts", second.kept, 2*k)
	}
	if second.digest > first.digest || second.due > first.due || second.sagas > first.sagas || second.inflight > first.inflight {
		t.Errorf("in-memory state after %d cycles: %v; after %d: %v", k, first, 2*k, second)
	}
}

// TestCartBoundedUnderCrossRegionCycles: two regions add and remove lines
// of one cart in turn (us-east adds x and eu-west removes it, eu-west adds
// y and us-east removes it), their deltas delivered late, in reverse order
// and twice. Each region's stored cart head is no larger after 2K cycles
// than after K: removed entries leave nothing but their dots in the
// version vector.
func TestCartBoundedUnderCrossRegionCycles(t *testing.T) {
	const k = 200
	r := newSemRig(t, "us-east", "eu-west")
	a, b := r.nodes["us-east"], r.nodes["eu-west"]
	must[Cart](t)(a.AddItem(bg, "c", "keep", 1))
	sent := map[string]int{}
	deliver := func() {
		for _, from := range r.regions {
			r.mu.Lock()
			ds := slices.Clone(r.log[from][sent[from]:])
			sent[from] = len(r.log[from])
			r.mu.Unlock()
			for _, to := range r.regions {
				if to == from {
					continue
				}
				for i := len(ds) - 1; i >= 0; i-- {
					r.apply(to, ds[i])
					r.apply(to, ds[i])
				}
			}
		}
	}
	var at [2][2]growthSizes
	for i := 1; i <= 2*k; i++ {
		must[Cart](t)(a.AddItem(bg, "c", "x", 1))
		must[Cart](t)(b.AddItem(bg, "c", "y", 1))
		deliver()
		must[Cart](t)(b.RemoveItem(bg, "c", "x"))
		must[Cart](t)(a.RemoveItem(bg, "c", "y"))
		deliver()
		if i == k || i == 2*k {
			at[i/k-1] = [2]growthSizes{measureGrowth(t, a, "c", "-"), measureGrowth(t, b, "c", "-")}
		}
	}
	for j, name := range r.regions {
		t.Logf("%s: after %d cycles %v; after %d %v", name, k, at[0][j], 2*k, at[1][j])
		if c := r.cart(name, "c"); len(c.Items) != 1 || c.Items[0].SKU != "keep" {
			t.Fatalf("%s: cart %+v, want keep:1", name, c.Items)
		}
		if at[1][j].headBytes > at[0][j].headBytes+8 {
			t.Errorf("%s: cart head %d B after %d cycles, %d B after %d", name, at[0][j].headBytes, k, at[1][j].headBytes, 2*k)
		}
	}
}

// TestReservationRecordsKeptForTheirRetention: a settled reservation's
// record answers for ReservationRetention past its expiry and is deleted
// after (its id then answers not_found); an open hold's record is never
// collected, even past its expiry, before the hold has expired.
func TestReservationRecordsKeptForTheirRetention(t *testing.T) {
	n := newNode(t)
	must[Item](t)(n.Restock(bg, "w", 10))
	done := must[Reservation](t)(n.Reserve(bg, "w", 1, time.Minute, Idem{}))
	must[Reservation](t)(n.Commit(bg, done.ID, Idem{}))
	open := must[Reservation](t)(n.Reserve(bg, "w", 2, time.Hour, Idem{}))
	n.clock.Advance(ReservationRetention) // done expired a week and a minute ago
	if err := n.CollectReservations(); err != nil {
		t.Fatal(err)
	}
	if r, err := n.GetReservation(bg, done.ID); err != nil || r.State != StateCommitted {
		t.Fatalf("a committed reservation within its retention reads %+v, %v", r, err)
	}
	n.clock.Advance(2 * time.Minute)
	if err := n.CollectReservations(); err != nil {
		t.Fatal(err)
	}
	if _, err := n.GetReservation(bg, done.ID); err == nil {
		t.Fatalf("a committed reservation past its retention still reads")
	} else {
		wantCode(t, err, CodeNotFound)
	}
	// The open hold's expiry passed a week ago, but no expiry pass ran:
	// its record stays, and its units stay held until it expires.
	if r, err := n.GetReservation(bg, open.ID); err != nil || r.State != StateExpired {
		t.Fatalf("the hold past its expiry reads %+v, %v; want expired", r, err)
	}
	if err := n.ExpireDue(); err != nil {
		t.Fatal(err)
	}
	if err := n.CollectReservations(); err != nil {
		t.Fatal(err)
	}
	if _, err := n.GetReservation(bg, open.ID); err != nil {
		t.Fatalf("an expired hold within its retention (it expired 1 h after the committed one): %v", err)
	}
	n.clock.Advance(time.Hour)
	if err := n.CollectReservations(); err != nil {
		t.Fatal(err)
	}
	if _, err := n.GetReservation(bg, open.ID); err == nil {
		t.Fatalf("an expired hold's record past its retention still reads")
	}
	if it := must[Item](t)(n.GetItem(bg, "w", false)); it.Stock != 9 || it.Reserved != 0 {
		t.Fatalf("item %+v; want stock 9, none reserved", it)
	}
}
