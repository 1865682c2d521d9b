package region

import (
	"context"
	"testing"
	"time"

	"github.com/latticedb/lattice/region/store"
)

// countRecalls forwards as the rig does and counts the recalls the home
// sends.
type countRecalls struct {
	rigFwd
	recalls int
}

func (f *countRecalls) Forward(ctx context.Context, home string, req *HomeRequest) (*HomeResponse, error) {
	if req.Op == OpRecall {
		f.recalls++
	}
	return f.rigFwd.Forward(ctx, home, req)
}

// TestKeyedRefusalReplayRecallsNoRights: a reservation of 20 units of e1
// (stock 10) with an Idempotency-Key is refused at the home h, and the
// refusal is recorded under the key. Region a then takes rights again for
// a reservation of its own. docs/api.md (Idempotency): "A retry with the
// same key and the same request returns the first outcome and changes
// nothing". The retry must replay the refusal without recalling a's
// rights: a recall takes unused rights back from a (its next reservations
// then wait a round trip to the home) for a request that decides nothing.
func TestKeyedRefusalReplayRecallsNoRights(t *testing.T) {
	r := newEscrowRig(t)
	fwd := &countRecalls{rigFwd: rigFwd{r, "h"}}
	r.nodes["h"].close()
	r.openEscrowWith("h", store.Options{}, func(o *Options) { o.Forwarder = fwd })
	h, a := r.nodes["h"], r.nodes["a"]
	must[Item](t)(h.Restock(bg, "e1", 10))
	r.deliver(nil)

	key := Idem{Key: "too-many", Fingerprint: [32]byte{7}}
	wantCode(t, second3(h.Reserve(bg, "e1", 20, time.Minute, key)), CodeInsufficientStock)
	r.deliver(nil)

	// a reserves from rights the home grants it anew.
	must[Reservation](t)(a.Reserve(bg, "e1", 1, time.Minute, Idem{}))
	r.deliver(nil)
	before := rightsOf(r.item("a", "e1"))
	if before == 0 {
		t.Fatal("test setup: a holds no unused rights")
	}
	recalls := fwd.recalls

	// The retry with the key: the recorded refusal.
	wantCode(t, second3(h.Reserve(bg, "e1", 20, time.Minute, key)), CodeInsufficientStock)
	r.deliver(nil)
	if after := rightsOf(r.item("a", "e1")); fwd.recalls != recalls || after != before {
		t.Fatalf("the replay of a recorded refusal sent %d recalls; a's unused rights went from %d to %d",
			fwd.recalls-recalls, before, after)
	}
}
