package region

import (
	"bytes"
	"fmt"
	"github.com/latticedb/lattice/region/store"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/latticedb/lattice/crdt"
)

// crash stops a node as a killed process would: no clean close of the
// store (no close marker, the identity file still says "running").
func (tn *testNode) crash() {
	tn.Node.Close()
	tn.store.CloseUnclean()
}

func reopenNode(t *testing.T, tn *testNode) *testNode {
	t.Helper()
	return openNode(t, filepath.Dir(filepath.Dir(tn.path)), tn.clock)
}

// reopenWithPeers reopens a node that replicates with peers (so that it
// catches up only once it has synced with them).
func reopenWithPeers(t *testing.T, tn *testNode, peers ...string) *testNode {
	t.Helper()
	st, err := OpenStore(tn.path, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	n, err := NewNode(Options{Name: "us-east", Store: st, Clock: tn.clock, ExpiryInterval: time.Hour, PeerRegions: peers})
	if err != nil {
		t.Fatal(err)
	}
	out := &testNode{Node: n, store: st, path: tn.path, clock: tn.clock}
	t.Cleanup(out.close)
	return out
}

// lastTxStart returns the offset where the last transaction of the store
// file at path begins.
func lastTxStart(t *testing.T, path string) int64 {
	t.Helper()
	txs, err := store.Transactions(path)
	if err != nil || len(txs) == 0 {
		t.Fatalf("transactions of %s: %v (%d)", path, err, len(txs))
	}
	return txs[len(txs)-1].Start
}

func TestIncarnationAcrossStops(t *testing.T) {
	n := newNode(t)
	k0 := n.store.Incarnation()
	if k0 != 0 || n.Self() != "us-east" {
		t.Fatalf("a new store is incarnation 0, got %s", n.Self())
	}
	must[Cart](t)(n.AddItem(bg, "c", "a", 1))
	n.close()

	n = reopenNode(t, n)
	if n.store.Incarnation() != k0 {
		t.Fatalf("after a clean stop: %s, want the same incarnation", n.Self())
	}
	n.crash() // nothing written in this run

	n = reopenNode(t, n)
	if n.store.Incarnation() != k0 {
		t.Fatalf("after an unclean stop of a run that wrote nothing: %s, want the same incarnation", n.Self())
	}
	must[Cart](t)(n.AddItem(bg, "c", "b", 1))
	n.crash()

	n = reopenNode(t, n)
	k1 := n.store.Incarnation()
	if k1 <= k0 || n.Self() != crdt.Incarnation("us-east", k1) {
		t.Fatalf("after an unclean stop of a run that wrote: %s, want a new incarnation", n.Self())
	}
	must[Cart](t)(n.AddItem(bg, "c", "c", 1))
	n.close()

	// A clean stop, then the file loses its tail while stopped.
	at := lastTxStart(t, n.path)
	if err := os.Truncate(n.path, at); err != nil {
		t.Fatal(err)
	}
	n = reopenNode(t, n)
	if k2 := n.store.Incarnation(); k2 <= k1 {
		t.Fatalf("after a lost tail: incarnation %d, want past %d", k2, k1)
	}
	n.close()

	// A torn tail.
	fi, _ := os.Stat(n.path)
	n = reopenNode(t, n)
	k3 := n.store.Incarnation()
	must[Cart](t)(n.AddItem(bg, "c", "d", 1))
	n.close()
	fi2, _ := os.Stat(n.path)
	if err := os.Truncate(n.path, fi.Size()+(fi2.Size()-fi.Size())/2); err != nil {
		t.Fatal(err)
	}
	n = reopenNode(t, n)
	if k4 := n.store.Incarnation(); k4 <= k3 {
		t.Fatalf("after a torn tail: incarnation %d, want past %d", k4, k3)
	}
}

// TestLostTailNeverReusesADot is the divergence the incarnations prevent:
// a write that reached a peer is lost from the region's file; the region's
// next write to the same cart must not take the lost write's dot.
func TestLostTailNeverReusesADot(t *testing.T) {
	n := newNode(t)
	must[Cart](t)(n.AddItem(bg, "c", "a", 1))
	at := fileSize(t, n.path)
	must[Cart](t)(n.AddItem(bg, "c", "lost", 1))
	peer, err := n.ReadObjects([]string{"c"}, nil) // the peer got the write
	if err != nil {
		t.Fatal(err)
	}
	n.crash()
	if err := os.Truncate(n.path, at); err != nil {
		t.Fatal(err)
	}
	n = reopenNode(t, n)
	must[Cart](t)(n.AddItem(bg, "c", "new", 1))
	mine, err := n.ReadObjects([]string{"c"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if bad := mine.Carts["c"].Conflicts(peer.Carts["c"]); len(bad) != 0 {
		t.Fatalf("dots issued twice: %v", bad)
	}
	joined := mine.Carts["c"].Clone()
	joined.Join(peer.Carts["c"])
	if got := fmt.Sprint(joined.Items()); got != "[{a 1} {lost 1} {new 1}]" {
		t.Fatalf("joined cart %s", got)
	}
	// The peer's copy joined into the region: nothing divergent.
	if err := n.ApplyRemote(nil, &crdt.Group{Carts: peer.Carts}); err != nil {
		t.Fatal(err)
	}
	if d := n.Divergent(); len(d) != 0 {
		t.Fatalf("divergent keys %v", d)
	}
}

func TestDivergentDotIsReported(t *testing.T) {
	n := newNode(t)
	must[Cart](t)(n.AddItem(bg, "c", "a", 1))
	g, err := n.ReadObjects([]string{"c"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	// A peer holding the same dot with another line.
	forged := &crdt.Cart{Entries: map[crdt.Dot]crdt.Line{}}
	for d := range g.Carts["c"].Entries {
		forged.Entries[d] = crdt.Line{SKU: "other", Kind: crdt.KindAdd, N: 1}
		forged.Ctx.Insert(d)
	}
	if err := n.ApplyRemote(nil, &crdt.Group{Carts: map[string]*crdt.Cart{"c": forged}}); err != nil {
		t.Fatal(err)
	}
	if w := n.Warnings(); len(w) != 1 || !strings.Contains(w[0], "divergent_keys") {
		t.Fatalf("warnings %q", w)
	}
	n.NoteUnrepaired("eu-west", []string{"c/c"})
	if w := n.Warnings(); len(w) != 2 || !strings.Contains(w[1], "eu-west") {
		t.Fatalf("warnings %q", w)
	}
	if d := n.Divergent(); len(d) != 1 || d[0] != "c/c" {
		t.Fatalf("divergent keys %v, want [c/c]", d)
	}
	st := n.Cluster()
	if len(st.DivergentKeys) != 1 {
		t.Fatalf("/v1/cluster lists %v", st.DivergentKeys)
	}
	// A later state of the key that joins without conflict clears it.
	if err := n.ApplyRemote(nil, &crdt.Group{Carts: g.Carts}); err != nil {
		t.Fatal(err)
	}
	if d := n.Divergent(); len(d) != 0 {
		t.Fatalf("divergent keys %v after a conflict-free join", d)
	}
}

func TestBackupAndRestore(t *testing.T) {
	n := newNode(t)
	must[Item](t)(n.Restock(bg, "w", 10))
	must[Cart](t)(n.AddItem(bg, "c", "a", 1))
	held := must[Reservation](t)(n.Reserve(bg, "w", 2, time.Minute, Idem{}))

	// A backup while writers run.
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := n.AddItem(bg, fmt.Sprintf("busy-%d", w), fmt.Sprintf("s%d", i%50), 1); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	var snap bytes.Buffer
	if _, err := store.Backup(n.path, &snap); err != nil {
		t.Fatal(err)
	}
	close(stop)
	wg.Wait()
	backup := filepath.Join(t.TempDir(), "backup.db")
	if err := os.WriteFile(backup, snap.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}

	// After the backup: more writes, a commit.
	must[Cart](t)(n.AddItem(bg, "c", "after", 1))
	must[Reservation](t)(n.Commit(bg, held.ID, Idem{}))
	if err := store.Restore(n.path, backup); err == nil || !strings.Contains(err.Error(), "another process") {
		t.Fatalf("restore over a running store: %v", err)
	}
	k0 := n.store.Incarnation()
	n.close()
	if err := store.Restore(n.path, backup); err != nil {
		t.Fatal(err)
	}
	n = reopenWithPeers(t, n, "eu-west", "ap-south")
	if n.store.Incarnation() <= k0 || !n.CatchingUp() {
		t.Fatalf("restored: incarnation %d (was %d), catching up %v", n.store.Incarnation(), k0, n.CatchingUp())
	}
	if c := must[Cart](t)(n.GetCart(bg, "c")); qtyOf(c, "after") != 0 || qtyOf(c, "a") != 1 {
		t.Fatalf("restored cart %+v", c)
	}
	if w := n.Warnings(); len(w) != 1 || !strings.Contains(w[0], "catching up") {
		t.Fatalf("warnings while catching up: %q", w)
	}
	// Until it has caught up, it decides nothing.
	_, err := n.Reserve(bg, "w", 1, time.Minute, Idem{})
	wantCode(t, err, CodeUnavailable)
	_, err = n.Commit(bg, held.ID, Idem{})
	wantCode(t, err, CodeUnavailable)

	n.SyncedWith("eu-west", "", []string{"eu-west", "ap-south"})
	if !n.CatchingUp() {
		t.Fatal("caught up after one of two peers")
	}
	n.SyncedWith("ap-south", "", []string{"eu-west", "ap-south"})
	if n.CatchingUp() {
		t.Fatal("still catching up after every peer")
	}
	if w := n.Warnings(); len(w) != 0 {
		t.Fatalf("warnings after catching up: %q", w)
	}
	// The restored ledger's hold is held again: its commit after the
	// snapshot reached no peer (there is none), so it is lost with the
	// snapshot's tail, and the hold expires by its ttl or commits anew.
	r := must[Reservation](t)(n.GetReservation(bg, held.ID))
	if r.State != StateHeld {
		t.Fatalf("restored hold is %s, want held", r.State)
	}
	nr := must[Reservation](t)(n.Reserve(bg, "w", 1, time.Minute, Idem{}))
	if nr.ID == held.ID {
		t.Fatalf("reservation id %s reused", nr.ID)
	}
	// Catching up is durable: a restart does not go back to it.
	n.close()
	n = reopenNode(t, n)
	if n.CatchingUp() {
		t.Fatal("catching up again after a restart")
	}
}

func TestRestoreRefusesNonSnapshots(t *testing.T) {
	n := newNode(t)
	must[Cart](t)(n.AddItem(bg, "c", "a", 1))
	n.close()
	junk := filepath.Join(t.TempDir(), "junk")
	if err := os.WriteFile(junk, []byte("not a store\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(n.path)
	if err := store.Restore(n.path, junk); err == nil {
		t.Fatal("restored a file that is no snapshot")
	}
	if after, _ := os.ReadFile(n.path); !bytes.Equal(before, after) {
		t.Fatal("a refused restore changed the store")
	}
}
