package region

import (
	"context"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/latticedb/lattice/region/store"
)

// stallHomes carries a coordinator's home requests to in-process homes.
// In mode "cut" a commit of sku b is refused at once (home_unavailable);
// in mode "silent" every request is held until the caller's context ends
// (a home behind a partition that drops packets), and each held request
// is signalled on held.
type stallHomes struct {
	nodes   map[string]*testNode
	mu      sync.Mutex
	mode    string
	held    chan string
	release chan struct{}
}

func (h *stallHomes) Forward(ctx context.Context, home string, req *HomeRequest) (*HomeResponse, error) {
	h.mu.Lock()
	mode := h.mode
	h.mu.Unlock()
	unreachable := &Error{Code: CodeHomeUnavailable, RetryAfter: 1, Detail: "home " + home + " cannot be reached"}
	switch {
	case mode == "silent":
		select {
		case h.held <- req.Op:
		default:
		}
		select {
		case <-ctx.Done():
		case <-h.release:
		}
		return nil, unreachable
	case mode == "cut" && req.Op == OpCommit && home == "h2":
		return nil, unreachable
	}
	c := *req
	return h.nodes[home].ServeHome(ctx, &c), nil
}

func (h *stallHomes) set(mode string) {
	h.mu.Lock()
	h.mode = mode
	h.mu.Unlock()
}

func openTimeNode(t *testing.T, dir, name string, clock *fakeClock, fw Forwarder, every time.Duration) *testNode {
	t.Helper()
	path := filepath.Join(dir, name, "data.db")
	st, err := OpenStore(path, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	opts := Options{Name: name, Store: st, Clock: clock, ExpiryInterval: every}
	if fw != nil {
		opts.Forwarder = fw
		opts.Home = func(key string) string {
			switch key {
			case "a":
				return "h1"
			case "b":
				return "h2"
			}
			return name
		}
	}
	n, err := NewNode(opts)
	if err != nil {
		t.Fatal(err)
	}
	tn := &testNode{Node: n, store: st, path: path, clock: clock}
	t.Cleanup(tn.close)
	return tn
}

// storedHeld is the held total the region has published for sku (its
// stored item's Held register).
func storedHeld(t *testing.T, n *testNode, sku string) int64 {
	t.Helper()
	var held int64
	err := n.store.View([]string{prefixItem + sku}, func(r store.Reader) error {
		it, err := loadItem(r, sku)
		if err != nil {
			return err
		}
		held = it.Held.Value
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return held
}

// TestHoldExpiryNotStalledBySettling: a region is the coordinator of a
// keyed checkout left unsettled in its commit phase and the home of sku x,
// on which it holds a reservation. The checkout's other home then stops
// answering (its requests wait out their deadline), so background
// settling of the checkout takes its full timeout. The hold on x passes
// its expires_at meanwhile: the home expires holds in the background
// every ExpiryInterval and publishes the new held total, whatever
// settling is doing, so the published total of x drops to 0 well within
// two seconds.
func TestHoldExpiryNotStalledBySettling(t *testing.T) {
	dir := t.TempDir()
	clock := newFakeClock()
	homes := &stallHomes{nodes: map[string]*testNode{}, held: make(chan string, 16), release: make(chan struct{})}
	homes.nodes["h1"] = openTimeNode(t, dir, "h1", clock, nil, time.Hour)
	homes.nodes["h2"] = openTimeNode(t, dir, "h2", clock, nil, time.Hour)
	coord := openTimeNode(t, dir, "us-east", clock, homes, 20*time.Millisecond)
	// Runs before the nodes close (cleanups run last first): nothing stays held.
	t.Cleanup(func() { close(homes.release) })

	must[Item](t)(homes.nodes["h1"].Restock(bg, "a", 10))
	must[Item](t)(homes.nodes["h2"].Restock(bg, "b", 10))
	must[Item](t)(coord.Restock(bg, "x", 10))
	must[Cart](t)(coord.AddItem(bg, "c", "a", 1))
	must[Cart](t)(coord.AddItem(bg, "c", "b", 1))

	homes.set("cut")
	if _, err := coord.Checkout(bg, "c", time.Minute, fp("co")); err == nil {
		t.Fatal("checkout with the commit of b cut off succeeded")
	}
	st := must[CheckoutStatus](t)(coord.CheckoutStatusOf(bg, "c", fp("co").Key))
	if st.Phase != "commit" {
		t.Fatalf("checkout status %+v, want phase commit", st)
	}

	res := must[Reservation](t)(coord.Reserve(bg, "x", 3, 30*time.Second, Idem{}))
	if h := storedHeld(t, coord, "x"); h != 3 {
		t.Fatalf("held of x after the reservation: %d, want 3", h)
	}

	// The checkout is now 20 s old: the next round of settling takes it up,
	// and its commit of b waits on the silent home.
	homes.set("silent")
	clock.Advance(20 * time.Second)
	select {
	case <-homes.held:
	case <-time.After(5 * time.Second):
		t.Fatal("background settling did not take up the unsettled checkout")
	}

	// The hold on x is now past its expires_at.
	clock.Advance(20 * time.Second)
	deadline := time.Now().Add(2 * time.Second)
	for storedHeld(t, coord, "x") != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("reservation %s (expires_at %s) is past its expiry by 10 s of the home's clock, but 2 s later the home "+
				"still publishes %d units of x held: background expiry waits for the settling of a checkout",
				res.ID, res.ExpiresAt.Format(time.RFC3339), storedHeld(t, coord, "x"))
		}
		time.Sleep(10 * time.Millisecond)
	}
}
