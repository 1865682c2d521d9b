package region

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/latticedb/lattice/crdt"
	"github.com/latticedb/lattice/region/config"
	"github.com/latticedb/lattice/region/store"
)

// A checkout is a saga across the homes of its skus, coordinated by the
// home of its cart. Its plan — the lines it read, the dots of the cart
// entries it will remove, its order id, its attempt and phase — is stored
// at the coordinator under the request's Idempotency-Key (or, without
// one, under an internal key of the order) before any reservation is
// made, and again at every change of phase. Every reservation, commit,
// release and return carries a key derived from the order id, the
// attempt and the line's generation, so each happens once at its home
// however often it is sent.
//
// The rule: once settled, a checkout is exactly one of
//
//   - an order whose every line is committed, or
//   - a clean failure: nothing committed and nothing held (holds that a
//     release could not reach expire by their ttl; nothing commits them).
//
// Phase reserve: every line is reserved. If any fails, the others are
// released and the attempt fails; a transient failure (a home
// unreachable) lets the next retry start a new attempt with fresh keys,
// so it never revives a released reservation.
//
// Phase commit begins — durably, before the first commit is sent — once
// every line is held. From then on the checkout only rolls forward:
// commits are sent (again) until every line is committed; a line whose
// hold expired or was released is reserved again (a new generation of
// the line, its key derived anew) and committed. A transient failure
// leaves the plan in phase commit: a retry with the same key, or the
// coordinator's background settling, goes on where it stopped. Only when
// rolling forward is impossible (a line can no longer be reserved) does
// the checkout compensate:
//
// Phase return undoes every line: a keyed, idempotent return at the
// line's home puts a committed reservation's units back into stock (and
// releases a held one). Once every line is returned the checkout fails
// cleanly with the reason.
//
// A checkout without an Idempotency-Key has no client to retry it, so a
// transient failure in phase commit compensates (phase return) instead of
// waiting; the coordinator's background settling finishes either kind.
type checkoutPlan struct {
	OrderID string      `cbor:"1,keyasint"`
	TTLMs   int64       `cbor:"2,keyasint"`
	Lines   []OrderLine `cbor:"3,keyasint"`
	Dots    []planDot   `cbor:"4,keyasint"`
	Attempt uint32      `cbor:"5,keyasint,omitempty"`
	Phase   uint8       `cbor:"6,keyasint,omitempty"`
	// Res is the reservation of each line in phases commit and return
	// ("" while a line is being reserved again); Gen counts each line's
	// reservations after the first.
	Res []string `cbor:"7,keyasint,omitempty"`
	Gen []uint32 `cbor:"8,keyasint,omitempty"`
	// Steps is what happened, oldest first (at most maxSteps).
	Steps []sagaStep `cbor:"9,keyasint,omitempty"`
	// Failure is the reason a checkout in phase return ends with.
	Failure *Error `cbor:"10,keyasint,omitempty"`
	// Keyless marks a checkout without an Idempotency-Key.
	Keyless bool `cbor:"11,keyasint,omitempty"`
	// Cart is the cart id.
	Cart string `cbor:"12,keyasint,omitempty"`
	// Loose are reservations this checkout's attempts sent whose homes
	// did not answer and could not be reached to release them: they may
	// hold units. The next attempt releases them first (releaseLoose).
	Loose []looseHold `cbor:"13,keyasint,omitempty"`
	// Dropped are the skus of loose holds the plan no longer carries
	// (past maxLoose), with when the last of them expires: until then
	// this checkout may hold units of the sku that no attempt releases.
	Dropped []droppedHolds `cbor:"14,keyasint,omitempty"`
	// Nonce is drawn when the plan is made and goes into its steps' keys
	// (derived): a checkout under the key of one whose record was
	// collected has the same order id, and must not meet that one's
	// steps at a home whose records outlived the coordinator's (a clock
	// behind). Plans stored before it have none.
	Nonce string `cbor:"15,keyasint,omitempty"`
}

// droppedHolds says that a checkout may hold units of SKU, which it no
// longer knows how to release, until UntilMs (Unix milliseconds).
type droppedHolds struct {
	_       struct{} `cbor:",toarray"`
	SKU     string
	UntilMs int64
}

// drop moves the oldest loose holds past maxLoose (or past one per line,
// if the cart has more lines) to Dropped, one entry per sku (MaxCartSKUs
// at most), and forgets the entries expired by now.
func (p *checkoutPlan) drop(now time.Time) {
	nowMs := now.UnixMilli()
	if extra := len(p.Loose) - max(maxLoose, len(p.Lines)); extra > 0 {
		for _, h := range p.Loose[:extra] {
			// Made at the latest now: it expires by now + its ttl.
			until := nowMs + h.TTLMs
			if i := slices.IndexFunc(p.Dropped, func(d droppedHolds) bool { return d.SKU == h.SKU }); i >= 0 {
				p.Dropped[i].UntilMs = max(p.Dropped[i].UntilMs, until)
				continue
			}
			p.Dropped = append(p.Dropped, droppedHolds{SKU: h.SKU, UntilMs: until})
		}
		p.Loose = slices.Clone(p.Loose[extra:])
	}
	p.Dropped = slices.DeleteFunc(p.Dropped, func(d droppedHolds) bool { return d.UntilMs <= nowMs })
}

// droppedUntil returns when the dropped holds of sku (all of them, if sku
// is empty) expire, or the zero time if there are none left by now.
func (p *checkoutPlan) droppedUntil(sku string, now time.Time) time.Time {
	var until int64
	for _, d := range p.Dropped {
		if (sku == "" || d.SKU == sku) && d.UntilMs > now.UnixMilli() {
			until = max(until, d.UntilMs)
		}
	}
	if until == 0 {
		return time.Time{}
	}
	return time.UnixMilli(until)
}

// retryAfter is the Retry-After, in seconds, of an answer that waits
// until t: at least 1.
func retryAfter(t, now time.Time) int {
	return max(1, int((t.Sub(now)+time.Second-1)/time.Second))
}

// looseHold is a reservation a checkout sent without learning its
// outcome: enough to send it again under its key, which the home answers
// with the hold it made (or makes it), and release that.
type looseHold struct {
	_     struct{} `cbor:",toarray"`
	Key   string
	SKU   string
	Home  string
	Qty   int64
	TTLMs int64
}

