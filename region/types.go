// Package region is one Lattice region: the cart and inventory services
// read and written locally, the reservation ledger of the skus it is home
// to, idempotency records, the checkout saga and the anti-entropy digest,
// over its store (region/store, which it opens with the locking of its
// keys: OpenStore). It knows no transport and no HTTP: it imports crdt,
// region/config and region/store only; api, sync and cmd/server build on
// it.
package region

import (
	"fmt"
	"time"

	"github.com/latticedb/lattice/crdt"
)

// Cart is the view of a cart returned to clients.
type Cart struct {
	CartID string          `json:"cart_id"`
	Region string          `json:"region"`
	Items  []crdt.CartItem `json:"items"`
}

// Item is the view of an inventory sku returned to clients.
type Item struct {
	SKU       string `json:"sku"`
	Home      string `json:"home"`
	Stock     int64  `json:"stock"`
	Reserved  int64  `json:"reserved"`
	Available int64  `json:"available"`
	// Granted and Rights are for escrow skus only: the units the home
	// granted other regions that they have not used or returned yet (as
	// this region sees it; Available leaves them out), and the units the
	// answering region may reserve alone (absent at the home).
	Granted *int64 `json:"granted,omitempty"`
	Rights  *int64 `json:"rights,omitempty"`
}

// Reservation states.
const (
	StateHeld      = "held"
	StateCommitted = "committed"
	StateReleased  = "released"
	StateExpired   = "expired"
)

// Reservation is a hold of Qty units of SKU decided by its home region.
type Reservation struct {
	ID        string    `json:"reservation_id" cbor:"1,keyasint"`
	SKU       string    `json:"sku" cbor:"2,keyasint"`
	Qty       int64     `json:"qty" cbor:"3,keyasint"`
	Home      string    `json:"home" cbor:"4,keyasint"`
	State     string    `json:"state" cbor:"5,keyasint"`
	ExpiresAt time.Time `json:"expires_at" cbor:"6,keyasint"`
}

// OrderLine is one reserved and committed line of a checkout.
type OrderLine struct {
	SKU           string `json:"sku" cbor:"1,keyasint"`
	Qty           int64  `json:"qty" cbor:"2,keyasint"`
	ReservationID string `json:"reservation_id" cbor:"3,keyasint"`
	Home          string `json:"home" cbor:"4,keyasint"`
}

// Order is the result of a successful checkout.
type Order struct {
	OrderID string      `json:"order_id" cbor:"1,keyasint"`
	CartID  string      `json:"cart_id" cbor:"2,keyasint"`
	Lines   []OrderLine `json:"lines" cbor:"3,keyasint"`
}

// Error codes of SPEC §6. The api package maps each to its HTTP status.
const (
	CodeInvalidRequest      = "invalid_request"
	CodeNotFound            = "not_found"
	CodeInsufficientStock   = "insufficient_stock"
	CodeCartFull            = "cart_full"
	CodeCartEmpty           = "cart_empty"
	CodeReservationExpired  = "reservation_expired"
	CodeReservationReleased = "reservation_released"
	CodeReservationCommit   = "reservation_committed"
	CodeIdempotencyMismatch = "idempotency_mismatch"
	CodeRequestInProgress   = "request_in_progress"
	CodeHomeUnavailable     = "home_unavailable"
	CodeCausalTimeout       = "causal_timeout"
	CodeInvalidToken        = "invalid_token"
	CodeUnavailable         = "unavailable"
	CodeInternal            = "internal"
	// CodeReplicationTimeout: a write concern (Lattice-Replicas) was not
	// met in time; the write stays applied and still replicates.
	CodeReplicationTimeout = "replication_timeout"
	// CodeQuorumUnavailable: too few regions answered a quorum read.
	CodeQuorumUnavailable = "quorum_unavailable"
)

// SkuAvailable names a sku that could not be reserved and what was
// available of it.
type SkuAvailable struct {
	SKU       string `json:"sku" cbor:"1,keyasint"`
	Available int64  `json:"available" cbor:"2,keyasint"`
	Home      string `json:"home,omitempty" cbor:"3,keyasint,omitempty"`
}

// Error is a domain error with a stable code. It travels between regions
// (a forwarded request returns the home's Error unchanged).
type Error struct {
	Code   string `cbor:"1,keyasint"`
	Detail string `cbor:"2,keyasint"`
	// Field names the offending request field of an invalid_request.
	Field string `cbor:"3,keyasint,omitempty"`
	// Available is set on insufficient_stock for a single sku.
	Available *int64 `cbor:"4,keyasint,omitempty"`
	// Lines lists every failing sku of a checkout.
	Lines []SkuAvailable `cbor:"5,keyasint,omitempty"`
	// RetryAfter suggests when to retry a home_unavailable, in seconds.
	RetryAfter int `cbor:"6,keyasint,omitempty"`
	// NotSent marks a home_unavailable of a request that never left this
	// region (no connection to the home): the home decided nothing, so
	// a reservation failed so holds nothing. Not carried anywhere.
	NotSent bool `cbor:"-" json:"-"`
}

func (e *Error) Error() string { return "region: " + e.Code + ": " + e.Detail }

// Errorf returns an *Error with the given code.
func Errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Detail: fmt.Sprintf(format, args...)}
}

// InvalidField returns an invalid_request error naming field.
func InvalidField(field, format string, args ...any) *Error {
	return &Error{Code: CodeInvalidRequest, Field: field, Detail: fmt.Sprintf(format, args...)}
}

// Idem carries a request's Idempotency-Key (empty for none) and the
// fingerprint of the request it was first used with.
type Idem struct {
	Key         string
	Fingerprint [32]byte
}
