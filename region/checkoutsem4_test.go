package region

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/latticedb/lattice/region/store"
)

// co4Homes carries the coordinator's home requests to in-process homes h1
// (sku a) and h2 (sku b), as over the wire (ServeForwarded on a copy).
// A rule "op sku" → mode drops the request ("drop": the home never sees
// it), serves it and loses its answer ("lose"), or serves it twice and
// answers the second ("dup"). hook, when set, runs before a request is
// served (to make things happen at a chosen step).
type co4Homes struct {
	mu    sync.Mutex
	nodes map[string]*testNode
	rules map[string]string
	hook  func(req *HomeRequest)
	// dieAfter, when positive, counts down the requests served: once it
	// reaches zero every later request is lost (the coordinator is cut
	// off until it restarts), and so is the answer to the last one when
	// dieLose is set.
	dieAfter int
	dieLose  bool
	dead     bool
}

func (h *co4Homes) skuOf(req *HomeRequest) string {
	if req.SKU != "" {
		return req.SKU
	}
	home, _ := ReservationHome(req.ID)
	return map[string]string{"h1": "a", "h2": "b"}[home]
}

func (h *co4Homes) set(rules ...string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.rules, h.dieAfter, h.dead = map[string]string{}, 0, false
	for _, r := range rules {
		var op, sku, mode string
		fmt.Sscan(r, &op, &sku, &mode)
		h.rules[op+" "+sku] = mode
	}
}

func (h *co4Homes) setHook(f func(req *HomeRequest)) {
	h.mu.Lock()
	h.hook = f
	h.mu.Unlock()
}

func (h *co4Homes) Forward(ctx context.Context, home string, req *HomeRequest) (*HomeResponse, error) {
	h.mu.Lock()
	mode := h.rules[req.Op+" "+h.skuOf(req)]
	if h.dead {
		mode = "drop"
	} else if h.dieAfter > 0 {
		if h.dieAfter--; h.dieAfter == 0 {
			h.dead, mode = true, "drop"
			if h.dieLose {
				mode = "lose"
			}
		}
	}
	hook := h.hook
	n := h.nodes[home]
	h.mu.Unlock()
	if hook != nil {
		hook(req)
	}
	cut := &Error{Code: CodeHomeUnavailable, RetryAfter: 1, Detail: "home " + home + " cut off"}
	if mode == "drop" || n == nil {
		return nil, cut
	}
	c := *req
	resp := n.ServeForwarded(ctx, &c)
	if mode == "dup" {
		c2 := *req
		resp = n.ServeForwarded(ctx, &c2)
	}
	if mode == "lose" {
		return nil, cut
	}
	return resp, nil
}

// co4Rig is a coordinator us-east (home of every cart and of every sku
// but a and b) and homes h1 (a) and h2 (b), each on its own file.
type co4Rig struct {
	*sagaRig
	sh *co4Homes
}

func newCo4Rig(t *testing.T) *co4Rig {
	r := &co4Rig{sagaRig: &sagaRig{t: t, dir: t.TempDir(), clock: newFakeClock()}, sh: &co4Homes{nodes: map[string]*testNode{}}}
	for _, h := range []string{"h1", "h2"} {
		r.sh.nodes[h] = r.open(h, nil)
	}
	r.coord = r.open("us-east", r.sh)
	return r
}

// nodeOf returns the home of sku.
func (r *co4Rig) nodeOf(sku string) *testNode {
	switch sku {
	case "a":
		return r.sh.nodes["h1"]
	case "b":
		return r.sh.nodes["h2"]
	}
	return r.coord
}

func (r *co4Rig) restartCoordinator(unclean bool) {
	if unclean {
		r.coord.crash()
	} else {
		r.coord.close()
	}
	r.coord = r.open("us-east", r.sh)
}

func (r *co4Rig) restartHome(name string, unclean bool) {
	r.sh.mu.Lock()
	n := r.sh.nodes[name]
	r.sh.mu.Unlock()
	if unclean {
		n.crash()
	} else {
		n.close()
	}
	n = r.open(name, nil)
	r.sh.mu.Lock()
	r.sh.nodes[name] = n
	r.sh.mu.Unlock()
}

// stockOf returns the stock and held units of sku at its home, expiring
// what is due first.
func (r *co4Rig) stockOf(sku string) (stock, held int64) {
	r.t.Helper()
	n := r.nodeOf(sku)
	if err := n.ExpireDue(); err != nil {
		r.t.Fatal(err)
	}
	it := must[Item](r.t)(n.GetItem(bg, sku, false))
	return it.Stock, it.Reserved
}

// settleAll heals every link, and runs the coordinator's background
// settling a few rounds.
func (r *co4Rig) settleAll() {
	r.sh.set()
	r.sh.setHook(nil)
	for range 3 {
		r.clock.Advance(settleAfter + time.Second)
		r.coord.SettleCheckouts()
	}
}

func co4Transient(err error) bool {
	var e *Error
	return errors.As(err, &e) && transient(e)
}

func co4Code(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	if err != nil {
		return err.Error()
	}
	return ""
}

