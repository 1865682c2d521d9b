package region

import "testing"

// TestCheckoutSettledCartEmptyHoldsNothing: a keyed checkout's attempt
// ends on an unreachable home whose reservation of a was made but whose
// answer was lost (the attempt keeps it to release). The shopper then
// empties the cart and retries with the key while a's home still cannot
// be reached. The retry may not settle the checkout as failed
// (cart_empty) while the earlier attempt's hold of a is still held: a
// settled failure holds nothing, so the retry answers 503 until that
// hold is released, and a later retry releases it.
func TestCheckoutSettledCartEmptyHoldsNothing(t *testing.T) {
	r := newSagaRig(t)
	r.fill()
	r.homes.set(true, "reserve a") // a's hold is made, its answer lost
	_, err := r.checkout()
	wantCode(t, err, CodeHomeUnavailable)
	if it := r.item("h1", "a"); it.Reserved != 1 {
		t.Fatalf("a after the first attempt: %+v, want its lost hold", it)
	}

	must[Cart](t)(r.coord.ClearCart(bg, "c"))
	_, err = r.checkout() // a's home still out of reach
	if err == nil {
		t.Fatal("checkout of an emptied cart made an order")
	}
	r.homes.set(false)
	_, err = r.checkout() // every home reachable again
	wantCode(t, err, CodeCartEmpty)
	st := must[CheckoutStatus](t)(r.coord.CheckoutStatusOf(bg, "c", fp("saga").Key))
	if it := r.item("h1", "a"); it.Reserved != 0 {
		t.Fatalf("checkout settled (%v, status %s) while its earlier attempt's hold of a is still held: %+v",
			err, st.Phase, it)
	}
}

// TestCheckoutOrderLeavesNoEarlierAttemptHold: a keyed checkout's attempt
// ends on an unreachable home whose reservation of a was made but whose
// answer was lost. The shopper removes a and retries with the key while
// a's home still cannot be reached: the retry buys b (or answers 503
// until it can release a's hold; a later retry buys b). Once every home is
// reachable, no retry with the key (nor the coordinator's settling)
// releases the earlier attempt's hold of a: it stays held, refusing
// other shoppers, until its ttl, though the checkout that made it is
// settled.
func TestCheckoutOrderLeavesNoEarlierAttemptHold(t *testing.T) {
	r := newSagaRig(t)
	r.fill()
	r.homes.set(true, "reserve a") // a's hold is made, its answer lost
	_, err := r.checkout()
	wantCode(t, err, CodeHomeUnavailable)

	must[Cart](t)(r.coord.RemoveItem(bg, "c", "a"))
	r.homes.set(false, "reserve a") // a's home still out of reach
	if _, err := r.checkout(); err != nil && !transient(co17Err(t, err)) {
		t.Fatalf("retry: %v", err)
	}
	r.homes.set(false)
	order, err := r.checkout() // every home reachable again
	if err != nil {
		t.Fatalf("retry with every home reachable: %v", err)
	}
	if len(order.Lines) != 1 || order.Lines[0].SKU != "b" {
		t.Fatalf("order %+v, want b only", order)
	}
	r.clock.Advance(settleAfter)
	r.coord.SettleCheckouts()
	if it := r.item("h1", "a"); it.Reserved != 0 {
		t.Fatalf("order %s settled, a's home reachable, and its earlier attempt's hold of a still held: %+v",
			order.OrderID, it)
	}
}

// co17Err returns err as an *Error, failing the test if it is not one.
func co17Err(t *testing.T, err error) *Error {
	t.Helper()
	e, ok := err.(*Error)
	if !ok {
		t.Fatalf("error %v (%T) is not a *Error", err, err)
	}
	return e
}