// maxLoose bounds the loose holds a plan carries (one per line of a
// larger cart): past it the oldest are left to expire by their ttl
// (checkoutPlan.drop), and the checkout refuses for good only once they
// have.
const maxLoose = 64

// releaseLoose sends each loose hold of an earlier attempt again and
// releases what it holds. It returns those it could not settle (their
// homes still out of reach), to carry over.
//
// It takes at most a quarter of the time ctx has left (compensateTimeout
// without a deadline): a home still out of reach must not cost the
// attempt its own deadline.
func (n *Node) releaseLoose(ctx context.Context, plan *checkoutPlan, loose []looseHold) []looseHold {
	if len(loose) == 0 {
		return nil
	}
	// Its steps (the reservation sent again, the release) go in the
	// plan's log, as every step of the saga does, after they all ran.
	type step struct {
		name, sku, res string
		r              *HomeResponse
	}
	steps := make([][]step, len(loose))
	var rctx context.Context
	var cancel context.CancelFunc
	if d, ok := ctx.Deadline(); ok {
		rctx, cancel = context.WithDeadline(ctx, time.Now().Add(time.Until(d)/4))
	} else {
		rctx, cancel = context.WithTimeout(ctx, compensateTimeout)
	}
	defer cancel()
	left := make([]bool, len(loose))
	var wg sync.WaitGroup
	for i, h := range loose {
		wg.Go(func() {
			fp := sha256.Sum256([]byte(h.Key))
			r := n.sagaStep(rctx, h.Home, &HomeRequest{Op: OpReserve, SKU: h.SKU, Qty: h.Qty, TTLMs: h.TTLMs, IdemKey: h.Key, IdemFP: fp[:], Checkout: h.Qty > crdt.MaxQty})
			steps[i] = append(steps[i], step{"reserve", h.SKU, "", r})
			switch {
			case r.Err != nil:
				left[i] = transient(r.Err)
				return
			case r.Res == nil || r.Res.State != StateHeld:
				return // committed by no one, expired or released: nothing held
			}
			key := h.Key + "/release"
			fp = sha256.Sum256([]byte(key))
			rel := n.sagaStep(rctx, h.Home, &HomeRequest{Op: OpRelease, ID: r.Res.ID, IdemKey: key, IdemFP: fp[:]})
			steps[i] = append(steps[i], step{"release", h.SKU, r.Res.ID, rel})
			left[i] = rel.Err != nil && transient(rel.Err)
		})
	}
	wg.Wait()
	now := n.clock.Now()
	for _, ss := range steps {
		for _, st := range ss {
			plan.note(now, st.name, st.sku, st.res, st.r)
		}
	}
	var out []looseHold
	for i, h := range loose {
		if left[i] {
			out = append(out, h)
		}
	}
	return out
}

// Saga phases.
const (
	phaseReserve uint8 = iota
	phaseCommit
	phaseReturn
)

var phaseNames = [...]string{"reserve", "commit", "return"}

// sagaStep is one step's outcome: when, in which attempt, which step of
// which line, on which reservation, with which result ("ok" or an error
// code).
type sagaStep struct {
	_       struct{} `cbor:",toarray"`
	AtMs    int64
	Attempt uint32
	Step    string
	SKU     string
	Res     string
	Result  string
}

// maxSteps bounds the steps a plan keeps (the latest).
const maxSteps = 64

func (p *checkoutPlan) note(now time.Time, step, sku, res string, r *HomeResponse) {
	result := "ok"
	if r.Err != nil {
		result = r.Err.Code
	}
	if res == "" && r.Res != nil {
		res = r.Res.ID
	}
	p.Steps = append(p.Steps, sagaStep{AtMs: now.UnixMilli(), Attempt: p.Attempt, Step: step, SKU: sku, Res: res, Result: result})
	if len(p.Steps) > maxSteps {
		p.Steps = slices.Delete(p.Steps, 0, len(p.Steps)-maxSteps)
	}
}

// lastOf returns plan as an idempotency record keeps it for the checkout's
// status (idemRecord.Last): without its dots, which only the removal
// from the cart reads (from Plan), so that a record of a large cart does
// not list every entry twice.
func lastOf(plan *checkoutPlan) *checkoutPlan {
	if plan == nil {
		return nil
	}
	p := *plan
	p.Dots = nil
	return &p
}

type planDot struct {
	_ struct{} `cbor:",toarray"`
	R string
	C uint64
}

// stepKeyPrefix starts the idempotency keys of a checkout's steps
// (derived); a client's key cannot hold a NUL byte.
const stepKeyPrefix = "\x00checkout/"

// derived returns the idempotency key and fingerprint of a step of line
// i of the plan.
func derived(plan *checkoutPlan, step string, i int) (string, []byte) {
	key := fmt.Sprintf("%s%s%s/%d/%s/%s", stepKeyPrefix, plan.OrderID, plan.Nonce, plan.Attempt, step, plan.Lines[i].SKU)
	if len(plan.Gen) > i && plan.Gen[i] > 0 {
		key += fmt.Sprintf("/%d", plan.Gen[i])
	}
	fp := sha256.Sum256([]byte(key))
	return key, fp[:]
}

// planNonce returns a new plan's nonce: "." and 8 random hex digits.
func planNonce() string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return "." + hex.EncodeToString(b[:])
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
	if n.decides(home, cartID) {
		order, _, err := n.checkoutHere(ctx, cartID, ttl, idem, nil)
		return order, err
	}
	var state []byte
	err = n.view(ctx, prefixCart+cartID, func(r store.Reader) error {
		if err := n.heldBackErr(prefixCart + cartID); err != nil {
			return err
		}
		c, err := loadCart(n.cartReader(r), cartID)
		state = crdt.EncodeCart(c)
		return err
	})
	if err != nil {
		return Order{}, n.storeErr(err)
	}
	req := &HomeRequest{Op: OpCheckout, CartID: cartID, TTLMs: ttl.Milliseconds(), IdemKey: idem.Key, IdemFP: fpBytes(idem)}
	if req.Cart, req.CartZ, err = packCart(state); err != nil {
		return Order{}, err
	}
	resp := n.atHome(ctx, home, req)
	if resp.Err != nil {
		return Order{}, resp.Err
	}
	if resp.Order == nil {
		return Order{}, Errorf(CodeInternal, "the checkout's coordinator gave no order")
	}
	// Remove what the coordinator bought from this region's copy too, so
	// the answer's causal token covers the removal.
	if err := n.removeObserved(ctx, cartID, resp.Removed); err != nil {
		return Order{}, err
	}
	return *resp.Order, nil
}