func co4Cart(c Cart) map[string]int64 {
	m := map[string]int64{}
	for _, it := range c.Items {
		m[it.SKU] = it.Qty
	}
	return m
}

func co4Order(o Order) map[string]int64 {
	m := map[string]int64{}
	for _, l := range o.Lines {
		m[l.SKU] += l.Qty
	}
	return m
}

func co4Fmt(m map[string]int64) string {
	var ks []string
	for k, v := range m {
		if v != 0 {
			ks = append(ks, fmt.Sprintf("%s=%d", k, v))
		}
	}
	sort.Strings(ks)
	return fmt.Sprint(ks)
}

func co4Same(a, b map[string]int64) bool { return co4Fmt(a) == co4Fmt(b) }

// TestCheckoutSagaRandomFaultsSettleToTheRule drives keyed checkouts of a
// cart of skus homed at two remote homes and at the coordinator itself
// through random faults at every step (requests dropped, answers lost,
// requests duplicated), with restarts of the coordinator and of homes
// (clean and unclean), holds expiring between runs and other buyers
// taking stock; then heals everything, lets the coordinator settle and
// retries with the key. The outcome must be the saga's rule: an order
// whose every line is committed once (the committed units are exactly the
// order's), or a clean failure with nothing committed; the cart loses
// exactly the bought lines; the key replays the outcome; nothing is held
// once the holds' ttl has passed.
func TestCheckoutSagaRandomFaultsSettleToTheRule(t *testing.T) {
	seed := testSeed(t)
	rng := rand.New(rand.NewPCG(seed, seed^0x5eed))
	for iter := range 8 {
		sub := rng.Uint64()
		t.Run(fmt.Sprintf("case%d", iter), func(t *testing.T) {
			co4RandomCase(t, sub)
		})
		if t.Failed() {
			return
		}
	}
}

// co4Entry is one entry of the cart model: an add or set of sku, and
// whether the checkout read it (it is bought with the order).
type co4Entry struct {
	sku  string
	set  bool
	n    int64
	read bool
}

func co4ModelQty(es []co4Entry, bought bool) map[string]int64 {
	set, add := map[string]int64{}, map[string]int64{}
	for _, e := range es {
		if bought && e.read {
			continue
		}
		if e.set {
			set[e.sku] = max(set[e.sku], e.n)
		} else {
			add[e.sku] += e.n
		}
	}
	out := map[string]int64{}
	for s, q := range set {
		out[s] += q
	}
	for s, q := range add {
		out[s] += q
	}
	return out
}

