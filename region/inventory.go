package region

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/latticedb/lattice/crdt"
	"github.com/latticedb/lattice/region/config"
	"github.com/latticedb/lattice/region/store"
)

// Reservation TTL bounds (SPEC §6).
const (
	MinTTL     = time.Second
	MaxTTL     = 24 * time.Hour
	DefaultTTL = 10 * time.Minute
)

// Home request operations.
const (
	OpReserve = "reserve"
	OpGet     = "get"
	OpCommit  = "commit"
	OpRelease = "release"
	// OpReturn undoes a reservation for the checkout that made it: a
	// held one is released, a committed one's units go back to stock
	// (its state becomes released). Only a checkout's compensation sends
	// it; no client route does.
	OpReturn = "return"
	OpAdjust = "adjust"
	OpItem   = "item"
	// OpCheckout is a checkout forwarded to the home of its cart id, with
	// the answering region's copy of the cart.
	OpCheckout = "checkout"
)

// HomeRequest is an operation that only a sku's home region may decide.
// It is what a region forwards to the home; the home validates it as
// untrusted input.
type HomeRequest struct {
	Op      string `cbor:"1,keyasint"`
	SKU     string `cbor:"2,keyasint,omitempty"`
	Qty     int64  `cbor:"3,keyasint,omitempty"`
	TTLMs   int64  `cbor:"4,keyasint,omitempty"`
	ID      string `cbor:"5,keyasint,omitempty"`
	Delta   int64  `cbor:"6,keyasint,omitempty"`
	Reason  string `cbor:"7,keyasint,omitempty"`
	IdemKey string `cbor:"8,keyasint,omitempty"`
	IdemFP  []byte `cbor:"9,keyasint,omitempty"`
	// CartID and Cart are a forwarded checkout's cart id and the
	// answering region's copy of the cart (canonical encoding). A copy
	// whose encoding is larger than crdt.MaxObjectBytes, which earlier
	// versions refuse, goes deflated in CartZ instead (forwardedCart).
	CartID string `cbor:"10,keyasint,omitempty"`
	Cart   []byte `cbor:"11,keyasint,omitempty"`
	CartZ  []byte `cbor:"19,keyasint,omitempty"`
	// DeadlineMs is when the caller gives up, Unix milliseconds (0: no
	// deadline). A home refuses a request past it, however late it comes
	// (a paused home resumed, a message held up), so that no decision is
	// made for a caller that already took the request for failed.
	DeadlineMs int64 `cbor:"12,keyasint,omitempty"`
	// Replicas is the caller's write concern: the home answers a
	// decision once that many regions hold it (see concern.go).
	Replicas int `cbor:"13,keyasint,omitempty"`
	// Keys, State and Token are a quorum read's key (OpRead) and a read
	// repair's joined state and the context it reflects (OpRepair).
	Keys  []string    `cbor:"14,keyasint,omitempty"`
	State *crdt.Group `cbor:"15,keyasint,omitempty"`
	Token string      `cbor:"16,keyasint,omitempty"`
	// From is the region asking for rights (OpGrant).
	From string `cbor:"17,keyasint,omitempty"`
	// Checkout marks a checkout's reservation of a cart line (OpReserve):
	// a line may hold more than a reservation request's MaxQty (adds of
	// several regions merged), and is reserved whole, up to
	// crdt.MaxCount. It is set only for such a line, so that a home of an
	// earlier version, which refuses a request with a member it does not
	// know, is sent what it knows whenever it could decide it.
	Checkout bool `cbor:"18,keyasint,omitempty"`
	// Escrow marks a reservation this region decides from its own
	// rights (escrow.go). It never travels: only the region itself sets
	// it.
	Escrow bool `cbor:"-"`
	// recallable marks a reservation of an escrow sku at its home that
	// may be decided again once rights are recalled: a refusal for want
	// of stock is then not recorded under its Idempotency-Key.
	recallable bool
	// claimed marks a request whose Idempotency-Key the caller holds
	// (reserveAtHome holds it across its tries and recalls): ServeHome
	// does not claim it again.
	claimed bool
}

