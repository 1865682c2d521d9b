package region

import (
	"sync"
	"testing"
	"time"
)

// wantStock checks, once every saga hold's ttl has passed at both homes,
// that a and b have the given stock and that a is not held (b may be held
// by another buyer of the test).
func (r *sagattlRig) wantStock(what string, a, b int64) {
	r.t.Helper()
	r.advance(2*time.Hour, "h1", "h2")
	for sku, want := range map[string]int64{"a": a, "b": b} {
		it := r.item(sku)
		if it.Stock != want || (sku == "a" && it.Reserved != 0) {
			r.t.Errorf("%s: %s at its home %+v, want stock %d, nothing held", what, sku, it, want)
		}
	}
}

// TestSagattlCrashInCommitAfterHomeTTLReturns: the coordinator crashes in
// phase commit (a committed, b's commit lost on its way); b's hold expires
// by h2's clock only and b's stock goes to another buyer; the coordinator,
// reopened from its store, with only settleAfter passed on its own clock,
// settles the checkout in the background: a's unit returned, the failure
// settled (status and replay), nothing held.
func TestSagattlCrashInCommitAfterHomeTTLReturns(t *testing.T) {
	r := newSagattlRig(t)
	r.fill("c")
	idem := fp("s1")
	r.sh.set("commit b drop")
	_, err := r.coord.Checkout(bg, "c", sagaTTL, idem)
	wantCode(t, err, CodeHomeUnavailable)
	r.crashCoordinator()
	if st := must[CheckoutStatus](t)(r.coord.CheckoutStatusOf(bg, "c", idem.Key)); st.Phase != "commit" {
		t.Fatalf("status after the crash: %+v, want phase commit", st)
	}
	r.sh.set()
	r.advance(2*sagaTTL, "h2")
	must[Reservation](t)(r.home("b").Reserve(bg, "b", 10, 10*time.Hour, Idem{}))
	r.advance(settleAfter+time.Second, "us-east")
	r.coord.SettleCheckouts()
	st := must[CheckoutStatus](t)(r.coord.CheckoutStatusOf(bg, "c", idem.Key))
	if st.Phase != "settled" || st.Failure == nil || st.Failure.Code != CodeInsufficientStock || !hasStep(st, "return", "a", "ok") {
		t.Errorf("status after the settling: %+v", st)
	}
	_, err = r.coord.Checkout(bg, "c", sagaTTL, idem)
	wantCode(t, err, CodeInsufficientStock)
	r.wantStock("returned", 10, 10)
	if c := must[Cart](t)(r.coord.GetCart(bg, "c")); len(c.Items) != 2 {
		t.Errorf("cart of a failed checkout: %+v", c)
	}
}

// TestSagattlRetryAfterRetentionOrdersOnce: b's hold expires by h2's clock
// between the reserve and the commit phase; the retry rolls forward into
// the order (status settled, the roll-forward in its steps). Once 25 hours
// have passed and every region has collected its records, the key's status
// is 404 and a retry with it finds the cart bought (cart_empty): no second
// order, one unit of each sku committed.
func TestSagattlRetryAfterRetentionOrdersOnce(t *testing.T) {
	r := newSagattlRig(t)
	r.fill("c")
	idem := fp("s2")
	r.sh.set("commit b drop")
	_, err := r.coord.Checkout(bg, "c", sagaTTL, idem)
	wantCode(t, err, CodeHomeUnavailable)
	r.sh.set()
	r.advance(2*sagaTTL, "h2")
	o := must[Order](t)(r.coord.Checkout(bg, "c", sagaTTL, idem))
	st := must[CheckoutStatus](t)(r.coord.CheckoutStatusOf(bg, "c", idem.Key))
	if st.Phase != "settled" || st.Order == nil || !hasStep(st, "commit", "b", CodeReservationExpired) ||
		len(st.Reservations) != 2 || st.Reservations[1] != o.Lines[1].ReservationID {
		t.Errorf("status %+v of order %+v", st, o)
	}
	r.advance(IdempotencyRetention+time.Hour, "us-east", "h1", "h2")
	for _, n := range []*testNode{r.coord, r.home("a"), r.home("b")} {
		if err := n.CollectIdempotency(); err != nil {
			t.Fatal(err)
		}
	}
	_, err = r.coord.CheckoutStatusOf(bg, "c", idem.Key)
	wantCode(t, err, CodeNotFound)
	_, err = r.coord.Checkout(bg, "c", sagaTTL, idem)
	wantCode(t, err, CodeCartEmpty)
	r.wantStock("one order", 9, 9)
}