func co4RandomCase(t *testing.T, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 7))
	var logMu sync.Mutex
	var log []string
	logf := func(f string, a ...any) {
		logMu.Lock()
		log = append(log, fmt.Sprintf(f, a...))
		logMu.Unlock()
	}
	defer func() {
		if t.Failed() {
			t.Logf("case seed %d; history:\n%v", seed, log)
		}
	}()
	r := newCo4Rig(t)
	skus := []string{"a", "b", "l"}
	stock := map[string]int64{"a": 10, "b": 10, "l": 10, "d": 10}
	big := rng.IntN(4) == 0
	if big {
		// Line a holds more than one reservation request may ask for.
		stock["a"] = 3_000_000
	}
	for _, s := range append(skus, "d") {
		for left := stock[s]; left > 0; left -= min(left, 1_000_000) {
			must[Item](t)(r.nodeOf(s).Restock(bg, s, min(left, 1_000_000)))
		}
	}
	var model []co4Entry
	if big {
		must[Cart](t)(r.coord.AddItem(bg, "c", "a", 1_000_000))
		must[Cart](t)(r.coord.AddItem(bg, "c", "a", 1_000_000))
		model = append(model, co4Entry{sku: "a", n: 1_000_000, read: true}, co4Entry{sku: "a", n: 1_000_000, read: true})
	}
	for _, s := range skus {
		if rng.IntN(5) < 4 {
			q := int64(1 + rng.IntN(3))
			must[Cart](t)(r.coord.AddItem(bg, "c", s, q))
			model = append(model, co4Entry{sku: s, n: q, read: true})
		}
	}
	must[Cart](t)(r.coord.AddItem(bg, "c", "a", 1))
	model = append(model, co4Entry{sku: "a", n: 1, read: true})
	before := co4Cart(must[Cart](t)(r.coord.GetCart(bg, "c")))
	logf("cart %s", co4Fmt(before))
	keyless := rng.IntN(4) == 0
	idem := fp("rand")
	if keyless {
		idem = Idem{}
		logf("keyless")
	}
	ops := []string{OpReserve, OpCommit, OpRelease, OpReturn}
	modes := []string{"drop", "lose", "dup"}
	runs := 1 + rng.IntN(3)
	if keyless {
		runs = 1
	}
	var orderIDs sync.Map
	var modelMu sync.Mutex
	for run := range runs {
		var rules []string
		for _, op := range ops {
			for _, s := range []string{"a", "b"} {
				if rng.IntN(4) == 0 {
					rules = append(rules, op+" "+s+" "+modes[rng.IntN(len(modes))])
				}
			}
		}
		r.sh.set(rules...)
		die := 0
		if rng.IntN(3) == 0 {
			die = 1 + rng.IntN(8)
			r.sh.mu.Lock()
			r.sh.dieAfter, r.sh.dieLose = die, rng.IntN(2) == 0
			r.sh.mu.Unlock()
			logf("run %d: cut off at request %d (answer lost %v)", run, die, r.sh.dieLose)
		}
		expire := rng.IntN(4) == 0
		edit := rng.IntN(6)
		var expireOnce, editOnce sync.Once
		coord := r.coord
		r.sh.setHook(func(req *HomeRequest) {
			if !keyless {
				st, err := coord.CheckoutStatusOf(bg, "c", idem.Key)
				if err != nil {
					t.Errorf("status during %s %s: %v", req.Op, req.SKU, err)
				} else {
					orderIDs.Store(st.OrderID, true)
					// In phase return a line whose reservation was not
					// answered is reserved again under its key and the
					// hold, if any, released (releaseLoose).
					ok := map[string][]string{OpReserve: {"reserve", "commit", "return"}, OpRelease: {"reserve", "return"}, OpCommit: {"commit"}, OpReturn: {"return"}}[req.Op]
					if st.Phase == "failed-transiently" && (req.Op == OpReserve || req.Op == OpRelease) && co4KeyAttempt(req.IdemKey) < int(st.Attempt) {
						ok = append(ok, st.Phase) // an earlier attempt's hold released before the next attempt
					}
					if (st.Phase == "commit" || st.Phase == "settled") && (req.Op == OpReserve || req.Op == OpRelease) && co4KeyAttempt(req.IdemKey) < int(st.Attempt) {
						// An earlier attempt's hold released once every line
						// is committed, or after the order settled (settleLoose).
						ok = append(ok, st.Phase)
					}
					if !co4Has(ok, st.Phase) {
						t.Errorf("status during a %s request: phase %q, want one of %v", req.Op, st.Phase, ok)
					}
				}
			}
			if req.Op != OpCommit {
				return
			}
			if expire {
				expireOnce.Do(func() { r.clock.Advance(2 * sagaTTL); logf("holds expire at the first commit") })
			}
			editOnce.Do(func() {
				modelMu.Lock()
				defer modelMu.Unlock()
				switch edit {
				case 0:
					must[Cart](t)(coord.AddItem(bg, "c", "d", 1))
					model = append(model, co4Entry{sku: "d", n: 1})
				case 1:
					must[Cart](t)(coord.AddItem(bg, "c", "a", 2))
					model = append(model, co4Entry{sku: "a", n: 2})
				case 2:
					must[Cart](t)(coord.RemoveItem(bg, "c", "a"))
					model = slices.DeleteFunc(model, func(e co4Entry) bool { return e.sku == "a" })
				case 3:
					must[Cart](t)(coord.SetItem(bg, "c", "b", 5))
					model = slices.DeleteFunc(model, func(e co4Entry) bool { return e.sku == "b" })
					model = append(model, co4Entry{sku: "b", set: true, n: 5})
				default:
					return
				}
				logf("cart edit %d during the commit phase", edit)
			})
		})
		_, err := r.coord.Checkout(bg, "c", sagaTTL, idem)
		logf("run %d rules %v: %v", run, rules, err)
		switch rng.IntN(7) {
		case 0:
			r.restartCoordinator(true)
			logf("coordinator crashed")
		case 1:
			r.restartCoordinator(false)
			logf("coordinator restarted")
		case 2:
			h := []string{"h1", "h2"}[rng.IntN(2)]
			r.restartHome(h, rng.IntN(2) == 0)
			logf("home %s restarted", h)
		case 3:
			r.clock.Advance(2 * sagaTTL)
			logf("holds expired")
		case 4:
			s := skus[rng.IntN(len(skus))]
			st, held := r.stockOf(s)
			if q := st - held - int64(rng.IntN(2)); q > 0 {
				if _, err := r.nodeOf(s).Reserve(bg, s, q, 10*time.Minute, Idem{}); err == nil {
					logf("another buyer holds %d %s", q, s)
				}
			}
		}
	}
	r.settleAll()
	var order Order
	var err error
	if !keyless {
		for range 4 {
			order, err = r.coord.Checkout(bg, "c", sagaTTL, idem)
			if !co4Transient(err) {
				break
			}
			logf("retry: %v", err)
			r.settleAll()
		}
		logf("outcome: %+v %v", order, err)
		if err != nil && co4Transient(err) {
			t.Fatalf("with every home reachable the checkout did not settle: %v", err)
		}
		if err != nil && co4Code(err) != CodeInsufficientStock {
			t.Fatalf("checkout ended with %v, want an order or insufficient_stock", err)
		}
		again, err2 := r.coord.Checkout(bg, "c", sagaTTL, idem)
		if co4Code(err2) != co4Code(err) || again.OrderID != order.OrderID || !co4Same(co4Order(again), co4Order(order)) {
			t.Fatalf("replay with the key: %+v %v, want %+v %v", again, err2, order, err)
		}
		st := must[CheckoutStatus](t)(r.coord.CheckoutStatusOf(bg, "c", idem.Key))
		switch {
		case st.Phase != "settled":
			t.Errorf("status of the settled checkout: phase %q", st.Phase)
		case err == nil && (st.Order == nil || st.Order.OrderID != order.OrderID || st.OrderID != order.OrderID || !co4Same(co4Order(*st.Order), co4Order(order))):
			t.Errorf("status %+v of the order %+v", st, order)
		case err == nil && len(st.Reservations) != len(order.Lines):
			t.Errorf("status reservations %v of the order %+v", st.Reservations, order)
		case err != nil && (st.Failure == nil || st.Failure.Code != co4Code(err)):
			t.Errorf("status %+v of the failure %v", st, err)
		}
		if err == nil {
			for i, l := range order.Lines {
				if i < len(st.Reservations) && st.Reservations[i] != l.ReservationID {
					t.Errorf("status reservation %s of line %+v", st.Reservations[i], l)
				}
			}
		}
		n := 0
		orderIDs.Range(func(k, v any) bool { n++; return true })
		if n > 1 {
			t.Errorf("the checkout's status named %d order ids", n)
		}
	}
	bought := map[string]int64{}
	if err == nil && !keyless {
		bought = co4Order(order)
		if !co4Same(bought, before) {
			t.Errorf("order lines %s, want the cart's %s", co4Fmt(bought), co4Fmt(before))
		}
		for _, l := range order.Lines {
			res := must[Reservation](t)(r.nodeOf(l.SKU).GetReservation(bg, l.ReservationID))
			if res.State != StateCommitted || res.Qty != l.Qty {
				t.Errorf("order line %+v: reservation %+v, want committed", l, res)
			}
		}
	}
	r.clock.Advance(20 * time.Minute)
	committed := map[string]int64{}
	for _, s := range append(skus, "d") {
		st, held := r.stockOf(s)
		committed[s] = stock[s] - st
		if held != 0 {
			t.Errorf("%s at its home: %d held once every ttl has passed", s, held)
		}
	}
	if keyless {
		// Either the whole cart was bought, or nothing.
		if !co4Same(committed, map[string]int64{}) && !co4Same(committed, before) {
			t.Errorf("a keyless checkout settled with %s committed, want all of %s or nothing", co4Fmt(committed), co4Fmt(before))
		}
		bought = committed
	} else if !co4Same(committed, bought) {
		t.Errorf("committed %s, want exactly the order's %s", co4Fmt(committed), co4Fmt(bought))
	}
	after := co4Cart(must[Cart](t)(r.coord.GetCart(bg, "c")))
	want := co4ModelQty(model, co4Fmt(bought) != "[]")
	if !co4Same(after, want) {
		t.Errorf("cart after the checkout %s, want %s (bought: %s)", co4Fmt(after), co4Fmt(want), co4Fmt(bought))
	}
}

