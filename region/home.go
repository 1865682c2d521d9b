package region

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/latticedb/lattice/crdt"
	"github.com/latticedb/lattice/region/store"
)

// IdempotencyRetention is how long an idempotency record is kept.
const IdempotencyRetention = 24 * time.Hour

// ReservationRetention is how long a reservation's record is kept past its
// expiry (a reservation is settled — committed, released or expired — by
// then); after that its id answers not_found.
const ReservationRetention = 7 * 24 * time.Hour

// idemRecord is the stored outcome of a request made with an
// Idempotency-Key. A checkout record also carries its plan while it runs.
type idemRecord struct {
	FP    []byte        `cbor:"1,keyasint"`
	AtMs  int64         `cbor:"2,keyasint"`
	Resp  *HomeResponse `cbor:"3,keyasint,omitempty"`
	Order *Order        `cbor:"4,keyasint,omitempty"`
	Err   *Error        `cbor:"5,keyasint,omitempty"`
	Plan  *checkoutPlan `cbor:"6,keyasint,omitempty"`
	// Attempt is the next attempt of a checkout whose earlier attempts
	// failed transiently.
	Attempt uint32 `cbor:"7,keyasint,omitempty"`
	// Last is the plan of a settled checkout, or of its last attempt
	// (its steps: why it ended as it did).
	Last *checkoutPlan `cbor:"8,keyasint,omitempty"`
	// Escalated marks a reservation of an escrow sku this region sent to
	// the home (written by earlier versions, which decided keyed
	// reservations of escrow skus where they were sent when they could):
	// retries with the key go there too (escrow.go).
	Escalated bool `cbor:"9,keyasint,omitempty"`
}

// unsettled reports whether rec is the plan of a checkout whose saga has
// not settled.
func (rec *idemRecord) unsettled() bool { return rec.Plan != nil && rec.Order == nil && rec.Err == nil }

func loadIdem(r store.Reader, key string, now time.Time) (*idemRecord, error) {
	b, ok, err := r.Get(prefixIdem + key)
	if err != nil || !ok {
		return nil, err
	}
	var rec idemRecord
	if err := crdt.UnmarshalRecord(b, &rec); err != nil {
		return nil, &store.CorruptError{Key: prefixIdem + key}
	}
	// Past retention a record is forgotten, but an unsettled checkout's
	// plan is not (CollectIdempotency keeps it too): its saga may have
	// committed some units, and forgetting it would leave them committed
	// outside an order and let a retry commit them again.
	if now.Sub(time.UnixMilli(rec.AtMs)) > IdempotencyRetention && !rec.unsettled() {
		return nil, nil
	}
	return &rec, nil
}

// claim marks an idempotency key as in progress in this process; a second
// request with the key while the first runs is request_in_progress.
func (n *Node) claim(key string) (release func(), err error) {
	if key == "" {
		return func() {}, nil
	}
	n.imu.Lock()
	defer n.imu.Unlock()
	if _, busy := n.inflight[key]; busy {
		return nil, Errorf(CodeRequestInProgress, "a request with this Idempotency-Key is still running")
	}
	n.inflight[key] = struct{}{}
	return func() {
		n.imu.Lock()
		delete(n.inflight, key)
		n.imu.Unlock()
	}, nil
}

func mismatch() *Error {
	return Errorf(CodeIdempotencyMismatch, "this Idempotency-Key was used with a different request")
}

// ServeForwarded is ServeHome for a request another region forwarded: its
// answer carries the causal token of what it shows (TokenFor, taken after
// the read or decision), which the forwarding region joins into its own
// answer's token.
//
// A request with a write concern (Replicas) is answered once that many
// regions hold the decision's writes, or, if they do not in time (a
// little before the caller's deadline), with replication_timeout: the
// decision stands and still replicates. Region-to-region reads and
// repairs (OpRead, OpRepair) are answered here too.
func (n *Node) ServeForwarded(ctx context.Context, req *HomeRequest) *HomeResponse {
	if req.Op == OpRead || req.Op == OpRepair {
		if err := checkStateRequest(req); err != nil {
			return &HomeResponse{Err: err}
		}
		if !n.servesHere(req) {
			return &HomeResponse{Err: InvalidField("keys", "%s is not in partition %d", req.Keys[0], n.opts.Partition)}
		}
		return n.serveState(ctx, req)
	}
	ctx = WithAnswer(ctx)
	if req.Replicas > 1 {
		if req.Replicas > n.Regions() {
			return &HomeResponse{Err: InvalidField("Lattice-Replicas", "%d regions asked for, the cluster has %d", req.Replicas, n.Regions())}
		}
		ctx = WithReplicas(ctx, req.Replicas)
	}
	if req.Op == OpRecall && req.State != nil {
		// The home's state of the item, joined before the region works out
		// what it gives back (recallRights): it holds the grants the
		// home made, whose answers may not have reached this region.
		if !onlyKey(req.State, prefixItem+req.SKU) {
			return &HomeResponse{Err: InvalidField("state", "a recall's state holds keys other than %s", prefixItem+req.SKU)}
		}
		var reflects crdt.Context
		if req.Token != "" {
			reflects, _ = crdt.ParseToken(req.Token)
		}
		if err := n.ApplyReflecting(&crdt.Context{}, req.State, &reflects); err != nil {
			return &HomeResponse{Err: &Error{Code: CodeUnavailable, RetryAfter: 1, Detail: err.Error()}}
		}
	}
	var out *HomeResponse
	if req.Op == OpReserve {
		// Also for an sku no longer in escrow: rights granted before may
		// still be out, and are recalled rather than refused.
		out = n.reserveAtHome(ctx, req)
	} else {
		out = n.ServeHome(ctx, req)
	}
	resp := *out
	if resp.Res != nil {
		// The state by this home's clock: the asking region's may differ,
		// and expiry is the home's to judge.
		r := *resp.Res
		r.State = r.View(n.clock.Now()).State
		resp.Res = &r
	}
	if resp.Err == nil {
		resp.Token = n.TokenFor(ctx)
		resp.PartTokens = partTokensOf(ctx)
		if req.Replicas > 1 {
			wctx, cancel := forwardDeadline(ctx, req)
			if err := n.AwaitReplicas(wctx); err != nil {
				resp.Err = err.(*Error)
			}
			cancel()
		}
	}
	return &resp
}

