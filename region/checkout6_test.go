package region

import (
	"context"
	"errors"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/latticedb/lattice/crdt"
	"github.com/latticedb/lattice/region/store"
)

// c6Waiter stands for a home's replication under a write concern: while
// fail is set, a write of the home cannot reach the regions the concern
// asks for (too few connected), so the home answers replication_timeout
// at once — after it has applied its decision.
type c6Waiter struct{ fail atomic.Bool }

func (w *c6Waiter) WaitReplicas(ctx context.Context, d crdt.Dot, n int) error {
	if w.fail.Load() {
		return errors.New("too few regions connected")
	}
	return nil
}

func (w *c6Waiter) WaitReplicasThrough(ctx context.Context, d crdt.Dot, n int) error {
	return w.WaitReplicas(ctx, d, n)
}

// c6Homes carries the coordinator's home requests to in-process homes h1
// (sku a) and h2 (sku b) as over the wire: a copy of the request, served
// by ServeForwarded in a context of its own. failOp, when set, makes the
// named home's replication fail (its waiter) for requests of that op only.
type c6Homes struct {
	mu      sync.Mutex
	nodes   map[string]*testNode
	waiters map[string]*c6Waiter
	failOp  map[string]string // home -> op whose concern is not met
}

func (h *c6Homes) Forward(ctx context.Context, home string, req *HomeRequest) (*HomeResponse, error) {
	h.mu.Lock()
	n, w, op := h.nodes[home], h.waiters[home], h.failOp[home]
	h.mu.Unlock()
	if n == nil {
		return nil, &Error{Code: CodeHomeUnavailable, RetryAfter: 1, Detail: "no such home"}
	}
	if w != nil && op != "" {
		w.fail.Store(op == "*" || op == req.Op)
	}
	c := *req
	rctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return n.ServeForwarded(rctx, &c), nil
}

func (h *c6Homes) setFail(home, op string) {
	h.mu.Lock()
	h.failOp[home] = op
	h.mu.Unlock()
	if op == "" {
		h.waiters[home].fail.Store(false)
	}
}

// c6Rig is a coordinator us-east (home of every cart) and homes h1 (a)
// and h2 (b) of a three-region cluster, each on its own store file.
type c6Rig struct {
	t     *testing.T
	dir   string
	clock *fakeClock
	homes *c6Homes
	coord *testNode
}

var c6Regions = []string{"us-east", "h1", "h2"}

func c6Home(key string) string {
	switch key {
	case "a":
		return "h1"
	case "b":
		return "h2"
	}
	return "us-east"
}

func newC6Rig(t *testing.T) *c6Rig {
	r := &c6Rig{t: t, dir: t.TempDir(), clock: newFakeClock(),
		homes: &c6Homes{nodes: map[string]*testNode{}, waiters: map[string]*c6Waiter{}, failOp: map[string]string{}}}
	for _, h := range []string{"h1", "h2"} {
		w := &c6Waiter{}
		r.homes.waiters[h] = w
		r.homes.nodes[h] = r.open(h, w)
	}
	r.coord = r.open("us-east", &c6Waiter{})
	return r
}

func (r *c6Rig) open(name string, w ReplicaWaiter) *testNode {
	r.t.Helper()
	path := filepath.Join(r.dir, name, "data.db")
	st, err := OpenStore(path, store.Options{})
	if err != nil {
		r.t.Fatal(err)
	}
	var peers []string
	for _, p := range c6Regions {
		if p != name {
			peers = append(peers, p)
		}
	}
	n, err := NewNode(Options{Name: name, Store: st, Clock: r.clock, ExpiryInterval: time.Hour,
		Home: c6Home, Forwarder: r.homes, PeerRegions: peers, Replicas: w})
	if err != nil {
		r.t.Fatal(err)
	}
	tn := &testNode{Node: n, store: st, path: path, clock: r.clock}
	r.t.Cleanup(tn.close)
	return tn
}

func (r *c6Rig) fill() {
	must[Item](r.t)(r.homes.nodes["h1"].Restock(bg, "a", 10))
	must[Item](r.t)(r.homes.nodes["h2"].Restock(bg, "b", 10))
	must[Cart](r.t)(r.coord.AddItem(bg, "c", "a", 1))
	must[Cart](r.t)(r.coord.AddItem(bg, "c", "b", 1))
}

// checkout checks cart c out at the coordinator with a write concern of
// 2, as the API makes the request's context for Lattice-Replicas: 2.
func (r *c6Rig) checkout(idem Idem) (Order, error) {
	ctx, cancel := context.WithTimeout(WithReplicas(WithAnswer(bg), 2), 2*time.Second)
	defer cancel()
	return r.coord.Checkout(ctx, "c", sagaTTL, idem)
}