func co4Has(list []string, s string) bool { return slices.Contains(list, s) }

// co4KeyAttempt returns the attempt a checkout's derived idempotency key
// names ("\x00checkout/order/attempt/step/sku..."), or -1.
func co4KeyAttempt(key string) int {
	parts := strings.Split(key, "/")
	if len(parts) < 3 {
		return -1
	}
	a, err := strconv.Atoi(parts[2])
	if err != nil {
		return -1
	}
	return a
}

// TestConcurrentCheckoutsOfOneCartBuyItOnce runs keyed and keyless
// checkouts of one cart at once, each keyed one retrying its key until
// it settles, while some commits' and reservations' answers are lost; the
// coordinator's background settling then runs. The cart is bought at most once: the
// committed units are exactly those of the one order, every key replays
// its outcome, and the cart loses exactly the bought lines.
func TestConcurrentCheckoutsOfOneCartBuyItOnce(t *testing.T) {
	seed := testSeed(t)
	for iter := range 6 {
		rng := rand.New(rand.NewPCG(seed, uint64(iter)))
		r := newCo4Rig(t)
		for _, s := range []string{"a", "b", "l", "d"} {
			must[Item](t)(r.nodeOf(s).Restock(bg, s, 10))
			if s != "d" {
				must[Cart](t)(r.coord.AddItem(bg, "c", s, 1))
			}
		}
		var rules []string
		for _, s := range []string{"a", "b"} {
			if rng.IntN(2) == 0 {
				rules = append(rules, OpCommit+" "+s+" lose")
			}
			if rng.IntN(3) == 0 {
				rules = append(rules, OpReserve+" "+s+" lose")
			}
		}
		r.sh.set(rules...)
		var wg sync.WaitGroup
		var mu sync.Mutex
		orders := map[string]Order{}
		outcome := map[string]string{}
		for k := range 3 {
			wg.Go(func() {
				idem := fp(fmt.Sprintf("k%d", k))
				for try := 0; ; try++ {
					if try == 5 {
						r.sh.set() // healed
					}
					o, err := r.coord.Checkout(bg, "c", sagaTTL, idem)
					if err == nil {
						mu.Lock()
						orders[o.OrderID] = o
						outcome[idem.Key] = o.OrderID
						mu.Unlock()
						return
					}
					if !co4Transient(err) {
						mu.Lock()
						outcome[idem.Key] = co4Code(err)
						mu.Unlock()
						return
					}
					if try > 40 {
						return // no outcome: the replay below may differ
					}
					r.clock.Advance(time.Second)
				}
			})
		}
		for range 2 {
			wg.Go(func() {
				if o, err := r.coord.Checkout(bg, "c", sagaTTL, Idem{}); err == nil {
					mu.Lock()
					orders[o.OrderID] = o
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		r.settleAll()
		// Keyed checkouts: each key's outcome replays.
		for k := range 3 {
			idem := fp(fmt.Sprintf("k%d", k))
			o, err := r.coord.Checkout(bg, "c", sagaTTL, idem)
			got := o.OrderID
			if err != nil {
				got = co4Code(err)
			}
			if outcome[idem.Key] != "" && got != outcome[idem.Key] {
				t.Errorf("iteration %d: key %s answered %s, then replayed %s", iter, idem.Key, outcome[idem.Key], got)
			}
			if err == nil {
				orders[o.OrderID] = o
			}
		}
		r.clock.Advance(20 * time.Minute)
		bought := map[string]int64{}
		for _, o := range orders {
			for s, q := range co4Order(o) {
				bought[s] += q
			}
		}
		committed := map[string]int64{}
		for _, s := range []string{"a", "b", "l"} {
			st, held := r.stockOf(s)
			committed[s] = 10 - st
			if held != 0 {
				t.Errorf("iteration %d: %s: %d held once every ttl passed", iter, s, held)
			}
		}
		if len(orders) > 1 || !co4Same(committed, bought) {
			t.Errorf("iteration %d (rules %v): %d orders %+v buying %s; committed %s; want at most one order, its units committed",
				iter, rules, len(orders), orders, co4Fmt(bought), co4Fmt(committed))
		}
		after := co4Cart(must[Cart](t)(r.coord.GetCart(bg, "c")))
		if (len(orders) == 1) != (co4Fmt(after) == "[]") {
			t.Errorf("iteration %d: cart %s after %d orders", iter, co4Fmt(after), len(orders))
		}
		if t.Failed() {
			return
		}
	}
}

// TestPartitionedCheckoutRandomFaultsSettleToTheRule: regions h and k of
// two partitions each; cart coordinated at h partition 0 holding x (homed
// at h partition 1), y (homed at k partition 0) and e (an escrow sku homed
// at k partition 1, of which h holds unused rights). Keyed checkouts go
// through either region under random faults (requests dropped or answers
// lost at every step, as sent by any region), with restarts of the
// coordinator and of homes (clean or unclean) and holds expiring between
// runs; then everything heals, the coordinator settles and the key is
// retried through either region. The outcome must be an order whose units
// are exactly those committed (or nothing committed), replayed by the key
// through both regions, with the cart, at both regions, less exactly the
// bought lines.
func TestPartitionedCheckoutRandomFaultsSettleToTheRule(t *testing.T) {
	seed := testSeed(t)
	rng := rand.New(rand.NewPCG(seed, 99))
	for iter := range 8 {
		sub := rng.Uint64()
		t.Run(fmt.Sprintf("case%d", iter), func(t *testing.T) { co4PartCase(t, sub) })
		if t.Failed() {
			return
		}
	}
}

func co4PartCase(t *testing.T, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 3))
	var log []string
	logf := func(f string, a ...any) { log = append(log, fmt.Sprintf(f, a...)) }
	defer func() {
		if t.Failed() {
			t.Logf("case seed %d; history:\n%v", seed, log)
		}
	}()
	spec := partRigSpec{regions: []string{"h", "k"}, parts: 2, home: pcHome, peers: true,
		escrow: func(sku string) bool { return strings.HasPrefix(sku, "k-e-") }}
	r := newPCRig(t, spec)
	cart, x, y, e := r.key("cart-", 0), r.key("x-", 1), r.key("k-y-", 0), r.key("k-e-", 1)
	r.faults.skuAt["h/1"] = x
	r.faults.skuAt["k/0"] = y
	r.faults.skuAt["k/1"] = e
	skus := []string{x, y, e}
	at := func(name, key string) (context.Context, context.CancelFunc) { return r.keyRequest(key) }
	for _, s := range skus {
		ctx, cancel := at(pcHome(s), s)
		must[Item](t)(r.parts[pcHome(s)].Restock(ctx, s, 10))
		cancel()
	}
	r.deliver()
	// h takes rights to e (a reservation decided from them, released).
	ctx, cancel := at("h", e)
	res := must[Reservation](t)(r.parts["h"].Reserve(ctx, e, 2, time.Minute, Idem{}))
	must[Reservation](t)(r.parts["h"].Release(ctx, res.ID, Idem{}))
	cancel()
	added := map[string]int64{}
	ctx, cancel = at("h", cart)
	for _, s := range skus {
		q := int64(1 + rng.IntN(3))
		if s == e {
			q = int64(4 + rng.IntN(4)) // more than the home has left unless it recalls h's rights
		}
		must[Cart](t)(r.parts["h"].AddItem(ctx, cart, s, q))
		added[s] += q
	}
	cancel()
	r.deliver()
	ctx, cancel = at("h", cart)
	before := co4Cart(must[Cart](t)(r.parts["h"].GetCart(ctx, cart)))
	cancel()
	logf("cart %s", co4Fmt(before))
	idem := fp("pc")
	checkout := func(through string) (Order, error) {
		ctx, cancel := r.keyRequest(cart)
		defer cancel()
		return r.parts[through].Checkout(ctx, cart, sagaTTL, idem)
	}
	restart := func(name string, part int, unclean bool) {
		n := r.nodes[name][part]
		if unclean {
			n.crash()
		} else {
			n.close()
		}
		tn := r.open(name, part)
		r.regroup(name)
		if unclean {
			// Anti-entropy with the other region (the store lost nothing:
			// every write was durable).
			r.deliver()
			other := map[string]string{"h": "k", "k": "h"}[name]
			tn.SyncedWith(other, "", []string{other})
		}
	}
	ops := []string{OpReserve, OpCommit, OpRelease, OpReturn, OpCheckout}
	for run := range 1 + rng.IntN(3) {
		var rules []string
		for _, op := range ops {
			for _, s := range append(slices.Clone(skus), cart) {
				if rng.IntN(5) == 0 {
					rules = append(rules, op+" "+s+" "+[]string{"drop", "lose"}[rng.IntN(2)])
				}
			}
		}
		r.faults.set("", rules...)
		through := []string{"h", "k"}[rng.IntN(2)]
		_, err := checkout(through)
		logf("run %d through %s rules %v: %v", run, through, rules, err)
		r.faults.set("")
		switch rng.IntN(6) {
		case 0:
			restart("h", 0, true)
			logf("coordinator crashed")
		case 1:
			restart("h", 0, false)
			logf("coordinator restarted")
		case 2:
			name, part := []string{"h", "k", "k"}[rng.IntN(3)], 1
			if name == "k" {
				part = rng.IntN(2)
			}
			restart(name, part, rng.IntN(2) == 0)
			logf("home %s/%d restarted", name, part)
		case 3:
			r.clock.Advance(2 * sagaTTL)
			logf("holds expired")
		}
		if rng.IntN(3) == 0 {
			// The shopper adds at either region (not yet replicated).
			name, sku, q := []string{"h", "k"}[rng.IntN(2)], skus[rng.IntN(len(skus))], int64(1+rng.IntN(2))
			ctx, cancel := r.keyRequest(cart)
			must[Cart](t)(r.parts[name].AddItem(ctx, cart, sku, q))
			cancel()
			added[sku] += q
			logf("added %d %s at %s", q, sku, name)
		}
		if rng.IntN(2) == 0 {
			r.deliver()
		}
	}
	r.faults.set("")
	coord := func() *Node { return r.parts["h"].Node(0) }
	var order Order
	var err error
	for try := range 5 {
		r.clock.Advance(settleAfter + time.Second)
		coord().SettleCheckouts()
		r.deliver()
		order, err = checkout([]string{"h", "k"}[try%2])
		if !co4Transient(err) {
			break
		}
		logf("retry: %v", err)
	}
	logf("outcome %+v %v", order, err)
	if co4Transient(err) {
		t.Fatalf("with every home reachable the checkout did not settle: %v", err)
	}
	if err != nil && co4Code(err) != CodeInsufficientStock {
		t.Fatalf("checkout ended with %v, want an order or insufficient_stock", err)
	}
	for _, through := range []string{"h", "k"} {
		again, err2 := checkout(through)
		if co4Code(err2) != co4Code(err) || again.OrderID != order.OrderID || !co4Same(co4Order(again), co4Order(order)) {
			t.Fatalf("replay through %s: %+v %v, want %+v %v", through, again, err2, order, err)
		}
	}
	bought := map[string]int64{}
	if err == nil {
		bought = co4Order(order)
	}
	r.clock.Advance(20 * time.Minute)
	r.deliver()
	for _, s := range skus {
		it := r.co4HomeItem(s)
		if committed := 10 - it.Stock; committed != bought[s] || it.Reserved != 0 {
			t.Errorf("%s at its home: %+v: %d committed; want %d (the order's), nothing held", s, it, committed, bought[s])
		}
	}
	_ = before
	// Every entry is bought whole or stays: what stays in the cart and
	// what was bought add up to what was added.
	want := map[string]int64{}
	for s, q := range added {
		want[s] = q - bought[s]
	}
	for _, name := range []string{"h", "k"} {
		ctx, cancel := r.keyRequest(cart)
		c := must[Cart](t)(r.parts[name].GetCart(ctx, cart))
		cancel()
		if !co4Same(co4Cart(c), want) {
			t.Errorf("cart at %s: %s, want %s", name, co4Fmt(co4Cart(c)), co4Fmt(want))
		}
	}
}

// co4HomeItem reads sku at its home, expiring what is due first.
func (r *pcRig) co4HomeItem(sku string) Item {
	r.t.Helper()
	n := r.parts[pcHome(sku)]
	for _, part := range n.Owned() {
		if err := n.Node(part).ExpireDue(); err != nil {
			r.t.Fatal(err)
		}
	}
	ctx, cancel := r.keyRequest(sku)
	defer cancel()
	return must[Item](r.t)(n.GetItem(ctx, sku, false))
}

// TestCheckoutRetryNotSettledAsShortByItsOwnLooseHold: b has one unit. A
// keyed checkout's reservation of b gets no answer (its request is lost:
// b is never held), so the attempt ends 503 and the plan keeps b as a
// loose hold. The retry with the key first sends that reservation again,
// which the home now makes, and releases it; that release is lost. The
// retry then reserves b under its new attempt and the home refuses it:
// b's only unit is held by this very checkout, by the hold the retry made
// itself. That refusal says nothing about b's stock, yet the retry
// settles the checkout as insufficient_stock under the key, and every
// later retry replays that failure, though nobody but this checkout ever
// held b. It must end transiently instead (as the attempt that lost the
// reservation did), so that a retry with every home reachable buys the
// cart.
func TestCheckoutRetryNotSettledAsShortByItsOwnLooseHold(t *testing.T) {
	r := newCo4Rig(t)
	must[Item](t)(r.nodeOf("a").Restock(bg, "a", 10))
	must[Item](t)(r.nodeOf("b").Restock(bg, "b", 1))
	must[Cart](t)(r.coord.AddItem(bg, "c", "a", 1))
	must[Cart](t)(r.coord.AddItem(bg, "c", "b", 1))
	idem := fp("loose")

	r.sh.set("reserve b drop") // b's reservation never reaches its home
	_, err := r.coord.Checkout(bg, "c", sagaTTL, idem)
	wantCode(t, err, CodeHomeUnavailable)
	if _, held := r.stockOf("b"); held != 0 {
		t.Fatalf("setup: b held %d", held)
	}

	r.sh.set("release b drop") // the retry's release of the loose hold is lost
	_, err = r.coord.Checkout(bg, "c", sagaTTL, idem)
	first := co4Code(err)

	r.sh.set()
	order, err := r.coord.Checkout(bg, "c", sagaTTL, idem)
	st, _ := r.coord.CheckoutStatusOf(bg, "c", idem.Key)
	if err != nil {
		_, held := r.stockOf("b")
		t.Fatalf("retry whose release of the loose hold was lost answered %s; the next retry, every home reachable: %v, want the order "+
			"(b: stock 1, held %d, by nobody but this checkout); steps %+v", first, err, held, st.Steps)
	}
	if len(order.Lines) != 2 {
		t.Fatalf("order %+v", order)
	}
	r.clock.Advance(2 * sagaTTL)
	if s, held := r.stockOf("b"); s != 0 || held != 0 {
		t.Fatalf("b after the order: stock %d held %d, want 0 and 0", s, held)
	}
}

// TestCheckoutStatusShowsLooseHoldRelease: a keyed checkout's hold of b
// is made but its answer lost (503). The retry with the key first sends
// that reservation again and releases the hold it made, then buys the
// cart. That release is a step of the checkout (it changed b's holds at
// its home): the status, which shows "every step with its time, attempt
// and result", must show it, or an operator cannot see where the
// reservation of b that the checkout released came from.
func TestCheckoutStatusShowsLooseHoldRelease(t *testing.T) {
	r := newCo4Rig(t)
	must[Item](t)(r.nodeOf("a").Restock(bg, "a", 10))
	must[Item](t)(r.nodeOf("b").Restock(bg, "b", 10))
	must[Cart](t)(r.coord.AddItem(bg, "c", "a", 1))
	must[Cart](t)(r.coord.AddItem(bg, "c", "b", 1))
	idem := fp("loose-status")
	r.sh.set("reserve b lose")
	_, err := r.coord.Checkout(bg, "c", sagaTTL, idem)
	wantCode(t, err, CodeHomeUnavailable)
	if _, held := r.stockOf("b"); held != 1 {
		t.Fatalf("setup: b held %d, want the lost reservation's 1", held)
	}
	var released []string
	r.sh.set()
	r.sh.setHook(func(req *HomeRequest) {
		if req.Op == OpRelease && req.IdemKey != "" && strings.HasSuffix(req.IdemKey, "/release") {
			released = append(released, req.ID)
		}
	})
	must[Order](t)(r.coord.Checkout(bg, "c", sagaTTL, idem))
	r.sh.setHook(nil)
	if len(released) != 1 {
		t.Fatalf("the retry released %v, want the one loose hold of b", released)
	}
	st := must[CheckoutStatus](t)(r.coord.CheckoutStatusOf(bg, "c", idem.Key))
	for _, s := range st.Steps {
		if s.Step == "release" && s.SKU == "b" && s.Reservation == released[0] {
			return
		}
	}
	t.Errorf("status steps %+v: no release of b's reservation %s, which the retry released", st.Steps, released[0])
}

// co4Clock is a fake clock that runs hook once, the first time the
// coordinator's background settling of one checkout asks for the time
// (in Node.settle, after it has read the checkout's record and before it
// claims the cart): what a client does meanwhile happens between that
// read and the settling's run.
type co4Clock struct {
	*fakeClock
	mu   sync.Mutex
	hook func()
}

func (c *co4Clock) Now() time.Time {
	c.mu.Lock()
	h := c.hook
	if h != nil {
		// The node reads its clock through a steadyClock: the caller
		// is one frame further up.
		pc, _, _, ok := runtime.Caller(2)
		if ok && strings.HasSuffix(runtime.FuncForPC(pc).Name(), ".(*Node).settle") {
			c.hook = nil
		} else {
			h = nil
		}
	}
	c.mu.Unlock()
	if h != nil {
		h()
	}
	return c.fakeClock.Now()
}

// openCoordinator opens the rig's coordinator on its file with clock.
func (r *co4Rig) openCoordinator(clock Clock) {
	r.t.Helper()
	path := filepath.Join(r.dir, "us-east", "data.db")
	st, err := OpenStore(path, store.Options{})
	if err != nil {
		r.t.Fatal(err)
	}
	n, err := NewNode(Options{Name: "us-east", Store: st, Clock: clock, ExpiryInterval: time.Hour, Forwarder: r.sh,
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
	r.coord = tn
}

// TestSettleDoesNotRunAStaleCheckoutRecord: a keyed checkout's
// coordinator crashes in its reserve phase (the plan stays stored in
// phase reserve, attempt 0). Once it is due, the background settling reads
// that record; meanwhile (before the settling claims the cart) the client
// retries with the key: attempt 0 ends on an unreachable home (503, the
// attempt is over and released), and the next retry makes the order
// under attempt 1. The settling must then find the checkout settled, not
// run the attempt-0 plan it read before: run, that plan reserves and
// commits the cart's lines a second time and overwrites the order the
// client holds, so the units of one cart are committed twice.
func TestSettleDoesNotRunAStaleCheckoutRecord(t *testing.T) {
	r := newCo4Rig(t)
	for _, s := range []string{"a", "b"} {
		must[Item](t)(r.nodeOf(s).Restock(bg, s, 10))
		must[Cart](t)(r.coord.AddItem(bg, "c", s, 1))
	}
	idem := fp("stale")
	// The coordinator crashes while b's reservation is on its way: the
	// plan stays in phase reserve.
	coord := r.coord
	var once sync.Once
	r.sh.set("reserve b drop")
	r.sh.setHook(func(req *HomeRequest) {
		if req.Op == OpReserve && req.SKU == "b" {
			once.Do(func() { _ = coord.store.CloseUnclean() })
		}
	})
	if _, err := r.coord.Checkout(bg, "c", sagaTTL, idem); err == nil {
		t.Fatal("setup: the checkout succeeded though its coordinator crashed")
	}
	r.sh.setHook(nil)
	coord.Node.Close()
	clock := &co4Clock{fakeClock: r.clock}
	r.openCoordinator(clock)
	if st := must[CheckoutStatus](t)(r.coord.CheckoutStatusOf(bg, "c", idem.Key)); st.Phase != "reserve" {
		t.Fatalf("setup: status after the crash %+v, want phase reserve", st)
	}
	r.clock.Advance(settleAfter + time.Second)

	var order Order
	var retryErr error
	clock.mu.Lock()
	clock.hook = func() {
		r.sh.set("reserve b drop")
		_, err := r.coord.Checkout(bg, "c", sagaTTL, idem)
		if co4Code(err) != CodeHomeUnavailable {
			retryErr = fmt.Errorf("first retry: %v, want home_unavailable", err)
			return
		}
		r.sh.set()
		order, retryErr = r.coord.Checkout(bg, "c", sagaTTL, idem)
	}
	clock.mu.Unlock()
	r.coord.SettleCheckouts()
	if retryErr != nil {
		t.Fatalf("client retries during the settling: %v", retryErr)
	}
	if order.OrderID == "" {
		t.Fatal("the settling did not read the checkout's record (hook not run)")
	}
	again, err := r.coord.Checkout(bg, "c", sagaTTL, idem)
	if err != nil || !slices.Equal(again.Lines, order.Lines) {
		t.Errorf("replay of the key after the settling: %+v %v, want the order the client got %+v", again, err, order)
	}
	r.clock.Advance(2 * sagaTTL)
	for _, s := range []string{"a", "b"} {
		if st, held := r.stockOf(s); st != 9 || held != 0 {
			t.Errorf("%s at its home: stock %d, held %d; want 9 and 0 (one order of one unit)", s, st, held)
		}
	}
}
