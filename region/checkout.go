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
// dots of the cart entries it will remove, and its order id. With an
// Idempotency-Key it is stored before any reservation is made, so a retry
// after a crash resumes the same checkout; its reservations and commits
// carry keys derived from the order id, so each happens once at its home.
type checkoutPlan struct {
	OrderID string      `cbor:"1,keyasint"`
	TTLMs   int64       `cbor:"2,keyasint"`
	Lines   []OrderLine `cbor:"3,keyasint"`
	Dots    []planDot   `cbor:"4,keyasint"`
}

type planDot struct {
	_ struct{} `cbor:",toarray"`
	R string
	C uint64
}

func derived(orderID, step, sku string) (string, []byte) {
	key := "\x00checkout/" + orderID + "/" + step + "/" + sku
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

// Checkout reserves every line of the cart at its sku's home in parallel;
// if any fails, it releases what it reserved and answers
// insufficient_stock listing the failing skus; otherwise it commits every
// reservation and removes exactly the cart entries it read.
func (n *Node) Checkout(ctx context.Context, cartID string, ttl time.Duration, idem Idem) (Order, error) {
	if err := validateID("cart_id", cartID); err != nil {
		return Order{}, err
	}
	ttl, err := ttlOf(ttl)
	if err != nil {
		return Order{}, err
	}
	release, err := n.claim(idem.Key)
	if err != nil {
		return Order{}, err
	}
	defer release()

	var plan *checkoutPlan
	if idem.Key != "" {
		var rec *idemRecord
		err := n.store.View(func(r Reader) error {
			var err error
			rec, err = loadIdem(r, idem.Key, n.clock.Now())
			return err
		})
		if err != nil {
			return Order{}, n.storeErr(err)
		}
		switch {
		case rec == nil:
		case string(rec.FP) != string(idem.Fingerprint[:]) || rec.Resp != nil:
			return Order{}, mismatch()
		case rec.Order != nil:
			return *rec.Order, nil
		case rec.Err != nil:
			return Order{}, rec.Err
		default:
			plan = rec.Plan
		}
	}
	if plan == nil {
		if plan, err = n.plan(cartID, ttl, idem); err != nil {
			return Order{}, err
		}
	}
	return n.runCheckout(ctx, cartID, plan, idem)
}

// plan reads the cart and, with an Idempotency-Key, stores the plan.
func (n *Node) plan(cartID string, ttl time.Duration, idem Idem) (*checkoutPlan, error) {
	var plan *checkoutPlan
	var empty bool
	defer n.locks.lock(prefixCart + cartID)()
	err := n.store.Update(func(tx *Tx) error {
		c, err := loadCart(tx, cartID)
		if err != nil {
			return err
		}
		items := c.Items()
		plan = &checkoutPlan{OrderID: newOrderID(cartID, idem.Key), TTLMs: ttl.Milliseconds()}
		for _, it := range items {
			plan.Lines = append(plan.Lines, OrderLine{SKU: it.SKU, Qty: it.Qty, Home: n.HomeOf(it.SKU)})
		}
		for _, d := range c.Dots() {
			plan.Dots = append(plan.Dots, planDot{R: string(d.Replica), C: d.Counter})
		}
		empty = len(items) == 0
		if idem.Key == "" {
			return nil
		}
		rec := &idemRecord{FP: idem.Fingerprint[:], AtMs: n.clock.Now().UnixMilli(), Plan: plan}
		if empty {
			rec.Plan, rec.Err = nil, Errorf(CodeCartEmpty, "cart %s is empty", cartID)
		}
		tx.Set(prefixIdem+idem.Key, encode(rec))
		return nil
	})
	if err != nil {
		return nil, n.storeErr(err)
	}
	if empty {
		return nil, Errorf(CodeCartEmpty, "cart %s is empty", cartID)
	}
	return plan, nil
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

func (n *Node) runCheckout(ctx context.Context, cartID string, plan *checkoutPlan, idem Idem) (Order, error) {
	reserved := each(plan.Lines, func(_ int, l OrderLine) *HomeResponse {
		key, fp := derived(plan.OrderID, "reserve", l.SKU)
		return n.atHome(ctx, l.Home, &HomeRequest{Op: OpReserve, SKU: l.SKU, Qty: l.Qty, TTLMs: plan.TTLMs, IdemKey: key, IdemFP: fp})
	})
	var failed []SkuAvailable
	var firstErr *Error
	for i, r := range reserved {
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
			key, fp := derived(plan.OrderID, "release", l.SKU)
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
	committed := each(plan.Lines, func(i int, l OrderLine) *HomeResponse {
		key, fp := derived(plan.OrderID, "commit", l.SKU)
		return n.atHome(ctx, l.Home, &HomeRequest{Op: OpCommit, ID: reserved[i].Res.ID, IdemKey: key, IdemFP: fp})
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

// finishCheckout removes the entries the checkout read (on success) and
// records the outcome. A transient failure drops the plan instead, so a
// retry plans afresh (the reservations it released, or that expire, hold
// nothing). It returns the checkout's error, or nil.
func (n *Node) finishCheckout(cartID string, plan *checkoutPlan, idem Idem, order *Order, failure *Error) error {
	if failure != nil && transient(failure) {
		if idem.Key != "" {
			if err := n.store.Update(func(tx *Tx) error { tx.Delete(prefixIdem + idem.Key); return nil }); err != nil {
				n.log.Error("could not drop a checkout plan", "err", err)
			}
		}
		return failure
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
			tx.Set(prefixIdem+idem.Key, encode(&idemRecord{FP: idem.Fingerprint[:], AtMs: n.clock.Now().UnixMilli(), Order: order, Err: failure}))
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
