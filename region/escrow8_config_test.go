package region

import (
	"strings"
	"testing"
	"time"

	"github.com/latticedb/lattice/region/store"
)

// TestEscrowTurnedOffWhileRightsOut: escrow is turned off for a sku (both
// regions restarted with a config without it) while region a holds rights
// and a hold decided from them. docs/operations.md: idle rights go back
// "at once once escrow is turned off for the sku". So a returns its unused
// rights at its next sweep, keeps its hold's units, the home counts them as
// granted until the hold is committed, and the home then sells exactly the
// rest: held + committed never exceed stock.
func TestEscrowTurnedOffWhileRightsOut(t *testing.T) {
	r := newEscrowRig(t)
	must[Item](t)(r.nodes["h"].Restock(bg, "e1", 20))
	r.deliver(nil)
	held := must[Reservation](t)(r.nodes["a"].Reserve(bg, "e1", 2, time.Hour, Idem{}))
	if !strings.HasPrefix(held.ID, "a:") {
		t.Fatalf("reservation %s not decided from a's rights", held.ID)
	}
	r.deliver(nil)
	granted := *r.item("h", "e1").Granted
	if granted <= 2 {
		t.Fatalf("the home granted a %d; the test needs unused rights", granted)
	}

	off := func(o *Options) { o.Escrow = func(string) bool { return false } }
	for _, name := range []string{"h", "a"} {
		r.nodes[name].close()
		r.openEscrowWith(name, store.Options{}, off)
	}
	h, a := r.nodes["h"], r.nodes["a"]
	if it := r.item("a", "e1"); it.Rights != nil {
		t.Errorf("a shows rights %d to a sku no longer in escrow", *it.Rights)
	}
	a.ReturnIdleRights() // at once: no idle time passed
	r.deliver(nil)
	if it := r.item("h", "e1"); it.Granted == nil || *it.Granted != 2 || it.Available != 18 {
		t.Fatalf("after escrow was turned off and a swept, the home shows %+v (granted %v); want 2 granted (a's hold), 18 available", it, it.Granted)
	}
	// A reservation at a goes to the home now.
	res := must[Reservation](t)(a.Reserve(bg, "e1", 18, time.Hour, Idem{}))
	if !strings.HasPrefix(res.ID, "h:") {
		t.Fatalf("a reservation of a sku no longer in escrow was decided at %s", res.ID)
	}
	wantCode(t, second3(h.Reserve(bg, "e1", 1, time.Hour, Idem{})), CodeInsufficientStock)
	// a's hold decided from rights still commits, using them.
	if c := must[Reservation](t)(a.Commit(bg, held.ID, Idem{})); c.State != StateCommitted {
		t.Fatalf("commit of a's hold: %+v", c)
	}
	if c := must[Reservation](t)(h.Commit(bg, res.ID, Idem{})); c.State != StateCommitted {
		t.Fatalf("commit of the home's hold: %+v", c)
	}
	r.deliver(nil)
	for _, name := range escrowRegions {
		it := r.item(name, "e1")
		var g int64
		if it.Granted != nil {
			g = *it.Granted
		}
		if it.Stock != 0 || g != 0 || it.Available != 0 {
			t.Errorf("%s after both commits: %+v granted %d; want stock 0, nothing granted or available", name, it, g)
		}
	}
}

// TestEscrowNegativeAdjustWithRightsOut: a negative adjustment at the home
// of an escrow sku while another region holds rights may take only what
// the home has available (stock − held − rights out): the rights stay
// covered by stock, and the region still sells all of them.
func TestEscrowNegativeAdjustWithRightsOut(t *testing.T) {
	r := newEscrowRig(t)
	h, a := r.nodes["h"], r.nodes["a"]
	must[Item](t)(h.Restock(bg, "e1", 10))
	r.deliver(nil)
	first := must[Reservation](t)(a.Reserve(bg, "e1", 1, time.Hour, Idem{}))
	r.deliver(nil)
	granted := *r.item("h", "e1").Granted
	avail := r.item("h", "e1").Available
	if avail != 10-granted {
		t.Fatalf("the home shows %d available with %d granted of 10", avail, granted)
	}
	// Through a (forwarded to the home) and at the home.
	wantCode(t, second2(a.Adjust(bg, "e1", -(avail+1), "shrinkage")), CodeInsufficientStock)
	wantCode(t, second2(h.Adjust(bg, "e1", -(avail+1), "shrinkage")), CodeInsufficientStock)
	must[Item](t)(h.Adjust(bg, "e1", -avail, "shrinkage"))
	r.deliver(nil)
	// a sells every right it holds, alone.
	committed := int64(0)
	if c := must[Reservation](t)(a.Commit(bg, first.ID, Idem{})); c.State == StateCommitted {
		committed += first.Qty
	}
	if rest := granted - first.Qty; rest > 0 {
		x := must[Reservation](t)(a.Reserve(bg, "e1", rest, time.Hour, Idem{}))
		if !strings.HasPrefix(x.ID, "a:") {
			t.Fatalf("a's reservation of its last %d rights decided at %s", rest, x.ID)
		}
		if c := must[Reservation](t)(a.Commit(bg, x.ID, Idem{})); c.State == StateCommitted {
			committed += x.Qty
		}
	}
	r.deliver(nil)
	wantCode(t, second3(h.Reserve(bg, "e1", 1, time.Hour, Idem{})), CodeInsufficientStock)
	if it := r.item("h", "e1"); it.Stock != 0 || committed != granted || *it.Granted != 0 {
		t.Fatalf("after the adjustment of %d and a's %d committed: home %+v granted %d; want stock 0", avail, committed, it, *it.Granted)
	}
}
