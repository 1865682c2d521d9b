package region

import (
	"crypto/sha256"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/latticedb/lattice/crdt"
	"github.com/latticedb/lattice/region/config"
	"github.com/latticedb/lattice/region/store"
)

// TestRegionAddedAgainUnderItsNameRestocksReturns: docs/operations.md
// (Adding a region): "A removed region's name may be reused this way: the
// new region issues none of the old one's dots." The home h restocked p1
// (10 units) and is then replaced by a region of the same name on an
// empty data directory (a new store, which starts as a new incarnation in
// catch-up). Catch-up brings the item back from a and b, with the old h's
// restock: the new store never held it, lost nothing, and holds no
// reservation of the old h that a retried return could name (an old id is
// not found here). A reservation the new h then decides, commits and
// returns (a checkout undone) must put its units back: stock 10 again.
func TestRegionAddedAgainUnderItsNameRestocksReturns(t *testing.T) {
	r := newEscrowRig(t)
	h := r.nodes["h"]
	must[Item](t)(h.Restock(bg, "p1", 10))
	r.deliver(nil)

	// h is removed and added again under its name, on an empty directory.
	h.close()
	if err := os.RemoveAll(filepath.Join(r.dir, "h")); err != nil {
		t.Fatal(err)
	}
	r.openEscrowWith("h", store.Options{Shared: true}, nil)
	h = r.nodes["h"]
	if !h.CatchingUp() {
		t.Fatal("test setup: the new store of h does not catch up")
	}
	escrowCatchUp(t, h, r, "p1")
	if h.CatchingUp() {
		t.Fatal("test setup: h still catching up")
	}
	if st := r.item("h", "p1").Stock; st != 10 {
		t.Fatalf("test setup: h shows stock %d after catch-up, want 10", st)
	}

	res := must[Reservation](t)(h.Reserve(bg, "p1", 4, time.Hour, Idem{}))
	must[Reservation](t)(h.Commit(bg, res.ID, Idem{}))
	fp := sha256.Sum256([]byte("return-new"))
	resp := h.ServeForwarded(bg, &HomeRequest{Op: OpReturn, ID: res.ID, IdemKey: "saga-return-new", IdemFP: fp[:]})
	if resp.Err != nil || resp.Res == nil || resp.Res.State != StateReleased {
		t.Fatalf("the return: %+v", resp)
	}
	r.deliver(nil)
	if st := r.item("h", "p1").Stock; st != 10 {
		t.Fatalf("a return of %s (4 units, decided, committed and returned by the new h) left stock %d, want 10: "+
			"the old h's restock, brought by catch-up to a store that never held it and lost nothing, "+
			"was counted as a lost restock (m/lostrestocks/p1) and swallowed the return", res.ID, st)
	}
}

// TestLostPlainRestockLeavesThisIncarnationsReturnsAlone: the home h
// (everysec) restocks p1 by 3, which reaches its peers, then loses power
// before its next fsync: catch-up brings the restock back and counts it
// as lost. A reservation the new incarnation decides, commits and returns
// afterwards was never returned before: its units go back to stock in
// full (the count is for returns of reservations of earlier
// incarnations).
func TestLostPlainRestockLeavesThisIncarnationsReturnsAlone(t *testing.T) {
	r := newEscrowRig(t)
	h := r.nodes["h"]
	must[Item](t)(h.Restock(bg, "p1", 10))
	r.deliver(nil)
	everysec := store.Options{Durability: config.DurabilityEverySec}
	h.close()
	r.openEscrowWith("h", everysec, nil)
	h = r.nodes["h"]
	synced, err := h.store.SyncNow()
	if err != nil {
		t.Fatal(err)
	}
	must[Item](t)(h.Restock(bg, "p1", 3))
	r.deliver(nil)
	r.powerLoss("h", synced)
	r.openEscrowWith("h", everysec, nil)
	h = r.nodes["h"]
	escrowCatchUp(t, h, r, "p1")
	if h.CatchingUp() {
		t.Fatal("test setup: h still catching up")
	}
	if st := r.item("h", "p1").Stock; st != 13 {
		t.Fatalf("test setup: h shows stock %d after catch-up, want 13", st)
	}
	res := must[Reservation](t)(h.Reserve(bg, "p1", 2, time.Hour, Idem{}))
	must[Reservation](t)(h.Commit(bg, res.ID, Idem{}))
	fp := sha256.Sum256([]byte("return-new"))
	if resp := h.ServeForwarded(bg, &HomeRequest{Op: OpReturn, ID: res.ID, IdemKey: "return-new", IdemFP: fp[:]}); resp.Err != nil {
		t.Fatalf("return: %v", resp.Err)
	}
	if st := r.item("h", "p1").Stock; st != 13 {
		t.Fatalf("the return of %s, reserved and committed by the new incarnation, left stock %d, want 13: the lost plain restock was taken for it", res.ID, st)
	}
}

// escrowCatchUp has h, catching up, take sku's item from its peers a and
// b (their whole states, as anti-entropy brings them) and complete a
// round with each.
func escrowCatchUp(t *testing.T, h *testNode, r *escrowRig, sku string) {
	t.Helper()
	for _, p := range []string{"a", "b"} {
		g, err := r.nodes[p].ReadObjects(nil, []string{sku})
		if err != nil {
			t.Fatal(err)
		}
		if err := h.ApplyRemote(&crdt.Context{}, g); err != nil {
			t.Fatal(err)
		}
	}
	h.SyncedWith("a", "", []string{"a", "b"})
	h.SyncedWith("b", "", []string{"a", "b"})
}

// returnLostAndRetried has the home h (open with everysec) take a
// checkout's return of the committed reservation id of p1 under a key;
// the restock reaches a and b and the answer is lost; h loses power back
// to what synced covers, opens as a new incarnation and catches up, and
// the reservation reads committed again. Then the coordinator sends the
// return again under the same key. It returns h's answer to the retry and
// the stock h shows after it.
func (r *escrowRig) returnLostAndRetried(t *testing.T, id string, synced int64) (*HomeResponse, int64) {
	t.Helper()
	everysec := store.Options{Durability: config.DurabilityEverySec}
	h := r.nodes["h"]
	fp := sha256.Sum256([]byte("return-step"))
	ret := &HomeRequest{Op: OpReturn, ID: id, IdemKey: "saga-return-" + id, IdemFP: fp[:]}
	first := *ret
	if resp := h.ServeForwarded(bg, &first); resp.Err != nil || resp.Res == nil || resp.Res.State != StateReleased {
		t.Fatalf("the return: %+v", resp)
	}
	r.deliver(nil) // the restock reaches a and b; the answer is lost
	if st := r.item("a", "p1").Stock; st != 10 {
		t.Fatalf("test setup: a shows stock %d after the return, want 10", st)
	}
	before := h.Self()
	r.powerLoss("h", synced)
	r.openEscrowWith("h", everysec, nil)
	h = r.nodes["h"]
	if !h.CatchingUp() || h.Self() == before {
		t.Fatalf("test setup: after a power loss that cut its file h is %s (was %s), catching up %v", h.Self(), before, h.CatchingUp())
	}
	escrowCatchUp(t, h, r, "p1")
	if h.CatchingUp() {
		t.Fatal("test setup: h still catching up")
	}
	if rec := must[Reservation](t)(h.GetReservation(bg, id)); rec.State != StateCommitted {
		t.Fatalf("test setup: after the power loss h shows %s %s, want committed", id, rec.State)
	}
	again := *ret
	resp := h.ServeForwarded(bg, &again)
	r.deliver(nil)
	return resp, r.item("h", "p1").Stock
}
