package region

import (
	"strings"
	"testing"
	"time"
)

// TestEscrowCutOffKeepsIdleRights: a region cut off from the home keeps
// its unused rights past the idle time instead of writing them back (the
// return could not reach the home before the link does), so it still
// decides reservations from them while cut off; once the link is back,
// the idle rights go home.
func TestEscrowCutOffKeepsIdleRights(t *testing.T) {
	r := newEscrowRig(t)
	h, a := r.nodes["h"], r.nodes["a"]
	must[Item](t)(h.Restock(bg, "e1", 100))
	r.deliver(nil)
	first := must[Reservation](t)(a.Reserve(bg, "e1", 1, time.Minute, Idem{}))
	if !strings.HasPrefix(first.ID, "a:") {
		t.Fatalf("the first reservation was decided at %s, want a", first.ID)
	}
	rights := *r.item("a", "e1").Rights
	if rights < 2 {
		t.Fatalf("a holds %d unused rights; the test needs at least 2", rights)
	}

	r.cut["a"] = true
	r.clock.Advance(EscrowIdle + time.Second)
	a.returnIdleRights()
	if got := *r.item("a", "e1").Rights; got != rights {
		t.Fatalf("cut off and idle, a shows %d unused rights, want the %d it held (none returned)", got, rights)
	}
	res, err := a.Reserve(bg, "e1", 1, time.Minute, Idem{})
	if err != nil || !strings.HasPrefix(res.ID, "a:") {
		t.Fatalf("cut off after the idle time, a reservation within a's rights: %+v, %v", res, err)
	}

	delete(r.cut, "a")
	r.clock.Advance(EscrowIdle + time.Second)
	a.returnIdleRights()
	r.deliver(nil)
	if got := *r.item("a", "e1").Rights; got != 0 {
		t.Fatalf("with the link back and the sku idle, a still shows %d unused rights", got)
	}
	if it := r.item("h", "e1"); *it.Granted != 2 {
		t.Fatalf("the home counts %d granted, want the 2 units a holds", *it.Granted)
	}
}
