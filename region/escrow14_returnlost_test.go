package region

import (
	"testing"
	"time"

	"github.com/latticedb/lattice/region/config"
	"github.com/latticedb/lattice/region/store"
)

// TestReturnOfCommittedLostAtHomeNotRestockedTwice: the home h (durability
// everysec) takes a checkout's return of a committed reservation of p1
// (OpReturn: its 4 units go back to stock). The restock replicates to a
// and b, the answer is lost on the way to the coordinator, and h loses
// power before its next fsync: the file no longer holds the return (the
// reservation reads committed again, its idempotency record is gone). h
// restarts as a new incarnation and catches up with every peer, which
// brings back the restock (docs/operations.md, Catch-up: "what the store
// lost may include reservation decisions its peers already count"). The
// coordinator then sends the return again, under the same key. The home
// must not put the 4 units back a second time: stock would count 4 units
// no one returned, and the home would sell them.
func TestReturnOfCommittedLostAtHomeNotRestockedTwice(t *testing.T) {
	r := newEscrowRig(t)
	h := r.nodes["h"]
	must[Item](t)(h.Restock(bg, "p1", 10))
	r.deliver(nil)
	res := must[Reservation](t)(h.Reserve(bg, "p1", 4, time.Hour, Idem{}))
	must[Reservation](t)(h.Commit(bg, res.ID, Idem{}))
	r.deliver(nil)

	h.close()
	r.openEscrowWith("h", store.Options{Durability: config.DurabilityEverySec}, nil)
	synced, err := r.nodes["h"].store.SyncNow()
	if err != nil {
		t.Fatal(err)
	}
	resp, stock := r.returnLostAndRetried(t, res.ID, synced)
	if stock > 10 {
		t.Fatalf("the coordinator's retry of the return of %s (4 units, already returned and counted by every peer) put them back again: stock %d of 10 restocked and none sold (answer %+v)",
			res.ID, stock, resp.Res)
	}
}
