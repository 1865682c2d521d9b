package region

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/latticedb/lattice/region/store"
)

// duringRecall forwards as the rig does, and runs first once before the
// first recall the home h sends, while that recall is on its way.
type duringRecall struct {
	rigFwd
	first func(ctx context.Context)
	done  bool
}

func (f *duringRecall) Forward(ctx context.Context, home string, req *HomeRequest) (*HomeResponse, error) {
	if req.Op == OpRecall && !f.done {
		f.done = true
		f.first(ctx)
	}
	return f.rigFwd.Forward(ctx, home, req)
}

// recallRig is an escrow rig whose home's recalls run first(ctx) once.
// The home restocks e1 by 10 and a reserves a unit of it from rights the
// home grants it; it returns how many the home granted.
func recallRig(t *testing.T, first func(r *escrowRig, ctx context.Context)) (*escrowRig, *duringRecall, int64) {
	r := newEscrowRig(t)
	fwd := &duringRecall{rigFwd: rigFwd{r, "h"}, first: func(ctx context.Context) { first(r, ctx) }}
	r.nodes["h"].close()
	r.openEscrowWith("h", store.Options{}, func(o *Options) { o.Forwarder = fwd })
	must[Item](t)(r.nodes["h"].Restock(bg, "e1", 10))
	r.deliver(nil)
	must[Reservation](t)(r.nodes["a"].Reserve(bg, "e1", 1, time.Minute, Idem{}))
	r.deliver(nil)
	return r, fwd, *r.item("h", "e1").Granted
}

func rightsOf(it Item) int64 {
	if it.Rights == nil {
		return 0
	}
	return *it.Rights
}

// TestEscrowRecallNotGrantedAway: the home h must refuse a reservation of
// 8 units of e1 (stock 10) unless it recalls the rights a holds unused;
// while the recall is on its way, region b asks h for rights of its own.
// The units h is recalling for the waiting reservation must not leave as
// b's rights: h's reservation is decided, and b's goes to the home.
func TestEscrowRecallNotGrantedAway(t *testing.T) {
	r, fwd, granted := recallRig(t, func(r *escrowRig, ctx context.Context) {
		if _, err := r.nodes["b"].Reserve(ctx, "e1", 1, time.Minute, Idem{}); err != nil {
			t.Errorf("b's reservation during the recall: %v", err)
		}
	})
	h := r.nodes["h"]
	if 10-granted >= 8 || granted-1 < 8-(10-granted) {
		t.Fatalf("test setup: a was granted %d; the test needs the home short of 8 and a's unused rights to cover it", granted)
	}
	res, err := h.Reserve(bg, "e1", 8, time.Minute, Idem{Key: "big", Fingerprint: [32]byte{2}})
	if !fwd.done {
		t.Fatal("test setup: the home sent no recall")
	}
	if err != nil {
		r.deliver(nil)
		t.Fatalf("the home refused 8 units while recalling a's unused rights (%v); b now shows rights %d, a %d",
			err, rightsOf(r.item("b", "e1")), rightsOf(r.item("a", "e1")))
	}
	if !strings.HasPrefix(res.ID, "h:") {
		t.Fatalf("the home's reservation %s", res.ID)
	}
	r.deliver(nil)
	if it := r.item("h", "e1"); it.Reserved+*it.Granted > 10 {
		t.Fatalf("the home shows %+v, granted %d: more than the stock", it, *it.Granted)
	}
}

// TestEscrowRecallAgainWhenTaken: the home h must recall a unit of the
// rights a holds unused to decide a reservation of e1 (stock 10); while
// the recall is on its way, another reservation at h takes 2 units, so
// what came back no longer covers it. h recalls again, and the
// reservation is decided rather than refused while a still holds unused
// rights that cover it.
func TestEscrowRecallAgainWhenTaken(t *testing.T) {
	r, fwd, granted := recallRig(t, func(r *escrowRig, ctx context.Context) {
		if _, err := r.nodes["h"].Reserve(ctx, "e1", 2, time.Minute, Idem{}); err != nil {
			t.Errorf("the other reservation at h during the recall: %v", err)
		}
	})
	h := r.nodes["h"]
	if granted-1 < 3 {
		t.Fatalf("test setup: a was granted %d; the test needs 3 of them unused", granted)
	}
	want := 10 - granted + 1 // one more than the home has
	res, err := h.Reserve(bg, "e1", want, time.Minute, Idem{Key: "six", Fingerprint: [32]byte{6}})
	if !fwd.done {
		t.Fatal("test setup: the home sent no recall")
	}
	if err != nil {
		r.deliver(nil)
		t.Fatalf("the home refused %d units (%v) while a holds %d unused rights", want, err, rightsOf(r.item("a", "e1")))
	}
	r.deliver(nil)
	if it := r.item("h", "e1"); it.Reserved != want+2 || it.Reserved+*it.Granted > 10 {
		t.Fatalf("the home shows %+v, granted %d (%s): want %d reserved within the stock", it, *it.Granted, res.ID, want+2)
	}
}
