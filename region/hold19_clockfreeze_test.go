package region

import (
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/latticedb/lattice/region/store"
)

// stepClock19 is the wall clock shifted by an offset that a test changes
// at once, as an NTP step changes the wall clock: time goes on passing
// at its real rate on either side of the step.
type stepClock19 struct{ off atomic.Int64 }

func (c *stepClock19) Now() time.Time { return time.Now().Add(time.Duration(c.off.Load())) }

// TestHoldTTLKeptAfterClockStepsBack: a reservation holds its units for
// its ttl (docs/api.md, Reservations). A region starts with its wall
// clock an hour fast (an RTC kept in local time, say) and reads it; then
// NTP steps the clock back the hour. A client reserves all 4 units of a
// sku for 1 s and walks away: within seconds the hold must have expired
// and its units be for sale again. The node's clock never goes back
// (steadyClock), but it must not stand still for the hour either: the
// hold would then last an hour and a second (the sku sold out), and so
// would every hold made in that hour, with settling and the return of
// idle rights stopped too.
func TestHoldTTLKeptAfterClockStepsBack(t *testing.T) {
	clk := &stepClock19{}
	clk.off.Store(int64(time.Hour)) // the region starts with its clock an hour fast
	st, err := OpenStore(filepath.Join(t.TempDir(), "us-east", "data.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	n, err := NewNode(Options{Name: "us-east", Store: st, Clock: clk, ExpiryInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close(); st.Close() })

	must[Item](t)(n.Restock(bg, "w", 4))
	if err := n.ExpireDue(); err != nil { // a background expiry tick reads the clock
		t.Fatal(err)
	}
	clk.off.Store(0) // NTP steps the wall clock back the hour
	r := must[Reservation](t)(n.Reserve(bg, "w", 4, time.Second, Idem{}))
	var got Reservation
	var it Item
	expired := func() bool {
		if err := n.ExpireDue(); err != nil {
			t.Fatal(err)
		}
		got = must[Reservation](t)(n.GetReservation(bg, r.ID))
		it = must[Item](t)(n.GetItem(bg, "w", false))
		return got.State == StateExpired && it.Available == 4
	}
	deadline := time.Now().Add(15 * time.Second) // the 1 s ttl, with room for a loaded machine
	for !expired() {
		if time.Now().After(deadline) {
			t.Fatalf("a 1 s hold made after the home's clock stepped back an hour, 15 s later: %s reads %s (expires_at %s, "+
				"%v after the wall clock), the item %d reserved / %d available; want expired and all 4 units available",
				r.ID, got.State, got.ExpiresAt.Format(time.RFC3339Nano), got.ExpiresAt.Sub(time.Now()).Round(time.Second),
				it.Reserved, it.Available)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
