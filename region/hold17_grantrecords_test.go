package region

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/latticedb/lattice/crdt"
	"github.com/latticedb/lattice/region/config"
	"github.com/latticedb/lattice/region/store"
)

// TestEscrowGrantsOfManyIncarnationsKeepItemReadable: a cluster of 64
// regions (config.MaxRegions) whose escrow sku e1 is homed at h. Every
// incarnation of h writes its grants under its own replica id, one escrow
// record per region it grants to. h goes through a dozen incarnations
// (power losses with durability everysec; each reopens as a new
// incarnation and catches up), and in each it grants every other region
// rights, as demand at every region would have it ask. That is 13
// replica ids of h, far inside the cluster's lifetime budget of replica
// ids (crdt.MaxReplicas), yet 63 × 13 grant records exceed
// crdt.MaxEscrowRecords: the item the home writes no longer decodes, at
// the home or at any peer, and every decision on the sku (reservations,
// commits, restocks, further grants) is refused for good. The home must
// keep the item within what it can read back: a grant it cannot record is
// to be refused (the reservation then goes to the home, as when rights
// fall short), not written.
func TestEscrowGrantsOfManyIncarnationsKeepItemReadable(t *testing.T) {
	dir := t.TempDir()
	clock := newFakeClock()
	path := filepath.Join(dir, "h", "data.db")
	var peers []string
	for i := range config.MaxRegions - 1 {
		peers = append(peers, fmt.Sprintf("r%d", i))
	}
	everysec := store.Options{Durability: config.DurabilityEverySec}
	open := func() *testNode {
		st, err := OpenStore(path, everysec)
		if err != nil {
			t.Fatal(err)
		}
		n, err := NewNode(Options{Name: "h", Store: st, Clock: clock, ExpiryInterval: time.Hour,
			Home:        func(string) string { return "h" },
			Escrow:      func(string) bool { return true },
			PeerRegions: peers,
		})
		if err != nil {
			t.Fatal(err)
		}
		tn := &testNode{Node: n, store: st, path: path, clock: clock}
		t.Cleanup(tn.close)
		if n.CatchingUp() {
			for _, p := range peers {
				n.SyncedWith(p, "", peers)
			}
		}
		if n.CatchingUp() {
			t.Fatal("test setup: h still catching up")
		}
		return tn
	}
	h := open()
	must[Item](t)(h.Restock(bg, "e1", 1_000_000))

	incarnations := map[crdt.ReplicaID]bool{}
	for round := range 13 {
		incarnations[h.Self()] = true
		for _, p := range peers {
			resp := h.ServeForwarded(bg, &HomeRequest{Op: OpGrant, SKU: "e1", Qty: 1, Delta: 1, From: p})
			if resp.Err != nil && resp.Err.Code != CodeInsufficientStock {
				t.Fatalf("round %d (%d incarnations of h): a grant to %s: %v", round, len(incarnations), p, resp.Err)
			}
		}
		if _, err := h.GetItem(bg, "e1", false); err != nil {
			t.Fatalf("after round %d of grants (%d incarnations of h, %d replica ids of a budget of %d), h cannot read e1: %v",
				round, len(incarnations), len(incarnations)+len(peers), crdt.MaxReplicas, err)
		}
		// A power loss with nothing lost: h reopens as a new incarnation.
		if _, err := h.store.SyncNow(); err != nil {
			t.Fatal(err)
		}
		before := h.Self()
		h.Node.Close()
		if err := h.store.CloseUnclean(); err != nil {
			t.Fatal(err)
		}
		h = open()
		if h.Self() == before {
			t.Fatalf("test setup: h reopened as %s after an unclean stop", before)
		}
	}
	if _, err := h.Reserve(bg, "e1", 1, time.Minute, Idem{}); err != nil {
		t.Fatalf("after %d incarnations of h granted rights, a reservation of e1 at its home: %v", len(incarnations), err)
	}
}
