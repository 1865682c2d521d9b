package region

import (
	"testing"
	"time"
)

// TestExpiredHoldStaysExpiredWhenHomeClockStepsBack: a hold of all 4
// units of a sku expires at the home and is swept; then the home's clock
// steps back to before its expires_at. The expiry is a decision made: the
// reservation still reads expired, a commit is 409 reservation_expired, a
// release is a no-op 200 expired, the item shows nothing reserved, and
// the 4 units can be held again, once.
func TestExpiredHoldStaysExpiredWhenHomeClockStepsBack(t *testing.T) {
	n := newNode(t)
	must[Item](t)(n.Restock(bg, "w", 4))
	r := must[Reservation](t)(n.Reserve(bg, "w", 4, 2*time.Second, Idem{}))
	n.clock.Advance(3 * time.Second)
	if err := n.ExpireDue(); err != nil {
		t.Fatal(err)
	}
	n.clock.Advance(-2 * time.Second) // 1 s before expires_at again
	if got := must[Reservation](t)(n.GetReservation(bg, r.ID)); got.State != StateExpired {
		t.Fatalf("after the clock stepped back: %s reads %s, want expired", r.ID, got.State)
	}
	wantCode(t, second3(n.Commit(bg, r.ID, Idem{})), CodeReservationExpired)
	if got := must[Reservation](t)(n.Release(bg, r.ID, Idem{})); got.State != StateExpired {
		t.Fatalf("release after the clock stepped back: %s", got.State)
	}
	if it := must[Item](t)(n.GetItem(bg, "w", false)); it.Reserved != 0 || it.Available != 4 {
		t.Fatalf("item after the clock stepped back: %+v, want 0 reserved, 4 available", it)
	}
	if h := storedHeld(t, n, "w"); h != 0 {
		t.Fatalf("published held %d, want 0", h)
	}
	must[Reservation](t)(n.Reserve(bg, "w", 4, time.Minute, Idem{}))
	wantCode(t, second3(n.Reserve(bg, "w", 1, time.Minute, Idem{})), CodeInsufficientStock)
}
