package region

import (
	"context"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/latticedb/lattice/region/store"
)

// hookRig is an escrowRig whose forwarder can hold up requests for rights:
// hook, when set, is called before a forwarded request is served and
// may refuse it (return an error).
type hookRig struct {
	*escrowRig
	hmu  sync.Mutex
	hook func(from, home string, req *HomeRequest) error
}

type hookFwd struct {
	r    *hookRig
	from string
}

func (f hookFwd) Forward(ctx context.Context, home string, req *HomeRequest) (*HomeResponse, error) {
	f.r.hmu.Lock()
	hook := f.r.hook
	f.r.hmu.Unlock()
	if hook != nil {
		if err := hook(f.from, home, req); err != nil {
			return nil, err
		}
	}
	f.r.mu.Lock()
	cut := f.r.cut[f.from] || f.r.cut[home]
	f.r.mu.Unlock()
	if cut {
		return nil, &Error{Code: CodeHomeUnavailable, RetryAfter: 1, Detail: "cut off"}
	}
	c := *req
	c.Escrow = false
	return f.r.nodes[home].ServeForwarded(ctx, &c), nil
}

func newHookRig(t *testing.T) *hookRig {
	r := &hookRig{escrowRig: &escrowRig{t: t, dir: t.TempDir(), clock: newFakeClock(), nodes: map[string]*testNode{}, cut: map[string]bool{}}}
	for _, name := range escrowRegions {
		path := filepath.Join(r.dir, name, "data.db")
		st, err := OpenStore(path, store.Options{})
		if err != nil {
			t.Fatal(err)
		}
		var peers []string
		for _, p := range escrowRegions {
			if p != name {
				peers = append(peers, p)
			}
		}
		n, err := NewNode(Options{Name: name, Store: st, Clock: r.clock, ExpiryInterval: time.Hour,
			Home:        func(string) string { return "h" },
			Escrow:      func(sku string) bool { return strings.HasPrefix(sku, "e") },
			Publisher:   rigPub{r.escrowRig, name},
			Forwarder:   hookFwd{r, name},
			PeerRegions: peers,
			Background:  func(f func()) { f() },
		})
		if err != nil {
			t.Fatal(err)
		}
		tn := &testNode{Node: n, store: st, path: path, clock: r.clock}
		r.nodes[name] = tn
		t.Cleanup(tn.close)
	}
	return r
}

// openHolds counts the open holds of sku in every region's ledger.
func (r *hookRig) openHolds(sku string) (n int, units int64) {
	r.t.Helper()
	for _, node := range r.nodes {
		err := node.store.View([]string{prefixItem + sku}, func(rd store.Reader) error {
			l, err := loadLedger(rd, sku)
			if err != nil {
				return err
			}
			for _, h := range l.Holds {
				if r.clock.Now().UnixMilli() < h.ExpMs {
					n++
					units += h.Qty
				}
			}
			return nil
		})
		if err != nil {
			r.t.Fatal(err)
		}
	}
	return n, units
}

// TestEscrowKeyedRetryWhileRunning: a reservation of an escrow sku with an
// Idempotency-Key, sent to a region other than the home, is retried (same
// key and body) while the first is still on its way to the home, and
// another shopper's reservation meanwhile brings that region rights: the
// key still makes one hold, decided at the home.
func TestEscrowKeyedRetryWhileRunning(t *testing.T) {
	r := newHookRig(t)
	h, a := r.nodes["h"], r.nodes["a"]
	must[Item](t)(h.Restock(bg, "e1", 100))
	r.deliver(nil)

	blocked := make(chan struct{})
	unblock := make(chan struct{})
	var once sync.Once
	r.hook = func(from, home string, req *HomeRequest) error {
		if req.Op != OpReserve || from != "a" {
			return nil
		}
		first := false
		once.Do(func() { first = true })
		if !first {
			return nil
		}
		close(blocked)
		<-unblock // held up on its way to the home
		return nil
	}
	key := Idem{Key: "same-key", Fingerprint: [32]byte{7}}
	type result struct {
		res Reservation
		err error
	}
	first := make(chan result, 1)
	go func() {
		res, err := a.Reserve(bg, "e1", 2, time.Minute, key)
		first <- result{res, err}
	}()
	select {
	case <-blocked:
	case f := <-first:
		t.Fatalf("the keyed reservation was answered (%+v, %v) without going to the home", f.res, f.err)
	case <-time.After(10 * time.Second):
		t.Fatal("the keyed reservation neither went to the home nor was answered within 10 s")
	}
	// Meanwhile another shopper's reservation at a gets rights from the home.
	must[Reservation](t)(a.Reserve(bg, "e1", 1, time.Minute, Idem{}))
	// The client retries its request (same key, same body) while the first runs.
	second, err2 := a.Reserve(bg, "e1", 2, time.Minute, key)
	close(unblock)
	f := <-first
	t.Logf("first: %+v %v; second: %+v %v", f.res, f.err, second, err2)
	if f.err != nil || err2 != nil {
		t.Fatalf("first %v, retry %v; want both answered", f.err, err2)
	}
	if f.res.ID != second.ID || !strings.HasPrefix(f.res.ID, "h:") {
		t.Errorf("one Idempotency-Key answered %s and %s; want one reservation, decided at the home h", f.res.ID, second.ID)
	}
	if n, units := r.openHolds("e1"); n != 2 || units != 3 {
		t.Errorf("%d open holds of %d units; want 2 of 3 (the key's 2 and the other shopper's 1)", n, units)
	}
}

