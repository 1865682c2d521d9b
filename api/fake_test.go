package api

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/latticedb/lattice/crdt"
	"github.com/latticedb/lattice/region"
)

// call is one recorded Service call.
type call struct {
	Method string
	Args   []any
	Idem   region.Idem
	// Deadline is how long the call's context had left when it was made
	// (0 for none).
	Deadline time.Duration
}

// fakeService is an in-memory Service that records every call. Its
// answers are canned from the arguments; err, when set, is what every
// operation returns instead, and waitFn replaces WaitToken.
type fakeService struct {
	mu      sync.Mutex
	calls   []call
	err     error
	panicky bool
	ready   bool
	writes  int
	waitFn  func(ctx context.Context, token string) error
}

var _ Service = (*fakeService)(nil)

func newFake() *fakeService { return &fakeService{ready: true} }

func (f *fakeService) record(ctx context.Context, method string, idem region.Idem, args ...any) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := call{Method: method, Args: args, Idem: idem}
	if d, ok := ctx.Deadline(); ok {
		c.Deadline = time.Until(d)
	}
	f.calls = append(f.calls, c)
	if f.panicky {
		panic("fake: boom")
	}
	if f.err == nil && method != "GetCart" && method != "GetItem" && method != "GetReservation" && method != "WaitToken" {
		f.writes++
	}
	return f.err
}

// Calls returns the calls recorded so far.
func (f *fakeService) Calls() []call {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]call(nil), f.calls...)
}

func (f *fakeService) Region() string { return "us-east" }

func (f *fakeService) cart(id string, items ...crdt.CartItem) region.Cart {
	return region.Cart{CartID: id, Region: "us-east", Items: items}
}

func (f *fakeService) GetCart(ctx context.Context, cartID string) (region.Cart, error) {
	if err := f.record(ctx, "GetCart", region.Idem{}, cartID); err != nil {
		return region.Cart{}, err
	}
	return f.cart(cartID), nil // nil items: the API must still send []
}

func (f *fakeService) AddItem(ctx context.Context, cartID, sku string, qty int64) (region.Cart, error) {
	if err := f.record(ctx, "AddItem", region.Idem{}, cartID, sku, qty); err != nil {
		return region.Cart{}, err
	}
	return f.cart(cartID, crdt.CartItem{SKU: sku, Qty: qty}), nil
}

func (f *fakeService) SetItem(ctx context.Context, cartID, sku string, qty int64) (region.Cart, error) {
	if err := f.record(ctx, "SetItem", region.Idem{}, cartID, sku, qty); err != nil {
		return region.Cart{}, err
	}
	if qty == 0 {
		return f.cart(cartID), nil
	}
	return f.cart(cartID, crdt.CartItem{SKU: sku, Qty: qty}), nil
}

func (f *fakeService) RemoveItem(ctx context.Context, cartID, sku string) (region.Cart, error) {
	if err := f.record(ctx, "RemoveItem", region.Idem{}, cartID, sku); err != nil {
		return region.Cart{}, err
	}
	return f.cart(cartID), nil
}

func (f *fakeService) ClearCart(ctx context.Context, cartID string) (region.Cart, error) {
	if err := f.record(ctx, "ClearCart", region.Idem{}, cartID); err != nil {
		return region.Cart{}, err
	}
	return f.cart(cartID), nil
}

func (f *fakeService) CheckoutStatusOf(ctx context.Context, cartID, key string) (region.CheckoutStatus, error) {
	return region.CheckoutStatus{}, region.Errorf(region.CodeNotFound, "no checkout of cart %s with this Idempotency-Key", cartID)
}

func (f *fakeService) Checkout(ctx context.Context, cartID string, ttl time.Duration, idem Idem) (region.Order, error) {
	if err := f.record(ctx, "Checkout", idem, cartID, ttl); err != nil {
		return region.Order{}, err
	}
	return region.Order{OrderID: "o-1", CartID: cartID, Lines: []region.OrderLine{
		{SKU: "book", Qty: 2, ReservationID: "us-east.r1", Home: "us-east"},
	}}, nil
}

