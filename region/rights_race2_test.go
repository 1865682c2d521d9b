package region

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/latticedb/lattice/region/store"
)

// afterGrant forwards as the rig does, and runs then once after the first
// grant the home decided for the region, before its answer is back there.
type afterGrant struct {
	rigFwd
	then func(ctx context.Context)
	done bool
}

func (f *afterGrant) Forward(ctx context.Context, home string, req *HomeRequest) (*HomeResponse, error) {
	resp, err := f.rigFwd.Forward(ctx, home, req)
	if req.Op == OpGrant && !f.done {
		f.done = true
		f.then(ctx)
	}
	return resp, err
}

// TestEscrowRecallWhileGrantOnItsWay: the home h grants region a rights to
// e1 (stock 10); while the grant's answer is on its way to a, a
// reservation of 8 units at h finds the home short of them (a's rights
// are out) and h recalls them. docs/configuration.md (Escrow): "When the
// home would refuse a reservation that rights other regions hold unused
// would cover, it first recalls them (one round trip to those regions),
// then decides." a has not applied the grant yet when the recall comes;
// the home must not refuse the 8 units while a then holds rights it never
// uses that cover them.
func TestEscrowRecallWhileGrantOnItsWay(t *testing.T) {
	r := newEscrowRig(t)
	var homeErr error
	var homeRes Reservation
	fwd := &afterGrant{rigFwd: rigFwd{r, "a"}, then: func(ctx context.Context) {
		homeRes, homeErr = r.nodes["h"].Reserve(ctx, "e1", 8, time.Minute, Idem{})
	}}
	r.nodes["a"].close()
	r.openEscrowWith("a", store.Options{}, func(o *Options) { o.Forwarder = fwd })
	a, h := r.nodes["a"], r.nodes["h"]
	must[Item](t)(h.Restock(bg, "e1", 10))
	r.deliver(nil)

	res := must[Reservation](t)(a.Reserve(bg, "e1", 1, time.Minute, Idem{}))
	if !fwd.done || !strings.HasPrefix(res.ID, "a:") {
		t.Fatalf("test setup: a's reservation %s, grant seen %v", res.ID, fwd.done)
	}
	r.deliver(nil)
	free := rightsOf(r.item("a", "e1"))
	hv := r.item("h", "e1")
	if homeErr != nil {
		t.Fatalf("h refused 8 units of e1 (%v) while the grant to a was on its way; a now holds %d unused rights, "+
			"the home shows available %d and %d granted: they cover the 8", homeErr, free, hv.Available, *hv.Granted)
	}
	if !strings.HasPrefix(homeRes.ID, "h:") {
		t.Fatalf("the home's reservation %s", homeRes.ID)
	}
}

// TestEscrowRightsReadWhileCatchingUp: docs/api.md (Escrow skus): "The
// item shows rights, the units the answering region may reserve alone".
// A region catching up after an unclean stop decides nothing alone: its
// reservations of an escrow sku go to the home. Its item must not show
// rights it cannot reserve from.
func TestEscrowRightsReadWhileCatchingUp(t *testing.T) {
	r := newEscrowRig(t)
	h := r.nodes["h"]
	must[Item](t)(h.Restock(bg, "e1", 10))
	r.deliver(nil)
	must[Reservation](t)(r.nodes["a"].Reserve(bg, "e1", 1, time.Hour, Idem{}))
	r.deliver(nil)
	// An unclean stop of a run that wrote: a new incarnation, catching up.
	a := r.nodes["a"]
	a.Node.Close()
	if err := a.store.CloseUnclean(); err != nil {
		t.Fatal(err)
	}
	r.open("a")
	a = r.nodes["a"]
	if !a.CatchingUp() {
		t.Fatal("test setup: a is not catching up after an unclean stop of a run that wrote")
	}
	shown := rightsOf(r.item("a", "e1"))
	res := must[Reservation](t)(a.Reserve(bg, "e1", 1, time.Hour, Idem{}))
	if shown > 0 && !strings.HasPrefix(res.ID, "a:") {
		t.Fatalf("a (catching up) shows rights %d to e1, but its reservation of 1 unit was decided at %s, not alone", shown, res.ID)
	}
}