// stock returns sku's stock and held units at its home, now.
func (r *c6Rig) stock(sku string) (int64, int64) {
	r.t.Helper()
	n := r.homes.nodes[c6Home(sku)]
	if err := n.ExpireDue(); err != nil {
		r.t.Fatal(err)
	}
	it := must[Item](r.t)(n.GetItem(bg, sku, false))
	return it.Stock, it.Reserved
}

// TestCheckoutConcernTimeoutOnCommitRollsForward: a keyed checkout with a
// write concern of 2 holds a and b; h2 commits b but its write cannot
// reach a second region in time, so it answers 503 replication_timeout
// (the commit stands). docs/checkout.md: once every line is held the
// checkout "only rolls forward ... Only if rolling forward is impossible
// — a line can no longer be reserved (its stock is gone) — does the
// checkout undo itself". Here nothing is short and every home answers:
// the checkout must end as the order (now or on a retry with its key),
// with a and b committed once each. Instead it takes replication_timeout
// for a final refusal, returns both committed units to stock and settles
// the checkout as a failure under the key.
func TestCheckoutConcernTimeoutOnCommitRollsForward(t *testing.T) {
	r := newC6Rig(t)
	r.fill()
	idem := fp("concern-commit")
	r.homes.setFail("h2", OpCommit)
	order, err := r.checkout(idem)
	r.homes.setFail("h2", "")
	if err != nil {
		st, _ := r.coord.CheckoutStatusOf(bg, "c", idem.Key)
		order, err = r.checkout(idem)
		if err != nil {
			t.Fatalf("checkout whose commit of b was applied but answered replication_timeout, then a retry with its key: %v; "+
				"want the order (nothing is short); status after the first answer: phase %s failure %+v steps %+v", err, st.Phase, st.Failure, st.Steps)
		}
	}
	if len(order.Lines) != 2 {
		t.Fatalf("order %+v", order)
	}
	r.clock.Advance(2 * sagaTTL)
	for _, sku := range []string{"a", "b"} {
		if s, h := r.stock(sku); s != 9 || h != 0 {
			t.Errorf("%s at its home: stock %d held %d, want 9 and 0 (one order)", sku, s, h)
		}
	}
}

// TestCheckoutReturnReleasesItsUnansweredHold: a keyed checkout of a:1
// and b:1 stops in its commit phase (both commits lost); both holds
// expire and another buyer takes b's only unit. The retry rolls forward:
// it reserves a again — h1 makes that hold but its answer is lost — and
// b again, which is refused for good (its stock is gone), so the checkout
// undoes itself and settles as insufficient_stock. docs/checkout.md: a
// settled failure is "nothing committed and nothing held"; only "a hold
// that a release could not reach expires by its ttl_ms". h1 is reachable
// (it just made the hold), and the checkout knows it sent that
// reservation without an answer (its reserve phase keeps such holds and
// releases them, "otherwise the hold would stay until its ttl"), yet the
// return phase skips the line and the hold of a stays, blocking the unit
// from every other buyer until its ttl.
func TestCheckoutReturnReleasesItsUnansweredHold(t *testing.T) {
	r := newCo4Rig(t)
	must[Item](t)(r.nodeOf("a").Restock(bg, "a", 1))
	must[Item](t)(r.nodeOf("b").Restock(bg, "b", 1))
	must[Cart](t)(r.coord.AddItem(bg, "c", "a", 1))
	must[Cart](t)(r.coord.AddItem(bg, "c", "b", 1))
	idem := fp("return-lost")

	r.sh.set("commit a drop", "commit b drop")
	_, err := r.coord.Checkout(bg, "c", sagaTTL, idem)
	wantCode(t, err, CodeHomeUnavailable)
	r.clock.Advance(2 * sagaTTL) // both holds expire before their commits
	must[Reservation](t)(r.nodeOf("b").Reserve(bg, "b", 1, time.Hour, Idem{}))

	r.sh.set("reserve a lose") // a's new hold is made, its answer lost
	_, err = r.coord.Checkout(bg, "c", sagaTTL, idem)
	// While a's answers are lost it cannot release that hold: it asks for
	// a retry rather than settle with units held.
	wantCode(t, err, CodeUnavailable)
	r.sh.set()
	_, err = r.coord.Checkout(bg, "c", sagaTTL, idem)
	wantCode(t, err, CodeInsufficientStock)
	st := must[CheckoutStatus](t)(r.coord.CheckoutStatusOf(bg, "c", idem.Key))
	if st.Phase != "settled" {
		t.Fatalf("status after the failure: %+v", st)
	}
	if _, held := r.stockOf("a"); held != 0 {
		// A new buyer of a's only unit is refused meanwhile.
		_, rerr := r.nodeOf("a").Reserve(bg, "a", 1, time.Minute, Idem{})
		t.Errorf("the checkout settled as a clean failure (insufficient_stock), yet %d unit(s) of a stay held by its own reservation at h1, "+
			"which is reachable; another buyer of a: %v; steps %+v", held, rerr, st.Steps)
	}
}

