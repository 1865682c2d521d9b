package region

import (
	"testing"
)

// TestCheckoutWaitsForHoldsItDropped: a keyed checkout of one line (the
// last unit of s at h1) is retried while every answer of h1 is lost: its
// first attempt holds the unit, and every later one adds a reservation it
// never learns the outcome of. Past maxLoose of them the plan lets the
// oldest go: the one that holds the unit. Once h1 answers again, the
// retry finds s short because of that hold; it must not settle the
// checkout as insufficient_stock for good (a settled failure holds
// nothing), but answer 503 until the hold expires, and then buy the cart.
func TestCheckoutWaitsForHoldsItDropped(t *testing.T) {
	dir, clock := t.TempDir(), newFakeClock()
	fw := &manyHome{}
	fw.home = openManyNode(t, dir, "h1", clock, nil)
	coord := openManyNode(t, dir, "us-east", clock, fw)
	must[Item](t)(fw.home.Restock(bg, "s", 1))
	must[Cart](t)(coord.AddItem(bg, "c", "s", 1))
	idem := fp("dropped")

	fw.mu.Lock()
	fw.loseAnswers = true
	fw.mu.Unlock()
	for range maxLoose + 1 {
		_, err := coord.Checkout(bg, "c", sagaTTL, idem)
		wantCode(t, err, CodeHomeUnavailable)
	}
	if it := must[Item](t)(fw.home.GetItem(bg, "s", false)); it.Reserved != 1 {
		t.Fatalf("setup: s at h1 %+v, want its unit held by the first attempt", it)
	}

	fw.mu.Lock()
	fw.loseAnswers = false
	fw.mu.Unlock()
	_, err := coord.Checkout(bg, "c", sagaTTL, idem)
	wantCode(t, err, CodeUnavailable)
	if e := err.(*Error); e.RetryAfter < 1 || e.RetryAfter > int(sagaTTL.Seconds())+1 {
		t.Fatalf("Retry-After %d s, want until the dropped hold expires (ttl %v)", e.RetryAfter, sagaTTL)
	}
	clock.Advance(sagaTTL + 1)
	if err := fw.home.ExpireDue(); err != nil {
		t.Fatal(err)
	}
	order, err := coord.Checkout(bg, "c", sagaTTL, idem)
	if err != nil {
		t.Fatalf("once the dropped hold expired: %v, want the order", err)
	}
	if len(order.Lines) != 1 || order.Lines[0].SKU != "s" {
		t.Fatalf("order %+v", order)
	}
}
