package region

import (
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"
)

// TestSagattlRandomClocks: keyed checkouts of a cart of skus homed at h1,
// h2 and the coordinator, each region on its own clock, through random
// faults, crashes of the coordinator, holds expiring at one region only
// (between the reserve and the commit phase too), 25-hour gaps with
// every record collection run, and background settling. The outcome must
// be the saga's rule.
func TestSagattlRandomClocks(t *testing.T) {
	seed := testSeed(t)
	rng := rand.New(rand.NewPCG(seed, seed^0x7711))
	for iter := range 40 {
		sub := rng.Uint64()
		t.Run(fmt.Sprintf("case%d", iter), func(t *testing.T) { sagattlRandomCase(t, sub) })
		if t.Failed() {
			return
		}
	}
}

func sagattlRandomCase(t *testing.T, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 3))
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
	r := newSagattlRig(t)
	nodeOf := func(s string) *testNode {
		if s == "x" {
			return r.coord
		}
		return r.home(s)
	}
	skus := []string{"a", "b", "x"}
	for _, s := range skus {
		must[Item](t)(nodeOf(s).Restock(bg, s, 10))
		must[Cart](t)(r.coord.AddItem(bg, "c", s, int64(1+rng.IntN(3))))
	}
	before := co4Cart(must[Cart](t)(r.coord.GetCart(bg, "c")))
	logf("cart %s", co4Fmt(before))
	idem := fp("sagattl")
	names := []string{"us-east", "h1", "h2"}
	collectAll := func() {
		for _, n := range []*testNode{r.coord, r.home("a"), r.home("b")} {
			if err := n.CollectIdempotency(); err != nil {
				t.Fatal(err)
			}
			if err := n.CollectReservations(); err != nil {
				t.Fatal(err)
			}
		}
	}
	ops := []string{OpReserve, OpCommit, OpRelease, OpReturn}
	modes := []string{"drop", "lose", "dup"}
	var order Order
	var err error
	settledEarly := false
	for run := range 1 + rng.IntN(4) {
		var rules []string
		for _, op := range ops {
			for _, s := range []string{"a", "b"} {
				if rng.IntN(3) == 0 {
					rules = append(rules, op+" "+s+" "+modes[rng.IntN(len(modes))])
				}
			}
		}
		r.sh.set(rules...)
		expireAt := names[rng.IntN(len(names))]
		expire := rng.IntN(2) == 0
		var once sync.Once
		chaos := rng.IntN(3) == 0
		crashAt, crashed := 0, false
		if rng.IntN(3) == 0 {
			crashAt = 1 + rng.IntN(8)
		}
		var hookMu sync.Mutex
		hrng := rand.New(rand.NewPCG(rng.Uint64(), 5))
		coord := r.coord
		r.sh.setHook(func(req *HomeRequest) {
			hookMu.Lock()
			defer hookMu.Unlock()
			if crashed {
				return
			}
			if st, err := coord.CheckoutStatusOf(bg, "c", idem.Key); err == nil && st.Phase == "settled" {
				t.Errorf("status settled during a %s %s request: %+v", req.Op, req.SKU, st)
			}
			if req.Op == OpCommit && expire {
				once.Do(func() {
					r.clocks[expireAt].Advance(2 * sagaTTL)
					logf("holds expire at %s at the first commit", expireAt)
				})
			}
			if crashAt > 0 {
				if crashAt--; crashAt == 0 {
					_ = coord.store.CloseUnclean()
					crashed = true
					logf("coordinator crashes at %s %s", req.Op, req.SKU)
					return
				}
			}
			if !chaos {
				return
			}
			switch hrng.IntN(6) {
			case 0:
				n := names[hrng.IntN(len(names))]
				r.clocks[n].Advance(2 * sagaTTL)
				logf("holds expire at %s during %s %s", n, req.Op, req.SKU)
			case 1:
				r.advance(IdempotencyRetention+time.Hour, names...)
				collectAll()
				logf("25 h pass during %s %s; records collected", req.Op, req.SKU)
			}
		})
		order, err = r.coord.Checkout(bg, "c", sagaTTL, idem)
		r.sh.setHook(nil)
		logf("run %d rules %v: %+v %v", run, rules, order, err)
		if crashed {
			coord.Node.Close()
			r.coord = r.open("us-east", r.sh)
			logf("coordinator reopened")
			continue
		}
		if !co4Transient(err) {
			settledEarly = true
			break
		}
		switch rng.IntN(6) {
		case 0:
			r.crashCoordinator()
			logf("coordinator crashed")
		case 1:
			n := names[rng.IntN(len(names))]
			r.clocks[n].Advance(2 * sagaTTL)
			logf("holds expire at %s", n)
		case 2:
			r.advance(IdempotencyRetention+time.Hour, names...)
			collectAll()
			logf("25 h pass; records collected")
		case 3:
			s := skus[rng.IntN(len(skus))]
			it := must[Item](t)(nodeOf(s).GetItem(bg, s, false))
			if q := it.Available - int64(rng.IntN(2)); q > 0 {
				if _, err := nodeOf(s).Reserve(bg, s, q, 10*time.Minute, Idem{}); err == nil {
					logf("another buyer holds %d %s", q, s)
				}
			}
		case 4:
			r.sh.set()
			r.advance(settleAfter+time.Second, "us-east")
			r.coord.SettleCheckouts()
			logf("background settling")
		}
	}
	r.sh.set()
	if !settledEarly {
		for range 4 {
			r.advance(settleAfter+time.Second, "us-east")
			r.coord.SettleCheckouts()
			order, err = r.coord.Checkout(bg, "c", sagaTTL, idem)
			logf("retry: %+v %v", order, err)
			if !co4Transient(err) {
				break
			}
		}
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
		t.Errorf("status of the settled checkout: %+v", st)
	case err == nil && (st.Order == nil || st.Order.OrderID != order.OrderID):
		t.Errorf("status %+v of the order %+v", st, order)
	case err != nil && (st.Failure == nil || st.Failure.Code != co4Code(err)):
		t.Errorf("status %+v of the failure %v", st, err)
	}
	bought := map[string]int64{}
	if err == nil {
		bought = co4Order(order)
		if !co4Same(bought, before) {
			t.Errorf("order lines %s, want the cart's %s", co4Fmt(bought), co4Fmt(before))
		}
		for _, l := range order.Lines {
			res := must[Reservation](t)(nodeOf(l.SKU).GetReservation(bg, l.ReservationID))
			if res.State != StateCommitted || res.Qty != l.Qty {
				t.Errorf("order line %+v: reservation %+v, want committed", l, res)
			}
		}
	}
	r.advance(25*time.Hour, names...)
	committed := map[string]int64{}
	for _, s := range skus {
		n := nodeOf(s)
		if err := n.ExpireDue(); err != nil {
			t.Fatal(err)
		}
		it := must[Item](t)(n.GetItem(bg, s, false))
		committed[s] = 10 - it.Stock
		if it.Reserved != 0 {
			t.Errorf("%s at its home: %d held once every ttl has passed", s, it.Reserved)
		}
	}
	if !co4Same(committed, bought) {
		t.Errorf("committed %s, want exactly the order's %s", co4Fmt(committed), co4Fmt(bought))
	}
	after := co4Cart(must[Cart](t)(r.coord.GetCart(bg, "c")))
	if (err == nil && len(after) != 0) || (err != nil && !co4Same(after, before)) {
		t.Errorf("cart after the checkout %s (before %s, outcome %v)", co4Fmt(after), co4Fmt(before), err)
	}
}