// TestCheckoutRefusedReleasesItsUnansweredHold: a keyed checkout of a:1
// and b:1 where b is sold out. h1 makes the hold of a but its answer is
// lost; h2 refuses b for good, so the checkout answers insufficient_stock.
// docs/checkout.md (Reserve): a line whose home did not answer "may hold
// all the same ...: the plan keeps them, and the next retry with the key
// first sends that reservation again ... and releases it". The next retry
// with the key comes, every home reachable — but the failure was settled
// under the key, the retry only replays it, and a's unit stays held at
// h1 until its ttl, after a settled failure that must hold nothing (the
// background settling does not release it either).
func TestCheckoutRefusedReleasesItsUnansweredHold(t *testing.T) {
	r := newCo4Rig(t)
	must[Item](t)(r.nodeOf("a").Restock(bg, "a", 1))
	must[Cart](t)(r.coord.AddItem(bg, "c", "a", 1))
	must[Cart](t)(r.coord.AddItem(bg, "c", "b", 1))
	idem := fp("refused-lost")

	r.sh.set("reserve a lose")
	_, err := r.coord.Checkout(bg, "c", sagaTTL, idem)
	// While a's answers are lost it cannot release that hold: it asks for
	// a retry rather than settle with units held.
	wantCode(t, err, CodeUnavailable)
	r.sh.set()
	_, err = r.coord.Checkout(bg, "c", sagaTTL, idem)
	wantCode(t, err, CodeInsufficientStock)
	_, err = r.coord.Checkout(bg, "c", sagaTTL, idem)
	wantCode(t, err, CodeInsufficientStock) // settled: replayed
	st := must[CheckoutStatus](t)(r.coord.CheckoutStatusOf(bg, "c", idem.Key))
	r.clock.Advance(settleAfter + time.Second)
	r.coord.SettleCheckouts()
	if _, held := r.stockOf("a"); held != 0 {
		t.Errorf("the checkout settled as insufficient_stock (status %s) and a retry with its key came, yet %d unit(s) of a stay held by its "+
			"unanswered reservation at h1, which is reachable; steps %+v", st.Phase, held, st.Steps)
	}
}

// TestEscrowCheckoutThroughRightsHolderRecallsItsRights: region a holds
// rights to escrow sku e1 (homed at h) and a hold decided from them. A
// keyed checkout answered by a needs more of e1 than h has free: h (the
// coordinator and home) recalls a's unused rights while a's forwarded
// checkout waits, and the order is made; a's own hold is untouched,
// nothing of the checkout stays held, and the units add up (committed 8
// of 10, a's hold of 1 within its rights).
func TestEscrowCheckoutThroughRightsHolderRecallsItsRights(t *testing.T) {
	r := newEscrowRig(t)
	h, a := r.nodes["h"], r.nodes["a"]
	must[Item](t)(h.Restock(bg, "e1", 10))
	r.deliver(nil)
	own := must[Reservation](t)(a.Reserve(bg, "e1", 1, time.Hour, Idem{}))
	r.deliver(nil)
	if hv := r.item("h", "e1"); hv.Available >= 8 {
		t.Fatalf("setup: h has %d available, the test needs fewer than 8", hv.Available)
	}
	must[Cart](t)(a.AddItem(bg, "c1", "e1", 8))
	r.deliver(nil)
	order := must[Order](t)(a.Checkout(bg, "c1", time.Minute, fp("esc-through-a")))
	if got := co4Order(order); got["e1"] != 8 {
		t.Fatalf("order %+v", order)
	}
	r.deliver(nil)
	if res := must[Reservation](t)(a.GetReservation(bg, own.ID)); res.State != StateHeld {
		t.Fatalf("a's own hold after the checkout: %s", res.State)
	}
	hv := r.item("h", "e1")
	if hv.Stock != 2 || hv.Reserved != 0 {
		t.Errorf("e1 at h after the order: stock %d reserved %d, want 2 and 0", hv.Stock, hv.Reserved)
	}
	if c := must[Cart](t)(a.GetCart(bg, "c1")); len(c.Items) != 0 {
		t.Errorf("cart at a after the order: %+v", c.Items)
	}
}