// HomeResponse is the home's answer: a reservation, an item, or an error.
type HomeResponse struct {
	Res  *ResRecord `cbor:"1,keyasint,omitempty"`
	Item *Item      `cbor:"2,keyasint,omitempty"`
	Err  *Error     `cbor:"3,keyasint,omitempty"`
	// Order and Removed answer a forwarded checkout: the order and the
	// cart entries it bought.
	Order   *Order    `cbor:"4,keyasint,omitempty"`
	Removed []planDot `cbor:"5,keyasint,omitempty"`
	// Saga answers OpCheckoutStatus.
	Saga *CheckoutStatus `cbor:"6,keyasint,omitempty"`
	// Token is the home's causal token of its answer, taken after its
	// read or decision (ServeForwarded): the forwarding region answers
	// with its own token joined with it, since the answer shows the
	// home's state.
	Token string `cbor:"7,keyasint,omitempty"`
	// State answers OpRead: the region's state of the key (empty when it
	// has none).
	State *crdt.Group `cbor:"8,keyasint,omitempty"`
	// PartTokens are, in a partitioned cluster, the answering home's
	// tokens of other partitions than its own that its answer shows (a
	// checkout coordinator's reservations and commits at their homes):
	// the asking node's answer covers them too (NoteHomeToken). At most
	// MaxTokenPartitions.
	PartTokens map[int]string `cbor:"9,keyasint,omitempty"`
	// forwarded marks an answer that came from another region (atHome):
	// its Res's state is the home's, by the home's clock. It never
	// travels.
	forwarded bool
	// replayed marks an answer recorded under the request's idempotency
	// key, given again: it decided nothing now. It never travels.
	replayed bool
}

// ResRecord is a reservation as the home stores it.
type ResRecord struct {
	ID    string `cbor:"1,keyasint"`
	SKU   string `cbor:"2,keyasint"`
	Qty   int64  `cbor:"3,keyasint"`
	Home  string `cbor:"4,keyasint"`
	State string `cbor:"5,keyasint"`
	// ExpMs is the expiry, Unix milliseconds on the home's clock.
	ExpMs int64 `cbor:"6,keyasint"`
	// Escrow marks a reservation Home decided from its rights to the sku
	// (escrow.go): its commit uses them.
	Escrow bool `cbor:"7,keyasint,omitempty"`
	// Saga marks a reservation a checkout made (its key is a saga step's):
	// committed, its record is kept for good (CollectReservations).
	Saga bool `cbor:"8,keyasint,omitempty"`
}

// View returns the client's view of the record at time now: a held
// reservation past its expiry reads as expired even before the ledger has
// written the transition.
func (r *ResRecord) View(now time.Time) Reservation {
	st := r.State
	if st == StateHeld && now.UnixMilli() >= r.ExpMs {
		st = StateExpired
	}
	return r.as(st)
}

// as returns the client's view of the record in state st.
func (r *ResRecord) as(st string) Reservation {
	return Reservation{ID: r.ID, SKU: r.SKU, Qty: r.Qty, Home: r.Home, State: st, ExpiresAt: time.UnixMilli(r.ExpMs).UTC()}
}

// ledger is the home's record of the open holds of one sku. It is stored
// as an array of holds sorted by reservation id.
type ledger struct {
	Holds map[string]hold
}

type hold struct {
	Qty   int64
	ExpMs int64
}

type storedHold struct {
	_     struct{} `cbor:",toarray"`
	ID    string
	Qty   int64
	ExpMs int64
}

// DefaultMaxOpenHolds bounds the held reservations of one sku at its
// home (Options.MaxOpenHolds); a reservation beyond it is refused with 503
// unavailable until some commit, release or expire.
const DefaultMaxOpenHolds = 4096

func (l *ledger) encode() []byte {
	hs := make([]storedHold, 0, len(l.Holds))
	for id, h := range l.Holds {
		hs = append(hs, storedHold{ID: id, Qty: h.Qty, ExpMs: h.ExpMs})
	}
	slices.SortFunc(hs, func(a, b storedHold) int { return cmp.Compare(a.ID, b.ID) })
	return encode(hs)
}

func parseLedger(b []byte) (*ledger, error) {
	var hs []storedHold
	if err := decodeInto(b, &hs); err != nil {
		return nil, err
	}
	l := &ledger{Holds: make(map[string]hold, len(hs))}
	for _, h := range hs {
		if _, dup := l.Holds[h.ID]; dup || h.Qty < 1 {
			return nil, fmt.Errorf("region: ledger hold %q duplicated or empty", h.ID)
		}
		l.Holds[h.ID] = hold{Qty: h.Qty, ExpMs: h.ExpMs}
	}
	return l, nil
}