// catchingUp is the refusal of a decision while the region catches up
// or has not seen every peer run its homes (decidesAsHome).
func (n *Node) catchingUp() *Error {
	if !n.store.CatchingUp() {
		n.dmu.Lock()
		peers := n.unconfirmedPeers()
		n.dmu.Unlock()
		if len(peers) == 0 && !n.gateOpen.Load() {
			return &Error{Code: CodeUnavailable, RetryAfter: 1,
				Detail: fmt.Sprintf("region %s has just started and decides as a home once every peer has taken or turned down a first connection (at most %s)", n.name, n.opts.StartGate)}
		}
		return &Error{Code: CodeUnavailable, RetryAfter: 5,
			Detail: fmt.Sprintf("region %s decides as a home once every peer has shown it the same homes rules and regions in an anti-entropy round (not yet: %s)", n.name, strings.Join(peers, ", "))}
	}
	return &Error{Code: CodeUnavailable, RetryAfter: 5,
		Detail: fmt.Sprintf("region %s is new, its skus' homes changed, or it may have lost some of its store (an unclean stop, a damaged file or a restore): it decides once it has caught up with every peer", n.name)}
}

// ServeHome decides a home request at this region. It validates the
// request as untrusted input (it may come from another region).
func (n *Node) ServeHome(ctx context.Context, req *HomeRequest) *HomeResponse {
	if err := n.checkHomeRequest(req); err != nil {
		return &HomeResponse{Err: err}
	}
	if req.Op == OpGet || req.Op == OpItem {
		return n.readHome(ctx, req)
	}
	if req.Op == OpCheckoutStatus {
		return n.checkoutStatus(req)
	}
	if req.Op == OpCheckout {
		if gaveUp(req) {
			return &HomeResponse{Err: callerGaveUp()}
		}
		if !n.waitCaughtUp(ctx) {
			return &HomeResponse{Err: n.catchingUp()}
		}
		return n.serveCheckout(ctx, req)
	}
	// Refused before deciding: counted as the decisions are.
	refused := func(e *Error) *HomeResponse {
		n.m.Reservations.WithLabelValues(req.Op, e.Code).Inc()
		return &HomeResponse{Err: e}
	}
	if gaveUp(req) {
		return refused(callerGaveUp())
	}
	if !n.waitCaughtUp(ctx) {
		return refused(n.catchingUp())
	}
	key := req.IdemKey
	if req.claimed {
		key = ""
	}
	release, err := n.claim(key)
	if err != nil {
		return refused(err.(*Error))
	}
	defer release()
	var out *HomeResponse
	werr := n.write(ctx, n.homeLockKeys(req), func(tx *store.Tx, g *crdt.Group) error {
		now := n.clock.Now()
		if req.IdemKey != "" {
			rec, err := loadIdem(tx, req.IdemKey, now)
			if err != nil {
				return err
			}
			if rec != nil {
				if !bytes.Equal(rec.FP, req.IdemFP) || rec.Resp == nil {
					out = &HomeResponse{Err: mismatch()}
				} else {
					c := *rec.Resp
					c.replayed = true
					out = &c
					if req.Op == OpReserve {
						out = replayAsEnded(tx, out, now)
					}
					n.noteReplay(ctx)
				}
				return nil
			}
		}
		if gaveUp(req) {
			out = &HomeResponse{Err: callerGaveUp()}
			return nil // decided nothing: nothing to remember under the key
		}
		var err error
		switch req.Op {
		case OpReserve:
			out, err = n.reserve(tx, g, req, now)
		case OpCommit, OpRelease, OpReturn:
			if _, _, seq, _ := parseReservationID(req.ID); !n.issued(seq) {
				// No such reservation, nor ever one: nothing to
				// remember under the key either, so that it does not
				// answer for the number once it is issued.
				out = &HomeResponse{Err: Errorf(CodeNotFound, "no reservation %q at %s", req.ID, n.name)}
				return nil
			}
			out, err = n.transition(tx, g, req, now)
		case OpAdjust:
			out, err = n.adjustDown(tx, g, req, now)
		case OpGrant:
			out, err = n.grant(tx, g, req, now)
		case OpRecall:
			out, err = n.recallRights(tx, g, req, now)
		}
		if err != nil {
			return err
		}
		// A transient refusal (503 with Retry-After, e.g. too many open
		// holds) is not an outcome: a retry with the key decides anew.
		if req.IdemKey != "" && (out.Err == nil || out.Err.RetryAfter == 0) && !((req.Escrow || req.recallable) && short(out)) {
			tx.Set(prefixIdem+req.IdemKey, encode(&idemRecord{FP: req.IdemFP, AtMs: now.UnixMilli(), Resp: out}))
		}
		return nil
	})
	if werr != nil {
		var e *Error
		if errors.As(n.storeErr(werr), &e) {
			return &HomeResponse{Err: e}
		}
		n.log.Error("home request failed", "op", req.Op, "err", werr)
		return &HomeResponse{Err: Errorf(CodeInternal, "the home region could not complete the request")}
	}
	result := "ok"
	if out.Err != nil {
		result = out.Err.Code
	}
	if out.replayed || !((req.recallable || req.Escrow) && short(out)) {
		// A refusal reserveAtHome decides again once it has recalled
		// rights is counted there, once; a region's try of its own
		// rights that falls short is no answer to anyone (the
		// reservation goes on to the home). A replay is answered as it
		// is, and counted here.
		n.m.Reservations.WithLabelValues(req.Op, result).Inc()
	}
	return out
}

