package region

import (
	"testing"
	"time"

	"github.com/latticedb/lattice/region/config"
	"github.com/latticedb/lattice/region/store"
)

// TestEscrowUncoveredHoldLeavesLedgerWhenHomeHoldsNone: as in
// TestEscrowReleaseLostReturnKeptNeverOversells, region a's release of a
// hold decided from its rights is lost to a power loss while the return
// of its units came back by catch-up; here the home has since sold its
// whole stock and committed the sale, so it publishes no held units.
// At the end of catch-up a releases the hold its rights no longer cover
// (its record reads released and its commit is refused); its ledger must
// then no longer hold the hold's units either: units a's ledger holds
// keep as many of its rights from being used or returned (freeRights,
// returnIdleRights) until the released hold's expiry. With 6 units
// restocked and none held by any hold a client can commit, a reservation
// of 4 at a must be granted.
func TestEscrowUncoveredHoldLeavesLedgerWhenHomeHoldsNone(t *testing.T) {
	r := newEscrowRig(t)
	h := r.nodes["h"]
	held, a, synced := releasedThenReturned(t, r)
	everysec := store.Options{Durability: config.DurabilityEverySec}
	// The home sells its whole stock: held, then committed.
	sold := must[Reservation](t)(h.Reserve(bg, "e1", 10, time.Hour, Idem{}))
	if c := must[Reservation](t)(h.Commit(bg, sold.ID, Idem{})); c.State != StateCommitted {
		t.Fatalf("test setup: commit at h: %+v", c)
	}

	r.powerLoss("a", synced)
	r.openEscrowWith("a", everysec, nil)
	a = r.nodes["a"]
	if !a.CatchingUp() {
		t.Fatal("test setup: a not catching up after the power loss")
	}
	r.catchUp("a", "e1")
	r.deliver(nil)

	st := must[Reservation](t)(a.GetReservation(bg, held.ID))
	if st.State != StateReleased {
		t.Fatalf("test setup: after catch-up %s reads %s, want released", held.ID, st.State)
	}
	// Stock comes in; nothing is held anywhere by a hold a client can
	// commit, so a reservation of 4 of the 6 must be granted.
	must[Item](t)(h.Restock(bg, "e1", 6))
	r.deliver(nil)
	res, err := a.Reserve(bg, "e1", 4, time.Hour, Idem{})
	r.deliver(nil)
	if err != nil {
		n, units := r.openUnits("e1")
		t.Fatalf("a reservation of 4 of a stock of 6 answered %v: the ledgers still hold %d holds of %d units after %s (read %s) "+
			"was released at the end of catch-up; item at h: %+v",
			err, n, units, held.ID, st.State, r.item("h", "e1"))
	}
	t.Logf("reserved %s", res.ID)
}
