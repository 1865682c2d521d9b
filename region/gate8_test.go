package region

import (
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/latticedb/lattice/region/regiontest"
	"github.com/latticedb/lattice/region/store"
)

// openGated opens region us-east (peers eu-west and ap-south, homes "h")
// on the store in dir with the given start gate.
func openGated(t *testing.T, dir string, gate time.Duration) *testNode {
	t.Helper()
	path := filepath.Join(dir, "us-east", "data.db")
	st, err := OpenStore(path, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	clock := newFakeClock()
	n, err := NewNode(Options{Name: "us-east", Store: st, Clock: clock, ExpiryInterval: time.Hour,
		HomesID: "h", PeerRegions: []string{"eu-west", "ap-south"}, StartGate: gate,
		CatchUpWait: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	tn := &testNode{Node: n, store: st, path: path, clock: clock}
	t.Cleanup(tn.close)
	return tn
}

// TestStartGateWaitsForEveryPeerAnswer: after a start with records that
// every peer runs its homes (Options.StartGate), a decision as a home
// waits until every peer has taken or turned down a first connection;
// answers arriving together from several goroutines (the transport's dial
// loops) open it once the last one is in, long before the gate's time; a
// refusal among them leaves the homes closed until a round with that peer
// shows its homes again. A gate whose time runs out after Close does no
// harm. Run under -race.
func TestStartGateWaitsForEveryPeerAnswer(t *testing.T) {
	dir := t.TempDir()
	peers := []string{"eu-west", "ap-south"}
	{ // Both peers were seen to run the same homes.
		n := openGated(t, dir, 0)
		for _, p := range peers {
			n.SyncedWith(p, "h", peers)
		}
		must[Item](t)(n.Restock(bg, "sku", 10))
		must[Reservation](t)(n.Reserve(bg, "sku", 1, time.Minute, Idem{}))
		n.close()
	}

	// Every peer takes a connection, from two goroutines at once.
	n := openGated(t, dir, time.Minute)
	_, err := n.Reserve(bg, "sku", 1, time.Minute, Idem{})
	wantCode(t, err, CodeUnavailable)
	n.PeerReached("eu-west")
	_, err = n.Reserve(bg, "sku", 1, time.Minute, Idem{})
	wantCode(t, err, CodeUnavailable)
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() { n.PeerReached("ap-south") })
		wg.Go(func() { n.PeerReached("eu-west") })
	}
	wg.Wait()
	must[Reservation](t)(n.Reserve(bg, "sku", 1, time.Minute, Idem{}))
	n.close()

	// One peer takes it, the other turns it down: closed, until a round
	// with the latter shows the same homes.
	n = openGated(t, dir, time.Minute)
	wg.Go(func() { n.PeerReached("eu-west") })
	wg.Go(func() { n.PeerRefused("ap-south") })
	wg.Wait()
	_, err = n.Reserve(bg, "sku", 1, time.Minute, Idem{})
	wantCode(t, err, CodeUnavailable)
	n.SyncedWith("ap-south", "h", peers)
	must[Reservation](t)(n.Reserve(bg, "sku", 1, time.Minute, Idem{}))
	n.close()

	// The gate's time, counted from ArmStartGate (the replication's
	// start), runs out after Close.
	n = openGated(t, dir, 30*time.Millisecond)
	n.ArmStartGate()
	n.close()
	regiontest.WaitFor(t, 5*time.Second, "the gate's timer to fire after Close", n.gateOpen.Load)
}