// readPlan plans a checkout of the cart as the answering region read it:
// this region's copy, or, for a checkout another region forwarded, the
// copy it sent (other) less the entries this region has seen removed
// (bought by an earlier checkout, or removed by the shopper). Entries
// only this region holds were not read by the client and are not bought:
// added concurrently elsewhere, they stay in the cart.
func (n *Node) readPlan(ctx context.Context, cartID string, ttl time.Duration, idem Idem, other *crdt.Cart) (*checkoutPlan, error) {
	plan := &checkoutPlan{OrderID: newOrderID(cartID, idem.Key), TTLMs: ttl.Milliseconds(), Nonce: planNonce()}
	err := n.view(ctx, prefixCart+cartID, func(r store.Reader) error {
		if err := n.heldBackErr(prefixCart + cartID); err != nil {
			return err
		}
		c, err := loadCart(n.cartReader(r), cartID)
		if err != nil {
			return err
		}
		if other != nil {
			read := &crdt.Cart{Ctx: other.Ctx.Clone(), Entries: make(map[crdt.Dot]crdt.Line, len(other.Entries))}
			for d, l := range other.Entries {
				if _, held := c.Entries[d]; held || !c.Ctx.Contains(d) {
					read.Entries[d] = l
				}
			}
			c = read
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
	if !n.waitCaughtUp(ctx) {
		if !n.store.CatchingUp() {
			return Order{}, nil, n.catchingUp() // its peers' homes are not confirmed
		}
		// Its checkout records may be among what it lost (see CatchingUp).
		return Order{}, nil, &Error{Code: CodeUnavailable, RetryAfter: 5,
			Detail: fmt.Sprintf("region %s may have lost some of its store and coordinates checkouts again once it has caught up with every peer", n.name)}
	}
	if idem.Key != "" {
		// A checkout its key settled is replayed at once, without the
		// cart's claim: another checkout of the cart (or its background
		// settling) running meanwhile does not make a replay wait or fail.
		if order, removed, ok, err := n.settledCheckout(idem); ok {
			if err == nil {
				n.noteReplay(ctx)
				err = n.replayedHomes(ctx, idem)
			}
			return order, removed, err
		}
	}
	releaseCart, err := n.claim("\x00checkout-of/" + cartID)
	if err != nil {
		return Order{}, nil, Errorf(CodeRequestInProgress, "another checkout of cart %s is running", cartID)
	}
	defer releaseCart()
	keyless := idem.Key == ""
	if keyless {
		// The plan of a checkout without a key is stored too, under a
		// key of its own order, so that its saga can be settled after a
		// crash and read by an operator.
		id := newOrderID(cartID, "")
		idem = Idem{Key: sagaKeyPrefix + id}
		idem.Fingerprint = sha256.Sum256([]byte(idem.Key))
	}
	release, err := n.claim(idem.Key)
	if err != nil {
		return Order{}, nil, err
	}
	defer release()

	var plan, last *checkoutPlan
	var attempt uint32
	if !keyless {
		var rec *idemRecord
		err := n.store.View([]string{prefixIdem + idem.Key}, func(r store.Reader) error {
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
			n.noteReplay(ctx)
			return *rec.Order, removed, n.replayedHomes(ctx, idem)
		case rec.Err != nil:
			return Order{}, nil, rec.Err
		case rec.Plan != nil:
			plan = rec.Plan // resume the attempt a crash interrupted
		default:
			attempt = rec.Attempt
			last = rec.Last
		}
	}
	if plan == nil {
		if n.unsettledCheckoutOf(cartID, idem.Key) {
			return Order{}, nil, &Error{Code: CodeRequestInProgress, RetryAfter: 5,
				Detail: fmt.Sprintf("an earlier checkout of cart %s has not settled; it settles on its own (or with a retry with its key)", cartID)}
		}
		if plan, err = n.readPlan(ctx, cartID, ttl, idem, other); err != nil {
			return Order{}, nil, err
		}
		if keyless {
			plan.OrderID = idem.Key[len(sagaKeyPrefix):]
		}
		plan.Attempt, plan.Keyless, plan.Cart = attempt, keyless, cartID
		if last != nil {
			// The status shows every attempt's steps (each names its
			// attempt), the latest maxSteps.
			plan.Steps = slices.Clone(last.Steps)
			if len(plan.Steps) > maxSteps {
				plan.Steps = plan.Steps[len(plan.Steps)-maxSteps:]
			}
			// What earlier attempts may still hold is released first: it
			// would compete with this attempt for the same units.
			plan.Loose = n.releaseLoose(ctx, plan, last.Loose)
			plan.Dropped = slices.Clone(last.Dropped)
		}
		if len(plan.Lines) == 0 {
			now := n.clock.Now()
			if until := plan.droppedUntil("", now); len(plan.Loose) > 0 || !until.IsZero() {
				// A settled failure holds nothing: the attempt ends, and a
				// retry releases the earlier attempts' holds first (or,
				// dropped, they expire first).
				after := 1
				if len(plan.Loose) == 0 {
					after = retryAfter(until, now)
				}
				e := &Error{Code: CodeUnavailable, RetryAfter: after, Detail: fmt.Sprintf("cart %s is empty, and this checkout may still hold units from earlier attempts whose answers were lost; retry with the same key", cartID)}
				return Order{}, nil, n.finishCheckout(ctx, cartID, plan, idem, nil, e)
			}
			e := Errorf(CodeCartEmpty, "cart %s is empty", cartID)
			// Last keeps the (empty) plan, so that the checkout's status
			// reads settled, failed with cart_empty.
			return Order{}, nil, n.recordCheckout(idem, &idemRecord{Err: e, Last: lastOf(plan)}, e)
		}
		if err := n.savePlan(idem, plan); err != nil {
			return Order{}, nil, err
		}
	}
	ctx, missed := withSagaConcern(ctx)
	order, err := n.runCheckout(ctx, cartID, plan, idem)
	if err == nil {
		if e := missed.Load(); e != nil {
			// The order is recorded (a retry with the key answers it);
			// some home's decision had not reached the regions asked for.
			err = e
		}
	}
	return order, plan.Dots, err
}

// replayedHomes is, for a replayed order, the homes' part of its answer:
// each line's commit is sent again under its key to its home, which
// answers its recorded commit. Under a write concern ("a retry with the
// key waits again") the home answers once the concern is met there, or
// replication_timeout (returned; the order stands). In a partitioned
// region the homes' answers also bring their partitions' entries of the
// answer's token, which covers the commits as the first answer's did; a
// home that cannot be reached then fails the replay (home_unavailable:
// the order stands, and a retry answers it). Unpartitioned and without a
// concern it does nothing: an unpartitioned token does not cover other
// regions' decisions.
//
// The lines this node decided itself are left to noteReplay.
func (n *Node) replayedHomes(ctx context.Context, idem Idem) error {
	concern := concernOf(ctx).replicas > 1
	if !concern && n.opts.Partitions <= 1 {
		return nil
	}
	var plan *checkoutPlan
	if err := n.store.View([]string{prefixIdem + idem.Key}, func(r store.Reader) error {
		rec, err := loadIdem(r, idem.Key, n.clock.Now())
		if rec != nil {
			plan = rec.Plan
		}
		return err
	}); err != nil || plan == nil {
		return nil
	}
	var missed *Error
	for _, r := range each(plan.Lines, func(i int, l OrderLine) *HomeResponse {
		if i >= len(plan.Res) || plan.Res[i] == "" || n.decides(l.Home, l.SKU) {
			return nil // the coordinator's own decisions: noteReplay waits for them
		}
		key, fp := derived(plan, "commit", i)
		return n.atHome(ctx, l.Home, &HomeRequest{Op: OpCommit, ID: plan.Res[i], IdemKey: key, IdemFP: fp})
	}) {
		if r != nil && r.Err != nil && missed == nil {
			missed = r.Err
			if !concern {
				missed = &Error{Code: CodeHomeUnavailable, RetryAfter: 1,
					Detail: "the order is recorded, but a home's commit could not be read again for the answer's token: " + r.Err.Detail}
			} else if r.Err.Code != CodeReplicationTimeout {
				missed = &Error{Code: CodeReplicationTimeout, RetryAfter: 1,
					Detail: "the order is recorded, but a home's decision could not be seen to reach the regions asked for: " + r.Err.Detail}
			}
		}
	}
	if missed != nil {
		return missed
	}
	return nil
}

type sagaConcernKey struct{}

// withSagaConcern returns ctx carrying where sagaStep notes a home's
// replication_timeout, and that record.
func withSagaConcern(ctx context.Context) (context.Context, *atomic.Pointer[Error]) {
	m := new(atomic.Pointer[Error])
	return context.WithValue(ctx, sagaConcernKey{}, m), m
}

// sagaStep is atHome for a step of a checkout's saga. A home's decision
// that stands but had not reached the regions the write concern asks for
// in time (replication_timeout, with the reservation: the decision is
// applied and still replicates) is the step done: the saga goes on from
// it, and the checkout answers that replication_timeout once its outcome
// is recorded (withSagaConcern). Taken for a refusal, it left the hold
// held for nothing, or undid an order whose every line was committed.
func (n *Node) sagaStep(ctx context.Context, home string, req *HomeRequest) *HomeResponse {
	r := n.atHome(ctx, home, req)
	if r.Err == nil || r.Err.Code != CodeReplicationTimeout || r.Res == nil {
		return r
	}
	if m, ok := ctx.Value(sagaConcernKey{}).(*atomic.Pointer[Error]); ok {
		m.CompareAndSwap(nil, r.Err)
	}
	answerOf(ctx).addToken(r.Token)
	done := *r
	done.Err = nil
	return &done
}

// settledCheckout returns the outcome the key of idem recorded for a
// settled checkout (an order or a final refusal), or idempotency_mismatch
// for another request under the key; ok is false when there is none (no
// record, or an unsettled or transiently failed one).
func (n *Node) settledCheckout(idem Idem) (order Order, removed []planDot, ok bool, err error) {
	var rec *idemRecord
	if verr := n.store.View([]string{prefixIdem + idem.Key}, func(r store.Reader) error {
		var err error
		rec, err = loadIdem(r, idem.Key, n.clock.Now())
		return err
	}); verr != nil || rec == nil {
		return Order{}, nil, false, nil
	}
	switch {
	case string(rec.FP) != string(idem.Fingerprint[:]) || rec.Resp != nil:
		return Order{}, nil, true, mismatch()
	case rec.Order != nil:
		if rec.Plan != nil {
			removed = rec.Plan.Dots
		}
		return *rec.Order, removed, true, nil
	case rec.Err != nil:
		return Order{}, nil, true, rec.Err
	}
	return Order{}, nil, false, nil
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
	if err := n.store.Update([]string{prefixIdem + idem.Key}, func(tx *store.Tx) error { tx.Set(prefixIdem+idem.Key, encode(rec)); return nil }); err != nil {
		return n.storeErr(err)
	}
	if failure != nil {
		return failure
	}
	return nil
}

// removeObserved removes the given cart entries (the lines a checkout
// bought) from this region's copy of the cart.
func (n *Node) removeObserved(ctx context.Context, cartID string, removed []planDot) error {
	dots := make([]crdt.Dot, len(removed))
	for i, d := range removed {
		dots[i] = crdt.Dot{Replica: crdt.ReplicaID(d.R), Counter: d.C}
	}
	return n.write(ctx, []string{prefixCart + cartID}, func(tx *store.Tx, g *crdt.Group) error {
		c, p, err := loadCartLines(n.cartReader(tx), cartID, nil, true, false)
		if err != nil {
			return err
		}
		if d := c.RemoveObserved(dots); c.Brings(d) {
			c.Join(d)
			if err := n.saveCart(tx, p, c); err != nil {
				return err
			}
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

// sagaKeyPrefix begins the internal key under which the plan of a
// checkout without an Idempotency-Key is kept.
const sagaKeyPrefix = "\x00saga/"

// runCheckout drives the plan's saga from its phase until it settles or a
// transient failure stops it (see checkoutPlan).
func (n *Node) runCheckout(ctx context.Context, cartID string, plan *checkoutPlan, idem Idem) (Order, error) {
	if plan.Phase == phaseReserve {
		if err := n.reservePhase(ctx, cartID, plan, idem); err != nil {
			return Order{}, err
		}
	}
	if plan.Phase == phaseCommit {
		order, err := n.commitPhase(ctx, cartID, plan, idem)
		if plan.Phase != phaseReturn {
			return order, err
		}
	}
	return Order{}, n.returnPhase(ctx, cartID, plan, idem)
}

// reservePhase reserves every line. It returns nil with the plan in phase
// commit (stored) once every line is held; otherwise it releases what it
// reserved and returns the attempt's (recorded) failure.
func (n *Node) reservePhase(ctx context.Context, cartID string, plan *checkoutPlan, idem Idem) error {
	pctx, cancel := phaseContext(ctx)
	defer cancel()
	reserved := each(plan.Lines, func(i int, l OrderLine) *HomeResponse {
		key, fp := derived(plan, "reserve", i)
		return n.sagaStep(pctx, l.Home, &HomeRequest{Op: OpReserve, SKU: l.SKU, Qty: l.Qty, TTLMs: plan.TTLMs, IdemKey: key, IdemFP: fp, Checkout: l.Qty > crdt.MaxQty})
	})
	now := n.clock.Now()
	var failed []SkuAvailable
	var firstErr *Error
	for i, r := range reserved {
		plan.note(now, "reserve", plan.Lines[i].SKU, "", r)
		if r.Err == nil && r.Res == nil {
			r.Err = Errorf(CodeInternal, "the home of %s answered a reservation without one", plan.Lines[i].SKU)
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
	if firstErr == nil {
		// Every line is held (a replayed hold may have expired since: the
		// commit phase finds out and reserves it again).
		plan.Phase = phaseCommit
		plan.Res = make([]string, len(plan.Lines))
		plan.Gen = make([]uint32, len(plan.Lines))
		for i, r := range reserved {
			plan.Res[i] = r.Res.ID
		}
		err := n.savePlan(idem, plan)
		if err == nil {
			return nil
		}
		// Not stored: no commit may be sent; undo the attempt.
		plan.Phase, plan.Res, plan.Gen = phaseReserve, nil, nil
		firstErr = &Error{Code: CodeUnavailable, RetryAfter: 1, Detail: "the checkout's coordinator could not store its plan"}
		var e *Error
		if errors.Is(err, store.ErrWriteUnsure) || errors.As(err, &e) && e.Code == CodeInternal {
			// The plan in phase commit may be in the file all the same
			// (recordCheckout answers such a write internal): after a
			// restart the checkout may go on to an order, which a 503
			// (nothing decided) would deny.
			firstErr = n.asError(err)
		}
	}
	// Release every reservation this attempt made. A line whose home timed
	// out has spent the request's deadline, so the releases get one of
	// their own. Nothing was committed in this phase: no commit is sent
	// before the plan is stored in phase commit.
	rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), compensateTimeout)
	defer rcancel()
	//
	// A line whose home did not answer (a lost answer, a timeout) may hold
	// all the same. Asking now would wait on a home just found out of
	// reach; the plan keeps it instead (Loose), and the next attempt sends
	// its reservation again under its key first, which the home answers
	// with the hold it made (or makes it), and releases that. Otherwise
	// the hold would stay until its ttl and refuse the retry's own
	// reservation of the same units.
	released := each(plan.Lines, func(i int, l OrderLine) *HomeResponse {
		if reserved[i].Err != nil {
			return nil
		}
		key, fp := derived(plan, "release", i)
		return n.sagaStep(rctx, l.Home, &HomeRequest{Op: OpRelease, ID: reserved[i].Res.ID, IdemKey: key, IdemFP: fp})
	})
	now = n.clock.Now()
	for i, r := range released {
		// A reservation never sent (no connection to its home) holds
		// nothing: kept, it would only push out of the plan (maxLoose)
		// the possible holds of earlier attempts, while a home is down.
		if e := reserved[i].Err; e != nil && transient(e) && !e.NotSent && !plan.Keyless {
			key, _ := derived(plan, "reserve", i)
			l := plan.Lines[i]
			plan.Loose = append(plan.Loose, looseHold{Key: key, SKU: l.SKU, Home: l.Home, Qty: l.Qty, TTLMs: plan.TTLMs})
		}
		if r == nil {
			continue
		}
		plan.note(now, "release", plan.Lines[i].SKU, reserved[i].Res.ID, r)
		if r.Err != nil {
			n.log.Warn("checkout could not release a reservation; it will expire by its ttl", "reservation", reserved[i].Res.ID, "err", r.Err)
			if transient(r.Err) && !plan.Keyless {
				// Still held, as a line whose reservation was not
				// answered may be: the next attempt releases it first.
				key, _ := derived(plan, "reserve", i)
				l := plan.Lines[i]
				plan.Loose = append(plan.Loose, looseHold{Key: key, SKU: l.SKU, Home: l.Home, Qty: l.Qty, TTLMs: plan.TTLMs})
			}
		}
	}
	plan.drop(now)
	e := firstErr
	if len(failed) > 0 {
		e = &Error{Code: CodeInsufficientStock, Detail: fmt.Sprintf("%d line(s) of cart %s cannot be reserved", len(failed), cartID), Lines: failed}
		// A hold of an earlier attempt that could not be released (its
		// release unanswered) may be what is short: this checkout's own.
		// Not a final refusal then: the attempt ends, and the next one
		// releases that hold first (or, dropped, it expires first).
		for _, f := range failed {
			if i := slices.IndexFunc(plan.Loose, func(h looseHold) bool { return h.SKU == f.SKU }); i >= 0 {
				e = &Error{Code: CodeUnavailable, RetryAfter: 1, Detail: fmt.Sprintf("%s is short, and this checkout may still hold units of it from an earlier attempt whose release got no answer; retry with the same key", f.SKU)}
				break
			}
			if until := plan.droppedUntil(f.SKU, now); !until.IsZero() {
				e = &Error{Code: CodeUnavailable, RetryAfter: retryAfter(until, now), Detail: fmt.Sprintf("%s is short, and this checkout may still hold units of it from earlier attempts whose answers were lost, until they expire; retry with the same key", f.SKU)}
				break
			}
		}
	}
	if e != nil && !transient(e) && len(plan.Loose) > 0 {
		// A final refusal settles the checkout: what it may still hold
		// (a reservation whose answer was lost) is released first, or
		// the refusal waits for a retry that can.
		if plan.Loose = n.releaseLoose(ctx, plan, plan.Loose); len(plan.Loose) > 0 {
			e = &Error{Code: CodeUnavailable, RetryAfter: 1, Detail: fmt.Sprintf("cart %s cannot be bought, and this checkout may still hold units whose release got no answer; retry with the same key", cartID)}
		}
	}
	if until := plan.droppedUntil("", now); e != nil && !transient(e) && !until.IsZero() {
		// Holds it dropped cannot be released: the refusal waits for
		// them to expire.
		e = &Error{Code: CodeUnavailable, RetryAfter: retryAfter(until, now), Detail: fmt.Sprintf("cart %s cannot be bought, and this checkout may still hold units from earlier attempts whose answers were lost, until they expire; retry with the same key", cartID)}
	}
	return n.finishCheckout(ctx, cartID, plan, idem, nil, e)
}

// maxRollForward bounds the rounds of re-reservation one run of the
// commit phase makes.
const maxRollForward = 3

// commitPhase commits every line, reserving again the lines whose holds
// are gone. It returns the order; or a transient error with the plan left
// in phase commit (stored); or it moves the plan to phase return (stored,
// with the reason) when a line can no longer be reserved.
func (n *Node) commitPhase(ctx context.Context, cartID string, plan *checkoutPlan, idem Idem) (Order, error) {
	cctx, ccancel := phaseContext(ctx)
	defer ccancel()
	done := make([]bool, len(plan.Lines))
	for round := 0; ; round++ {
		committed := each(plan.Lines, func(i int, l OrderLine) *HomeResponse {
			if done[i] || plan.Res[i] == "" {
				return nil
			}
			key, fp := derived(plan, "commit", i)
			return n.sagaStep(cctx, l.Home, &HomeRequest{Op: OpCommit, ID: plan.Res[i], IdemKey: key, IdemFP: fp})
		})
		now := n.clock.Now()
		var again []int
		lost := map[int]bool{}
		var stop *Error
		for i, r := range committed {
			switch {
			case done[i]:
				continue
			case r == nil: // being reserved again when a run stopped
				again = append(again, i)
				lost[i] = true
				continue
			}
			plan.note(now, "commit", plan.Lines[i].SKU, plan.Res[i], r)
			switch {
			case r.Err == nil, r.Err.Code == CodeReservationCommit:
				// Committed now, or by an earlier run of this saga (only
				// the saga commits its reservations).
				done[i] = true
			case r.Err.Code == CodeReservationExpired, r.Err.Code == CodeReservationReleased, r.Err.Code == CodeNotFound:
				again = append(again, i)
			case transient(r.Err):
				if stop == nil {
					stop = r.Err
				}
			default:
				stop = r.Err
			}
		}
		if stop == nil && len(again) == 0 {
			// Holds of earlier attempts that could not be released when
			// this one began are released now; those whose homes are
			// still out of reach stay on the order's record, and the
			// background settling releases them (settleLoose).
			plan.Loose = n.releaseLoose(ctx, plan, plan.Loose)
			order := &Order{OrderID: plan.OrderID, CartID: cartID}
			for i, l := range plan.Lines {
				l.ReservationID = plan.Res[i]
				order.Lines = append(order.Lines, l)
			}
			return *order, n.finishCheckout(ctx, cartID, plan, idem, order, nil)
		}
		if stop == nil && round >= maxRollForward {
			stop = &Error{Code: CodeUnavailable, RetryAfter: 1, Detail: "the checkout's reservations keep expiring before they are committed; retry to go on"}
		}
		if stop != nil {
			return Order{}, n.pauseCommit(cartID, plan, idem, stop)
		}
		// Roll forward: reserve the lost lines again, each as a new
		// generation stored before it is sent. A line whose reservation
		// of this generation was sent but not answered (or a run stopped
		// meanwhile) is sent again under the same key: the home may have
		// made that hold, which a new generation would compete with for
		// the same units; its replay says (and, if it has expired since,
		// the next round takes a new generation).
		for _, i := range again {
			if !lost[i] {
				plan.Gen[i]++
			}
			plan.Res[i] = ""
		}
		if err := n.savePlan(idem, plan); err != nil {
			return Order{}, err
		}
		reserved := each(plan.Lines, func(i int, l OrderLine) *HomeResponse {
			if !slices.Contains(again, i) {
				return nil
			}
			key, fp := derived(plan, "reserve", i)
			return n.sagaStep(cctx, l.Home, &HomeRequest{Op: OpReserve, SKU: l.SKU, Qty: l.Qty, TTLMs: plan.TTLMs, IdemKey: key, IdemFP: fp, Checkout: l.Qty > crdt.MaxQty})
		})
		now = n.clock.Now()
		var failed []SkuAvailable
		for _, i := range again {
			r := reserved[i]
			plan.note(now, "reserve", plan.Lines[i].SKU, "", r)
			switch {
			case r.Err == nil && r.Res != nil && r.Res.State == StateHeld:
				plan.Res[i] = r.Res.ID
			case r.Err == nil && r.Res != nil && r.Res.State == StateCommitted:
				plan.Res[i] = r.Res.ID // an earlier run committed it
			case r.Err == nil:
				// A replayed reservation that has expired since: the
				// next round reserves it again.
				if r.Res != nil {
					plan.Res[i] = r.Res.ID
				}
			case transient(r.Err):
				if stop == nil {
					stop = r.Err
				}
			case r.Err.Code == CodeInsufficientStock && r.Err.Available != nil:
				failed = append(failed, SkuAvailable{SKU: plan.Lines[i].SKU, Available: *r.Err.Available, Home: plan.Lines[i].Home})
			default:
				if stop == nil || transient(stop) {
					stop = r.Err
				}
			}
		}
		if len(failed) > 0 {
			// Rolling forward is impossible: undo every line.
			plan.Phase = phaseReturn
			plan.Failure = &Error{Code: CodeInsufficientStock, Detail: fmt.Sprintf("%d line(s) of cart %s cannot be reserved", len(failed), cartID), Lines: failed}
			if err := n.savePlan(idem, plan); err != nil {
				return Order{}, err
			}
			return Order{}, nil
		}
		if stop != nil {
			return Order{}, n.pauseCommit(cartID, plan, idem, stop)
		}
		if err := n.savePlan(idem, plan); err != nil {
			return Order{}, err
		}
	}
}

// pauseCommit stops the commit phase on failure: the plan stays in phase
// commit for a retry or the background settling to go on with. A
// checkout without a key compensates instead (nobody retries it), and so
// does any checkout whose failure is not transient.
func (n *Node) pauseCommit(cartID string, plan *checkoutPlan, idem Idem, failure *Error) error {
	if plan.Keyless || !transient(failure) {
		plan.Phase = phaseReturn
		plan.Failure = failure
		if err := n.savePlan(idem, plan); err != nil {
			return err
		}
		return nil
	}
	if err := n.savePlan(idem, plan); err != nil {
		return err
	}
	return failure
}

// returnPhase undoes every line of the plan: a committed reservation's
// units go back to stock, a held one is released. It fails the checkout
// with the plan's failure once every line is undone, or returns a
// transient error with the plan left in phase return.
func (n *Node) returnPhase(ctx context.Context, cartID string, plan *checkoutPlan, idem Idem) error {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), compensateTimeout)
	defer cancel()
	// A line without a reservation was being reserved again (its answer
	// lost, or a run stopped): the home may hold it all the same. Sent
	// again under its key, the home answers with that hold (or makes it),
	// which is then released.
	// Holds of earlier attempts that could not be released when this one
	// began are released too: the undone checkout holds nothing.
	loose := slices.Clone(plan.Loose)
	for i, l := range plan.Lines {
		if plan.Res[i] == "" { // keyless too: its keys derive from its order id
			key, _ := derived(plan, "reserve", i)
			loose = append(loose, looseHold{Key: key, SKU: l.SKU, Home: l.Home, Qty: l.Qty, TTLMs: plan.TTLMs})
		}
	}
	returned := each(plan.Lines, func(i int, l OrderLine) *HomeResponse {
		if plan.Res[i] == "" {
			return nil // released below
		}
		key, fp := derived(plan, "return", i)
		return n.sagaStep(rctx, l.Home, &HomeRequest{Op: OpReturn, ID: plan.Res[i], IdemKey: key, IdemFP: fp})
	})
	now := n.clock.Now()
	var stop *Error
	for i, r := range returned {
		if r == nil {
			continue
		}
		plan.note(now, "return", plan.Lines[i].SKU, plan.Res[i], r)
		if r.Err != nil && r.Err.Code != CodeNotFound && stop == nil {
			stop = r.Err
		}
	}
	if left := n.releaseLoose(rctx, plan, loose); len(left) > 0 && stop == nil {
		stop = &Error{Code: CodeUnavailable, RetryAfter: 1, Detail: fmt.Sprintf("a reservation of %s whose answer was lost may still hold units", left[0].SKU)}
	}
	if stop != nil {
		if !transient(stop) {
			n.log.Error("checkout could not return a reservation's units", "order", plan.OrderID, "err", stop)
			stop = &Error{Code: CodeUnavailable, RetryAfter: 1, Detail: "the checkout is undoing its reservations: " + stop.Detail}
		}
		if err := n.savePlan(idem, plan); err != nil {
			return err
		}
		return stop
	}
	failure := plan.Failure
	if failure == nil {
		failure = Errorf(CodeInternal, "checkout %s was undone", plan.OrderID)
	}
	plan.Loose = nil
	return n.finishCheckout(ctx, cartID, plan, idem, nil, failure)
}

// savePlan stores the plan as the unsettled record of idem's key.
func (n *Node) savePlan(idem Idem, plan *checkoutPlan) error {
	n.noteSaga(idem.Key, plan.Cart, true)
	if err := n.recordCheckout(idem, &idemRecord{Plan: plan}, nil); err != nil {
		return err
	}
	if n.store.Durability() == config.DurabilityEverySec {
		// The plan's steps act at other regions, which keep what they
		// did through this region's power loss: a plan lost with the
		// last second would be made anew (another nonce, other step
		// keys) and its lines reserved and committed again. So the plan
		// is durable before any step is sent, with everysec too.
		return n.store.Sync()
	}
	return nil
}

// noteSaga adds key, a checkout of cart, to (or removes it from) the
// unsettled checkouts this region coordinates.
func (n *Node) noteSaga(key, cart string, unsettled bool) {
	n.sagaMu.Lock()
	defer n.sagaMu.Unlock()
	if !unsettled {
		delete(n.sagas, key)
		return
	}
	if n.sagas == nil {
		n.sagas = make(map[string]string)
	}
	n.sagas[key] = cart
}

// unsettledCheckoutOf reports whether a checkout of cart other than the
// one under key is unsettled here: it may still commit the cart's
// entries, which its settling removes, so a new checkout of the cart
// waits for it (request_in_progress) rather than buy them again.
func (n *Node) unsettledCheckoutOf(cart, key string) bool {
	n.sagaMu.Lock()
	defer n.sagaMu.Unlock()
	for k, c := range n.sagas {
		if c == cart && k != key {
			return true
		}
	}
	return false
}

// loadSagas finds the unsettled checkouts in the store (at start-up).
func (n *Node) loadSagas() error {
	return n.store.Scan(prefixIdem, func(k string, v []byte, err error) bool {
		var rec idemRecord
		switch {
		case err != nil || crdt.UnmarshalRecord(v, &rec) != nil:
		case rec.unsettled():
			n.noteSaga(k[len(prefixIdem):], rec.Plan.Cart, true)
		case rec.looseAfterOrder():
			n.noteSaga(k[len(prefixIdem):], "", true)
		}
		return true
	})
}

// Background settling of checkouts.
const (
	// settleEvery is how many expiry ticks pass between two rounds of
	// settling.
	settleEvery = 4
	// settleAfter is how long a checkout stays unsettled before the
	// coordinator settles it itself (a client retrying with its key
	// usually comes first).
	settleAfter = 5 * time.Second
	// settleTimeout bounds one checkout's settling.
	settleTimeout = 10 * time.Second
)

// looseAfterOrder reports whether rec is an order whose earlier
// attempts' holds were not all released when it settled (their homes out
// of reach).
func (r *idemRecord) looseAfterOrder() bool {
	return r.Order != nil && r.Plan != nil && len(r.Plan.Loose) > 0
}

// settleLoose releases the holds of earlier attempts that the order
// recorded under key still carries (rec, as read into *cur by read),
// once settleAfter has passed since it was recorded, and records what is
// left. It forgets the key once none is.
func (n *Node) settleLoose(key string, rec *idemRecord, read func() bool, cur **idemRecord) {
	if n.clock.Now().Sub(time.UnixMilli(rec.AtMs)) < settleAfter {
		return
	}
	release, err := n.claim(key)
	if err != nil {
		return
	}
	defer release()
	if !read() {
		return
	}
	if rec = *cur; rec == nil || !rec.looseAfterOrder() {
		if rec == nil || !rec.unsettled() {
			n.noteSaga(key, "", false)
		}
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), settleTimeout)
	defer cancel()
	plan := rec.Plan
	left := n.releaseLoose(ctx, plan, plan.Loose)
	if len(left) == len(plan.Loose) {
		n.log.Warn("an order's earlier attempts may still hold units; their homes cannot be reached", "order", plan.OrderID, "holds", len(left))
		return
	}
	plan.Loose = left
	rec.Last = lastOf(plan)
	idem := Idem{Key: key}
	copy(idem.Fingerprint[:], rec.FP)
	if err := n.recordCheckout(idem, rec, nil); err != nil {
		return
	}
	if len(left) == 0 {
		n.noteSaga(key, "", false)
	}
}

// SettleCheckouts drives every checkout this region coordinates that a
// failure left unsettled for settleAfter: in phase commit it rolls
// forward, in phase return it goes on undoing, in phase reserve it runs
// the attempt (as a retry with the key would). A checkout a request is
// running is skipped.
func (n *Node) SettleCheckouts() {
	if n.store.CatchingUp() {
		return
	}
	n.sagaMu.Lock()
	keys := slices.Collect(maps.Keys(n.sagas))
	n.sagaMu.Unlock()
	for _, key := range keys {
		select {
		case <-n.stop:
			return
		default:
		}
		n.settle(key)
	}
}

func (n *Node) settle(key string) {
	var rec *idemRecord
	read := func() bool {
		err := n.store.View([]string{prefixIdem + key}, func(r store.Reader) error {
			var err error
			rec, err = loadIdem(r, key, n.clock.Now())
			return err
		})
		if err != nil {
			n.log.Error("cannot read a checkout to settle it", "key", key, "err", err)
		}
		return err == nil
	}
	if !read() {
		return
	}
	if rec != nil && rec.looseAfterOrder() {
		n.settleLoose(key, rec, read, &rec)
		return
	}
	if rec == nil || !rec.unsettled() {
		// Forgotten only under the key's claim: a request running with
		// the key may be saving a new plan this read did not see.
		release, err := n.claim(key)
		if err != nil {
			return
		}
		defer release()
		if read() && (rec == nil || !rec.unsettled()) {
			n.noteSaga(key, "", false)
		}
		return
	}
	if n.clock.Now().Sub(time.UnixMilli(rec.AtMs)) < settleAfter {
		return
	}
	cartID := rec.Plan.Cart
	if cartID == "" {
		return // a plan stored before plans named their cart: a retry settles it
	}
	releaseCart, err := n.claim("\x00checkout-of/" + cartID)
	if err != nil {
		return
	}
	defer releaseCart()
	release, err := n.claim(key)
	if err != nil {
		return
	}
	defer release()
	// Read again under the claims: a retry of the key may have run (and
	// settled, or begun another attempt) between the first read and the
	// claims, and the plan read before them would run an attempt over
	// again — buying the cart a second time.
	if !read() {
		return
	}
	if rec == nil || !rec.unsettled() {
		n.noteSaga(key, "", false)
		return
	}
	if rec.Plan.Cart != cartID {
		return // not the checkout the claims were taken for: the next round
	}
	idem := Idem{Key: key}
	copy(idem.Fingerprint[:], rec.FP)
	ctx, cancel := context.WithTimeout(context.Background(), settleTimeout)
	defer cancel()
	plan := rec.Plan
	phase := phaseNames[min(int(plan.Phase), len(phaseNames)-1)]
	if _, err := n.runCheckout(ctx, cartID, plan, idem); err != nil {
		n.log.Warn("a checkout is still unsettled", "order", plan.OrderID, "phase", phase, "err", err)
		return
	}
	n.log.Info("settled a checkout", "order", plan.OrderID, "from_phase", phase)
}

// finishCheckout records the outcome and, on success, removes the entries
// the checkout read. A transient failure of phase reserve ends the
// attempt: the record keeps only the number of the next one (and the
// plan's steps), so a retry plans afresh with new keys. It returns the
// checkout's error, or nil.
func (n *Node) finishCheckout(ctx context.Context, cartID string, plan *checkoutPlan, idem Idem, order *Order, failure *Error) error {
	if failure != nil && transient(failure) && plan.Phase == phaseReserve && !plan.Keyless {
		err := n.recordCheckout(idem, &idemRecord{Attempt: plan.Attempt + 1, Last: lastOf(plan)}, failure)
		if err == error(failure) { // recorded
			// Recorded: the attempt is over, and no longer stops another
			// checkout of the cart (unsettledCheckoutOf).
			n.noteSaga(idem.Key, "", false)
		} else if failure.Code == CodeInternal {
			// Not recorded, after a write that may or may not be in the
			// file (the plan in phase commit, whose fsync failed, and
			// the store with it): after a restart the checkout may go on
			// to an order, which the store's own refusal (503, nothing
			// decided) would deny.
			return failure
		}
		return err
	}
	// The request's values (its answer: the write concern waits for this
	// write too), not its deadline: the outcome is recorded whatever.
	err := n.write(context.WithoutCancel(ctx), []string{prefixCart + cartID, prefixIdem + idem.Key}, func(tx *store.Tx, g *crdt.Group) error {
		if order != nil {
			c, p, err := loadCartLines(n.cartReader(tx), cartID, nil, true, false)
			if err != nil {
				return err
			}
			dots := make([]crdt.Dot, len(plan.Dots))
			for i, d := range plan.Dots {
				dots[i] = crdt.Dot{Replica: crdt.ReplicaID(d.R), Counter: d.C}
			}
			if d := c.RemoveObserved(dots); c.Brings(d) {
				c.Join(d)
				if err := n.saveCart(tx, p, c); err != nil {
					return err
				}
				g.AddCart(cartID, d)
			}
		}
		rec := &idemRecord{FP: idem.Fingerprint[:], AtMs: n.clock.Now().UnixMilli(), Order: order, Err: failure, Last: lastOf(plan)}
		if order != nil {
			rec.Plan = plan // its dots: what a retry elsewhere removes too
		}
		tx.Set(prefixIdem+idem.Key, encode(rec))
		return nil
	})
	if err != nil {
		return n.storeErr(err)
	}
	// An order whose earlier attempts' holds could not all be released
	// stays noted, under no cart (it stops no checkout), for the
	// background settling to release them (settleLoose).
	n.noteSaga(idem.Key, "", order != nil && len(plan.Loose) > 0)
	if failure != nil {
		return failure
	}
	return nil
}
