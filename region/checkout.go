package region

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"sync"
	"time"

	"github.com/latticedb/lattice/crdt"
)

// checkoutPlan is what a checkout decided to buy: the lines it read, the
// dots of the cart entries it will remove, its order id and its attempt.
// With an Idempotency-Key it is stored before any reservation is made, so
// a retry after a crash resumes the same checkout; its reservations,
// commits and releases carry keys derived from the order id and the
// attempt, so each happens once at its home. A transient failure ends the
// attempt (its reservations released or left to expire) and the next
// retry starts the next attempt, with fresh keys: it never reuses a
// released reservation.
type checkoutPlan struct {
	OrderID string      `cbor:"1,keyasint"`
	TTLMs   int64       `cbor:"2,keyasint"`
	Lines   []OrderLine `cbor:"3,keyasint"`
	Dots    []planDot   `cbor:"4,keyasint"`
	Attempt uint32      `cbor:"5,keyasint,omitempty"`
}

type planDot struct {
	_ struct{} `cbor:",toarray"`
	R string
	C uint64
}

func derived(plan *checkoutPlan, step, sku string) (string, []byte) {
	key := fmt.Sprintf("\x00checkout/%s/%d/%s/%s", plan.OrderID, plan.Attempt, step, sku)
	fp := sha256.Sum256([]byte(key))
	return key, fp[:]
}

func newOrderID(cartID, key string) string {
	if key != "" {
		h := sha256.Sum256([]byte(cartID + "\x00" + key))
		return "o-" + hex.EncodeToString(h[:12])
	}
	var b [12]byte
	_, _ = rand.Read(b[:])
	return "o-" + hex.EncodeToString(b[:])
}

// Checkout reserves every line of the cart at its sku's home in
// parallel; if any fails, it releases what it reserved and answers
// insufficient_stock listing the failing skus; otherwise it commits every
// reservation and removes exactly the cart entries it read.
//
// Every checkout of a cart is coordinated by the home of its cart id
// (placed like a sku), one at a time: a second checkout of the cart while
// one runs is 409 request_in_progress, so a cart is never bought twice by
// concurrent checkouts. This region sends the coordinator its copy of the
// cart, which the coordinator joins with its own, so the checkout covers
// every line this region shows and none that was already bought. The
// coordinator keeps an Idempotency-Key's plan and outcome, so a retry
// through any region finds them.
func (n *Node) Checkout(ctx context.Context, cartID string, ttl time.Duration, idem Idem) (Order, error) {
	if err := validateID("cart_id", cartID); err != nil {
		return Order{}, err
	}
	ttl, err := ttlOf(ttl)
	if err != nil {
		return Order{}, err
	}
	home := n.HomeOf(cartID)
	if home == string(n.name) {
		order, _, err := n.checkoutHere(ctx, cartID, ttl, idem, nil)
		return order, err
	}
	var state []byte
	err = n.store.View(func(r Reader) error {
		c, err := loadCart(r, cartID)
		state = crdt.EncodeCart(c)
		return err
	})
	if err != nil {
		return Order{}, n.storeErr(err)
	}
	resp := n.atHome(ctx, home, &HomeRequest{Op: OpCheckout, CartID: cartID, TTLMs: ttl.Milliseconds(), IdemKey: idem.Key,
		IdemFP: fpBytes(idem), Cart: state})
	if resp.Err != nil {
		return Order{}, resp.Err
	}
	if resp.Order == nil {
		return Order{}, Errorf(CodeInternal, "the checkout's coordinator gave no order")
	}
	// Remove what the coordinator bought from this region's copy too, so
	// the answer's causal token covers the removal.
	if err := n.removeObserved(cartID, resp.Removed); err != nil {
		return Order{}, err
	}
	return *resp.Order, nil
}

// readPlan plans a checkout of this region's copy of the cart joined with
// the copy another region sent (nil for none).
func (n *Node) readPlan(cartID string, ttl time.Duration, idem Idem, other *crdt.Cart) (*checkoutPlan, error) {
	plan := &checkoutPlan{OrderID: newOrderID(cartID, idem.Key), TTLMs: ttl.Milliseconds()}
	err := n.store.View(func(r Reader) error {
		c, err := loadCart(r, cartID)
		if err != nil {
			return err
		}
		if other != nil {
			c.Join(other)
		}
		for _, it := range c.Items() {
			plan.Lines = append(plan.Lines, OrderLine{SKU: it.SKU, Qty: it.Qty, Home: n.HomeOf(it.SKU)})
		}
		for _, d := range c.Dots() {
			plan.Dots = append(plan.Dots, planDot{R: string(d.Replica), C: d.Counter})
		}
		return nil
	})
	return plan, n.storeErr(err)
}