func (n *Node) checkHomeRequest(req *HomeRequest) *Error {
	if req.IdemKey != "" && req.Op != OpCheckoutStatus && (len(req.IdemKey) > 512 || len(req.IdemFP) != 32) {
		return InvalidField("Idempotency-Key", "idempotency key or fingerprint malformed")
	}
	switch req.Op {
	case OpRecall:
		if !crdt.ValidID(req.SKU) {
			return InvalidField("sku", "sku must be 1-128 characters of [A-Za-z0-9._:-]")
		}
	case OpReserve, OpAdjust, OpItem, OpGrant:
		if !crdt.ValidID(req.SKU) {
			return InvalidField("sku", "sku must be 1-128 characters of [A-Za-z0-9._:-]")
		}
		if req.Escrow && req.Op == OpReserve {
			if !n.escrow(req.SKU) || !n.Holds(req.SKU) {
				return Errorf(CodeHomeUnavailable, "region %s holds no rights to %s", n.name, req.SKU)
			}
		} else if home := n.HomeOf(req.SKU); !n.decides(home, req.SKU) {
			return Errorf(CodeHomeUnavailable, "region %s partition %d is not the home of %s (%s is)", n.name, n.opts.Partition, req.SKU, home)
		}
	case OpCheckout:
		if err := n.checkCheckoutRequest(req); err != nil {
			return err
		}
	case OpCheckoutStatus:
		switch {
		case !crdt.ValidID(req.CartID):
			return InvalidField("cart_id", "cart_id must be 1-128 characters of [A-Za-z0-9._:-]")
		case req.IdemKey == "" || len(req.IdemKey) > 512:
			return InvalidField("Idempotency-Key", "the Idempotency-Key of the checkout is required (at most 512 bytes)")
		case !n.decides(n.HomeOf(req.CartID), req.CartID):
			return Errorf(CodeHomeUnavailable, "region %s partition %d does not coordinate checkouts of cart %s", n.name, n.opts.Partition, req.CartID)
		}
		return nil
	case OpGet, OpCommit, OpRelease, OpReturn:
		home, part, seq, ok := parseReservationID(req.ID)
		if !ok || home != string(n.name) || part != n.opts.Partition {
			return Errorf(CodeNotFound, "no reservation %q at %s", req.ID, n.name)
		}
		// A commit or release of a number never issued is refused in
		// ServeHome, after its Idempotency-Key is looked up.
		if req.Op == OpGet && !n.issued(seq) {
			return Errorf(CodeNotFound, "no reservation %q at %s", req.ID, n.name)
		}
	default:
		return InvalidField("op", "unknown home operation %q", req.Op)
	}
	switch req.Op {
	case OpReserve:
		if req.Checkout {
			if req.Qty < 1 || req.Qty > crdt.MaxCount {
				return InvalidField("qty", "a checkout's line of %d units: qty must be an integer from 1 to %d", req.Qty, int64(crdt.MaxCount))
			}
		} else if err := validQty("qty", req.Qty, 1); err != nil {
			return err.(*Error)
		}
		if _, err := ttlOf(time.Duration(req.TTLMs) * time.Millisecond); err != nil || req.TTLMs < MinTTL.Milliseconds() || req.TTLMs > MaxTTL.Milliseconds() {
			return InvalidField("ttl_ms", "ttl_ms must be from %d to %d", MinTTL.Milliseconds(), MaxTTL.Milliseconds())
		}
	case OpAdjust:
		if req.Delta >= 0 || req.Delta < -MaxAdjust {
			return InvalidField("delta", "a home adjustment is a negative delta from %d", -MaxAdjust)
		}
	case OpGrant:
		if err := req.checkGrant(n); err != nil {
			return err
		}
	case OpItem:
		if st := req.State; st != nil {
			it, ok := st.Items[req.SKU]
			if len(st.Carts) != 0 || len(st.Items) != 1 || !ok || it == nil || it.Held.Version != 0 || len(it.Escrow) > crdt.MaxEscrowRecords {
				return InvalidField("state", "an item read carries at most the asking region's stock counter and rights of its own sku")
			}
		}
	case OpRecall:
		if err := req.checkRecall(n); err != nil {
			return err
		}
	}
	return nil
}