func (l *ledger) held() int64 {
	var h int64
	for _, x := range l.Holds {
		h += x.Qty
	}
	return h
}

// heldAt returns the units of the holds still open at now (not past their
// expiry, which the background expiry may not have reached yet): what a
// read shows as held.
func (l *ledger) heldAt(now time.Time) int64 {
	var h int64
	for _, x := range l.Holds {
		if now.UnixMilli() < x.ExpMs {
			h += x.Qty
		}
	}
	return h
}

// Partition returns the partition whose node serves req in a cluster of
// partitions partitions: its sku's (reserve, adjust, item), its cart's
// (checkout, checkout status), its reservation's (get, commit, release,
// return) or its key's (quorum read, read repair). ok is false for a
// request that names none of them.
func (req *HomeRequest) Partition(partitions int) (int, bool) {
	switch req.Op {
	case OpReserve, OpAdjust, OpItem, OpGrant, OpRecall:
		return config.PartitionOf(req.SKU, partitions), true
	case OpCheckout, OpCheckoutStatus:
		return config.PartitionOf(req.CartID, partitions), true
	case OpGet, OpCommit, OpRelease, OpReturn:
		_, part, _, ok := parseReservationID(req.ID)
		return part, ok
	case OpRead, OpRepair:
		if len(req.Keys) != 1 {
			return 0, false
		}
		_, id, ok := strings.Cut(req.Keys[0], "/")
		return config.PartitionOf(id, partitions), ok
	}
	return 0, false
}

// servesHere reports whether req is for this node's partition.
func (n *Node) servesHere(req *HomeRequest) bool {
	if n.opts.Partitions <= 1 {
		return true
	}
	p, ok := req.Partition(n.opts.Partitions)
	return ok && p == n.opts.Partition
}

// ReservationHome returns the home region named by a reservation id
// ("HOME:SEQ", or "HOME:PARTITION:SEQ" in a partitioned cluster); ok is
// false when id is not of the form a home issues.
func ReservationHome(id string) (string, bool) {
	home, _, _, ok := parseReservationID(id)
	return home, ok
}

// ReservationPartition returns the partition named by a reservation id:
// the partition of its sku, whose node holds the reservation. An id of
// an unpartitioned cluster names partition 0.
func ReservationPartition(id string) (int, bool) {
	_, part, _, ok := parseReservationID(id)
	return part, ok
}

// reservationID is the id of reservation seq issued by home in partition
// part of a cluster of partitions partitions.
func reservationID(home string, part, partitions int, seq uint64) string {
	if partitions <= 1 {
		return home + ":" + strconv.FormatUint(seq, 36)
	}
	return home + ":" + strconv.Itoa(part) + ":" + strconv.FormatUint(seq, 36)
}

// parseReservationID splits a reservation id into its home, partition and
// number. It accepts only the forms a home issues: "HOME:SEQ", or
// "HOME:PARTITION:SEQ" with PARTITION a decimal number without leading
// zeros below config.MaxPartitions, HOME not empty and without ':', and
// SEQ a number from 1 that fits in 64 bits, in lower-case base 36 with
// no leading zeros. Any other id names no reservation.
func parseReservationID(id string) (home string, part int, seq uint64, ok bool) {
	i := strings.LastIndexByte(id, ':')
	if i <= 0 || i == len(id)-1 || !crdt.ValidID(id) {
		return "", 0, 0, false
	}
	s := id[i+1:]
	seq, err := strconv.ParseUint(s, 36, 64)
	if err != nil || seq == 0 || strconv.FormatUint(seq, 36) != s {
		return "", 0, 0, false
	}
	home = id[:i]
	if j := strings.IndexByte(home, ':'); j >= 0 {
		ps := home[j+1:]
		p, err := strconv.Atoi(ps)
		if j == 0 || err != nil || p < 0 || p >= config.MaxPartitions || strconv.Itoa(p) != ps {
			return "", 0, 0, false
		}
		home, part = home[:j], p
	}
	return home, part, seq, true
}

func decodeInto(b []byte, v any) error { return crdt.Unmarshal(b, v, crdt.MaxObjectBytes) }

