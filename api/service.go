// Package api is Lattice's REST API (SPEC §6): echo handlers, strict
// request validation, RFC 9457 problem details from one error mapping,
// causal tokens, the OpenAPI document, health and metrics.
package api

import (
	"context"
	"time"

	"github.com/latticedb/lattice/region"
)

// Idem is the idempotency part of a request: the client's Idempotency-Key
// (empty for none) and a fingerprint of the request (method, route and
// canonical body) so that a reuse of the key with another body is told
// apart.
type Idem = region.Idem

// Service is what the API needs of a region. *region.Node implements it.
// Every method returns a *region.Error for a domain failure; any other
// error is an internal error.
type Service interface {
	// Region returns this region's name.
	Region() string

	GetCart(ctx context.Context, cartID string) (region.Cart, error)
	AddItem(ctx context.Context, cartID, sku string, qty int64) (region.Cart, error)
	SetItem(ctx context.Context, cartID, sku string, qty int64) (region.Cart, error)
	RemoveItem(ctx context.Context, cartID, sku string) (region.Cart, error)
	ClearCart(ctx context.Context, cartID string) (region.Cart, error)
	Checkout(ctx context.Context, cartID string, ttl time.Duration, idem Idem) (region.Order, error)
	// CheckoutStatusOf returns what the cart's coordinator knows of the
	// checkout made with an Idempotency-Key.
	CheckoutStatusOf(ctx context.Context, cartID, key string) (region.CheckoutStatus, error)

	GetItem(ctx context.Context, sku string, consistent bool) (region.Item, error)
	Restock(ctx context.Context, sku string, qty int64) (region.Item, error)
	Adjust(ctx context.Context, sku string, delta int64, reason string) (region.Item, error)

	Reserve(ctx context.Context, sku string, qty int64, ttl time.Duration, idem Idem) (region.Reservation, error)
	GetReservation(ctx context.Context, id string) (region.Reservation, error)
	Commit(ctx context.Context, id string, idem Idem) (region.Reservation, error)
	Release(ctx context.Context, id string, idem Idem) (region.Reservation, error)

	// TokenFor returns the causal token of the answer to the operation
	// whose context is ctx (one that begin gave a region.Answer), for the
	// Lattice-Token response header: everything this region has applied
	// and whatever else the answer shows (a repaired state's or a home's
	// writes).
	TokenFor(ctx context.Context) string
	// WaitToken returns once the region has applied everything token
	// covers, or a *region.Error: invalid_token for a malformed token,
	// causal_timeout when ctx ends first.
	WaitToken(ctx context.Context, token string) error

	// ConcernCount turns a write or read concern as the client wrote it
	// (a number, majority or all) into a number of regions, or an
	// invalid_request error naming field.
	ConcernCount(field, v string) (int, error)
	// AwaitReplicas returns once the local writes of the operation whose
	// context is ctx are durable at as many regions as ctx asks
	// (region.WithReplicas), or a *region.Error with code
	// replication_timeout when ctx ends first (the writes stay applied).
	AwaitReplicas(ctx context.Context) error

	// Cluster returns the body of GET /v1/cluster.
	Cluster() region.ClusterStatus
	// Ready reports whether storage is open and serving.
	Ready() bool
	// Warnings lists what an operator should look at although the
	// region serves (divergent keys, a restore catching up); GET /readyz
	// shows them.
	Warnings() []string
}

var (
	_ Service = (*region.Node)(nil)
	_ Service = (*region.Partitions)(nil)
)