// readHome answers OpItem and OpGet from the home's state under the
// item's lock (Node.view): an item, its ledger and its reservations are
// written under the lock of the item's key, so the answer shows only
// decisions that are durable here and in the applied context.
func (n *Node) readHome(ctx context.Context, req *HomeRequest) *HomeResponse {
	sku := req.SKU
	if req.Op == OpGet {
		// A reservation's sku never changes: find it, then read the
		// record again under its item's lock, which every write of it
		// holds until durable. A record not found here is not read again
		// (under no item's lock, it could show one not yet durable).
		found := false
		err := n.store.View(nil, func(r store.Reader) error {
			rec, ok, err := loadRes(r, req.ID)
			if ok {
				sku, found = rec.SKU, true
			}
			return err
		})
		if err != nil {
			// A damaged record is not an unknown one (a 404 says the
			// id names no reservation): 503, as a commit of it answers.
			e, ok := n.storeErr(err).(*Error)
			if !ok {
				e = &Error{Code: CodeInternal, Detail: err.Error()}
			}
			return &HomeResponse{Err: e}
		}
		if !found {
			return &HomeResponse{Err: Errorf(CodeNotFound, "no reservation %q", req.ID)}
		}
	}
	var out *HomeResponse
	err := n.view(ctx, prefixItem+sku, func(r store.Reader) error {
		if req.Op == OpItem {
			if err := n.heldBackErr(prefixItem + req.SKU); err != nil {
				return err
			}
			it, err := loadItem(r, req.SKU)
			if err != nil {
				return err
			}
			l, err := loadLedger(r, req.SKU)
			if err != nil {
				return err
			}
			if req.State != nil {
				// The asking region's stock counter (restocks this home
				// may not have yet): the answer shows what the asker
				// already showed its client, so a consistent read after
				// a restock elsewhere still shows it (read your writes).
				// Only the answer; the store takes it when it replicates.
				// Its rights' counters likewise (a commit from rights there
				// shows its use with its stock decrement), but grants only
				// as this home wrote them.
				asked := req.State.Items[req.SKU]
				it = it.Clone()
				it.Stock.Join(&asked.Stock)
				if len(asked.Escrow) > 0 {
					esc := &crdt.Item{Escrow: make(map[crdt.EscrowKey]uint64, len(asked.Escrow))}
					for k, v := range asked.Escrow {
						if k.Kind != crdt.EscrowGrant || k.Replica.Region() == string(n.name) {
							esc.Escrow[k] = v
						}
					}
					it.Join(esc)
				}
			}
			v := n.itemView(req.SKU, it, l, n.clock.Now())
			out = &HomeResponse{Item: &v}
			return nil
		}
		rec, ok, err := loadRes(r, req.ID)
		if err != nil {
			return err
		}
		if !ok || rec.SKU != sku {
			out = &HomeResponse{Err: Errorf(CodeNotFound, "no reservation %q", req.ID)}
			return nil
		}
		out = &HomeResponse{Res: rec}
		return nil
	})
	if err != nil {
		var e *Error
		if errors.As(n.storeErr(err), &e) {
			return &HomeResponse{Err: e}
		}
		return &HomeResponse{Err: Errorf(CodeInternal, "the home region could not read its ledger")}
	}
	return out
}

func (n *Node) checkCheckoutRequest(req *HomeRequest) *Error {
	switch {
	case !crdt.ValidID(req.CartID):
		return InvalidField("cart_id", "cart_id must be 1-128 characters of [A-Za-z0-9._:-]")
	case !n.decides(n.HomeOf(req.CartID), req.CartID):
		return Errorf(CodeHomeUnavailable, "region %s partition %d does not coordinate checkouts of cart %s", n.name, n.opts.Partition, req.CartID)
	}
	if _, err := ttlOf(time.Duration(req.TTLMs) * time.Millisecond); err != nil || req.TTLMs < MinTTL.Milliseconds() || req.TTLMs > MaxTTL.Milliseconds() {
		return InvalidField("ttl_ms", "ttl_ms must be from %d to %d", MinTTL.Milliseconds(), MaxTTL.Milliseconds())
	}
	return nil
}

