package region

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestObs18EscrowReservationCountsNoPhantomRefusal checks
// lattice_reservations_total (docs/operations.md, Metrics): its result
// label is "ok or the problem code" of each decision. A region short of
// escrow rights that asks its home for more and then reserves from them
// answers the client 201: no refusal was made. The region must not count
// an insufficient_stock decision for it, or an operator watching
// refusals (rate(lattice_reservations_total{result="insufficient_stock"}))
// sees stock running out where every shopper was served.
func TestObs18EscrowReservationCountsNoPhantomRefusal(t *testing.T) {
	r := newEscrowRig(t)
	h, a := r.nodes["h"], r.nodes["a"]
	must[Item](t)(h.Restock(bg, "e1", 100))
	r.deliver(nil)

	res := must[Reservation](t)(a.Reserve(bg, "e1", 3, time.Minute, Idem{}))
	if !strings.HasPrefix(res.ID, "a:") || res.State != StateHeld {
		t.Fatalf("reservation %+v: want a hold decided at a from its rights", res)
	}
	var refusals float64
	for _, n := range []string{"h", "a", "b"} {
		refusals += testutil.ToFloat64(r.nodes[n].m.Reservations.WithLabelValues(OpReserve, CodeInsufficientStock))
	}
	ok := testutil.ToFloat64(a.m.Reservations.WithLabelValues(OpReserve, "ok"))
	if refusals != 0 {
		t.Errorf("one reservation, answered as a hold, counted lattice_reservations_total{op=\"reserve\",result=\"insufficient_stock\"} %v "+
			"(and result=\"ok\" %v at a): a refusal that no client received", refusals, ok)
	}
}