func encode(v any) []byte {
	b, err := crdt.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("region: encode %T: %v", v, err))
	}
	return b
}

func loadLedger(r store.Reader, sku string) (*ledger, error) {
	b, ok, err := r.Get(prefixLedger + sku)
	if err != nil || !ok {
		return &ledger{}, err
	}
	l, err := parseLedger(b)
	if err != nil {
		return &ledger{}, &store.CorruptError{Key: prefixLedger + sku}
	}
	return l, nil
}

func loadRes(r store.Reader, id string) (*ResRecord, bool, error) {
	b, ok, err := r.Get(prefixRes + id)
	if err != nil || !ok {
		return nil, false, err
	}
	var rec ResRecord
	if err := decodeInto(b, &rec); err != nil {
		return nil, false, &store.CorruptError{Key: prefixRes + id}
	}
	return &rec, true, nil
}

// itemView is the view of an item; at the home, reserved counts the holds
// not yet expired at now.
func (n *Node) itemView(sku string, it *crdt.Item, l *ledger, now time.Time) Item {
	v := Item{SKU: sku, Home: n.HomeOf(sku), Stock: it.Stock.Value(), Reserved: it.Held.Value}
	if rights, ok := n.rightsOf(sku, it, l, now); ok {
		v.Rights = &rights
		l = nil // this region's holds are its own, not the home's
	}
	if l != nil {
		v.Reserved = l.heldAt(now)
	}
	v.Available = v.Stock - v.Reserved
	if granted := n.outstandingAll(it, v.Home); n.escrow(sku) || granted > 0 {
		// Rights out count for an sku whose escrow was turned off too,
		// until they are back.
		v.Granted = &granted
		v.Available -= granted
	}
	return v
}

// GetItem returns the item as this region has durably applied it (see
// Node.view), or as its home has it when consistent is set.
func (n *Node) GetItem(ctx context.Context, sku string, consistent bool) (Item, error) {
	if err := validateID("sku", sku); err != nil {
		return Item{}, err
	}
	if err := n.quorumRead(ctx, prefixItem+sku, concernOf(ctx).quorum); err != nil {
		return Item{}, err
	}
	home := n.HomeOf(sku)
	if home != string(n.name) && consistent {
		// The home joins this region's stock counter into its answer: a
		// restock the client made (or read) here, or one a quorum read
		// just joined, may not have reached the home yet.
		req := &HomeRequest{Op: OpItem, SKU: sku}
		// A value damaged here is left out (the home's answer stands alone).
		_ = n.view(ctx, prefixItem+sku, func(r store.Reader) error {
			// Its rights' counters too: a commit from a region's rights
			// lowers the stock and raises that region's use in one write,
			// and the home counts the use from them (else it counts the
			// committed units twice, in the stock and as rights out).
			if it, err := loadItem(r, sku); err == nil && (len(it.Stock.P) > 0 || len(it.Stock.N) > 0 || len(it.Escrow) > 0) {
				req.State = &crdt.Group{Items: map[string]*crdt.Item{sku: {Stock: it.Stock.Clone(), Escrow: maps.Clone(it.Escrow)}}}
			}
			return nil
		})
		resp := n.atHome(ctx, home, req)
		if resp.Err != nil {
			return Item{}, resp.Err
		}
		return *resp.Item, nil
	}
	var view Item
	if err := n.heldBackErr(prefixItem + sku); err != nil {
		return Item{}, n.storeErr(err)
	}
	// The item's ledger is written under the item's lock too.
	err := n.view(ctx, prefixItem+sku, func(r store.Reader) error {
		it, err := loadItem(r, sku)
		if err != nil {
			return err
		}
		var l *ledger
		if n.decides(home, sku) || n.escrow(sku) {
			if l, err = loadLedger(r, sku); err != nil {
				return err
			}
		}
		view = n.itemView(sku, it, l, n.clock.Now())
		return nil
	})
	return view, n.storeErr(err)
}

// Restock adds qty units of stock at this region (any region may).
func (n *Node) Restock(ctx context.Context, sku string, qty int64) (Item, error) {
	if err := validateID("sku", sku); err != nil {
		return Item{}, err
	}
	if err := validQty("qty", qty, 1); err != nil {
		return Item{}, err
	}
	return n.restock(ctx, sku, qty, "qty")
}

