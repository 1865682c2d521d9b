package region

import (
	"strings"
	"testing"
	"time"

	"github.com/latticedb/lattice/region/config"
	"github.com/latticedb/lattice/region/store"
)

// TestEscrowReleaseLostReturnKeptNeverOversells: region a (durability
// everysec) releases a hold it decided from its rights to e1, and once the
// sku is idle returns every unused right to the home h, the released
// units among them; the return replicates and h reserves its whole stock.
// Then a loses power before its next fsync: the release (which only a's
// own store holds) is gone, the return comes back from h by catch-up.
// docs/configuration.md (Escrow): "held + committed ≤ stock holds at every
// instant, whatever is lost, duplicated, reordered, partitioned or
// restarted"; README, Limitations, on transitions a lost tail takes: "the
// units count as held and committed at once, so fewer are sold, never
// more". The hold a's ledger shows again must not be committable from
// units the home sold.
func TestEscrowReleaseLostReturnKeptNeverOversells(t *testing.T) {
	r := newEscrowRig(t)
	h := r.nodes["h"]
	held, a, synced := releasedThenReturned(t, r)
	everysec := store.Options{Durability: config.DurabilityEverySec}
	if g := r.item("h", "e1").Granted; g == nil || *g != 0 {
		t.Fatalf("test setup: after a's idle return h counts %v of rights out, want 0", g)
	}
	// The home sells its whole stock.
	homeHold := must[Reservation](t)(h.Reserve(bg, "e1", 10, time.Hour, Idem{}))

	// a loses power before its next fsync and catches up.
	before := a.Self()
	r.powerLoss("a", synced)
	r.openEscrowWith("a", everysec, nil)
	a = r.nodes["a"]
	if a.Self() == before || !a.CatchingUp() {
		t.Fatalf("test setup: after the power loss a is %s (was %s), catching up %v", a.Self(), before, a.CatchingUp())
	}
	r.catchUp("a", "e1")
	_, units := r.openUnits("e1")
	st := must[Reservation](t)(a.GetReservation(bg, held.ID))
	t.Logf("after catch-up: %s reads %s; %d units held in the ledgers of a stock of 10", held.ID, st.State, units)

	var committed int64
	if c, err := a.Commit(bg, held.ID, Idem{}); err == nil && c.State == StateCommitted {
		committed += held.Qty
	}
	if c, err := h.Commit(bg, homeHold.ID, Idem{}); err == nil && c.State == StateCommitted {
		committed += homeHold.Qty
	}
	r.deliver(nil)
	if units > 10 || committed > 10 {
		t.Fatalf("a's released hold %s came back held with its units already returned to h and sold there: "+
			"%d units held in the ledgers after catch-up, %d committed, of a stock of 10 (h now shows stock %d)",
			held.ID, units, committed, r.item("h", "e1").Stock)
	}
}

// releasedThenReturned sets up the lost-release tests on an escrow rig:
// h restocks e1 with 10, a holds 3 of them from its rights, restarts
// cleanly with everysec (what its file holds is synced: synced is the
// file's size then), releases the hold and, idle, returns every unused
// right, the released units among them, which h applies.
func releasedThenReturned(t *testing.T, r *escrowRig) (held Reservation, a *testNode, synced int64) {
	t.Helper()
	must[Item](t)(r.nodes["h"].Restock(bg, "e1", 10))
	r.deliver(nil)
	held = must[Reservation](t)(r.nodes["a"].Reserve(bg, "e1", 3, time.Hour, Idem{}))
	if !strings.HasPrefix(held.ID, "a:") {
		t.Fatalf("test setup: reservation %s not decided from a's rights", held.ID)
	}
	r.deliver(nil)
	r.nodes["a"].close()
	r.openEscrowWith("a", store.Options{Durability: config.DurabilityEverySec}, nil)
	a = r.nodes["a"]
	if a.CatchingUp() {
		t.Fatal("test setup: a catching up after a clean restart")
	}
	synced, err := a.store.SyncNow()
	if err != nil {
		t.Fatal(err)
	}
	if rel := must[Reservation](t)(a.Release(bg, held.ID, Idem{})); rel.State != StateReleased {
		t.Fatalf("test setup: release of %s: %+v", held.ID, rel)
	}
	r.clock.Advance(EscrowIdle + time.Second)
	a.ReturnIdleRights()
	r.deliver(nil)
	return held, a, synced
}