// serveCheckout coordinates a checkout forwarded by the region that
// answered it, with that region's copy of the cart.
func (n *Node) serveCheckout(ctx context.Context, req *HomeRequest) *HomeResponse {
	other, err := unpackCart(req.Cart, req.CartZ)
	if err != nil {
		return &HomeResponse{Err: InvalidField("cart", "forwarded cart: %v", err)}
	}
	var idem Idem
	if req.IdemKey != "" {
		idem.Key = req.IdemKey
		copy(idem.Fingerprint[:], req.IdemFP)
	}
	order, removed, err := n.checkoutHere(ctx, req.CartID, time.Duration(req.TTLMs)*time.Millisecond, idem, other)
	if err != nil {
		var e *Error
		if errors.As(err, &e) {
			return &HomeResponse{Err: e}
		}
		n.log.Error("forwarded checkout failed", "cart", req.CartID, "err", err)
		return &HomeResponse{Err: Errorf(CodeInternal, "the checkout's coordinator failed")}
	}
	return &HomeResponse{Order: &order, Removed: removed}
}

// expireDue moves the holds of sku that are past their expiry to expired.
// It returns whether anything changed.
func (n *Node) expireDue(tx *store.Tx, sku string, it *crdt.Item, l *ledger, now time.Time) (bool, error) {
	changed := false
	for id, h := range l.Holds {
		if now.UnixMilli() < h.ExpMs {
			continue
		}
		rec, ok, err := loadRes(tx, id)
		if err != nil {
			return false, err
		}
		if ok && rec.State == StateHeld {
			rec.State = StateExpired
			tx.Set(prefixRes+id, encode(rec))
			n.m.Expired.Inc()
		}
		delete(l.Holds, id)
		changed = true
	}
	return changed, nil
}

// saveLedger writes the ledger and publishes the held total as an item
// delta.
func (n *Node) saveLedger(tx *store.Tx, g *crdt.Group, sku string, it *crdt.Item, l *ledger) {
	tx.Set(prefixLedger+sku, l.encode())
	n.due.note(sku, l)
	if !n.decides(n.HomeOf(sku), sku) {
		// The holds of a region deciding from its rights are its own:
		// only the home publishes held units.
		tx.Set(prefixItem+sku, crdt.EncodeItem(it))
		return
	}
	d := it.SetHeld(n.self, l.held())
	it.Join(d)
	tx.Set(prefixItem+sku, crdt.EncodeItem(it))
	g.AddItem(sku, d)
}

func (n *Node) loadForDecision(tx *store.Tx, g *crdt.Group, sku string, now time.Time) (*crdt.Item, *ledger, error) {
	it, err := loadItem(tx, sku)
	if err != nil {
		return nil, nil, err
	}
	l, err := loadLedger(tx, sku)
	if err != nil {
		return nil, nil, err
	}
	if l.Holds == nil {
		l.Holds = make(map[string]hold)
	}
	changed, err := n.expireDue(tx, sku, it, l, now)
	if err != nil {
		return nil, nil, err
	}
	if changed {
		n.saveLedger(tx, g, sku, it, l)
	}
	if n.decides(n.HomeOf(sku), sku) {
		if out := it.Outstanding(string(n.name)); out > 0 {
			// Rights this region was granted before it became the sku's
			// home: as the home it sells from the whole stock, those
			// units included, so they are given back. Kept, they would
			// be sold again from rights once the home moved away.
			d := it.ReturnRights(n.self, uint64(out))
			it.Join(d)
			tx.Set(prefixItem+sku, crdt.EncodeItem(it))
			g.AddItem(sku, d)
		}
	}
	return it, l, nil
}

func insufficient(sku string, avail int64) *Error {
	a := max(avail, 0)
	return &Error{Code: CodeInsufficientStock, Detail: fmt.Sprintf("only %d of %s available", a, sku), Available: &a}
}

func (n *Node) reserve(tx *store.Tx, g *crdt.Group, req *HomeRequest, now time.Time) (*HomeResponse, error) {
	it, l, err := n.loadForDecision(tx, g, req.SKU, now)
	if err != nil {
		return nil, err
	}
	avail := it.Stock.Value() - l.held() - n.outstandingAll(it, string(n.name))
	if req.Escrow {
		avail = it.Outstanding(string(n.name)) - l.held()
	}
	if req.Qty > avail {
		return &HomeResponse{Err: insufficient(req.SKU, avail)}, nil
	}
	if !n.consumeFits(it, l, req.Qty) {
		return &HomeResponse{Err: InvalidField("qty", "qty %d would take the units this region has taken out of %s past %d once its holds commit", req.Qty, req.SKU, int64(crdt.MaxCount))}, nil
	}
	if len(l.Holds) >= n.opts.MaxOpenHolds {
		return &HomeResponse{Err: &Error{Code: CodeUnavailable, RetryAfter: 1,
			Detail: fmt.Sprintf("%s has %d open reservations, the most one sku may hold; retry once some commit, release or expire", req.SKU, n.opts.MaxOpenHolds)}}, nil
	}
	seq, err := n.nextReservationSeq()
	if err != nil {
		return nil, err
	}
	rec := &ResRecord{ID: reservationID(string(n.name), n.opts.Partition, n.opts.Partitions, seq), SKU: req.SKU, Qty: req.Qty,
		Home: string(n.name), State: StateHeld, ExpMs: now.Add(time.Duration(req.TTLMs) * time.Millisecond).UnixMilli(), Escrow: req.Escrow,
		Saga: strings.HasPrefix(req.IdemKey, stepKeyPrefix)}
	if req.Escrow {
		n.noteEscrow(req.SKU, req.Qty)
	}
	l.Holds[rec.ID] = hold{Qty: rec.Qty, ExpMs: rec.ExpMs}
	tx.Set(prefixRes+rec.ID, encode(rec))
	n.saveLedger(tx, g, req.SKU, it, l)
	return &HomeResponse{Res: rec}, nil
}

