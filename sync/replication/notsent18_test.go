package replication

import (
	"context"
	"errors"
	"testing"

	"github.com/latticedb/lattice/region"
)

// TestForwardNotConnectedIsNotSent: a home request to a home this region
// has no connection to never leaves, and says so (region.Error.NotSent),
// so that a checkout does not keep it as a reservation that may hold
// units (whose keeping pushed out the possible holds of earlier attempts).
func TestForwardNotConnectedIsNotSent(t *testing.T) {
	_, err := forward(context.Background(), nil, "eu-west", &region.HomeRequest{Op: region.OpReserve, SKU: "s", Qty: 1})
	var e *region.Error
	if !errors.As(err, &e) || e.Code != region.CodeHomeUnavailable || !e.NotSent {
		t.Fatalf("forward with no connection: %#v, want home_unavailable marked not sent", err)
	}
}
