package region

import (
	"github.com/latticedb/lattice/region/store"

	"context"
	"time"
)

// CheckoutStatus is what a checkout's coordinator knows of it: its plan,
// phase, outcome and the outcome of every step (GET
// /v1/carts/{cart_id}/checkout with the checkout's Idempotency-Key), so
// that an operator can see why a checkout ended as it did.
type CheckoutStatus struct {
	CartID  string `json:"cart_id" cbor:"1,keyasint"`
	OrderID string `json:"order_id" cbor:"2,keyasint"`
	// Phase is reserve, commit or return while the checkout is unsettled,
	// and settled once it is.
	Phase   string `json:"phase" cbor:"3,keyasint"`
	Attempt uint32 `json:"attempt" cbor:"4,keyasint"`
	// Order is the order of a checkout that succeeded; Failure the
	// problem a failed one answers with.
	Order   *Order         `json:"order,omitempty" cbor:"5,keyasint,omitempty"`
	Failure *StatusProblem `json:"failure,omitempty" cbor:"6,keyasint,omitempty"`
	// Lines are the lines the checkout buys; Reservations each line's
	// reservation in phases commit and return.
	Lines        []OrderLine    `json:"lines" cbor:"7,keyasint"`
	Reservations []string       `json:"reservations,omitempty" cbor:"8,keyasint,omitempty"`
	Steps        []CheckoutStep `json:"steps" cbor:"9,keyasint"`
}

// StatusProblem is the code and detail of a checkout's failure.
type StatusProblem struct {
	Code   string `json:"code" cbor:"1,keyasint"`
	Detail string `json:"detail" cbor:"2,keyasint"`
}

// CheckoutStep is one step of a checkout: a reserve, commit, release or
// return of one line, and its result ("ok" or an error code).
type CheckoutStep struct {
	At          time.Time `json:"at" cbor:"1,keyasint"`
	Attempt     uint32    `json:"attempt" cbor:"2,keyasint"`
	Step        string    `json:"step" cbor:"3,keyasint"`
	SKU         string    `json:"sku" cbor:"4,keyasint"`
	Reservation string    `json:"reservation,omitempty" cbor:"5,keyasint,omitempty"`
	Result      string    `json:"result" cbor:"6,keyasint"`
}

// OpCheckoutStatus reads a checkout's status at the home of its cart id.
const OpCheckoutStatus = "checkout-status"

// CheckoutStatusOf returns the status of the checkout of cartID made with
// the Idempotency-Key key, from the cart's coordinator.
func (n *Node) CheckoutStatusOf(ctx context.Context, cartID, key string) (CheckoutStatus, error) {
	if err := validateID("cart_id", cartID); err != nil {
		return CheckoutStatus{}, err
	}
	if key == "" || len(key) > 512 {
		return CheckoutStatus{}, InvalidField("Idempotency-Key", "the Idempotency-Key of the checkout is required (at most 512 bytes)")
	}
	resp := n.atHome(ctx, n.HomeOf(cartID), &HomeRequest{Op: OpCheckoutStatus, CartID: cartID, IdemKey: key})
	if resp.Err != nil {
		return CheckoutStatus{}, resp.Err
	}
	if resp.Saga == nil {
		return CheckoutStatus{}, Errorf(CodeInternal, "the checkout's coordinator gave no status")
	}
	return *resp.Saga, nil
}

// checkoutStatus reads the status at the coordinator.
func (n *Node) checkoutStatus(req *HomeRequest) *HomeResponse {
	var rec *idemRecord
	err := n.store.View([]string{prefixIdem + req.IdemKey}, func(r store.Reader) error {
		var err error
		rec, err = loadIdem(r, req.IdemKey, n.clock.Now())
		return err
	})
	if err != nil {
		return &HomeResponse{Err: n.asError(err)} // a plain store error is internal, not a panic
	}
	notFound := &HomeResponse{Err: Errorf(CodeNotFound, "no checkout of cart %s with this Idempotency-Key", req.CartID)}
	if rec == nil {
		return notFound
	}
	plan := rec.Plan
	if plan == nil {
		plan = rec.Last
	}
	if plan == nil || (plan.Cart != "" && plan.Cart != req.CartID) {
		return notFound
	}
	st := &CheckoutStatus{CartID: req.CartID, OrderID: plan.OrderID, Attempt: plan.Attempt, Order: rec.Order,
		Lines: plan.Lines, Reservations: plan.Res, Steps: []CheckoutStep{}}
	if st.Lines == nil {
		st.Lines = []OrderLine{}
	}
	switch {
	case rec.unsettled():
		st.Phase = phaseNames[min(int(plan.Phase), len(phaseNames)-1)]
	default:
		st.Phase = "settled"
	}
	if rec.Err != nil {
		st.Failure = &StatusProblem{Code: rec.Err.Code, Detail: rec.Err.Detail}
	} else if rec.Order == nil && !rec.unsettled() {
		// A transient failure ended the attempt; the next retry starts
		// attempt rec.Attempt.
		st.Phase = "failed-transiently"
		st.Attempt = rec.Attempt
	}
	for _, s := range plan.Steps {
		st.Steps = append(st.Steps, CheckoutStep{At: time.UnixMilli(s.AtMs).UTC(), Attempt: s.Attempt, Step: s.Step,
			SKU: s.SKU, Reservation: s.Res, Result: s.Result})
	}
	return &HomeResponse{Saga: st}
}
