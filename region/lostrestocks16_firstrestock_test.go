package region

import (
	"testing"
	"time"

	"github.com/latticedb/lattice/region/config"
	"github.com/latticedb/lattice/region/store"
)

// TestReturnLostAtHomeWithoutOwnRestocksNotRestockedTwice: p1's stock is
// restocked at region a (restocks are served by every region), so the
// home h's replica has never restocked p1 itself. h (durability everysec)
// takes a checkout's return of a committed reservation of p1 (4 units put
// back: h's first restock of p1). The restock replicates to a and b, the
// answer is lost, and h loses power before its next fsync: its file reads
// the reservation committed again. h restarts as a new incarnation and
// catches up, which brings the restock back (docs/operations.md,
// Catch-up: a retried return "does not put its units back twice"). The
// coordinator's retry of the return under the same key must not put the 4
// units back again: stock would count 14 of 10 restocked, and the home
// would sell the 4 extra units.
func TestReturnLostAtHomeWithoutOwnRestocksNotRestockedTwice(t *testing.T) {
	r := newEscrowRig(t)
	must[Item](t)(r.nodes["a"].Restock(bg, "p1", 10))
	r.deliver(nil)
	h := r.nodes["h"]
	res := must[Reservation](t)(h.Reserve(bg, "p1", 4, time.Hour, Idem{}))
	must[Reservation](t)(h.Commit(bg, res.ID, Idem{}))
	r.deliver(nil)

	everysec := store.Options{Durability: config.DurabilityEverySec}
	h.close()
	r.openEscrowWith("h", everysec, nil)
	h = r.nodes["h"]
	synced, err := h.store.SyncNow()
	if err != nil {
		t.Fatal(err)
	}
	resp, stock := r.returnLostAndRetried(t, res.ID, synced)
	if stock > 10 {
		t.Fatalf("the coordinator's retry of the return of %s (4 units, already put back and held by every peer) put them back again: "+
			"stock %d of 10 restocked and none sold (answer %+v); catch-up did not count the lost restock because h's store held no earlier restock of p1 by that replica",
			res.ID, stock, resp.Res)
	}
}

// TestReturnLostByLaterIncarnationNotRestockedTwice: the home h restocks
// p1 (10 units) itself, then loses power and goes on as a new incarnation
// (catching up), as docs/operations.md (Incarnations) describes. That
// incarnation decides, commits and returns a reservation of p1 (a
// checkout undone; its first restock of p1) with durability everysec; the
// restock replicates, the answer is lost, and h loses power again before
// its next fsync. Catch-up brings the restock back to the third
// incarnation, whose file reads the reservation committed. The
// coordinator's retry of the return under the same key must not put the
// 4 units back a second time.
func TestReturnLostByLaterIncarnationNotRestockedTwice(t *testing.T) {
	r := newEscrowRig(t)
	everysec := store.Options{Durability: config.DurabilityEverySec}
	h := r.nodes["h"]
	h.close()
	r.openEscrowWith("h", everysec, nil)
	h = r.nodes["h"]
	synced, err := h.store.SyncNow()
	if err != nil {
		t.Fatal(err)
	}
	must[Item](t)(h.Restock(bg, "p1", 10))
	if synced, err = h.store.SyncNow(); err != nil {
		t.Fatal(err)
	}
	r.deliver(nil)
	r.powerLoss("h", synced) // nothing lost; the next run is a new incarnation all the same
	r.openEscrowWith("h", everysec, nil)
	h = r.nodes["h"]
	escrowCatchUp(t, h, r, "p1")
	if h.CatchingUp() {
		t.Fatal("test setup: h still catching up after its first power loss")
	}
	second := h.Self()

	res := must[Reservation](t)(h.Reserve(bg, "p1", 4, time.Hour, Idem{}))
	must[Reservation](t)(h.Commit(bg, res.ID, Idem{}))
	r.deliver(nil)
	if synced, err = h.store.SyncNow(); err != nil {
		t.Fatal(err)
	}
	resp, stock := r.returnLostAndRetried(t, res.ID, synced)
	if stock > 10 {
		t.Fatalf("the coordinator's retry of the return of %s (4 units, put back by incarnation %s and held by every peer) put them back again: "+
			"stock %d of 10 restocked and none sold (answer %+v)", res.ID, second, stock, resp.Res)
	}
}
