package region

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/latticedb/lattice/region/store"
)

// idemRegions are the regions of the rigs below: skus and carts are homed
// at eu-west.
var idemRegions = []string{"us-east", "eu-west", "ap-south"}

func idemHome(string) string { return "eu-west" }

// openHoldsAt counts the open holds of sku in the ledger of region tn.
func openHoldsAt(t *testing.T, tn *testNode, sku string) (holds int, units int64) {
	t.Helper()
	err := tn.store.View([]string{prefixItem + sku}, func(r store.Reader) error {
		l, err := loadLedger(r, sku)
		for _, h := range l.Holds {
			holds++
			units += h.Qty
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return holds, units
}

// atOnce runs fn in n goroutines released together.
func atOnce(n int, fn func(i int)) {
	var ready, done sync.WaitGroup
	start := make(chan struct{})
	ready.Add(n)
	done.Add(n)
	for i := range n {
		go func() {
			defer done.Done()
			ready.Done()
			<-start
			fn(i)
		}()
	}
	ready.Wait()
	close(start)
	done.Wait()
}

// idemKey is a request's Idempotency-Key with the fingerprint of body.
func idemKey(key, body string) Idem {
	var f [32]byte
	copy(f[:], body)
	return Idem{Key: key, Fingerprint: f}
}

// TestSameKeyReservationsAtOnceHoldOnce: 48 copies of one keyed
// reservation (same key, same body) are sent at the same time through
// the three regions, and 12 more requests with the key and another body.
// Exactly one hold is made at the home; every copy answered with a
// reservation names that one, every other is request_in_progress or,
// with the body that did not win, idempotency_mismatch. A retry
// afterwards with the winning body replays the hold.
func TestSameKeyReservationsAtOnceHoldOnce(t *testing.T) {
	r := newSemRigHome(t, idemHome, idemRegions...)
	must[Item](t)(r.nodes["eu-west"].Restock(bg, "w", 100))
	key, other := idemKey("k1", "qty 2"), idemKey("k1", "qty 3")
	var mu sync.Mutex
	ids := map[string]int{}
	codes := map[string]int{}
	atOnce(60, func(i int) {
		n := r.nodes[idemRegions[i%3]]
		k, qty := key, int64(2)
		if i >= 48 {
			k, qty = other, 3
		}
		res, err := n.Reserve(bg, "w", qty, time.Minute, k)
		mu.Lock()
		defer mu.Unlock()
		var e *Error
		switch {
		case err == nil && i < 48:
			ids[res.ID]++
		case err == nil:
			codes["other body reserved "+res.ID]++
		case errors.As(err, &e):
			codes[fmt.Sprintf("%s (%s)", e.Code, map[bool]string{true: "same body", false: "other body"}[i < 48])]++
		default:
			codes[err.Error()]++
		}
	})
	t.Logf("answers: reservations %v, refusals %v", ids, codes)
	holds, units := openHoldsAt(t, r.nodes["eu-west"], "w")
	// Either body may be decided first; the other is then a mismatch.
	won, wonQty, lost := key, int64(2), "other body"
	otherWon := ""
	for c := range codes {
		if strings.HasPrefix(c, "other body reserved ") {
			otherWon = strings.TrimPrefix(c, "other body reserved ")
			won, wonQty, lost = other, 3, "same body"
		}
	}
	if holds != 1 || len(ids) > 1 || (otherWon != "" && len(ids) > 0) {
		t.Fatalf("one key made %d holds of %d units, answered as %v (refusals %v); want one hold", holds, units, ids, codes)
	}
	for c := range codes {
		switch {
		case strings.HasPrefix(c, "request_in_progress ("), c == "idempotency_mismatch ("+lost+")", otherWon != "" && c == "other body reserved "+otherWon:
		default:
			t.Errorf("answer %q to a request with the key", c)
		}
	}
	again := must[Reservation](t)(r.nodes["ap-south"].Reserve(bg, "w", wonQty, time.Minute, won))
	if holds, _ := openHoldsAt(t, r.nodes["eu-west"], "w"); holds != 1 || (len(ids) == 1 && ids[again.ID] == 0) || (otherWon != "" && again.ID != otherWon) {
		t.Fatalf("the retry answered %s (%d holds); the copies were answered %v", again.ID, holds, ids)
	}
}

// TestSameKeyCheckoutsAtOnceBuyOnce: 24 copies of one keyed checkout are
// sent at the same time through the three regions. The cart is bought
// once: one order, its units committed once, and every copy answered with
// an order names that order.
func TestSameKeyCheckoutsAtOnceBuyOnce(t *testing.T) {
	r := newSemRigHome(t, idemHome, idemRegions...)
	home := r.nodes["eu-west"]
	must[Item](t)(home.Restock(bg, "w", 100))
	must[Cart](t)(home.AddItem(bg, "c", "w", 3))
	r.deliverAll()
	key := idemKey("co", "checkout c")
	var mu sync.Mutex
	orders := map[string]int{}
	codes := map[string]int{}
	atOnce(24, func(i int) {
		o, err := r.nodes[idemRegions[i%3]].Checkout(bg, "c", time.Minute, key)
		mu.Lock()
		defer mu.Unlock()
		var e *Error
		switch {
		case err == nil:
			orders[o.OrderID]++
		case errors.As(err, &e):
			codes[e.Code]++
		default:
			codes[err.Error()]++
		}
	})
	t.Logf("orders %v, refusals %v", orders, codes)
	it := must[Item](t)(home.GetItem(bg, "w", false))
	if it.Stock != 97 || it.Reserved != 0 || len(orders) > 1 {
		t.Fatalf("one key: orders %v, item %+v; want one order of 3 units (stock 97)", orders, it)
	}
	for c := range codes {
		if c != CodeRequestInProgress {
			t.Errorf("answer %q to a copy of the checkout", c)
		}
	}
	o := must[Order](t)(r.nodes["us-east"].Checkout(bg, "c", time.Minute, key))
	if len(orders) == 1 && orders[o.OrderID] == 0 {
		t.Fatalf("the retry answered order %s; the copies %v", o.OrderID, orders)
	}
}

// TestKeyReusedAfterRetentionDecidesAnew: a key's record is used for 24
// hours, then ignored and swept; the key then names a new request, which
// is decided (not idempotency_mismatch), and its own retry replays it.
func TestKeyReusedAfterRetentionDecidesAnew(t *testing.T) {
	n := newNode(t)
	must[Item](t)(n.Restock(bg, "w", 10))
	first := must[Reservation](t)(n.Reserve(bg, "w", 1, time.Minute, idemKey("k", "qty 1")))
	n.clock.Advance(IdempotencyRetention + time.Minute)
	if err := n.CollectIdempotency(); err != nil {
		t.Fatal(err)
	}
	second, err := n.Reserve(bg, "w", 2, time.Minute, idemKey("k", "qty 2"))
	if err != nil {
		t.Fatalf("a key past its retention, with another body: %v", err)
	}
	if second.ID == first.ID || second.Qty != 2 {
		t.Fatalf("reservation %+v, want a new one of 2 (the first was %s)", second, first.ID)
	}
	again := must[Reservation](t)(n.Reserve(bg, "w", 2, time.Minute, idemKey("k", "qty 2")))
	if again.ID != second.ID {
		t.Fatalf("retry answered %s, want %s", again.ID, second.ID)
	}
	if holds, units := openHoldsAt(t, n, "w"); holds != 1 || units != 2 {
		t.Fatalf("%d holds of %d units, want the one of 2 (the first expired)", holds, units)
	}
}

// TestKeyedDecisionsSurviveKill: a keyed reservation, commit and release
// are answered, then the home is killed before anything else happens; the
// retries with their keys after the restart answer the first outcomes and
// change nothing.
func TestKeyedDecisionsSurviveKill(t *testing.T) {
	n := newNode(t)
	must[Item](t)(n.Restock(bg, "w", 10))
	a := must[Reservation](t)(n.Reserve(bg, "w", 2, time.Minute, idemKey("ra", "a")))
	b := must[Reservation](t)(n.Reserve(bg, "w", 3, time.Minute, idemKey("rb", "b")))
	must[Reservation](t)(n.Commit(bg, a.ID, idemKey("ca", "commit a")))
	must[Reservation](t)(n.Release(bg, b.ID, idemKey("lb", "release b")))
	n.crash()
	n = reopenNode(t, n)
	if got := must[Reservation](t)(n.Reserve(bg, "w", 2, time.Minute, idemKey("ra", "a"))); got.ID != a.ID {
		t.Fatalf("retry of the first reservation answered %s, want %s", got.ID, a.ID)
	}
	if got := must[Reservation](t)(n.Reserve(bg, "w", 3, time.Minute, idemKey("rb", "b"))); got.ID != b.ID {
		t.Fatalf("retry of the second reservation answered %s, want %s", got.ID, b.ID)
	}
	if got := must[Reservation](t)(n.Commit(bg, a.ID, idemKey("ca", "commit a"))); got.State != StateCommitted {
		t.Fatalf("retry of the commit: %+v", got)
	}
	if got := must[Reservation](t)(n.Release(bg, b.ID, idemKey("lb", "release b"))); got.State != StateReleased {
		t.Fatalf("retry of the release: %+v", got)
	}
	it := must[Item](t)(n.GetItem(bg, "w", false))
	if it.Stock != 8 || it.Reserved != 0 {
		t.Fatalf("item %+v, want stock 8 (2 committed), nothing held", it)
	}
}