func (f *fakeService) GetItem(ctx context.Context, sku string, consistent bool) (region.Item, error) {
	if err := f.record(ctx, "GetItem", region.Idem{}, sku, consistent); err != nil {
		return region.Item{}, err
	}
	return region.Item{SKU: sku, Home: "eu-west", Stock: 10, Reserved: 3, Available: 7}, nil
}

func (f *fakeService) Restock(ctx context.Context, sku string, qty int64) (region.Item, error) {
	if err := f.record(ctx, "Restock", region.Idem{}, sku, qty); err != nil {
		return region.Item{}, err
	}
	return region.Item{SKU: sku, Home: "eu-west", Stock: 10 + qty, Available: 10 + qty}, nil
}

func (f *fakeService) Adjust(ctx context.Context, sku string, delta int64, reason string) (region.Item, error) {
	if err := f.record(ctx, "Adjust", region.Idem{}, sku, delta, reason); err != nil {
		return region.Item{}, err
	}
	return region.Item{SKU: sku, Home: "eu-west", Stock: 10 + delta, Available: 10 + delta}, nil
}

func (f *fakeService) reservation(id, sku string, qty int64, state string) region.Reservation {
	return region.Reservation{ID: id, SKU: sku, Qty: qty, Home: "eu-west", State: state,
		ExpiresAt: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)}
}

func (f *fakeService) Reserve(ctx context.Context, sku string, qty int64, ttl time.Duration, idem Idem) (region.Reservation, error) {
	if err := f.record(ctx, "Reserve", idem, sku, qty, ttl); err != nil {
		return region.Reservation{}, err
	}
	return f.reservation("eu-west.r7", sku, qty, region.StateHeld), nil
}

func (f *fakeService) GetReservation(ctx context.Context, id string) (region.Reservation, error) {
	if err := f.record(ctx, "GetReservation", region.Idem{}, id); err != nil {
		return region.Reservation{}, err
	}
	return f.reservation(id, "book", 1, region.StateHeld), nil
}

func (f *fakeService) Commit(ctx context.Context, id string, idem Idem) (region.Reservation, error) {
	if err := f.record(ctx, "Commit", idem, id); err != nil {
		return region.Reservation{}, err
	}
	return f.reservation(id, "book", 1, region.StateCommitted), nil
}

func (f *fakeService) Release(ctx context.Context, id string, idem Idem) (region.Reservation, error) {
	if err := f.record(ctx, "Release", idem, id); err != nil {
		return region.Reservation{}, err
	}
	return f.reservation(id, "book", 1, region.StateReleased), nil
}

// TokenFor returns a token that changes with every successful write.
func (f *fakeService) TokenFor(context.Context) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return fmt.Sprintf("vv.us-east.%d", f.writes)
}

func (f *fakeService) WaitToken(ctx context.Context, token string) error {
	if err := f.record(ctx, "WaitToken", region.Idem{}, token); err != nil {
		return err
	}
	if f.waitFn != nil {
		return f.waitFn(ctx, token)
	}
	return nil
}

func (f *fakeService) Cluster() region.ClusterStatus {
	return region.ClusterStatus{Region: "us-east", Peers: []region.PeerStatus{}}
}

func (f *fakeService) Warnings() []string { return nil }

// ConcernCount counts concerns for a cluster of three regions.
func (f *fakeService) ConcernCount(field, v string) (int, error) {
	switch v {
	case "1", "2", "3":
		return int(v[0] - '0'), nil
	case "majority":
		return 2, nil
	case "all":
		return 3, nil
	}
	return 0, region.InvalidField(field, "%s must be a number of regions from 1 to 3, majority or all", field)
}

// AwaitReplicas is met at once: the fake has no other regions.
func (f *fakeService) AwaitReplicas(context.Context) error { return nil }

func (f *fakeService) Ready() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.ready
}
