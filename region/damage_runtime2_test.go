package region

import (
	"testing"
	"time"

	"github.com/latticedb/lattice/crdt"
)

// TestItemDamagedWhileRunningNotRepairedBelowOwnCommits: the home
// us-east commits 4 of a stock of 10; the commit's delta reaches
// eu-west, not yet ap-south. Then the home's stored item is found
// damaged while the region runs (a bit flipped in memory, found by a
// read). docs/operations.md, Damaged values: the damaged stock value is
// left out of the digest "whether the damage was found when the store
// opened or by a read while the region runs", so a peer's state repairs
// it; and a repair "comes from the first peer that answers, whose state
// may lack this region's own writes that another peer holds, and the
// region must neither issue their dots again nor decide from stock that
// misses its own commits". Here ap-south's state (stock 10, without the
// commit) is the first to arrive, as its anti-entropy push would. The
// home must then not sell units that the commit eu-west holds already
// sold: a stock of 10 never has more than 10 units committed.
func TestItemDamagedWhileRunningNotRepairedBelowOwnCommits(t *testing.T) {
	r, first, stale := commitOneLags(t)
	h := r.nodes["us-east"]

	damageRound6InMemory(t, h.store, prefixItem+"w")
	wantCode(t, second2(h.GetItem(bg, "w", false)), CodeUnavailable)
	// ap-south's anti-entropy push of its state of w (refused once the
	// damage has failed the store).
	if err := h.ApplyReflecting(&crdt.Context{}, stale, &crdt.Context{}); err != nil {
		t.Logf("ap-south's state of w at the home: %v", err)
	}

	sold := first.Qty
	res, err := h.Reserve(bg, "w", 10, time.Hour, Idem{})
	if err == nil {
		if c, err := h.Commit(bg, res.ID, Idem{}); err == nil && c.State == StateCommitted {
			sold += c.Qty
		}
	}
	r.deliverAll()
	if sold > 10 {
		t.Fatalf("the home, its item found damaged while running and repaired from ap-south's state (without its commit of %d), "+
			"reserved and committed 10 more (%v): %d units committed of a stock of 10; eu-west now shows stock %d",
			first.Qty, err, sold, r.itemW(t, "eu-west").Stock)
	}
}

// commitOneLags sets up the rig of the damage-while-running tests: us-east
// is the home of w, restocked to 10 everywhere; it reserves and commits
// 4, whose deltas reach eu-west and not ap-south. It returns ap-south's
// state of w from before the commit (stock 10) and the reservation.
func commitOneLags(t *testing.T) (*semRig, Reservation, *crdt.Group) {
	t.Helper()
	r := newSemRigHome(t, func(string) string { return "us-east" }, "us-east", "eu-west", "ap-south")
	h := r.nodes["us-east"]
	must[Item](t)(h.Restock(bg, "w", 10))
	r.deliverAll()
	stale, err := r.nodes["ap-south"].ReadObjects(nil, []string{"w"})
	if err != nil {
		t.Fatal(err)
	}
	from := r.published("us-east")
	first := must[Reservation](t)(h.Reserve(bg, "w", 4, time.Hour, Idem{}))
	if c := must[Reservation](t)(h.Commit(bg, first.ID, Idem{})); c.State != StateCommitted {
		t.Fatalf("test setup: commit of %s: %+v", first.ID, c)
	}
	r.mu.Lock()
	sent := append([]Delta(nil), r.log["us-east"][from:]...)
	r.mu.Unlock()
	for _, d := range sent {
		r.apply("eu-west", d) // ap-south lags
	}
	if it := r.itemW(t, "eu-west"); it.Stock != 6 {
		t.Fatalf("test setup: eu-west shows stock %d after the commit, want 6", it.Stock)
	}
	return r, first, stale
}

func (r *semRig) itemW(t *testing.T, name string) Item {
	t.Helper()
	it, err := r.nodes[name].GetItem(bg, "w", false)
	if err != nil {
		t.Fatalf("read w at %s: %v", name, err)
	}
	return it
}