const keyResSeq = "m/resseq"

// resSeqBlock is how many reservation numbers are reserved in the store
// at a time; numbers reserved but unused before a restart are skipped.
const resSeqBlock = 1024

// nextReservationSeq hands out reservation numbers, unique across
// restarts: the store holds a high-water mark that is raised, and made
// durable, before any number above it is used.
func (n *Node) nextReservationSeq() (uint64, error) {
	n.resMu.Lock()
	defer n.resMu.Unlock()
	// A number handed out marks the run as used, as a dot does: a hold
	// decided from escrow rights publishes nothing, and if an unclean
	// stop lost it with the high-water mark above it, the next run must
	// be a new incarnation, whose numbers no earlier run handed out.
	if err := n.store.MarkUsed(); err != nil {
		return 0, err
	}
	if n.resSeq >= n.resHWM {
		hwm := n.resSeq + resSeqBlock
		if err := n.store.Update(nil, func(tx *store.Tx) error { tx.Set(keyResSeq, encode(hwm)); return nil }); err != nil {
			return 0, err
		}
		n.resHWM = hwm
	}
	n.resSeq++
	return n.resSeq, nil
}

// issued reports whether reservation number seq may have been handed out
// by this region: whether it is at most the last number handed out. After
// a restart that is the durable high-water mark, which no number handed out
// before the restart exceeds, so a number above it was never issued in
// this store's lifetime.
func (n *Node) issued(seq uint64) bool {
	n.resMu.Lock()
	defer n.resMu.Unlock()
	return seq <= n.resSeq
}

// homeLockKeys returns the keys a home request writes under: the item of
// its sku (the item, its ledger and its reservations change together; see
// lockKey) and its idempotency record.
func (n *Node) homeLockKeys(req *HomeRequest) []string {
	var keys []string
	if req.IdemKey != "" {
		keys = append(keys, prefixIdem+req.IdemKey)
	}
	switch req.Op {
	case OpGet, OpCommit, OpRelease, OpReturn:
		// Named by its id: the lock is its record's sku's, whatever sku
		// the request names (a peer's request is not trusted to name it).
	default:
		if req.SKU != "" {
			return append(keys, prefixItem+req.SKU)
		}
	}
	var rec *ResRecord
	_ = n.store.View(nil, func(r store.Reader) error {
		rec, _, _ = loadRes(r, req.ID)
		return nil
	})
	if rec == nil {
		// Unknown: the request writes at most its idempotency record.
		return keys
	}
	return append(keys, prefixItem+rec.SKU)
}

