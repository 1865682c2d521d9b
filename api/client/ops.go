package client

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"time"

	"github.com/latticedb/lattice/region"
)

// cartPath is the path of a cart, and of what follows it.
func cartPath(cartID string, rest ...string) string {
	p := "/v1/carts/" + url.PathEscape(cartID)
	for _, r := range rest {
		p += "/" + url.PathEscape(r)
	}
	return p
}

// Cart reads a cart as the answering region has it, or, with a context
// from WithQuorum, as the join of that many regions' states; an unknown
// cart is empty.
func (c *Client) Cart(ctx context.Context, cartID string) (*region.Cart, error) {
	var out region.Cart
	err := c.do(ctx, call{method: http.MethodGet, path: cartPath(cartID), retry: retrySafe, causal: true, quorum: true, want: http.StatusOK}, &out)
	return ret(&out, err)
}

// AddItem adds qty (1..1,000,000) units of sku to a cart and returns the
// cart. A failed attempt is repeated (at the next region) only when the
// request was never sent or a region refused it with a 503 that applied
// nothing: a repeat after an ambiguous transport error, or after a
// replication_timeout (the add was applied), could add the units twice.
func (c *Client) AddItem(ctx context.Context, cartID, sku string, qty int64) (*region.Cart, error) {
	var out region.Cart
	body := map[string]any{"sku": sku, "qty": qty}
	err := c.do(ctx, call{method: http.MethodPost, path: cartPath(cartID, "items"), body: body, retry: retryRefused, causal: true, want: http.StatusOK, cartWrite: true}, &out)
	return cartRet(&out, err)
}

// SetItem sets the quantity of sku in a cart (0..1,000,000; 0 removes
// it) and returns the cart.
func (c *Client) SetItem(ctx context.Context, cartID, sku string, qty int64) (*region.Cart, error) {
	var out region.Cart
	body := map[string]any{"qty": qty}
	err := c.do(ctx, call{method: http.MethodPut, path: cartPath(cartID, "items", sku), body: body, retry: retrySafe, causal: true, want: http.StatusOK, cartWrite: true}, &out)
	return cartRet(&out, err)
}

// RemoveItem removes sku from a cart (a no-op if absent) and returns the
// cart.
func (c *Client) RemoveItem(ctx context.Context, cartID, sku string) (*region.Cart, error) {
	var out region.Cart
	err := c.do(ctx, call{method: http.MethodDelete, path: cartPath(cartID, "items", sku), retry: retrySafe, causal: true, want: http.StatusOK, cartWrite: true}, &out)
	return cartRet(&out, err)
}

// ClearCart removes every line of a cart the answering region has seen
// and returns the cart.
func (c *Client) ClearCart(ctx context.Context, cartID string) (*region.Cart, error) {
	var out region.Cart
	err := c.do(ctx, call{method: http.MethodDelete, path: cartPath(cartID), retry: retrySafe, causal: true, want: http.StatusOK, cartWrite: true}, &out)
	return cartRet(&out, err)
}

// KeyOptions are the options of a keyed operation.
type KeyOptions struct {
	// IdempotencyKey names the operation: a repeat with the same key
	// returns the first outcome. When empty, the client makes a fresh
	// one (NewIdempotencyKey) and uses it for its own retries. A 409
	// request_in_progress is waited on only when it may be the call's own
	// earlier request (see Checkout).
	IdempotencyKey string
	// TTL is how long a reservation is held (1 s..24 h); 0 is the API's
	// default, 10 minutes. Commit and release ignore it.
	TTL time.Duration
}

func (o KeyOptions) key() string {
	if o.IdempotencyKey != "" {
		return o.IdempotencyKey
	}
	return NewIdempotencyKey()
}

func (o KeyOptions) body(m map[string]any) map[string]any {
	if o.TTL != 0 { // a negative one is refused by the API, not taken for the default
		m["ttl_ms"] = o.TTL.Milliseconds()
	}
	return m
}

