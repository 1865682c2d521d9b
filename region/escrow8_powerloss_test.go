package region

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/latticedb/lattice/region/config"
	"github.com/latticedb/lattice/region/store"
)

// openEscrowWith opens region name of the escrow rig on its store file with
// the given store options (escrowRig.open uses the defaults), and node
// options changed by tweak (nil: none).
func (r *escrowRig) openEscrowWith(name string, opts store.Options, tweak func(*Options)) {
	path := filepath.Join(r.dir, name, "data.db")
	st, err := OpenStore(path, opts)
	if err != nil {
		r.t.Fatal(err)
	}
	var peers []string
	for _, p := range escrowRegions {
		if p != name {
			peers = append(peers, p)
		}
	}
	o := Options{Name: name, Store: st, Clock: r.clock, ExpiryInterval: time.Hour,
		Home:        func(string) string { return "h" },
		Escrow:      func(sku string) bool { return strings.HasPrefix(sku, "e") },
		Publisher:   rigPub{r, name},
		Forwarder:   rigFwd{r, name},
		PeerRegions: peers,
		Background:  func(f func()) { f() },
	}
	if tweak != nil {
		tweak(&o)
	}
	n, err := NewNode(o)
	if err != nil {
		r.t.Fatal(err)
	}
	tn := &testNode{Node: n, store: st, path: path, clock: r.clock}
	r.nodes[name] = tn
	r.t.Cleanup(tn.close)
}

// powerLoss stops region name as a power loss would with everysec: no
// clean close, and the store file cut back to size (what the last fsync
// covered).
func (r *escrowRig) powerLoss(name string, size int64) {
	r.t.Helper()
	tn := r.nodes[name]
	tn.Node.Close()
	if err := tn.store.CloseUnclean(); err != nil {
		r.t.Fatal(err)
	}
	if err := os.Truncate(tn.path, size); err != nil {
		r.t.Fatal(err)
	}
}

// TestEscrowPowerLossNeverReissuesReservationID: with durability
// everysec, a region decides a hold of an escrow sku from its rights
// (acknowledged once in the file), then loses power before the next fsync.
// docs/operations.md (Durability): "Either way the region goes on as a new
// incarnation, so its new writes are never confused with the lost ones."
// The region's next reservation must therefore not carry the id the lost
// hold was acknowledged with: the client holding that id would commit or
// release another shopper's hold with it.
func TestEscrowPowerLossNeverReissuesReservationID(t *testing.T) {
	r := newEscrowRig(t)
	h := r.nodes["h"]
	must[Item](t)(h.Restock(bg, "e1", 100))
	r.deliver(nil)
	// a gets rights (and issues its first reservation number).
	first := must[Reservation](t)(r.nodes["a"].Reserve(bg, "e1", 1, time.Hour, Idem{}))
	if !strings.HasPrefix(first.ID, "a:") {
		t.Fatalf("first reservation %s not decided from a's rights", first.ID)
	}
	r.deliver(nil)

	// A clean restart of a with everysec.
	everysec := store.Options{Durability: config.DurabilityEverySec}
	r.nodes["a"].close()
	r.openEscrowWith("a", everysec, nil)
	a := r.nodes["a"]
	synced, err := a.store.SyncNow()
	if err != nil {
		t.Fatal(err)
	}
	forwards := r.forward
	lost := must[Reservation](t)(a.Reserve(bg, "e1", 2, time.Hour, Idem{}))
	if !strings.HasPrefix(lost.ID, "a:") || r.forward != forwards {
		t.Fatalf("reservation %s not decided from a's rights alone (%d forwards)", lost.ID, r.forward-forwards)
	}
	inc := a.store.Incarnation()

	// Power loss before the next fsync: the hold is gone from the file.
	r.powerLoss("a", synced)
	r.openEscrowWith("a", everysec, nil)
	a = r.nodes["a"]
	t.Logf("incarnation %d before the power loss, %d after; catching up %v", inc, a.store.Incarnation(), a.CatchingUp())
	r.deliver(nil)

	next := must[Reservation](t)(a.Reserve(bg, "e1", 5, time.Hour, Idem{}))
	if next.ID == lost.ID {
		got := must[Reservation](t)(a.GetReservation(bg, lost.ID))
		t.Fatalf("after a power loss a reissued reservation id %s: acknowledged as a hold of 2 before it, "+
			"it now names a hold of %d (state %s) made for another shopper, and the first client's commit of %s would commit it",
			lost.ID, got.Qty, got.State, lost.ID)
	}
}
