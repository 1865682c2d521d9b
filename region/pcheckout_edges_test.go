package region

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
)

// pcFaults decides which home requests a partRig node's forwarder loses:
// a rule "op name" (name: the sku, or the cart id of a checkout or status)
// drops the request ("drop": the home never sees it) or serves it and
// loses its answer ("lose"). Rules can be limited to requests sent by one
// region (from). skuAt names the sku a reservation id's home and
// partition hold, so that commits, releases and returns can be named.
type pcFaults struct {
	mu    sync.Mutex
	rules map[string]string
	from  string
	skuAt map[string]string
}

func (f *pcFaults) set(from string, rules ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rules, f.from = map[string]string{}, from
	for _, r := range rules {
		i := strings.LastIndexByte(r, ' ')
		f.rules[r[:i]] = r[i+1:]
	}
}

func (f *pcFaults) mode(from string, req *HomeRequest) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.from != "" && f.from != from {
		return ""
	}
	name := req.SKU
	switch req.Op {
	case OpCheckout, OpCheckoutStatus:
		name = req.CartID
	case OpCommit, OpRelease, OpReturn, OpGet:
		home, part, _, _ := parseReservationID(req.ID)
		name = f.skuAt[fmt.Sprintf("%s/%d", home, part)]
	}
	return f.rules[req.Op+" "+name]
}

type pcFwd struct {
	region string
	inner  Forwarder
	f      *pcFaults
}

func (w pcFwd) Forward(ctx context.Context, home string, req *HomeRequest) (*HomeResponse, error) {
	mode := w.f.mode(w.region, req)
	cut := &Error{Code: CodeHomeUnavailable, RetryAfter: 1, Detail: "home " + home + " cut off"}
	if mode == "drop" {
		return nil, cut
	}
	resp, err := w.inner.Forward(ctx, home, req)
	if mode == "lose" {
		return nil, cut
	}
	return resp, err
}

// pcRig is a partRig whose nodes' forwarders obey faults.
type pcRig struct {
	*partRig
	faults *pcFaults
}

func newPCRig(t *testing.T, spec partRigSpec) *pcRig {
	t.Helper()
	faults := &pcFaults{skuAt: map[string]string{}}
	spec.wrap = func(region string, f Forwarder) Forwarder { return pcFwd{region, f, faults} }
	return &pcRig{partRig: newPartRig(t, spec), faults: faults}
}

// pcHome homes keys beginning "k-" at region k, every other key at h.
var pcHome = prefixHome("k-", "k", "h")

var pcSpec = partRigSpec{regions: []string{"h", "k"}, parts: 2, home: pcHome}

// pcShop is a cart coordinated at h in partition 0 holding one unit of
// sku x (homed at h, partition 1) and one of sku y (homed at k,
// partition 0), each with a stock of 10.
type pcShop struct {
	*pcRig
	cart, x, y string
}

func newPCShop(t *testing.T) *pcShop {
	t.Helper()
	r := newPCRig(t, pcSpec)
	s := &pcShop{pcRig: r, cart: r.key("cart-", 0), x: r.key("x-", 1), y: r.key("k-y-", 0)}
	if pcHome(s.cart) != "h" || pcHome(s.x) != "h" || pcHome(s.y) != "k" {
		t.Fatal("placement")
	}
	r.faults.skuAt["h/1"] = s.x
	r.faults.skuAt["k/0"] = s.y
	ctx, cancel := r.keyRequest(s.x)
	must[Item](t)(r.parts["h"].Restock(ctx, s.x, 10))
	cancel()
	ctx, cancel = r.keyRequest(s.y)
	must[Item](t)(r.parts["k"].Restock(ctx, s.y, 10))
	cancel()
	ctx, cancel = r.keyRequest(s.cart)
	must[Cart](t)(r.parts["h"].AddItem(ctx, s.cart, s.x, 1))
	must[Cart](t)(r.parts["h"].AddItem(ctx, s.cart, s.y, 1))
	cancel()
	r.deliver()
	return s
}

func (s *pcShop) checkout(through string, idem Idem) (Order, error) {
	ctx, cancel := s.keyRequest(s.cart)
	defer cancel()
	return s.parts[through].Checkout(ctx, s.cart, sagaTTL, idem)
}

func (s *pcShop) homeItem(sku string) Item {
	s.t.Helper()
	home := pcHome(sku)
	n := s.parts[home]
	ctx, cancel := s.keyRequest(sku)
	defer cancel()
	for _, part := range n.Owned() {
		if err := n.Node(part).ExpireDue(); err != nil {
			s.t.Fatal(err)
		}
	}
	return must[Item](s.t)(n.GetItem(ctx, sku, false))
}

// TestCheckoutRetryIsNotRefusedByItsOwnUnreleasedHold: a keyed checkout
// coordinated at h (partition 0) of a cart holding the last unit of x
// (homed at h, partition 1) and of y (homed at k) cannot reach x's home
// (503 home_unavailable), so it releases its hold of y, and that release
// is lost too. The retry with the key, once every home is reachable and
// with no other buyer, must not be refused by the checkout's own earlier
// hold: the reservation code keeps a hold whose reservation went
// unanswered (Loose) and releases it before the next attempt "otherwise
// the hold would stay until its ttl and refuse the retry's own
// reservation of the same units" - a hold whose release went unanswered
// is in the same state and must be treated the same. Instead the retry is
// answered insufficient_stock for y, settled under the key: the shopper
// can never buy the cart with that key, though nobody else holds y.
func TestCheckoutRetryIsNotRefusedByItsOwnUnreleasedHold(t *testing.T) {
	s := newPCShop(t)
	for _, sku := range []string{s.x, s.y} {
		ctx, cancel := s.keyRequest(sku)
		must[Item](t)(s.parts[pcHome(sku)].Adjust(ctx, sku, -9, "last unit"))
		cancel()
	}
	s.faults.set("h", "reserve "+s.x+" drop", "release "+s.y+" drop")
	idem := fp("own-hold")
	_, err := s.checkout("k", idem)
	wantCode(t, err, CodeHomeUnavailable)
	s.faults.set("")

	order, err := s.checkout("h", idem)
	if err != nil {
		it := s.homeItem(s.y)
		t.Fatalf("retry with the key once every home is reachable: %v (y at its home: %+v, held by nobody but this checkout's first attempt)", err, it)
	}
	if len(order.Lines) != 2 {
		t.Fatalf("order %+v", order)
	}
}