// Checkout buys every line of a cart: each is reserved and committed at
// its sku's home, and the lines are removed from the cart. It answers
// the order. Retries and failover repeat the request with the same key.
//
// A 409 request_in_progress (the key, or another checkout of the cart,
// is busy at the region) is waited for and asked again, as the call's
// own attempt still running, only when an earlier request of this call
// may be running: one whose answer was lost (a transport error after it
// may have been sent, including net/http's own resend of the request
// over a dropped kept-alive connection) or that was answered 503. The
// wait lasts up to the context's deadline, or a minute in all. Answered
// to the call's first request, with nothing of the call sent before
// (an earlier attempt that could not connect sends nothing), it cannot
// be the call's own: it is returned, a *Problem with that code. It is
// then another request's: another process using the same
// IdempotencyKey, or another checkout of the cart, still running; ask
// again later, or read CheckoutStatus. When the HTTPClient's transport
// does not report its connections (httptrace GotConn), the client
// cannot tell and waits. Reserve, Commit and Release follow the same
// rule.
func (c *Client) Checkout(ctx context.Context, cartID string, opts KeyOptions) (*region.Order, error) {
	var out region.Order
	err := c.do(ctx, call{method: http.MethodPost, path: cartPath(cartID, "checkout"), body: opts.body(map[string]any{}),
		key: opts.key(), retry: retrySafe, causal: true, want: http.StatusCreated}, &out)
	return ret(&out, err)
}

// CheckoutStatus reads what the cart's coordinator knows of the checkout
// made with idempotencyKey. Any region answers it, forwarding to the
// coordinator (the home of the cart id); see docs/api.md.
func (c *Client) CheckoutStatus(ctx context.Context, cartID, idempotencyKey string) (*region.CheckoutStatus, error) {
	var out region.CheckoutStatus
	err := c.do(ctx, call{method: http.MethodGet, path: cartPath(cartID, "checkout"), key: idempotencyKey,
		retry: retrySafe, causal: true, want: http.StatusOK}, &out)
	return ret(&out, err)
}

func itemPath(sku string, rest ...string) string {
	p := "/v1/inventory/" + url.PathEscape(sku)
	for _, r := range rest {
		p += "/" + r
	}
	return p
}

// Item reads a sku's stock as the answering region has it, or, when
// consistent is true, as its home has it; with a context from
// WithQuorum, the join of that many regions' states.
func (c *Client) Item(ctx context.Context, sku string, consistent bool) (*region.Item, error) {
	var out region.Item
	cl := call{method: http.MethodGet, path: itemPath(sku), retry: retrySafe, causal: true, quorum: true, want: http.StatusOK}
	if consistent {
		cl.query = url.Values{"consistent": {"true"}}
	}
	err := c.do(ctx, cl, &out)
	return ret(&out, err)
}

// Restock adds qty (1..1,000,000) units of stock at the answering region
// and returns the item. It is repeated only when it was never sent.
func (c *Client) Restock(ctx context.Context, sku string, qty int64) (*region.Item, error) {
	var out region.Item
	err := c.do(ctx, call{method: http.MethodPost, path: itemPath(sku, "restock"), body: map[string]any{"qty": qty},
		retry: retryNever, causal: true, want: http.StatusOK}, &out)
	return ret(&out, err)
}

// Adjust changes a sku's stock by delta (nonzero, -1,000,000..1,000,000;
// a negative one is decided at the home and may be insufficient_stock),
// with an optional reason the region logs. It is repeated only when it
// was never sent.
func (c *Client) Adjust(ctx context.Context, sku string, delta int64, reason string) (*region.Item, error) {
	var out region.Item
	body := map[string]any{"delta": delta}
	if reason != "" {
		body["reason"] = reason
	}
	err := c.do(ctx, call{method: http.MethodPost, path: itemPath(sku, "adjust"), body: body,
		retry: retryNever, causal: true, want: http.StatusOK}, &out)
	return ret(&out, err)
}

func reservationPath(id string, rest ...string) string {
	p := "/v1/reservations/" + url.PathEscape(id)
	for _, r := range rest {
		p += "/" + r
	}
	return p
}

// Reserve holds qty units of sku at its home for opts.TTL. Retries and
// failover repeat the request with the same key.
func (c *Client) Reserve(ctx context.Context, sku string, qty int64, opts KeyOptions) (*region.Reservation, error) {
	var out region.Reservation
	err := c.do(ctx, call{method: http.MethodPost, path: "/v1/reservations", body: opts.body(map[string]any{"sku": sku, "qty": qty}),
		key: opts.key(), retry: retrySafe, causal: true, want: http.StatusCreated}, &out)
	return ret(&out, err)
}

