package region

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/latticedb/lattice/region/config"
	"github.com/latticedb/lattice/region/store"
)

// crash18OpenCoord (re)opens the saga rig's coordinator us-east on its
// file with durability everysec.
func crash18OpenCoord(r *sagaRig) *testNode { return crash18OpenCoordVia(r, r.homes) }

// crash18OpenCoordVia is crash18OpenCoord with the home requests sent
// through fw.
func crash18OpenCoordVia(r *sagaRig, fw Forwarder) *testNode {
	r.t.Helper()
	path := filepath.Join(r.dir, "us-east", "data.db")
	st, err := OpenStore(path, store.Options{Durability: config.DurabilityEverySec})
	if err != nil {
		r.t.Fatal(err)
	}
	n, err := NewNode(Options{Name: "us-east", Store: st, Clock: r.clock, ExpiryInterval: time.Hour, Forwarder: fw,
		Home: func(key string) string {
			switch key {
			case "a":
				return "h1"
			case "b":
				return "h2"
			}
			return "us-east"
		}})
	if err != nil {
		r.t.Fatal(err)
	}
	tn := &testNode{Node: n, store: st, path: path, clock: r.clock}
	r.t.Cleanup(tn.close)
	return tn
}

// TestCrash18EverysecPowerLossAfterCheckoutBuysCartAgain: the
// coordinator runs with durability everysec. A checkout stores its plan,
// reserves and commits both lines at their homes (other regions, whose
// stores keep the commits) and records its order; then the coordinator
// loses power before its next fsync, which takes its last second: the
// plan, the order record and the cart's removal. checkout.md: "Units are
// never left committed outside an order", and the plan is stored "before
// it reserves anything" so that a retry with the key "finishes or
// cleanly fails the same checkout" (SPEC 6.1). The retry with the key
// must end with the order whose units are committed, each line's units
// taken once. Instead the plan was only in the page cache when the
// reservations went out: the retry plans afresh (a new nonce, so new step
// keys the homes never saw), reserves and commits every line again, and
// the shopper's cart is bought twice (a: 8 of 10 left, not 9); the first
// commits belong to no order.
func TestCrash18EverysecPowerLossAfterCheckoutBuysCartAgain(t *testing.T) {
	r := newSagaRig(t)
	r.fill()
	r.coord.close()
	r.coord = crash18OpenCoord(r)
	synced, err := r.coord.store.SyncNow() // the last fsync before the power loss
	if err != nil {
		t.Fatal(err)
	}
	first, err := r.checkout()
	if err != nil {
		t.Fatal(err)
	}
	for home, sku := range map[string]string{"h1": "a", "h2": "b"} {
		if it := r.item(home, sku); it.Stock != 9 {
			t.Fatalf("after the checkout: %s at %s %+v, want stock 9", sku, home, it)
		}
	}
	// Power loss: the file keeps what the last fsync covered (the
	// checkout's own, which make its plan durable before its steps go
	// out, included).
	synced = max(synced, r.coord.store.SyncedSize())
	r.coord.crash()
	if err := os.Truncate(r.coord.path, synced); err != nil {
		t.Fatal(err)
	}
	r.coord = crash18OpenCoord(r)

	order, err := crash18Retry(t, r)
	if err != nil {
		t.Fatalf("retry with the key after the power loss: %v", err)
	}
	if order.OrderID != first.OrderID {
		t.Fatalf("retry answered order %s, want %s", order.OrderID, first.OrderID)
	}
	r.clock.Advance(2 * sagaTTL)
	for home, sku := range map[string]string{"h1": "a", "h2": "b"} {
		if it := r.item(home, sku); it.Stock != 9 || it.Reserved != 0 {
			t.Fatalf("after the retry: %s at %s %+v, want stock 9 (the one order's unit taken once), nothing held", sku, home, it)
		}
	}
}