func (n *Node) transition(tx *store.Tx, g *crdt.Group, req *HomeRequest, now time.Time) (*HomeResponse, error) {
	rec, ok, err := loadRes(tx, req.ID)
	if err != nil {
		return nil, err
	}
	if !ok {
		return &HomeResponse{Err: Errorf(CodeNotFound, "no reservation %q", req.ID)}, nil
	}
	it, l, err := n.loadForDecision(tx, g, rec.SKU, now)
	if err != nil {
		return nil, err
	}
	if rec, _, err = loadRes(tx, req.ID); err != nil { // expireDue may have moved it
		return nil, err
	}
	switch {
	case rec.State == StateHeld && req.Op == OpCommit:
		delete(l.Holds, rec.ID)
		d := it.Consume(n.self, uint64(rec.Qty))
		if rec.Escrow {
			d = it.UseRights(n.self, uint64(rec.Qty))
		}
		it.Join(d)
		g.AddItem(rec.SKU, d)
		rec.State = StateCommitted
	case rec.State == StateHeld && req.Op == OpRelease:
		delete(l.Holds, rec.ID)
		rec.State = StateReleased
	case rec.State == StateHeld && req.Op == OpReturn:
		delete(l.Holds, rec.ID)
		rec.State = StateReleased
	case rec.State == StateCommitted && req.Op == OpReturn:
		// Restocks this region made and lost, brought back by catch-up,
		// may be this very return, made once before and lost with its
		// record: they are taken for it, as far as they go (the units
		// then stay out of sale rather than count twice).
		var lost uint64
		if _, _, seq, _ := parseReservationID(rec.ID); seq < resSeqFloor(n.store.Incarnation()) {
			// Only a reservation of an earlier incarnation: one of this
			// incarnation's was returned in this store, or not at all.
			if lost, err = loadLostRestocks(tx, rec.SKU); err != nil {
				return nil, err
			}
		}
		made := min(lost, uint64(rec.Qty))
		if made > 0 {
			tx.Set(prefixLostRestocks+rec.SKU, []byte(strconv.FormatUint(lost-made, 10)))
			n.log.Warn("a return of a committed reservation taken as made before: the store lost restocks of its sku that its peers hold",
				"reservation", rec.ID, "sku", rec.SKU, "units", made)
		}
		back := uint64(rec.Qty) - made
		if room := crdt.MaxCount - min(it.Stock.P[n.self], crdt.MaxCount); back > room {
			// Past the bound of one replica's restocks the item would
			// no longer decode anywhere: the rest stays out of sale.
			n.log.Warn("a return of a committed reservation puts back fewer units: this region's restocks of the sku reached the counter's bound",
				"reservation", rec.ID, "sku", rec.SKU, "units", back-room)
			back = room
		}
		if back > 0 {
			d := it.Restock(n.self, back)
			it.Join(d)
			g.AddItem(rec.SKU, d)
		}
		rec.State = StateReleased
	case req.Op == OpCommit && rec.State == StateReleased:
		return &HomeResponse{Err: Errorf(CodeReservationReleased, "reservation %s was released", rec.ID)}, nil
	case req.Op == OpCommit && rec.State == StateExpired:
		return &HomeResponse{Err: Errorf(CodeReservationExpired, "reservation %s expired", rec.ID)}, nil
	case req.Op == OpRelease && rec.State == StateCommitted:
		return &HomeResponse{Err: Errorf(CodeReservationCommit, "reservation %s was committed", rec.ID)}, nil
	default:
		// Repeating the same transition (or releasing an expired hold,
		// whose units are already free) changes nothing.
		return &HomeResponse{Res: rec}, nil
	}
	tx.Set(prefixRes+rec.ID, encode(rec))
	n.saveLedger(tx, g, rec.SKU, it, l)
	return &HomeResponse{Res: rec}, nil
}

// replayAsEnded returns the recorded answer out of a reservation for its
// replay at now: past its expiry the recorded hold would read expired,
// and one that was committed or released before reads as it ended
// (committed is final), from its record read through r.
func replayAsEnded(r store.Reader, out *HomeResponse, now time.Time) *HomeResponse {
	res := out.Res
	if res == nil || res.State != StateHeld || now.UnixMilli() < res.ExpMs {
		return out
	}
	if cur, ok, err := loadRes(r, res.ID); err == nil && ok && cur.State != StateHeld {
		c := *out
		c.Res = cur
		return &c
	}
	return out
}

// consumeFits reports whether this region's replica may take qty more
// units out of it beside the holds of l, which each take theirs when they
// commit: past crdt.MaxCount the item would no longer decode anywhere.
func (n *Node) consumeFits(it *crdt.Item, l *ledger, qty int64) bool {
	return qty >= 0 && l.held() >= 0 && it.Stock.N[n.self] <= crdt.MaxCount &&
		uint64(qty)+uint64(l.held()) <= crdt.MaxCount-it.Stock.N[n.self]
}

func (n *Node) adjustDown(tx *store.Tx, g *crdt.Group, req *HomeRequest, now time.Time) (*HomeResponse, error) {
	it, l, err := n.loadForDecision(tx, g, req.SKU, now)
	if err != nil {
		return nil, err
	}
	if avail := it.Stock.Value() - l.held() - n.outstandingAll(it, string(n.name)); avail+req.Delta < 0 {
		return &HomeResponse{Err: insufficient(req.SKU, avail)}, nil
	}
	if !n.consumeFits(it, l, -req.Delta) {
		return &HomeResponse{Err: InvalidField("delta", "delta %d would take the units this region has taken out of %s past %d", req.Delta, req.SKU, int64(crdt.MaxCount))}, nil
	}
	d := it.Consume(n.self, uint64(-req.Delta))
	it.Join(d)
	tx.Set(prefixItem+req.SKU, crdt.EncodeItem(it))
	g.AddItem(req.SKU, d)
	v := n.itemView(req.SKU, it, l, now)
	return &HomeResponse{Item: &v}, nil
}