// TestSagattlCommitResumedAfterHomesCollected: a checkout stopped in phase
// commit (a's commit made, its answer lost; b's commit lost on its way)
// stays unsettled for 25 hours, over which every region collects its
// idempotency and reservation records; the retry with the key (after a
// crash of the coordinator) still makes exactly one order: a is not
// committed twice, b is reserved again and committed.
func TestSagattlCommitResumedAfterHomesCollected(t *testing.T) {
	r := newSagattlRig(t)
	r.fill("c")
	idem := fp("s4")
	r.sh.set("commit a lose", "commit b drop")
	_, err := r.coord.Checkout(bg, "c", sagaTTL, idem)
	wantCode(t, err, CodeHomeUnavailable)
	r.advance(IdempotencyRetention+time.Hour, "us-east", "h1", "h2")
	for _, n := range []*testNode{r.coord, r.home("a"), r.home("b")} {
		if err := n.CollectIdempotency(); err != nil {
			t.Fatal(err)
		}
		if err := n.CollectReservations(); err != nil {
			t.Fatal(err)
		}
	}
	r.crashCoordinator()
	if st := must[CheckoutStatus](t)(r.coord.CheckoutStatusOf(bg, "c", idem.Key)); st.Phase != "commit" {
		t.Fatalf("status of the unsettled checkout 25 h later: %+v, want phase commit", st)
	}
	r.sh.set()
	o := must[Order](t)(r.coord.Checkout(bg, "c", sagaTTL, idem))
	if len(o.Lines) != 2 {
		t.Fatalf("order %+v", o)
	}
	r.wantStock("one order", 9, 9)
}

// TestSagattlLostRollForwardAfterHomesCollected: b's hold expires, and the
// reservation that rolls b forward is made at h2 with its answer lost; the
// coordinator crashes, and 25 hours pass with every region's idempotency
// records collected. The retry makes one order and leaves nothing held.
func TestSagattlLostRollForwardAfterHomesCollected(t *testing.T) {
	r := newSagattlRig(t)
	r.fill("c")
	idem := fp("s5")
	r.sh.set("commit b drop")
	_, err := r.coord.Checkout(bg, "c", sagaTTL, idem)
	wantCode(t, err, CodeHomeUnavailable)
	r.advance(2*sagaTTL, "h2")
	r.sh.set("reserve b lose")
	_, err = r.coord.Checkout(bg, "c", sagaTTL, idem)
	wantCode(t, err, CodeHomeUnavailable)
	if it := r.item("b"); it.Reserved != 1 {
		t.Fatalf("setup: b %+v, want its roll-forward hold", it)
	}
	r.crashCoordinator()
	r.sh.set()
	r.advance(IdempotencyRetention+time.Hour, "us-east", "h1", "h2")
	for _, n := range []*testNode{r.coord, r.home("a"), r.home("b")} {
		if err := n.CollectIdempotency(); err != nil {
			t.Fatal(err)
		}
	}
	o := must[Order](t)(r.coord.Checkout(bg, "c", sagaTTL, idem))
	if len(o.Lines) != 2 {
		t.Fatalf("order %+v", o)
	}
	r.wantStock("one order", 9, 9)
	if it := r.item("b"); it.Reserved != 0 {
		t.Errorf("b after the order: %+v, want nothing held", it)
	}
}

// TestSagattlExpiredAtCommitReturnsInOneRequest: a's commit is made; b's
// hold expires by h2's clock just before its commit arrives, and b's stock
// has gone to another buyer: the same request answers 409
// insufficient_stock naming b, with a's unit back in stock, nothing held
// by the checkout, the cart untouched and the status settled.
func TestSagattlExpiredAtCommitReturnsInOneRequest(t *testing.T) {
	r := newSagattlRig(t)
	r.fill("c")
	idem := fp("s6")
	var once sync.Once
	r.sh.setHook(func(req *HomeRequest) {
		if home, _ := ReservationHome(req.ID); req.Op == OpCommit && home == "h2" {
			once.Do(func() {
				r.advance(2*sagaTTL, "h2")
				if _, err := r.home("b").Reserve(bg, "b", 10, 10*time.Hour, Idem{}); err != nil {
					t.Errorf("another buyer's reservation: %v", err)
				}
			})
		}
	})
	_, err := r.coord.Checkout(bg, "c", sagaTTL, idem)
	r.sh.setHook(nil)
	e := wantCode(t, err, CodeInsufficientStock)
	if len(e.Lines) != 1 || e.Lines[0].SKU != "b" || e.Lines[0].Available != 0 {
		t.Errorf("failure lines %+v, want b with 0 available", e.Lines)
	}
	st := must[CheckoutStatus](t)(r.coord.CheckoutStatusOf(bg, "c", idem.Key))
	if st.Phase != "settled" || st.Failure == nil || st.Failure.Code != CodeInsufficientStock ||
		!hasStep(st, "commit", "b", CodeReservationExpired) || !hasStep(st, "return", "a", "ok") {
		t.Errorf("status %+v", st)
	}
	r.wantStock("returned", 10, 10)
	if c := must[Cart](t)(r.coord.GetCart(bg, "c")); len(c.Items) != 2 {
		t.Errorf("cart of a failed checkout: %+v", c)
	}
}
