package region

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestObs18ReplayedRefusalIsCounted checks lattice_reservations_total
// (docs/operations.md, Metrics): "decisions of this region as a home,
// idempotent replays included", by op and result. A reservation retried
// with its Idempotency-Key is answered its recorded outcome: a replayed
// success is counted again (result "ok"), and so must a replayed refusal
// (result "insufficient_stock"), or the refusal ratio an operator reads
// from the counter differs from what clients were answered.
func TestObs18ReplayedRefusalIsCounted(t *testing.T) {
	n := newNode(t)
	must[Item](t)(n.Restock(bg, "sku1", 2))
	count := func(result string) float64 {
		return testutil.ToFloat64(n.m.Reservations.WithLabelValues(OpReserve, result))
	}

	// A success and its replay: counted twice.
	ok := Idem{Key: "ok-key", Fingerprint: [32]byte{1}}
	first := must[Reservation](t)(n.Reserve(bg, "sku1", 1, time.Minute, ok))
	again := must[Reservation](t)(n.Reserve(bg, "sku1", 1, time.Minute, ok))
	if again.ID != first.ID {
		t.Fatalf("the retry decided anew: %s then %s", first.ID, again.ID)
	}
	if got := count("ok"); got != 2 {
		t.Fatalf("reserve ok = %v after a success and its replay, want 2", got)
	}

	// A refusal and its replay: both answered insufficient_stock.
	no := Idem{Key: "no-key", Fingerprint: [32]byte{2}}
	wantCode(t, second3(n.Reserve(bg, "sku1", 5, time.Minute, no)), CodeInsufficientStock)
	wantCode(t, second3(n.Reserve(bg, "sku1", 5, time.Minute, no)), CodeInsufficientStock)
	if got := count(CodeInsufficientStock); got != 2 {
		t.Errorf("lattice_reservations_total{op=\"reserve\",result=\"insufficient_stock\"} = %v after a refusal and its "+
			"idempotent replay (both answered 409 insufficient_stock), want 2: replays are included for successes but not for refusals", got)
	}
}
