package region

import (
	"testing"
	"time"

	"github.com/latticedb/lattice/crdt"
)

// TestItemDamageFoundByRepairNotKeptBelowOwnCommits: as
// TestItemDamagedWhileRunningNotRepairedBelowOwnCommits, but the home's
// commit of 4 was made before a clean restart, and the damaged item is
// first read by the repair itself: ap-south's anti-entropy push of its
// state of w (stock 10, without the commit) arrives before any other read
// of w. docs/operations.md, Damaged values: a value that fails its
// checksum after the start "says the process's memory is not to be
// trusted, so the store fails there and then", and "the region must be
// restarted; the start checks every value again". A repair from one
// peer may lack this region's own writes that another holds
// (store.checksumFailed), so the failing store must not keep it: after
// the restart the home must not sell the units its commit, which
// eu-west holds, already sold. A stock of 10 never has more than 10
// units committed.
func TestItemDamageFoundByRepairNotKeptBelowOwnCommits(t *testing.T) {
	r, first, stale := commitOneLags(t)
	r.restart("us-east", true)
	h := r.nodes["us-east"]

	flipInMemory(t, h.store, prefixItem+"w")
	if h.store.Failed() {
		t.Fatal("test setup: the store failed before the repair read w")
	}
	// ap-south's anti-entropy push of its state of w: its read of w is
	// the first to find the damage.
	err := h.ApplyReflecting(&crdt.Context{}, stale, &crdt.Context{})
	t.Logf("ap-south's state of w at the home: %v; store failed: %v", err, h.store.Failed())

	// The region is restarted, as the docs say it must be.
	r.restart("us-east", true)
	h = r.nodes["us-east"]

	sold := first.Qty
	res, err := h.Reserve(bg, "w", 10, time.Hour, Idem{})
	if err == nil {
		if c, err := h.Commit(bg, res.ID, Idem{}); err == nil && c.State == StateCommitted {
			sold += c.Qty
		}
	}
	r.deliverAll()
	if sold > 10 {
		t.Fatalf("the home's item w, found damaged in memory by the read of ap-south's repair (which lacks the commit of %d), "+
			"was rewritten from that state as the store failed; after the restart the home reserved and committed 10 more (%v): "+
			"%d units committed of a stock of 10; eu-west now shows stock %d",
			first.Qty, err, sold, r.itemW(t, "eu-west").Stock)
	}
}
