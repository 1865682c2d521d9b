package region

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/latticedb/lattice/region/store"
)

// restoreFrom restores node name of the rig from snap and reopens it (in
// catch-up).
func (r *escrowRig) restoreFrom(name string, snap []byte) *testNode {
	r.t.Helper()
	n := r.nodes[name]
	n.close()
	backup := filepath.Join(r.t.TempDir(), name+".backup")
	if err := os.WriteFile(backup, snap, 0o644); err != nil {
		r.t.Fatal(err)
	}
	if err := store.Restore(n.path, backup); err != nil {
		r.t.Fatal(err)
	}
	r.open(name)
	return r.nodes[name]
}

// catchUp brings node name every peer's state of skus (what anti-entropy
// would) and reports both rounds complete.
func (r *escrowRig) catchUp(name string, skus ...string) {
	r.t.Helper()
	var peers []string
	for _, p := range escrowRegions {
		if p != name {
			peers = append(peers, p)
		}
	}
	for _, p := range peers {
		g, err := r.nodes[p].ReadObjects(nil, skus)
		if err != nil {
			r.t.Fatal(err)
		}
		if err := r.nodes[name].ApplyRemote(nil, g); err != nil {
			r.t.Fatal(err)
		}
	}
	for _, p := range peers {
		r.nodes[name].SyncedWith(p, "", peers)
	}
	if r.nodes[name].CatchingUp() {
		r.t.Fatalf("%s still catching up", name)
	}
}

// TestRestoredHomeRepublishesHeldOfLostLedger: the home is restored from a
// snapshot taken before a sku's first reservation. The hold (and the
// sku's whole ledger) is lost with the snapshot's tail; its held units
// had reached the other regions. Once caught up, the home must publish
// the held units its ledger now holds (none), as it does for skus whose
// ledger survived: otherwise every other region shows the lost hold's
// units reserved for good — past its ttl, past any anti-entropy (all
// regions hold the same stale register).
func TestRestoredHomeRepublishesHeldOfLostLedger(t *testing.T) {
	r := newEscrowRig(t)
	h := r.nodes["h"]
	must[Item](t)(h.Restock(bg, "p1", 10))
	r.deliver(nil)
	var snap bytes.Buffer
	if _, err := store.Backup(h.path, &snap); err != nil {
		t.Fatal(err)
	}
	// After the snapshot: the sku's first hold; its held units replicate.
	must[Reservation](t)(r.nodes["a"].Reserve(bg, "p1", 4, time.Minute, Idem{}))
	r.deliver(nil)
	if it := r.item("a", "p1"); it.Reserved != 4 {
		t.Fatalf("a shows %+v before the restore", it)
	}

	h = r.restoreFrom("h", snap.Bytes())
	r.catchUp("h", "p1")
	r.deliver(nil)

	// The ttl of the lost hold passes; the home expires what is due.
	r.clock.Advance(2 * time.Minute)
	for _, n := range r.nodes {
		if err := n.ExpireDue(); err != nil {
			t.Fatal(err)
		}
	}
	r.deliver(nil)
	home := must[Item](t)(r.nodes["a"].GetItem(bg, "p1", true))
	if home.Reserved != 0 || home.Available != 10 {
		t.Fatalf("the home shows %+v, want nothing reserved", home)
	}
	for _, name := range []string{"a", "b"} {
		if it := r.item(name, "p1"); it.Reserved != home.Reserved || it.Available != home.Available {
			t.Errorf("%s shows %d reserved, %d available for good; the home %d reserved, %d available", name, it.Reserved, it.Available, home.Reserved, home.Available)
		}
	}
}
