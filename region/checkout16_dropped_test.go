package region

import (
	"testing"
)

// TestCheckoutWaitsForHoldsItDropped: a keyed checkout of one line (the
// last unit of s at h1) is retried while every answer of h1 is lost: its
// first attempt holds the unit. A later attempt does not reserve again
// while that hold may stand at a home out of reach (each such try used to
// add a possible hold, and past maxLoose of them the plan let go of the
// oldest, the one holding the unit, which then stayed held for its ttl):
// it answers 503 home_unavailable, reserving nothing. Once h1 answers
// again, the retry releases the first attempt's hold and buys the cart at
// once, the unit committed once and nothing left held.
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
	order, err := coord.Checkout(bg, "c", sagaTTL, idem)
	if err != nil {
		t.Fatalf("once h1 answers: %v, want the order (the first attempt's hold released first)", err)
	}
	if len(order.Lines) != 1 || order.Lines[0].SKU != "s" {
		t.Fatalf("order %+v", order)
	}
	if it := must[Item](t)(fw.home.GetItem(bg, "s", false)); it.Reserved != 0 || it.Stock != 0 {
		t.Fatalf("s at h1 after the order: %+v, want its unit committed once and nothing held", it)
	}
}
