package region

import (
	"context"
	"sync"
	"testing"
	"time"
)

// pc6Hook wraps a partRig node's forwarder: before a home request is
// sent, hook may act (edit a cart, crash a node) and decide to drop the
// request (the home never sees it).
type pc6Hook struct {
	region string
	inner  Forwarder
	h      *pc6Hooks
}

type pc6Hooks struct {
	mu   sync.Mutex
	hook func(from string, req *HomeRequest) (drop bool)
}

func (w pc6Hook) Forward(ctx context.Context, home string, req *HomeRequest) (*HomeResponse, error) {
	w.h.mu.Lock()
	hook := w.h.hook
	w.h.mu.Unlock()
	if hook != nil && hook(w.region, req) {
		return nil, &Error{Code: CodeHomeUnavailable, RetryAfter: 1, Detail: "home " + home + " cut off"}
	}
	return w.inner.Forward(ctx, home, req)
}

func (h *pc6Hooks) set(f func(from string, req *HomeRequest) bool) {
	h.mu.Lock()
	h.hook = f
	h.mu.Unlock()
}

// pc6Shop is pcShop's placement (cart at h partition 0, x homed at h
// partition 1, y homed at k partition 0, stock 10 each, the cart holding
// one of each at both regions) on a rig whose forwarders run hooks.
type pc6Shop struct {
	*partRig
	hooks      *pc6Hooks
	cart, x, y string
}

func newPC6Shop(t *testing.T) *pc6Shop {
	t.Helper()
	hooks := &pc6Hooks{}
	spec := pcSpec
	spec.wrap = func(region string, f Forwarder) Forwarder { return pc6Hook{region, f, hooks} }
	r := newPartRig(t, spec)
	s := &pc6Shop{partRig: r, hooks: hooks, cart: r.key("cart-", 0), x: r.key("x-", 1), y: r.key("k-y-", 0)}
	if pcHome(s.cart) != "h" || pcHome(s.x) != "h" || pcHome(s.y) != "k" {
		t.Fatal("placement")
	}
	for _, sku := range []string{s.x, s.y} {
		ctx, cancel := r.keyRequest(sku)
		must[Item](t)(r.parts[pcHome(sku)].Restock(ctx, sku, 10))
		cancel()
	}
	ctx, cancel := r.keyRequest(s.cart)
	must[Cart](t)(r.parts["h"].AddItem(ctx, s.cart, s.x, 1))
	must[Cart](t)(r.parts["h"].AddItem(ctx, s.cart, s.y, 1))
	cancel()
	r.deliver()
	return s
}

func (s *pc6Shop) checkout(through string, idem Idem) (Order, error) {
	ctx, cancel := s.keyRequest(s.cart)
	defer cancel()
	return s.parts[through].Checkout(ctx, s.cart, sagaTTL, idem)
}

func (s *pc6Shop) cartAt(name string) map[string]int64 {
	s.t.Helper()
	ctx, cancel := s.keyRequest(s.cart)
	defer cancel()
	return co4Cart(must[Cart](s.t)(s.parts[name].GetCart(ctx, s.cart)))
}

func (s *pc6Shop) status(through string, key string) (CheckoutStatus, error) {
	ctx, cancel := s.keyRequest(s.cart)
	defer cancel()
	return s.parts[through].CheckoutStatusOf(ctx, s.cart, key)
}

// homeStock returns sku's stock and held units at its home partition,
// expiring what is due first.
func (s *pc6Shop) homeStock(sku string) (int64, int64) {
	s.t.Helper()
	n := s.parts[pcHome(sku)]
	for _, part := range n.Owned() {
		if err := n.Node(part).ExpireDue(); err != nil {
			s.t.Fatal(err)
		}
	}
	ctx, cancel := s.keyRequest(sku)
	defer cancel()
	it := must[Item](s.t)(n.GetItem(ctx, sku, false))
	return it.Stock, it.Reserved
}

