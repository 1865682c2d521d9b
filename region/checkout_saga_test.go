package region

import (
	"context"
	"errors"
	"fmt"
	"github.com/latticedb/lattice/region/store"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// sagaHomes carries a coordinator's home requests to in-process home
// regions, and can cut the coordinator off for some of them ("commit b"),
// and for every release and return (the coordinator stays cut off until
// it crashes): the request is lost, or (replyLost) it is served but its
// answer is lost.
type sagaHomes struct {
	nodes     map[string]*testNode
	mu        sync.Mutex
	cut       map[string]bool
	replyLost bool
}

func skuOf(h *sagaHomes, req *HomeRequest) string {
	if req.SKU != "" {
		return req.SKU
	}
	home, _ := ReservationHome(req.ID)
	return map[string]string{"h1": "a", "h2": "b"}[home]
}

func (h *sagaHomes) Forward(ctx context.Context, home string, req *HomeRequest) (*HomeResponse, error) {
	h.mu.Lock()
	fail := len(h.cut) > 0 && (h.cut[req.Op+" "+skuOf(h, req)] || req.Op == OpRelease || req.Op == OpReturn)
	lost := h.replyLost
	h.mu.Unlock()
	cut := &Error{Code: CodeHomeUnavailable, RetryAfter: 1, Detail: "home " + home + " cut off"}
	if fail && !lost {
		return nil, cut
	}
	c := *req // the home gets its own copy, as over the wire
	resp := h.nodes[home].ServeHome(ctx, &c)
	if fail {
		return nil, cut
	}
	return resp, nil
}

// set cuts the given requests ("reserve a", "commit b") off; none heals.
func (h *sagaHomes) set(replyLost bool, cut ...string) {
	h.mu.Lock()
	h.cut, h.replyLost = map[string]bool{}, replyLost
	for _, c := range cut {
		h.cut[c] = true
	}
	h.mu.Unlock()
}

type sagaRig struct {
	t     *testing.T
	dir   string
	clock *fakeClock
	homes *sagaHomes
	coord *testNode
}

// newSagaRig opens coordinator us-east (home of every cart) and homes h1
// (of sku a) and h2 (of sku b), each on its own file.
func newSagaRig(t *testing.T) *sagaRig {
	r := &sagaRig{t: t, dir: t.TempDir(), clock: newFakeClock(), homes: &sagaHomes{nodes: map[string]*testNode{}}}
	for _, h := range []string{"h1", "h2"} {
		r.homes.nodes[h] = r.open(h, nil)
	}
	r.coord = r.open("us-east", r.homes)
	return r
}

func (r *sagaRig) open(name string, fw Forwarder) *testNode {
	r.t.Helper()
	path := filepath.Join(r.dir, name, "data.db")
	st, err := OpenStore(path, store.Options{})
	if err != nil {
		r.t.Fatal(err)
	}
	opts := Options{Name: name, Store: st, Clock: r.clock, ExpiryInterval: time.Hour}
	if fw != nil {
		opts.Forwarder = fw
		opts.Home = func(key string) string {
			switch key {
			case "a":
				return "h1"
			case "b":
				return "h2"
			}
			return "us-east"
		}
	}
	n, err := NewNode(opts)
	if err != nil {
		r.t.Fatal(err)
	}
	tn := &testNode{Node: n, store: st, path: path, clock: r.clock}
	r.t.Cleanup(tn.close)
	return tn
}

// crashCoordinator stops the coordinator uncleanly and starts it again.
func (r *sagaRig) crashCoordinator() {
	r.coord.crash()
	r.coord = r.open("us-east", r.homes)
}

func (r *sagaRig) item(home, sku string) Item {
	r.t.Helper()
	n := r.homes.nodes[home]
	if err := n.ExpireDue(); err != nil {
		r.t.Fatal(err)
	}
	return must[Item](r.t)(n.GetItem(bg, sku, false))
}

// settled checks the saga's rule at both homes: units consumed equal the
// units in the order (want: 1 each, or 0 each), nothing held once the
// ttl has passed.
func (r *sagaRig) settled(what string, want int64) {
	r.t.Helper()
	r.clock.Advance(2 * sagaTTL)
	for home, sku := range map[string]string{"h1": "a", "h2": "b"} {
		if it := r.item(home, sku); it.Stock != 10-want || it.Reserved != 0 {
			r.t.Fatalf("%s: %s at %s: %+v, want stock %d and nothing held", what, sku, home, it, 10-want)
		}
	}
}

const sagaTTL = 30 * time.Second

func (r *sagaRig) checkout() (Order, error) {
	return r.coord.Checkout(bg, "c", sagaTTL, fp("saga"))
}

func (r *sagaRig) fill() {
	must[Item](r.t)(r.homes.nodes["h1"].Restock(bg, "a", 10))
	must[Item](r.t)(r.homes.nodes["h2"].Restock(bg, "b", 10))
	must[Cart](r.t)(r.coord.AddItem(bg, "c", "a", 1))
	must[Cart](r.t)(r.coord.AddItem(bg, "c", "b", 1))
}

// TestCheckoutSagaSurvivesCoordinatorCrashAtEveryStep cuts the coordinator
// off at each of its home requests in turn (reserve a, reserve b, commit
// a, commit b; the request lost, or served with its answer lost), crashes
// it, restarts it, and retries the checkout with its key, with and without
// the holds expiring in between: the retry always ends with the order,
// each line committed once, nothing held, and the cart bought once.
func TestCheckoutSagaSurvivesCoordinatorCrashAtEveryStep(t *testing.T) {
	cuts := [][]string{{"reserve a"}, {"reserve b"}, {"reserve a", "reserve b"}, {"commit a"}, {"commit b"},
		{"commit a", "commit b"}, {}} // {}: no failure; the crash comes after the cart update
	for _, cut := range cuts {
		for _, replyLost := range []bool{false, true} {
			for _, expire := range []bool{false, true} {
				name := fmt.Sprintf("cut%q/replyLost=%v/expire=%v", cut, replyLost, expire)
				t.Run(name, func(t *testing.T) {
					r := newSagaRig(t)
					r.fill()
					r.homes.set(replyLost, cut...)
					_, err := r.checkout()
					if len(cut) > 0 {
						wantCode(t, err, CodeHomeUnavailable)
					} else if err != nil {
						t.Fatal(err)
					}
					r.crashCoordinator()
					r.homes.set(false)
					if expire {
						r.clock.Advance(2 * sagaTTL)
						for _, h := range r.homes.nodes {
							if err := h.ExpireDue(); err != nil {
								t.Fatal(err)
							}
						}
					}
					order, err := r.checkout()
					if err != nil {
						t.Fatalf("retry: %v", err)
					}
					if len(order.Lines) != 2 {
						t.Fatalf("order %+v", order)
					}
					for _, l := range order.Lines {
						res := must[Reservation](t)(r.homes.nodes[l.Home].GetReservation(bg, l.ReservationID))
						if res.State != StateCommitted {
							t.Fatalf("order line %+v: reservation %s", l, res.State)
						}
					}
					again, err := r.checkout()
					if err != nil || again.OrderID != order.OrderID {
						t.Fatalf("second retry: %+v %v", again, err)
					}
					if c := must[Cart](t)(r.coord.GetCart(bg, "c")); len(c.Items) != 0 {
						t.Fatalf("cart after the order: %+v", c)
					}
					r.settled(name, 1)
				})
			}
		}
	}
}

// TestCheckoutSagaReturnsUnitsWhenItCannotRollForward commits line a,
// loses the commit of line b, lets b's hold expire and its stock go to
// another buyer: the retry cannot roll forward, so it returns a's units to
// stock and fails cleanly; the failure replays.
func TestCheckoutSagaReturnsUnitsWhenItCannotRollForward(t *testing.T) {
	r := newSagaRig(t)
	r.fill()
	r.homes.set(false, "commit b")
	_, err := r.checkout()
	wantCode(t, err, CodeHomeUnavailable)
	if it := r.item("h1", "a"); it.Stock != 9 {
		t.Fatalf("a after its commit: %+v", it)
	}
	st := must[CheckoutStatus](t)(r.coord.CheckoutStatusOf(bg, "c", fp("saga").Key))
	if st.Phase != "commit" || len(st.Reservations) != 2 || !hasStep(st, "commit", "b", CodeHomeUnavailable) || !hasStep(st, "commit", "a", "ok") {
		t.Fatalf("status of a checkout stopped in its commit phase: %+v", st)
	}
	r.homes.set(false)
	r.clock.Advance(2 * sagaTTL)
	must[Reservation](t)(r.homes.nodes["h2"].Reserve(bg, "b", 10, time.Hour, Idem{}))
	_, err = r.checkout()
	e := wantCode(t, err, CodeInsufficientStock)
	if len(e.Lines) != 1 || e.Lines[0].SKU != "b" {
		t.Fatalf("failure %+v", e)
	}
	if it := r.item("h1", "a"); it.Stock != 10 || it.Reserved != 0 {
		t.Fatalf("a after the checkout failed: %+v, want its unit back in stock", it)
	}
	_, err = r.checkout()
	wantCode(t, err, CodeInsufficientStock)
	st = must[CheckoutStatus](t)(r.coord.CheckoutStatusOf(bg, "c", fp("saga").Key))
	if st.Phase != "settled" || st.Failure == nil || st.Failure.Code != CodeInsufficientStock || !hasStep(st, "return", "a", "ok") ||
		!hasStep(st, "commit", "b", CodeReservationExpired) || !hasStep(st, "reserve", "b", CodeInsufficientStock) {
		t.Fatalf("status of a checkout undone: %+v", st)
	}
	_, err = r.coord.CheckoutStatusOf(bg, "c", "no-such-key")
	wantCode(t, err, CodeNotFound)
	if c := must[Cart](t)(r.coord.GetCart(bg, "c")); len(c.Items) != 2 {
		t.Fatalf("cart of a failed checkout: %+v", c)
	}
}

// TestCheckoutSagaSettlesInTheBackground leaves a keyed checkout in its
// commit phase and a keyless one too: the coordinator settles both itself
// (the keyed one rolls forward into its order, the keyless one returns its
// units), with no client retrying.
func TestCheckoutSagaSettlesInTheBackground(t *testing.T) {
	r := newSagaRig(t)
	r.fill()
	must[Cart](t)(r.coord.AddItem(bg, "d", "a", 1))
	must[Cart](t)(r.coord.AddItem(bg, "d", "b", 1))
	r.homes.set(false, "commit b")
	_, err := r.checkout()
	wantCode(t, err, CodeHomeUnavailable)
	_, err = r.coord.Checkout(bg, "d", sagaTTL, Idem{})
	if err == nil {
		t.Fatal("keyless checkout succeeded while cut off")
	}
	r.homes.set(false)
	r.clock.Advance(settleAfter + time.Second)
	r.coord.SettleCheckouts()
	if c := must[Cart](t)(r.coord.GetCart(bg, "c")); len(c.Items) != 0 {
		t.Fatalf("keyed checkout not rolled forward: cart %+v", c)
	}
	if c := must[Cart](t)(r.coord.GetCart(bg, "d")); len(c.Items) != 2 {
		t.Fatalf("keyless checkout: cart %+v, want it untouched", c)
	}
	// One order (cart c) holds one unit of each; the keyless one none.
	r.settled("background", 1)
	order, err := r.checkout()
	if err != nil || len(order.Lines) != 2 {
		t.Fatalf("the settled order replays: %+v %v", order, err)
	}
	var e *Error
	if !errors.As(err, &e) && err != nil {
		t.Fatal(err)
	}
}

func hasStep(st CheckoutStatus, step, sku, result string) bool {
	for _, s := range st.Steps {
		if s.Step == step && s.SKU == sku && s.Result == result {
			return true
		}
	}
	return false
}