// Reservation reads a reservation at its home.
func (c *Client) Reservation(ctx context.Context, id string) (*region.Reservation, error) {
	var out region.Reservation
	err := c.do(ctx, call{method: http.MethodGet, path: reservationPath(id), retry: retrySafe, causal: true, want: http.StatusOK}, &out)
	return ret(&out, err)
}

// Commit commits a held reservation (committing it again is a no-op).
// Retries and failover repeat the request with the same key.
func (c *Client) Commit(ctx context.Context, id string, opts KeyOptions) (*region.Reservation, error) {
	return c.settle(ctx, id, "commit", opts)
}

// Release releases a held reservation (releasing it again is a no-op).
// Retries and failover repeat the request with the same key.
func (c *Client) Release(ctx context.Context, id string, opts KeyOptions) (*region.Reservation, error) {
	return c.settle(ctx, id, "release", opts)
}

func (c *Client) settle(ctx context.Context, id, verb string, opts KeyOptions) (*region.Reservation, error) {
	var out region.Reservation
	err := c.do(ctx, call{method: http.MethodPost, path: reservationPath(id, verb), key: opts.key(),
		retry: retrySafe, causal: true, want: http.StatusOK}, &out)
	return ret(&out, err)
}

// ClusterStatus is the answer of GET /v1/cluster: a region and its
// replication to each peer (docs/api.md, "GET /v1/cluster"). It is the
// type the region encodes, so the client decodes exactly what is served.
type ClusterStatus = region.ClusterStatus

// PeerStatus is a region's replication to one peer, an entry of
// ClusterStatus.Peers.
type PeerStatus = region.PeerStatus

// Cluster reads the status of the preferred region (it describes that
// region, so it does not fail over).
func (c *Client) Cluster(ctx context.Context) (*ClusterStatus, error) {
	var out ClusterStatus
	err := c.do(ctx, call{method: http.MethodGet, path: "/v1/cluster", retry: retrySafe, pinned: true, causal: true, want: http.StatusOK}, &out)
	return ret(&out, err)
}

// Health is the answer of /healthz and /readyz.
type Health struct {
	// Status is ok (healthz) or ready (readyz).
	Status string `json:"status"`
	// Region is the region that answered.
	Region string `json:"region"`
	// Warnings are what an operator should look at although the region
	// serves (readyz only).
	Warnings []string `json:"warnings,omitempty"`
}

// Health asks the preferred region whether it serves HTTP (/healthz).
func (c *Client) Health(ctx context.Context) (*Health, error) {
	var out Health
	err := c.do(ctx, call{method: http.MethodGet, path: "/healthz", pinned: true, want: http.StatusOK}, &out)
	return ret(&out, err)
}

// Ready asks the preferred region whether it is ready (/readyz): a
// region that is not answers a *Problem with status 503.
func (c *Client) Ready(ctx context.Context) (*Health, error) {
	var out Health
	err := c.do(ctx, call{method: http.MethodGet, path: "/readyz", pinned: true, want: http.StatusOK}, &out)
	return ret(&out, err)
}

// Metrics returns the preferred region's Prometheus metrics, in the text
// exposition format.
func (c *Client) Metrics(ctx context.Context) (string, error) {
	var out []byte
	err := c.do(ctx, call{method: http.MethodGet, path: "/metrics", pinned: true, want: http.StatusOK}, &out)
	return string(out), err
}

// OpenAPI returns the OpenAPI 3.1 document the regions serve.
func (c *Client) OpenAPI(ctx context.Context) (json.RawMessage, error) {
	var out []byte
	err := c.do(ctx, call{method: http.MethodGet, path: "/v1/openapi.json", retry: retrySafe, want: http.StatusOK}, &out)
	return json.RawMessage(out), err
}

// ret returns out, or nil and err.
func ret[T any](out *T, err error) (*T, error) {
	if err != nil {
		return nil, err
	}
	return out, nil
}