// TestPartitionedCheckoutWithCartEditsDuringSaga: a keyed checkout of the
// cart {x:1, y:1}, answered by region k and coordinated at h partition 0.
// While its saga runs (between the reservations and the commits) the
// shopper edits the cart at both regions: at k adds 2 more y, at h
// removes x. The order is the cart as k read it (x:1, y:1, both
// committed once); afterwards the cart holds, at both regions once the
// edits have replicated, exactly what was not bought: the 2 y added
// during the saga (the removal of x took only what was bought anyway).
func TestPartitionedCheckoutWithCartEditsDuringSaga(t *testing.T) {
	s := newPC6Shop(t)
	var once sync.Once
	s.hooks.set(func(from string, req *HomeRequest) bool {
		if req.Op == OpCommit {
			once.Do(func() {
				ctx, cancel := s.keyRequest(s.cart)
				defer cancel()
				must[Cart](t)(s.parts["k"].AddItem(ctx, s.cart, s.y, 2))
				must[Cart](t)(s.parts["h"].RemoveItem(ctx, s.cart, s.x))
			})
		}
		return false
	})
	idem := fp("edits")
	order, err := s.checkout("k", idem)
	s.hooks.set(nil)
	if err != nil {
		t.Fatalf("checkout: %v", err)
	}
	if got := co4Order(order); !co4Same(got, map[string]int64{s.x: 1, s.y: 1}) {
		t.Fatalf("order %s, want the cart as k read it (x:1, y:1)", co4Fmt(got))
	}
	s.deliver()
	want := map[string]int64{s.y: 2}
	for _, name := range []string{"h", "k"} {
		if c := s.cartAt(name); !co4Same(c, want) {
			t.Errorf("cart at %s after the order and the edits: %s, want %s (the adds made during the saga, nothing bought left)", name, co4Fmt(c), co4Fmt(want))
		}
	}
	for _, sku := range []string{s.x, s.y} {
		if st, held := s.homeStock(sku); st != 9 || held != 0 {
			t.Errorf("%s at its home: stock %d held %d, want 9 and 0", sku, st, held)
		}
	}
	again := must[Order](t)(s.checkout("h", idem))
	if again.OrderID != order.OrderID || !co4Same(co4Order(again), co4Order(order)) {
		t.Errorf("replay through h: %+v, want %+v", again, order)
	}
}

// TestPartitionedCoordinatorRestartMidCommitStatusAgrees: a keyed checkout
// answered by k, coordinated at h partition 0, commits x (home h
// partition 1); its commit of y (home k) is lost, and the coordinator's
// node restarts uncleanly. The status read through k shows what the
// coordinator knows — phase commit, x's commit ok — and once y's home is
// reachable the coordinator settles the checkout on its own into the
// order: x and y committed once each, the cart empty at both regions, the
// status (through either region) settled with the same order the key
// replays.
func TestPartitionedCoordinatorRestartMidCommitStatusAgrees(t *testing.T) {
	s := newPC6Shop(t)
	s.hooks.set(func(from string, req *HomeRequest) bool {
		return req.Op == OpCommit && req.ID != "" && pcHome(s.y) == "k" && func() bool {
			home, _ := ReservationHome(req.ID)
			return home == "k"
		}()
	})
	idem := fp("restart")
	_, err := s.checkout("k", idem)
	wantCode(t, err, CodeHomeUnavailable)
	s.hooks.set(nil)

	s.nodes["h"][0].crash()
	s.open("h", 0)
	s.regroup("h")

	st, err := s.status("k", idem.Key)
	if err != nil {
		t.Fatalf("status through k after the coordinator restarted: %v", err)
	}
	if st.Phase != "commit" || !hasStep(st, "commit", s.x, "ok") || !hasStep(st, "commit", s.y, CodeHomeUnavailable) {
		t.Fatalf("status after the restart: %+v, want phase commit with x committed and y's commit unanswered", st)
	}
	if stock, _ := s.homeStock(s.x); stock != 9 {
		t.Fatalf("x at its home after its commit: stock %d", stock)
	}

	coord := s.parts["h"].Node(0)
	s.clock.Advance(settleAfter + time.Second)
	coord.SettleCheckouts()
	s.deliver()

	order := must[Order](t)(s.checkout("k", idem))
	if !co4Same(co4Order(order), map[string]int64{s.x: 1, s.y: 1}) {
		t.Fatalf("order %+v", order)
	}
	for _, through := range []string{"h", "k"} {
		st, err := s.status(through, idem.Key)
		if err != nil {
			t.Fatalf("status through %s: %v", through, err)
		}
		if st.Phase != "settled" || st.Order == nil || st.Order.OrderID != order.OrderID || st.Failure != nil {
			t.Errorf("status through %s: %+v, want settled with order %s", through, st, order.OrderID)
		}
	}
	s.clock.Advance(2 * sagaTTL)
	for _, sku := range []string{s.x, s.y} {
		if stock, held := s.homeStock(sku); stock != 9 || held != 0 {
			t.Errorf("%s at its home: stock %d held %d, want 9 and 0 (one order)", sku, stock, held)
		}
	}
	s.deliver()
	for _, name := range []string{"h", "k"} {
		if c := s.cartAt(name); len(c) != 0 {
			t.Errorf("cart at %s after the order: %s, want empty", name, co4Fmt(c))
		}
	}
}