// ExpireDue expires every held reservation past its expiry now (the skus
// the due index names), publishing
// the new held totals. The background loop calls it; tests with a fake
// clock may call it directly.
func (n *Node) ExpireDue() error {
	now := n.clock.Now()
	due := n.due.due(now.UnixMilli())
	for _, sku := range due {
		err := n.write(context.Background(), []string{prefixItem + sku}, func(tx *store.Tx, g *crdt.Group) error {
			_, _, err := n.loadForDecision(tx, g, sku, now)
			return err
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// CollectIdempotency deletes idempotency records older than the retention.
func (n *Node) CollectIdempotency() error {
	now := n.clock.Now()
	var old []string
	expired := func(v []byte) bool {
		var rec idemRecord
		return crdt.UnmarshalRecord(v, &rec) == nil && now.Sub(time.UnixMilli(rec.AtMs)) > IdempotencyRetention && !rec.unsettled()
	}
	err := n.store.Scan(prefixIdem, func(k string, v []byte, err error) bool {
		if err == nil && expired(v) {
			old = append(old, k)
		}
		return true
	})
	if err != nil {
		return err
	}
	return eachAtOnce(len(old), func(i int) error {
		k := old[i]
		// The scan took no lock: a request may have reused the key since
		// (its record past retention) and written a fresh record, or be
		// writing one now, holding the key's lock. The record is read
		// again under the lock and deleted only if it is still the old one.
		return n.store.Update([]string{k}, func(tx *store.Tx) error {
			if v, ok, err := tx.Get(k); err == nil && ok && expired(v) {
				tx.Delete(k)
			}
			return nil
		})
	})
}

// sweepWorkers is how many deletes a sweep runs at once: a transaction
// that deletes a key may do nothing else, and one at a time each would
// wait for an fsync of its own; together, group commit shares them, so
// that a sweep keeps pace with the clients making what it deletes.
const sweepWorkers = 32

// eachAtOnce runs fn(0) … fn(n−1), sweepWorkers at a time, and returns
// the first error (the calls not yet begun then are not made).
func eachAtOnce(n int, fn func(i int) error) error {
	var (
		next  atomic.Int64
		mu    sync.Mutex
		first error
		wg    sync.WaitGroup
	)
	for range min(sweepWorkers, n) {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				if err := fn(i); err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
					next.Store(int64(n)) // no more
					return
				}
			}
		})
	}
	wg.Wait()
	return first
}

// CollectReservations deletes the records of reservations settled
// (committed, released or expired) whose expiry is more than
// ReservationRetention ago. A hold still open past its expiry is left to
// ExpireDue first. A committed reservation a checkout made (ResRecord.Saga)
// is kept: its saga, if still unsettled (its plan outlives every
// retention), must find it committed, not missing — a missing hold it
// would reserve again, a missing commit it would count as given back.
func (n *Node) CollectReservations() error {
	now := n.clock.Now()
	old := now.Add(-ReservationRetention).UnixMilli()
	type gone struct{ key, sku string }
	var keys []gone
	collectable := func(v []byte) (*ResRecord, bool) {
		var rec ResRecord
		if decodeInto(v, &rec) != nil || rec.State == StateHeld || rec.ExpMs >= old || (rec.State == StateCommitted && rec.Saga) {
			return nil, false
		}
		return &rec, true
	}
	err := n.store.Scan(prefixRes, func(k string, v []byte, err error) bool {
		if err != nil {
			return true
		}
		if rec, ok := collectable(v); ok {
			keys = append(keys, gone{k, rec.SKU})
		}
		return true
	})
	if err != nil {
		return err
	}
	return eachAtOnce(len(keys), func(i int) error {
		g := keys[i]
		// A record is written under its sku's lock (with the ledger):
		// read again and deleted under it.
		return n.store.Update([]string{prefixItem + g.sku}, func(tx *store.Tx) error {
			if v, ok, err := tx.Get(g.key); err == nil && ok {
				if rec, ok := collectable(v); ok && rec.SKU == g.sku {
					tx.Delete(g.key)
				}
			}
			return nil
		})
	})
}

func (n *Node) expiryLoop() {
	defer n.wg.Done()
	t := time.NewTicker(n.opts.ExpiryInterval)
	defer t.Stop()
	var ticks int
	for {
		select {
		case <-n.stop:
			return
		case <-t.C:
		}
		if err := n.ExpireDue(); err != nil {
			n.log.Error("reservation expiry failed", "err", err)
		}
		n.returnIdleRights()
		if ticks%settleEvery == 0 {
			// On a goroutine of its own, one round at a time: a round
			// waits on homes that do not answer (up to settleTimeout a
			// checkout), and expiry, rights returns and the idempotency
			// sweep keep their pace meanwhile.
			if n.settling.CompareAndSwap(false, true) {
				n.wg.Add(1)
				go func() {
					defer n.wg.Done()
					defer n.settling.Store(false)
					n.SettleCheckouts()
				}()
			}
		}
		if ticks++; ticks%120 == 0 && n.collecting.CompareAndSwap(false, true) {
			// On a goroutine of its own too: a sweep of many records must
			// not hold up expiry and rights returns.
			n.wg.Add(1)
			go func() {
				defer n.wg.Done()
				defer n.collecting.Store(false)
				if err := n.CollectIdempotency(); err != nil {
					n.log.Error("idempotency collection failed", "err", err)
				}
				if err := n.CollectReservations(); err != nil {
					n.log.Error("reservation record collection failed", "err", err)
				}
			}()
		}
	}
}

// gaveUp reports whether the caller of req has given up by now (real
// time: deadlines come from request contexts).
func gaveUp(req *HomeRequest) bool {
	return req.DeadlineMs != 0 && time.Now().UnixMilli() > req.DeadlineMs
}

func callerGaveUp() *Error {
	return &Error{Code: CodeUnavailable, RetryAfter: 1,
		Detail: "the request reached its home region after its caller's deadline; nothing was decided"}
}
