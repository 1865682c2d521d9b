package region

import (
	"testing"
	"time"
)

// TestMovedHomeReleasesItsOpenHolds: docs/operations.md, What moves: a
// sku's home moved while it has an open hold; the new home does not count
// that hold, so the old home, once it has caught up after the change,
// releases it, and its commit answers 409 reservation_released: the two
// homes never sell the same units.
func TestMovedHomeReleasesItsOpenHolds(t *testing.T) {
	r := newReconfRig(t, []string{"h", "a", "b"}, homeAt("h"), escrowOnE(false))
	h := r.open("h")
	r.open("a")
	r.open("b")
	must[Item](t)(h.Restock(bg, "p1", 10))
	res := must[Reservation](t)(h.Reserve(bg, "p1", 4, time.Hour, Idem{}))
	r.deliver()

	// p1's home moves to b: a clean rolling restart of every region.
	for _, x := range []string{"h", "a", "b"} {
		r.stop(x)
	}
	r.home = homeAt("b")
	h = r.open("h")
	r.open("a")
	b := r.open("b")
	r.antiEntropy("h", "b", nil, []string{"p1"})
	r.antiEntropy("a", "b", nil, []string{"p1"})
	r.antiEntropy("h", "a", nil, []string{"p1"})
	for _, x := range []string{"h", "a", "b"} {
		for _, y := range []string{"h", "a", "b"} {
			if x != y {
				r.nodes[x].SyncedWith(y, r.nodes[y].HomesID(), peersOf(r, x))
			}
		}
	}
	if h.CatchingUp() || b.CatchingUp() {
		t.Fatal("test setup: still catching up")
	}
	if got, err := h.GetReservation(bg, res.ID); err != nil || got.State != StateReleased {
		t.Fatalf("the old home's hold %s after the move: %+v, %v; want released", res.ID, got, err)
	}
	_, err := h.Commit(bg, res.ID, Idem{})
	wantCode(t, err, CodeReservationReleased)
	// The new home sells the whole stock, and nothing more is sold.
	sold := 0
	for range 12 {
		got, err := b.Reserve(bg, "p1", 1, time.Minute, Idem{})
		if err != nil {
			break
		}
		must[Reservation](t)(b.Commit(bg, got.ID, Idem{}))
		sold++
	}
	if sold != 10 {
		t.Fatalf("the new home sold %d of a stock of 10", sold)
	}
}
