package region

import (
	"testing"
)

// fillTight stocks 10 of a and only 1 of b at their homes, and puts one of
// each in cart c.
func (r *sagaRig) fillTight() {
	must[Item](r.t)(r.homes.nodes["h1"].Restock(bg, "a", 10))
	must[Item](r.t)(r.homes.nodes["h2"].Restock(bg, "b", 1))
	must[Cart](r.t)(r.coord.AddItem(bg, "c", "a", 1))
	must[Cart](r.t)(r.coord.AddItem(bg, "c", "b", 1))
}

// TestCheckoutRollForwardKeepsItsOwnHold: a checkout in its commit phase
// commits line a, loses the commit of line b, and b's hold expires. The
// retry reserves b again; the home makes that hold but its answer is lost.
// The next retry, with every home reachable, must roll forward: the only
// unit of b is held by this very checkout, so rolling forward is possible,
// and the checkout ends as the order (a and b committed, nothing held),
// not undone with insufficient_stock.
func TestCheckoutRollForwardKeepsItsOwnHold(t *testing.T) {
	r := newSagaRig(t)
	r.fillTight()
	r.homes.set(false, "commit b")
	_, err := r.checkout()
	wantCode(t, err, CodeHomeUnavailable)
	r.clock.Advance(2 * sagaTTL) // b's hold expires before its commit

	r.homes.set(true, "reserve b") // the new hold of b is made, its answer lost
	_, err = r.checkout()
	wantCode(t, err, CodeHomeUnavailable)

	r.homes.set(false)
	order, err := r.checkout()
	if err != nil {
		st, _ := r.coord.CheckoutStatusOf(bg, "c", fp("saga").Key)
		t.Fatalf("retry with every home reachable: %v; want the order (b's only unit is held by this checkout: %+v); steps %+v",
			err, r.item("h2", "b"), st.Steps)
	}
	if len(order.Lines) != 2 {
		t.Fatalf("order %+v", order)
	}
	for _, l := range order.Lines {
		res := must[Reservation](t)(r.homes.nodes[l.Home].GetReservation(bg, l.ReservationID))
		if res.State != StateCommitted {
			t.Fatalf("order line %+v: reservation %s", l, res.State)
		}
	}
	if it := r.item("h2", "b"); it.Stock != 0 || it.Reserved != 0 {
		t.Fatalf("b after the order: %+v, want its one unit committed once and nothing held", it)
	}
}

// TestCheckoutRetryReleasesHoldWhoseAnswerWasLost: line b's home makes the
// checkout's hold but its answer is lost, so the attempt fails with 503.
// With every home reachable again, the retry with the key either buys the
// cart, or fails cleanly — and a clean failure holds nothing: the hold its
// earlier attempt made at a reachable home is released, not left to
// block b's only unit (and this very checkout) until its ttl.
func TestCheckoutRetryReleasesHoldWhoseAnswerWasLost(t *testing.T) {
	r := newSagaRig(t)
	r.fillTight()
	r.homes.set(true, "reserve b") // b's hold is made, its answer lost
	_, err := r.checkout()
	wantCode(t, err, CodeHomeUnavailable)

	r.homes.set(false)
	order, err := r.checkout()
	if err == nil {
		if len(order.Lines) != 2 {
			t.Fatalf("order %+v", order)
		}
		return
	}
	if it := r.item("h2", "b"); it.Reserved != 0 {
		t.Fatalf("retry failed with %v while b's only unit is still held by the checkout's earlier attempt: %+v; "+
			"want the order, or a clean failure holding nothing", err, it)
	}
}

// TestCheckoutFailedTransientlyDoesNotBlockTheCart: a keyed checkout's
// attempt ends on an unreachable home (503; its status reads
// failed-transiently: nothing of it runs or is unsettled). A checkout of
// the same cart under another key then goes ahead and buys the cart,
// rather than being refused with request_in_progress.
func TestCheckoutFailedTransientlyDoesNotBlockTheCart(t *testing.T) {
	r := newSagaRig(t)
	r.fill()
	r.homes.set(false, "reserve a")
	_, err := r.checkout()
	wantCode(t, err, CodeHomeUnavailable)
	r.homes.set(false)
	st := must[CheckoutStatus](t)(r.coord.CheckoutStatusOf(bg, "c", fp("saga").Key))
	if st.Phase != "failed-transiently" {
		t.Fatalf("status after the failed attempt: %+v", st)
	}
	order, err := r.coord.Checkout(bg, "c", sagaTTL, fp("other-key"))
	if err != nil {
		t.Fatalf("checkout under another key after the first failed transiently (status %q): %v", st.Phase, err)
	}
	if len(order.Lines) != 2 {
		t.Fatalf("order %+v", order)
	}
}