// restock adds qty to sku's stock; field names the request's member
// that asked for it, for a refusal.
func (n *Node) restock(ctx context.Context, sku string, qty int64, field string) (Item, error) {
	var view Item
	err := n.write(ctx, []string{prefixItem + sku}, func(tx *store.Tx, g *crdt.Group) error {
		// Held back after damage (holdBackDamaged): refused as a damaged
		// item is, since its answer would show the stock before every
		// peer's state is joined.
		if err := n.heldBackErr(prefixItem + sku); err != nil {
			return err
		}
		it, err := loadItem(tx, sku)
		if err != nil {
			return err
		}
		if it.Stock.Value()+qty > crdt.MaxCount {
			return InvalidField(field, "%s %d would take the stock of %s past %d", field, qty, sku, int64(crdt.MaxCount))
		}
		if it.Stock.P[n.self]+uint64(qty) > crdt.MaxCount {
			// Each replica's total is bounded as the stock is: past it,
			// the item would not decode here or at any peer.
			return InvalidField(field, "%s %d would take the units this region has restocked %s with past %d", field, qty, sku, int64(crdt.MaxCount))
		}
		d := it.Restock(n.self, uint64(qty))
		it.Join(d)
		tx.Set(prefixItem+sku, crdt.EncodeItem(it))
		g.AddItem(sku, d)
		var l *ledger
		if n.decides(n.HomeOf(sku), sku) || n.escrow(sku) {
			if l, err = loadLedger(tx, sku); err != nil {
				return err
			}
		}
		view = n.itemView(sku, it, l, n.clock.Now())
		return nil
	})
	return view, err
}

// MaxAdjust bounds the magnitude of an inventory adjustment.
const MaxAdjust = crdt.MaxQty

// Adjust changes stock by delta. A positive delta is a restock made here;
// a negative one is decided by the sku's home, which refuses it with
// insufficient_stock if it would leave available below zero. The
// adjustment is logged with its reason once decided: applied with the
// resulting stock, or refused with the error.
func (n *Node) Adjust(ctx context.Context, sku string, delta int64, reason string) (Item, error) {
	if err := validateID("sku", sku); err != nil {
		return Item{}, err
	}
	if delta == 0 || delta < -MaxAdjust || delta > MaxAdjust {
		return Item{}, InvalidField("delta", "delta must be a nonzero integer from %d to %d", -MaxAdjust, MaxAdjust)
	}
	var it Item
	var err error
	if delta > 0 {
		it, err = n.restock(ctx, sku, delta, "delta")
	} else if resp := n.atHome(ctx, n.HomeOf(sku), &HomeRequest{Op: OpAdjust, SKU: sku, Delta: delta, Reason: reason}); resp.Err != nil {
		err = resp.Err
	} else {
		it = *resp.Item
	}
	// Logged once decided, with its outcome.
	if err != nil {
		n.log.Info("inventory adjustment refused", "sku", sku, "delta", delta, "reason", reason, "err", err)
		return Item{}, err
	}
	n.log.Info("inventory adjustment", "sku", sku, "delta", delta, "reason", reason, "stock", it.Stock, "available", it.Available)
	return it, nil
}

func ttlOf(ttl time.Duration) (time.Duration, error) {
	if ttl == 0 {
		return DefaultTTL, nil
	}
	if ttl < MinTTL || ttl > MaxTTL {
		return 0, InvalidField("ttl_ms", "ttl_ms must be from %d to %d", MinTTL.Milliseconds(), MaxTTL.Milliseconds())
	}
	return ttl, nil
}

func fpBytes(idem Idem) []byte {
	if idem.Key == "" {
		return nil
	}
	return idem.Fingerprint[:]
}

// Reserve holds qty units of sku, decided by the sku's home.
func (n *Node) Reserve(ctx context.Context, sku string, qty int64, ttl time.Duration, idem Idem) (Reservation, error) {
	if err := validateID("sku", sku); err != nil {
		return Reservation{}, err
	}
	if err := validQty("qty", qty, 1); err != nil {
		return Reservation{}, err
	}
	ttl, err := ttlOf(ttl)
	if err != nil {
		return Reservation{}, err
	}
	req := &HomeRequest{Op: OpReserve, SKU: sku, Qty: qty, TTLMs: ttl.Milliseconds(), IdemKey: idem.Key, IdemFP: fpBytes(idem)}
	if home := n.HomeOf(sku); n.escrow(sku) && n.Holds(sku) && !n.decides(home, sku) {
		// Rights are held by the node of the sku's partition; another
		// node (a request routed past the partitions) sends it to the
		// home, as any reservation of a sku it does not hold.
		return n.resResult(n.reserveEscrow(ctx, home, req))
	} else if n.decides(home, sku) {
		return n.resResult(n.reserveAtHome(ctx, req))
	}
	return n.resResult(n.atHome(ctx, n.HomeOf(sku), req))
}