// checkoutHere runs a checkout at this region, the coordinator of the
// cart, from its copy of the cart joined with the copy another region sent
// (other, or nil). It returns the order and the cart entries it removed.
func (n *Node) checkoutHere(ctx context.Context, cartID string, ttl time.Duration, idem Idem, other *crdt.Cart) (Order, []planDot, error) {
	releaseCart, err := n.claim("\x00checkout-of/" + cartID)
	if err != nil {
		return Order{}, nil, Errorf(CodeRequestInProgress, "another checkout of cart %s is running", cartID)
	}
	defer releaseCart()
	release, err := n.claim(idem.Key)
	if err != nil {
		return Order{}, nil, err
	}
	defer release()

	var plan *checkoutPlan
	var attempt uint32
	if idem.Key != "" {
		var rec *idemRecord
		err := n.store.View(func(r Reader) error {
			var err error
			rec, err = loadIdem(r, idem.Key, n.clock.Now())
			return err
		})
		if err != nil {
			return Order{}, nil, n.storeErr(err)
		}
		switch {
		case rec == nil:
		case string(rec.FP) != string(idem.Fingerprint[:]) || rec.Resp != nil:
			return Order{}, nil, mismatch()
		case rec.Order != nil:
			var removed []planDot
			if rec.Plan != nil {
				removed = rec.Plan.Dots
			}
			return *rec.Order, removed, nil
		case rec.Err != nil:
			return Order{}, nil, rec.Err
		case rec.Plan != nil:
			plan = rec.Plan // resume the attempt a crash interrupted
		default:
			attempt = rec.Attempt
		}
	}
	if plan == nil {
		if plan, err = n.readPlan(cartID, ttl, idem, other); err != nil {
			return Order{}, nil, err
		}
		plan.Attempt = attempt
		if len(plan.Lines) == 0 {
			e := Errorf(CodeCartEmpty, "cart %s is empty", cartID)
			return Order{}, nil, n.recordCheckout(idem, &idemRecord{Err: e}, e)
		}
		if err := n.recordCheckout(idem, &idemRecord{Plan: plan}, nil); err != nil {
			return Order{}, nil, err
		}
	}
	order, err := n.runCheckout(ctx, cartID, plan, idem)
	return order, plan.Dots, err
}

// recordCheckout stores rec as the record of idem's key (when there is a
// key) and returns failure, or the store's error.
func (n *Node) recordCheckout(idem Idem, rec *idemRecord, failure *Error) error {
	if idem.Key == "" {
		if failure != nil {
			return failure
		}
		return nil
	}
	rec.FP, rec.AtMs = idem.Fingerprint[:], n.clock.Now().UnixMilli()
	if err := n.store.Update(func(tx *Tx) error { tx.Set(prefixIdem+idem.Key, encode(rec)); return nil }); err != nil {
		return n.storeErr(err)
	}
	if failure != nil {
		return failure
	}
	return nil
}

// removeObserved removes the given cart entries (the lines a checkout
// bought) from this region's copy of the cart.
func (n *Node) removeObserved(cartID string, removed []planDot) error {
	dots := make([]crdt.Dot, len(removed))
	for i, d := range removed {
		dots[i] = crdt.Dot{Replica: crdt.ReplicaID(d.R), Counter: d.C}
	}
	return n.write([]string{prefixCart + cartID}, func(tx *Tx, g *crdt.Group) error {
		c, err := loadCart(tx, cartID)
		if err != nil {
			return err
		}
		if d := c.RemoveObserved(dots); c.Brings(d) {
			c.Join(d)
			tx.Set(prefixCart+cartID, crdt.EncodeCart(c))
			g.AddCart(cartID, d)
		}
		return nil
	})
}

// compensateTimeout bounds the releases of a failed checkout.
const compensateTimeout = 2 * time.Second

func transient(e *Error) bool {
	switch e.Code {
	case CodeHomeUnavailable, CodeUnavailable, CodeInternal, CodeRequestInProgress:
		return true
	}
	return false
}

// each runs fn for every line of the plan in parallel.
func each(lines []OrderLine, fn func(i int, l OrderLine) *HomeResponse) []*HomeResponse {
	out := make([]*HomeResponse, len(lines))
	var wg sync.WaitGroup
	for i, l := range lines {
		wg.Go(func() { out[i] = fn(i, l) })
	}
	wg.Wait()
	return out
}

// phaseContext bounds one phase of a checkout to three quarters of the
// time left, so that compensation and the answer (perhaps to a region that
// forwarded the checkout) fit in the caller's deadline.
func phaseContext(ctx context.Context) (context.Context, context.CancelFunc) {
	deadline, ok := ctx.Deadline()
	if !ok {
		return context.WithCancel(ctx)
	}
	return context.WithDeadline(ctx, time.Now().Add(time.Until(deadline)*3/4))
}

