package region

import (
	"testing"
	"time"

	"github.com/latticedb/lattice/crdt"
)

// deliverOnlyTo applies every queued delta of the escrow rig to the given
// regions only; the queue is kept, so a later deliver(nil) brings them to
// the others too (a duplicate is harmless).
func deliverOnlyTo(r *escrowRig, to ...string) {
	r.t.Helper()
	r.mu.Lock()
	q := append([]queued(nil), r.queue...)
	r.mu.Unlock()
	for _, x := range q {
		for _, name := range to {
			if name == x.from {
				continue
			}
			dots := &crdt.Context{}
			dots.Insert(crdt.Dot{Replica: x.d.Origin, Counter: x.d.Seq})
			if err := r.nodes[name].ApplyRemote(dots, x.d.Group); err != nil {
				r.t.Fatalf("apply at %s: %v", name, err)
			}
		}
	}
}

// TestForwardedCheckoutBuysWhatTheAnsweringRegionRead: region a
// shows cart c with 1 p. Region b adds to the cart (1 q, or 1 more p); the
// add has reached the coordinator h but not a. A checkout answered by a
// buys the cart as read at the answering region — 1 p — and the add
// made elsewhere, which a never read, stays in the cart (a line added
// concurrently elsewhere stays).
func TestForwardedCheckoutBuysWhatTheAnsweringRegionRead(t *testing.T) {
	for _, sku := range []string{"q", "p"} {
		t.Run("b adds "+sku, func(t *testing.T) {
			r := newEscrowRig(t)
			must[Item](t)(r.nodes["h"].Restock(bg, "p", 10))
			must[Item](t)(r.nodes["h"].Restock(bg, "q", 10))
			must[Cart](t)(r.nodes["a"].AddItem(bg, "c", "p", 1))
			r.deliver(nil)
			must[Cart](t)(r.nodes["b"].AddItem(bg, "c", sku, 1))
			deliverOnlyTo(r, "h") // b's add reaches the coordinator, not a

			shown := must[Cart](t)(r.nodes["a"].GetCart(bg, "c"))
			if len(shown.Items) != 1 || qtyOf(shown, "p") != 1 {
				t.Fatalf("setup: a shows %+v", shown)
			}
			order := must[Order](t)(r.nodes["a"].Checkout(bg, "c", time.Minute, fp("probe-fwd")))
			r.deliver(nil)
			var units int64
			for _, l := range order.Lines {
				units += l.Qty
			}
			if len(order.Lines) != 1 || order.Lines[0].SKU != "p" || units != 1 {
				t.Errorf("order %+v, want exactly the 1 p the answering region a read (it showed %+v)", order.Lines, shown.Items)
			}
			for _, name := range escrowRegions {
				if c := must[Cart](t)(r.nodes[name].GetCart(bg, "c")); qtyOf(c, sku) != 1 || len(c.Items) != 1 {
					t.Errorf("cart at %s after checkout: %+v, want %s=1 (b's concurrent add) left", name, c.Items, sku)
				}
			}
		})
	}
}

// TestUnsettledCheckoutBlocksAnother: a keyed checkout stops in
// its commit phase (503; the coordinator will roll it forward by itself).
// A second checkout of the same cart under another key does not buy the
// same cart entries again: it is 409 request_in_progress while the first
// is unsettled (another checkout of the same cart runs).
func TestUnsettledCheckoutBlocksAnother(t *testing.T) {
	r := newSagaRig(t)
	r.fill()
	r.homes.set(false, "commit b")
	_, err := r.checkout()
	wantCode(t, err, CodeHomeUnavailable)
	r.homes.set(false)

	second, err2 := r.coord.Checkout(bg, "c", sagaTTL, fp("other-key"))
	// The first checkout settles on its own (background settling).
	r.clock.Advance(settleAfter + time.Second)
	r.coord.SettleCheckouts()
	first, err1 := r.checkout()
	if err1 != nil {
		t.Fatalf("first checkout did not settle into its order: %v", err1)
	}
	if err2 == nil {
		t.Errorf("a second checkout of cart c bought it again while the first (order %s) was unsettled: orders %+v and %+v",
			first.OrderID, first.Lines, second.Lines)
	} else {
		wantCode(t, err2, CodeRequestInProgress)
	}
	r.clock.Advance(2 * sagaTTL)
	for home, sku := range map[string]string{"h1": "a", "h2": "b"} {
		if it := r.item(home, sku); it.Stock != 9 {
			t.Errorf("%s: stock %d, want 9: a cart of one %s was bought %d times", sku, it.Stock, sku, 10-it.Stock)
		}
	}
}

// TestStatusKeepsStepsOfEarlierAttempts: a keyed checkout's first
// attempt ends on an unreachable home (503); the retry with the key makes
// the order. The status shows every step with its time and result, of
// every attempt: the failed reserve of attempt 0 is one of them.
func TestStatusKeepsStepsOfEarlierAttempts(t *testing.T) {
	r := newSagaRig(t)
	r.fill()
	r.homes.set(false, "reserve a")
	_, err := r.checkout()
	wantCode(t, err, CodeHomeUnavailable)
	st := must[CheckoutStatus](t)(r.coord.CheckoutStatusOf(bg, "c", fp("saga").Key))
	if st.Phase != "failed-transiently" || !hasStep(st, "reserve", "a", CodeHomeUnavailable) {
		t.Fatalf("status after the failed attempt: %+v", st)
	}
	r.homes.set(false)
	must[Order](t)(r.checkout())
	st = must[CheckoutStatus](t)(r.coord.CheckoutStatusOf(bg, "c", fp("saga").Key))
	if st.Phase != "settled" || st.Attempt != 1 {
		t.Fatalf("status after the retry: %+v", st)
	}
	if !hasStep(st, "reserve", "a", CodeHomeUnavailable) {
		t.Errorf("status lost the steps of attempt 0: steps %+v", st.Steps)
	}
}

// TestStatusOfEmptyCartCheckout: a keyed checkout of an empty cart is
// settled as a clean failure (409 cart_empty, replayed by a retry with the
// key). Its status says so, rather than 404 "no checkout with this key".
func TestStatusOfEmptyCartCheckout(t *testing.T) {
	r := newSagaRig(t)
	_, err := r.checkout()
	wantCode(t, err, CodeCartEmpty)
	_, err = r.checkout()
	wantCode(t, err, CodeCartEmpty) // the coordinator holds the outcome under the key
	st, err := r.coord.CheckoutStatusOf(bg, "c", fp("saga").Key)
	if err != nil {
		t.Fatalf("status of a checkout that settled as cart_empty: %v", err)
	}
	if st.Phase != "settled" || st.Failure == nil || st.Failure.Code != CodeCartEmpty {
		t.Fatalf("status: %+v", st)
	}
}