func (n *Node) resOp(ctx context.Context, op, id string, idem Idem) (Reservation, error) {
	// An id that cannot name a reservation is not_found here, without a
	// round trip: a home that is not a region would never answer.
	home, part, seq, ok := parseReservationID(id)
	if !ok || reservationID(home, part, n.opts.Partitions, seq) != id || part >= max(1, n.opts.Partitions) {
		// Not of this cluster's form (a partition part in a cluster of one
		// partition, or none in a partitioned one, leading zeros, a
		// partition the cluster does not have): no home ever issued it.
		return Reservation{}, Errorf(CodeNotFound, "no reservation %q", id)
	}
	if !n.isRegion(home) {
		return Reservation{}, Errorf(CodeNotFound, "no reservation %q: %s is not a region of this cluster", id, home)
	}
	return n.resResult(n.atHome(ctx, home, &HomeRequest{Op: op, ID: id, IdemKey: idem.Key, IdemFP: fpBytes(idem)}))
}

// isRegion reports whether name is a region of the cluster
// (Options.IsRegion; this region always is).
func (n *Node) isRegion(name string) bool {
	return name == string(n.name) || n.opts.IsRegion == nil || n.opts.IsRegion(name)
}

func (n *Node) resResult(resp *HomeResponse) (Reservation, error) {
	if resp.Err != nil {
		return Reservation{}, resp.Err
	}
	if resp.forwarded {
		// The home gave the state by its own clock (ServeForwarded):
		// expiry is the home's to judge, whatever this region's clock says.
		return resp.Res.as(resp.Res.State), nil
	}
	return resp.Res.View(n.clock.Now()), nil
}

// GetReservation asks the reservation's home for it.
func (n *Node) GetReservation(ctx context.Context, id string) (Reservation, error) {
	return n.resOp(ctx, OpGet, id, Idem{})
}

// Commit moves a held reservation to committed at its home.
func (n *Node) Commit(ctx context.Context, id string, idem Idem) (Reservation, error) {
	return n.resOp(ctx, OpCommit, id, idem)
}

// Release moves a held reservation to released at its home.
func (n *Node) Release(ctx context.Context, id string, idem Idem) (Reservation, error) {
	return n.resOp(ctx, OpRelease, id, idem)
}

// atHome runs req at the home region: here, or through the Forwarder.
func (n *Node) atHome(ctx context.Context, home string, req *HomeRequest) *HomeResponse {
	if d, ok := ctx.Deadline(); ok && req.DeadlineMs == 0 {
		req.DeadlineMs = d.UnixMilli()
	}
	if home == string(n.name) && n.servesHere(req) {
		if req.Op == OpReserve {
			// As a forwarded reservation is (ServeForwarded): rights
			// other regions hold unused are recalled rather than refused
			// (a checkout's lines come this way).
			return n.reserveAtHome(ctx, req)
		}
		return n.ServeHome(ctx, req)
	}
	req.Replicas = concernOf(ctx).replicas
	unavailable := &HomeResponse{Err: &Error{Code: CodeHomeUnavailable, RetryAfter: 1,
		Detail: fmt.Sprintf("home region %s of this request cannot be reached", home)}}
	if n.opts.Forwarder == nil {
		unavailable.Err.NotSent = true
		return unavailable
	}
	resp, err := n.opts.Forwarder.Forward(ctx, home, req)
	if err != nil {
		if e, ok := err.(*Error); ok {
			return &HomeResponse{Err: e}
		}
		n.log.Warn("forward to home failed", "home", home, "op", req.Op, "err", err)
		return unavailable
	}
	if resp.Err == nil {
		answerOf(ctx).addToken(resp.Token)
	}
	resp.forwarded = true
	return resp
}