func (n *Node) runCheckout(ctx context.Context, cartID string, plan *checkoutPlan, idem Idem) (Order, error) {
	pctx, cancel := phaseContext(ctx)
	defer cancel()
	reserved := each(plan.Lines, func(_ int, l OrderLine) *HomeResponse {
		key, fp := derived(plan, "reserve", l.SKU)
		return n.atHome(pctx, l.Home, &HomeRequest{Op: OpReserve, SKU: l.SKU, Qty: l.Qty, TTLMs: plan.TTLMs, IdemKey: key, IdemFP: fp})
	})
	var failed []SkuAvailable
	var firstErr *Error
	for i, r := range reserved {
		if r.Err == nil && r.Res != nil && r.Res.State != StateHeld && r.Res.State != StateCommitted {
			// Resuming an attempt whose reservation was released or
			// expired: the attempt is over; the next one starts afresh.
			r.Err = &Error{Code: CodeUnavailable, RetryAfter: 1,
				Detail: fmt.Sprintf("reservation %s of this checkout is %s; retry to start a new attempt", r.Res.ID, r.Res.State)}
			r.Res = nil
		}
		if r.Err == nil {
			continue
		}
		if firstErr == nil || (transient(firstErr) && !transient(r.Err)) {
			firstErr = r.Err
		}
		if r.Err.Code == CodeInsufficientStock && r.Err.Available != nil {
			failed = append(failed, SkuAvailable{SKU: plan.Lines[i].SKU, Available: *r.Err.Available, Home: plan.Lines[i].Home})
		}
	}
	if firstErr != nil {
		// Compensate: release every reservation this checkout made. A line
		// whose home timed out has spent the request's deadline, so the
		// releases get one of their own.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), compensateTimeout)
		defer cancel()
		each(plan.Lines, func(i int, l OrderLine) *HomeResponse {
			if reserved[i].Err != nil {
				return nil
			}
			key, fp := derived(plan, "release", l.SKU)
			r := n.atHome(rctx, l.Home, &HomeRequest{Op: OpRelease, ID: reserved[i].Res.ID, IdemKey: key, IdemFP: fp})
			if r.Err != nil {
				n.log.Warn("checkout could not release a reservation; it will expire by its ttl", "reservation", reserved[i].Res.ID, "err", r.Err)
			}
			return r
		})
		e := firstErr
		if len(failed) > 0 {
			e = &Error{Code: CodeInsufficientStock, Detail: fmt.Sprintf("%d line(s) of cart %s cannot be reserved", len(failed), cartID), Lines: failed}
		}
		return Order{}, n.finishCheckout(cartID, plan, idem, nil, e)
	}
	cctx, ccancel := phaseContext(ctx)
	defer ccancel()
	committed := each(plan.Lines, func(i int, l OrderLine) *HomeResponse {
		key, fp := derived(plan, "commit", l.SKU)
		return n.atHome(cctx, l.Home, &HomeRequest{Op: OpCommit, ID: reserved[i].Res.ID, IdemKey: key, IdemFP: fp})
	})
	order := &Order{OrderID: plan.OrderID, CartID: cartID}
	for i, r := range committed {
		if r.Err != nil {
			if transient(r.Err) {
				// The plan stays: a retry with the same key finishes it.
				return Order{}, r.Err
			}
			return Order{}, n.finishCheckout(cartID, plan, idem, nil, r.Err)
		}
		l := plan.Lines[i]
		l.ReservationID = r.Res.ID
		order.Lines = append(order.Lines, l)
	}
	return *order, n.finishCheckout(cartID, plan, idem, order, nil)
}

// finishCheckout records the outcome and, on success, removes the entries
// the checkout read. A transient failure ends the attempt: the record
// keeps only the number of the next one, so a retry plans afresh with new
// keys. It returns the checkout's error, or nil.
func (n *Node) finishCheckout(cartID string, plan *checkoutPlan, idem Idem, order *Order, failure *Error) error {
	if failure != nil && transient(failure) {
		return n.recordCheckout(idem, &idemRecord{Attempt: plan.Attempt + 1}, failure)
	}
	err := n.write([]string{prefixCart + cartID}, func(tx *Tx, g *crdt.Group) error {
		if order != nil {
			c, err := loadCart(tx, cartID)
			if err != nil {
				return err
			}
			dots := make([]crdt.Dot, len(plan.Dots))
			for i, d := range plan.Dots {
				dots[i] = crdt.Dot{Replica: crdt.ReplicaID(d.R), Counter: d.C}
			}
			if d := c.RemoveObserved(dots); c.Brings(d) {
				c.Join(d)
				tx.Set(prefixCart+cartID, crdt.EncodeCart(c))
				g.AddCart(cartID, d)
			}
		}
		if idem.Key != "" {
			rec := &idemRecord{FP: idem.Fingerprint[:], AtMs: n.clock.Now().UnixMilli(), Order: order, Err: failure}
			if order != nil {
				rec.Plan = plan // its dots: what a retry elsewhere removes too
			}
			tx.Set(prefixIdem+idem.Key, encode(rec))
		}
		return nil
	})
	if err != nil {
		return n.storeErr(err)
	}
	if failure != nil {
		return failure
	}
	return nil
}