// TestEscrowKeyedRetryThroughOtherRegion: a retry with the same key and
// body, sent to any region, returns the original outcome and changes
// nothing, for an escrow sku too: a keyed reservation is decided at the
// home, not from the rights of the region it was sent to.
func TestEscrowKeyedRetryThroughOtherRegion(t *testing.T) {
	r := newHookRig(t)
	h, a, b := r.nodes["h"], r.nodes["a"], r.nodes["b"]
	must[Item](t)(h.Restock(bg, "e1", 100))
	r.deliver(nil)
	key := Idem{Key: "retry-key", Fingerprint: [32]byte{9}}
	res1 := must[Reservation](t)(a.Reserve(bg, "e1", 3, time.Minute, key))
	r.deliver(nil)
	// The answer was lost; the client retries through another region.
	res2, err := b.Reserve(bg, "e1", 3, time.Minute, key)
	if err != nil {
		t.Fatalf("retry: %v", err)
	}
	if res2.ID != res1.ID {
		n, units := r.openHolds("e1")
		t.Fatalf("the retry through b made a second hold: %s then %s (%d open holds, %d units; want 1 hold of 3)", res1.ID, res2.ID, n, units)
	}
}

// TestCheckoutLineAboveMaxQty: a cart line may hold more than a
// reservation request's 1,000,000 units (two adds of 1,000,000); its
// checkout with enough stock reserves and commits it whole.
func TestCheckoutLineAboveMaxQty(t *testing.T) {
	n := newNode(t)
	for range 3 {
		must[Item](t)(n.Restock(bg, "big", 1_000_000))
	}
	must[Cart](t)(n.AddItem(bg, "c", "big", 1_000_000))
	must[Cart](t)(n.AddItem(bg, "c", "big", 1_000_000))
	c := must[Cart](t)(n.GetCart(bg, "c"))
	t.Logf("cart %+v", c)
	order, err := n.Checkout(bg, "c", time.Minute, fp("big"))
	if err != nil {
		t.Fatalf("checkout of a cart of 2,000,000 units with 3,000,000 in stock: %v", err)
	}
	if len(order.Lines) != 1 || order.Lines[0].Qty != 2_000_000 {
		t.Fatalf("order %+v; want one line of 2,000,000 big", order)
	}
	it := must[Item](t)(n.GetItem(bg, "big", true))
	if it.Stock != 1_000_000 || it.Reserved != 0 || it.Available != 1_000_000 {
		t.Errorf("after the checkout: %+v; want stock 1,000,000 (2,000,000 committed), nothing held", it)
	}
}

// TestCheckoutUnsettledPastRetention: a keyed checkout stopped in its
// commit phase (line a committed, the commit of b lost) whose coordinator
// is down for more than a day still settles, and a retry with its key
// commits nothing twice: an unsettled checkout's plan is never forgotten,
// however old.
func TestCheckoutUnsettledPastRetention(t *testing.T) {
	r := newSagaRig(t)
	r.fill()
	r.homes.set(false, "commit b")
	_, err := r.checkout()
	wantCode(t, err, CodeHomeUnavailable)
	if it := r.item("h1", "a"); it.Stock != 9 {
		t.Fatalf("a after its commit: %+v", it)
	}
	r.crashCoordinator()
	r.homes.set(false)
	r.clock.Advance(IdempotencyRetention + time.Hour)
	r.coord.SettleCheckouts()
	a, b := r.item("h1", "a"), r.item("h2", "b")
	t.Logf("after background settling: a %+v, b %+v", a, b)
	if a.Stock != b.Stock {
		t.Errorf("the background settling left a half-committed checkout: a stock %d, b stock %d (want both 9 or both 10)", a.Stock, b.Stock)
	}
	order, err := r.checkout()
	t.Logf("retry with the key: %+v %v", order, err)
	a, b = r.item("h1", "a"), r.item("h2", "b")
	if err == nil && (a.Stock != 9 || b.Stock != 9) {
		t.Fatalf("an order of 1 a and 1 b consumed %d of a and %d of b", 10-a.Stock, 10-b.Stock)
	}
	if err != nil && (a.Stock != 10 || b.Stock != 10) {
		t.Fatalf("a failed checkout left units committed: a stock %d, b stock %d", a.Stock, b.Stock)
	}
}
