package region

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"time"

	"github.com/latticedb/lattice/crdt"
	"github.com/latticedb/lattice/region/store"
)

// Escrow (opt-in per sku, Options.Escrow): the sku's home grants other
// regions rights to units ahead of time, and a region holding enough
// rights decides a reservation of the sku alone, in one store transaction,
// as a home would — same states, TTL, commit, release, idempotency; the
// reservation id names the deciding region, so commit and release go
// there. The counters are the item's (crdt/escrow.go): the home grants
// out of stock − held − the rights every region holds, and a region
// decides within its rights − what it holds; a commit of a hold decided
// from rights uses them in the same delta that decrements stock. So
// held + committed ≤ stock at every instant, under any interleaving,
// partition, crash or retry.
//
// Rights flow toward demand: a region short of rights asks the home for
// a batch sized by its recent demand; the home grants at most half of
// what it has available (but always what one reservation needs, when it
// has it), so the last units are not all stranded in one region; a
// region returns its unused rights once the sku has been quiet for
// EscrowIdle. Expired and released holds free their units into the
// deciding region's rights. When rights do not suffice even after
// asking, the reservation goes to the home as without escrow, so the
// worst case is the home's latency; a region cut off from the home keeps
// deciding within the rights it holds.
//
// Checkouts reserve at the home, as without escrow.

// OpGrant asks a sku's home for rights (escrow): Qty wanted, Delta the
// least one reservation needs, From the asking region. The answer's State
// is the item as the home holds it after the grant.
const OpGrant = "grant"

// OpRecall asks a region holding rights to a sku to give back up to Qty
// of them now: the sku's home (From) sends it when it must refuse a
// reservation that rights other regions hold unused would cover. The
// answer's State is the item after the return.
const OpRecall = "recall"

// EscrowIdle is how long a sku must go without a reservation decided from
// rights before the region returns its unused rights to the home.
const EscrowIdle = 3 * time.Second

// escrowDemandWindow is how far back a region looks to size its requests
// for rights.
const escrowDemandWindow = 2 * time.Second

// escrowState is a region's in-memory view of the skus it holds rights
// to: when each last decided from rights, and its recent demand; and, at
// a home, the reservations waiting for a recall.
type escrowState struct {
	mu    sync.Mutex
	skus  map[string]*escrowSKU
	grant uint64 // grants asked for, for metrics and tests
	// waiting is, per sku homed here, the units of the reservations
	// waiting in reserveAtHome for rights it recalled: the home grants
	// none of them meanwhile, lest the units it recalls for a
	// reservation leave again as another region's rights.
	waiting map[string]int64
}

type escrowSKU struct {
	last   time.Time
	window time.Time // start of the current demand window
	units  int64     // units reserved in it
	prev   int64     // units reserved in the window before
	asking bool      // a request for rights ahead of need is in flight
}

// demand returns the units reserved per demand window lately.
func (s *escrowSKU) demand() int64 { return max(s.units, s.prev) }

// escrow reports whether sku is decided from rights.
func (n *Node) escrow(sku string) bool { return n.opts.Escrow != nil && n.opts.Escrow(sku) }

// noteEscrow records that sku's rights are in use here (qty units
// reserved now, 0 for none).
func (n *Node) noteEscrow(sku string, qty int64) {
	now := n.clock.Now()
	n.esc.mu.Lock()
	defer n.esc.mu.Unlock()
	if n.esc.skus == nil {
		n.esc.skus = map[string]*escrowSKU{}
	}
	s := n.esc.skus[sku]
	if s == nil {
		s = &escrowSKU{window: now}
		n.esc.skus[sku] = s
	}
	s.last = now
	if el := now.Sub(s.window); el >= escrowDemandWindow {
		s.prev = s.units
		if el >= 2*escrowDemandWindow {
			s.prev = 0 // a whole window went by without a reservation
		}
		s.units, s.window = 0, now
	}
	s.units += qty
}

// escrowAsk sizes a request for rights: four times what the reservation
// needs, or twice the recent demand if more, at most MaxQty.
func (n *Node) escrowAsk(sku string, need int64) int64 {
	n.esc.mu.Lock()
	defer n.esc.mu.Unlock()
	// Without history, a few reservations' worth.
	ask := 4 * need
	if s := n.esc.skus[sku]; s != nil {
		ask = max(ask, 2*s.demand())
	}
	return min(ask, crdt.MaxQty)
}

// reserveEscrow reserves qty of an escrow sku homed elsewhere: from this
// region's rights, after asking the home for more if they are short, else
// at the home.
//
// A reservation with an Idempotency-Key is decided at the home, as
// without escrow: its record must be found by a retry sent through any
// region, and a region's own record would be found only by retries sent
// to it (a retry through another region would be decided there again: a
// second hold). A record this region holds for the key (a reservation an
// earlier version decided here, or sent to the home) is answered from.
//
// A reservation that asks for a write concern of more than one region
// (WithReplicas) is decided at the home too: a hold decided from rights is
// in this region's ledger only and never reaches another region, while the
// home's held count replicates and the concern waits for it.
func (n *Node) reserveEscrow(ctx context.Context, home string, req *HomeRequest) *HomeResponse {
	if req.IdemKey == "" && concernOf(ctx).replicas > 1 {
		return n.atHome(ctx, home, req)
	}
	if req.IdemKey != "" {
		decided, err := n.localIdem(req)
		if err != nil || decided != nil {
			return decided
		}
		return n.atHome(ctx, home, req)
	}
	if !n.store.CatchingUp() {
		local := *req
		local.Escrow = true
		if resp := n.ServeHome(ctx, &local); !short(resp) {
			if resp.Err == nil {
				n.topUp(home, req.SKU)
			}
			return resp
		}
		if n.askRights(ctx, home, req.SKU, req.Qty) {
			if resp := n.ServeHome(ctx, &local); !short(resp) {
				return resp
			}
		}
	}
	return n.atHome(ctx, home, req)
}

// localIdem answers a keyed reservation of an escrow sku from the record
// this region holds for its key, if it is a reservation of the sku this
// region decided from its rights: the outcome, or idempotency_mismatch for
// another request. It returns nil for a key it holds no such decision for
// (none, one it sent to the home, or a record of another kind: a
// checkout's, a commit's, a reservation this region decided as a home,
// which are independent of it, as a key's records at different regions
// are), and the reservation goes to the home.
func (n *Node) localIdem(req *HomeRequest) (*HomeResponse, error) {
	var out *HomeResponse
	err := n.store.View([]string{prefixIdem + req.IdemKey}, func(r store.Reader) error {
		rec, err := loadIdem(r, req.IdemKey, n.clock.Now())
		switch {
		case err != nil:
			return err
		case rec == nil || rec.Escalated:
			return nil
		case rec.Resp == nil || rec.Resp.Res == nil || !rec.Resp.Res.Escrow || rec.Resp.Res.SKU != req.SKU:
			return nil
		case !bytes.Equal(rec.FP, req.IdemFP):
			out = &HomeResponse{Err: mismatch()}
		default:
			out = rec.Resp
		}
		return nil
	})
	if err != nil {
		return &HomeResponse{Err: n.asError(err)}, err
	}
	if out != nil && out.Res != nil {
		// As a home's replay (ServeHome): past its expiry the hold reads
		// as it ended. Its record is read after the key's: a hold's state
		// only moves on from held, never back.
		id := out.Res.ID
		err = n.store.View([]string{prefixRes + id}, func(r store.Reader) error {
			out = replayAsEnded(r, out, n.clock.Now())
			return nil
		})
		if err != nil {
			return &HomeResponse{Err: n.asError(err)}, err
		}
	}
	return out, nil
}

// asError turns a store error into the *Error a client sees.
func (n *Node) asError(err error) *Error {
	var e *Error
	if errors.As(n.storeErr(err), &e) {
		return e
	}
	n.log.Error("store failure", "err", err)
	return Errorf(CodeInternal, "the region could not complete the request")
}

// short reports whether a reservation decided from rights was refused for
// want of them.
func short(resp *HomeResponse) bool {
	return resp.Err != nil && resp.Err.Code == CodeInsufficientStock
}

// askRights asks the home of sku for rights, at least need units, and
// joins the item the home answers with. It reports whether it got any.
func (n *Node) askRights(ctx context.Context, home, sku string, need int64) bool {
	n.esc.mu.Lock()
	n.esc.grant++
	n.esc.mu.Unlock()
	resp := n.atHome(ctx, home, &HomeRequest{Op: OpGrant, SKU: sku, Qty: n.escrowAsk(sku, need), Delta: need, From: string(n.name)})
	if resp.Err != nil || resp.State == nil || !onlyKey(resp.State, prefixItem+sku) {
		return false
	}
	var reflects crdt.Context
	if resp.Token != "" {
		c, err := crdt.ParseToken(resp.Token)
		if err != nil {
			return false
		}
		reflects = c
	}
	if err := n.ApplyReflecting(&crdt.Context{}, resp.State, &reflects); err != nil {
		n.log.Warn("escrow: could not apply a grant", "sku", sku, "err", err)
		return false
	}
	// A ledger, even empty, tells the next start that this region may
	// hold rights to sku (buildDueIndex), so that idle ones go back.
	err := n.write(ctx, []string{prefixItem + sku}, func(tx *store.Tx, _ *crdt.Group) error {
		if _, ok, err := tx.Get(prefixLedger + sku); err != nil || ok {
			return err
		}
		tx.Set(prefixLedger+sku, (&ledger{}).encode())
		return nil
	})
	if err != nil {
		n.log.Warn("escrow: could not record a grant's ledger", "sku", sku, "err", err)
	}
	n.noteEscrow(sku, 0)
	return true
}

// granted returns the units of sku that it shows granted to this region:
// 0 unless sku is an escrow sku homed elsewhere. A remote apply that
// raises them notes sku (noteEscrow), so that the rights go back once
// idle however they came: in the answer to this region's request or,
// that answer lost on the way, in the home's delta or by anti-entropy.
//
// Rights of an sku whose escrow was turned off since count too: they go
// back to the home as well (returnIdleRights returns them at once).
func (n *Node) granted(sku string, it *crdt.Item) uint64 {
	if n.decides(n.HomeOf(sku), sku) {
		return 0
	}
	return it.Granted(string(n.name))
}

// outstandingAll returns the rights of sku (item it) that the regions
// other than home hold unused. A region removed from the cluster counts
// too: its rights are written off nowhere, and a region added again under
// its name would decide from them (so they stay out of the home's sale;
// docs/operations.md, removing a region, says to let them come back first).
func (n *Node) outstandingAll(it *crdt.Item, home string) int64 {
	return it.OutstandingAll(home)
}

// noteRights notes sku at start if its stored item it shows rights of
// this region not used or returned: they go back once idle, whether or
// not the store kept the ledger that records a request for them (a fault
// may have taken the ledger and anti-entropy brought the grant back).
func (n *Node) noteRights(sku string, it *crdt.Item) {
	if n.granted(sku, it) > 0 && it.Outstanding(string(n.name)) > 0 {
		n.noteEscrow(sku, 0)
	}
}

// unreachablePeers returns the peers the replication reports not
// connected (none without Options.Peers).
func (n *Node) unreachablePeers() map[string]bool {
	if n.opts.Peers == nil {
		return nil
	}
	var cut map[string]bool
	for _, p := range n.opts.Peers() {
		if !p.Connected {
			if cut == nil {
				cut = map[string]bool{}
			}
			cut[p.Region] = true
		}
	}
	return cut
}

// escrowAhead bounds how long a request for rights ahead of need may take.
const escrowAhead = 10 * time.Second

// topUp asks the home for rights in the background, ahead of need, when
// what this region has left of sku's rights would not cover half of its
// recent demand: the reservations that follow then find rights instead of
// waiting for a round trip to the home. One request per sku at a time.
func (n *Node) topUp(home, sku string) {
	n.esc.mu.Lock()
	s := n.esc.skus[sku]
	if s == nil || s.asking {
		n.esc.mu.Unlock()
		return
	}
	low := max(1, s.demand()/2)
	n.esc.mu.Unlock()
	free, err := n.freeRights(sku)
	if err != nil || free >= low {
		return
	}
	n.esc.mu.Lock()
	if s.asking {
		n.esc.mu.Unlock()
		return
	}
	s.asking = true
	n.esc.mu.Unlock()
	ask := func() {
		ctx, cancel := context.WithTimeout(context.Background(), escrowAhead)
		defer cancel()
		n.askRights(ctx, home, sku, 1)
		n.esc.mu.Lock()
		s.asking = false
		n.esc.mu.Unlock()
	}
	if n.opts.Background != nil {
		n.opts.Background(ask)
		return
	}
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		ask()
	}()
}

// fanOut runs one of several calls a request makes at once: on a
// goroutine, or in line when Options.Background runs work in line (a
// simulation).
func (n *Node) fanOut(f func()) {
	if n.opts.Background != nil {
		f()
		return
	}
	go f()
}

// freeRights returns this region's unused rights to sku: its rights less
// its holds.
func (n *Node) freeRights(sku string) (int64, error) {
	var free int64
	err := n.store.View([]string{prefixItem + sku}, func(r store.Reader) error {
		it, err := loadItem(r, sku)
		if err != nil {
			return err
		}
		l, err := loadLedger(r, sku)
		if err != nil {
			return err
		}
		free = it.Outstanding(string(n.name)) - l.heldAt(n.clock.Now())
		return nil
	})
	return free, err
}

// grant decides a request for rights at the home.
func (n *Node) grant(tx *store.Tx, g *crdt.Group, req *HomeRequest, now time.Time) (*HomeResponse, error) {
	it, l, err := n.loadForDecision(tx, g, req.SKU, now)
	if err != nil {
		return nil, err
	}
	avail := it.Stock.Value() - l.held() - n.outstandingAll(it, string(n.name))
	n.esc.mu.Lock()
	avail -= n.esc.waiting[req.SKU]
	n.esc.mu.Unlock()
	give := min(req.Qty, max(avail/2, min(req.Delta, avail)))
	if give <= 0 {
		return &HomeResponse{Err: insufficient(req.SKU, avail)}, nil
	}
	if !it.GrantFits(n.self, req.From) {
		// The item could not be read back with another grant record
		// (many incarnations of the home granted to many regions): the
		// region sends its reservations here instead.
		n.log.Warn("escrow: the sku's item holds too many grant records to grant rights to another region; its reservations are decided here", "sku", req.SKU, "region", req.From)
		return &HomeResponse{Err: insufficient(req.SKU, 0)}, nil
	}
	// A grant record counts every unit granted over the sku's life; past
	// crdt.MaxCount the item could not be read back. Near it, the region
	// sends its reservations here instead.
	k := crdt.EscrowKey{Kind: crdt.EscrowGrant, Region: req.From, Replica: n.self}
	if room := crdt.MaxCount - min(it.Escrow[k], crdt.MaxCount); uint64(give) > room {
		give = int64(room)
	}
	if give <= 0 {
		n.log.Warn("escrow: the sku's grant record to the region reached its bound; its reservations are decided here", "sku", req.SKU, "region", req.From)
		return &HomeResponse{Err: insufficient(req.SKU, 0)}, nil
	}
	d := it.Grant(n.self, req.From, uint64(give))
	it.Join(d)
	tx.Set(prefixItem+req.SKU, crdt.EncodeItem(it))
	g.AddItem(req.SKU, d)
	n.m.EscrowGranted.Add(float64(give))
	state := &crdt.Group{}
	state.AddItem(req.SKU, it.Clone())
	return &HomeResponse{State: state}, nil
}

// ReturnIdleRights gives back the unused rights of every escrow sku that
// has gone without a reservation decided from rights for EscrowIdle (none
// while the region catches up). The background loop calls it every
// ExpiryInterval; tests with a fake clock may call it directly.
func (n *Node) ReturnIdleRights() { n.returnIdleRights() }

// returnIdleRights gives back the unused rights of every sku quiet for
// EscrowIdle, and, of the others, what exceeds twice their recent demand
// (rights kept for reservations that do not come are units the home
// could sell elsewhere). The background loop calls it.
//
// Rights of a sku whose home the region is not connected to stay: no
// other region could sell them before the link is back (the return
// travels on it), and meanwhile the region sells them itself. They go
// back at the first call after the link returns, if still unused.
func (n *Node) returnIdleRights() {
	if n.store.CatchingUp() {
		// Its store may lack uses and returns of its own that its peers
		// hold: what it sees as unused may be gone already.
		return
	}
	now := n.clock.Now()
	cut := n.unreachablePeers()
	n.esc.mu.Lock()
	keep := map[string]int64{}
	for sku, s := range n.esc.skus {
		switch {
		case now.Sub(s.last) >= EscrowIdle || !n.escrow(sku):
			// Idle, or no longer an escrow sku (its reservations go
			// to the home now): every unused right goes back.
			keep[sku] = 0
		case !s.asking:
			keep[sku] = 2*s.demand() + 1
		}
	}
	n.esc.mu.Unlock()
	for sku, k := range keep {
		if cut[n.HomeOf(sku)] {
			// The home is out of reach: a return would wait for the
			// link like the rights themselves, which meanwhile decide
			// the region's reservations instead of refusing them.
			continue
		}
		done := true
		err := n.write(context.Background(), []string{prefixItem + sku}, func(tx *store.Tx, g *crdt.Group) error {
			it, l, err := n.loadForDecision(tx, g, sku, now)
			if err != nil {
				return err
			}
			done = len(l.Holds) == 0
			free := it.Outstanding(string(n.name)) - l.held() - k
			// Past the idle time all of it; before, only a surplus worth
			// a round trip (at least half of what is kept).
			if free <= 0 || k > 0 && free < max(1, k/2) {
				return nil
			}
			d := it.ReturnRights(n.self, uint64(free))
			it.Join(d)
			tx.Set(prefixItem+sku, crdt.EncodeItem(it))
			g.AddItem(sku, d)
			n.m.EscrowReturned.Add(float64(free))
			return nil
		})
		if err != nil {
			n.log.Warn("escrow: could not return rights", "sku", sku, "err", err)
			continue
		}
		if done && k == 0 {
			n.esc.mu.Lock()
			if s := n.esc.skus[sku]; s != nil && now.Sub(s.last) >= EscrowIdle {
				delete(n.esc.skus, sku)
			}
			n.esc.mu.Unlock()
		}
	}
}

// recallRounds bounds the recalls one reservation at a home waits for.
const recallRounds = 3

// reserveAtHome decides a reservation of an escrow sku at its home; when
// the home must refuse it for want of stock that rights other regions hold
// would cover, it recalls unused rights from them and decides once more.
// While it waits, the home grants none of its units to other regions
// (escrowState.waiting); and while recalls bring rights back but other
// reservations take them first, it recalls again, up to recallRounds.
func (n *Node) reserveAtHome(ctx context.Context, req *HomeRequest) *HomeResponse {
	// One decision, made of several tries and the recalls between them:
	// the key is held throughout, so that a request with the same key
	// meanwhile is request_in_progress, not decided.
	release, err := n.claim(req.IdemKey)
	if err != nil {
		n.m.Reservations.WithLabelValues(req.Op, CodeRequestInProgress).Inc()
		return &HomeResponse{Err: err.(*Error)}
	}
	defer release()
	held := *req
	held.claimed = true
	req = &held
	first := *req
	first.recallable = true
	resp := n.ServeHome(ctx, &first)
	if resp.replayed || !short(resp) || resp.Err.Available == nil {
		// A replayed refusal decided nothing now: nothing to recall for.
		return resp
	}
	n.esc.mu.Lock()
	if n.esc.waiting == nil {
		n.esc.waiting = map[string]int64{}
	}
	n.esc.waiting[req.SKU] += req.Qty
	n.esc.mu.Unlock()
	defer func() {
		n.esc.mu.Lock()
		if n.esc.waiting[req.SKU] -= req.Qty; n.esc.waiting[req.SKU] <= 0 {
			delete(n.esc.waiting, req.SKU)
		}
		n.esc.mu.Unlock()
	}()
	for round := 1; n.recall(ctx, req.SKU, req.Qty-*resp.Err.Available) && round < recallRounds && ctx.Err() == nil; round++ {
		again := *req
		again.recallable = true
		if resp = n.ServeHome(ctx, &again); resp.replayed || !short(resp) || resp.Err.Available == nil {
			if resp.Err == nil {
				return resp // recorded under its key, as a first decision's is
			}
			break
		}
	}
	// Decided once more whatever came back: this time its outcome,
	// a refusal too, is recorded under its key.
	return n.ServeHome(ctx, req)
}

// recall asks every other region that holds rights to sku, as this home
// sees it, to give back what it holds unused, at most want in all, and
// joins what they answer. It reports whether rights came back (the
// rights this home counts outstanding at other regions went down).
func (n *Node) recall(ctx context.Context, sku string, want int64) bool {
	if want <= 0 || n.opts.Forwarder == nil {
		return false
	}
	var holders []string
	var mine *crdt.Group // the home's state of the item, for the holders
	var mineTok string
	outstanding := func() (int64, error) {
		var out int64
		holders = holders[:0]
		err := n.view(ctx, prefixItem+sku, func(r store.Reader) error {
			it, err := loadItem(r, sku)
			if err != nil {
				return err
			}
			mine = &crdt.Group{}
			mine.AddItem(sku, it.Clone())
			mineTok = n.Token()
			for _, p := range n.opts.PeerRegions {
				if o := it.Outstanding(p); o > 0 {
					holders = append(holders, p)
					out += o
				}
			}
			return nil
		})
		return out, err
	}
	before, err := outstanding()
	if err != nil || len(holders) == 0 {
		return false
	}
	type answer struct {
		state *crdt.Group
		token string
	}
	answers := make(chan answer, len(holders))
	for _, p := range holders {
		n.fanOut(func() {
			// With the home's state of the item: a grant whose answer is
			// still on its way (or lost) is then among the rights the
			// holder gives back from.
			resp, err := n.opts.Forwarder.Forward(ctx, p, &HomeRequest{Op: OpRecall, SKU: sku, Qty: min(want, crdt.MaxQty), From: string(n.name),
				State: mine, Token: mineTok})
			if err != nil || resp.Err != nil || resp.State == nil || !onlyKey(resp.State, prefixItem+sku) {
				answers <- answer{}
				return
			}
			answers <- answer{resp.State, resp.Token}
		})
	}
	for range holders {
		a := <-answers
		if a.state == nil {
			continue
		}
		var reflects crdt.Context
		if a.token != "" {
			c, err := crdt.ParseToken(a.token)
			if err != nil {
				continue
			}
			reflects = c
		}
		_ = n.ApplyReflecting(&crdt.Context{}, a.state, &reflects)
	}
	n.m.EscrowRecalls.Inc()
	after, err := outstanding()
	return err == nil && after < before
}

// recallRights gives back, at a region holding rights, up to req.Qty of
// what it holds unused, at its home's request.
func (n *Node) recallRights(tx *store.Tx, g *crdt.Group, req *HomeRequest, now time.Time) (*HomeResponse, error) {
	it, l, err := n.loadForDecision(tx, g, req.SKU, now)
	if err != nil {
		return nil, err
	}
	if give := min(req.Qty, it.Outstanding(string(n.name))-l.held()); give > 0 {
		d := it.ReturnRights(n.self, uint64(give))
		it.Join(d)
		tx.Set(prefixItem+req.SKU, crdt.EncodeItem(it))
		g.AddItem(req.SKU, d)
		n.m.EscrowReturned.Add(float64(give))
	}
	state := &crdt.Group{}
	state.AddItem(req.SKU, it.Clone())
	return &HomeResponse{State: state}, nil
}

func (req *HomeRequest) checkRecall(n *Node) *Error {
	switch {
	case !n.Holds(req.SKU) || n.decides(n.HomeOf(req.SKU), req.SKU):
		// An sku whose escrow was turned off may still have rights out.
		return InvalidField("sku", "%s is not an sku %s may hold rights to", req.SKU, n.name)
	case req.From != n.HomeOf(req.SKU):
		return InvalidField("from", "rights to %s recalled by %q, not its home", req.SKU, req.From)
	case req.Qty < 1 || req.Qty > crdt.MaxQty:
		return InvalidField("qty", "%d rights recalled", req.Qty)
	}
	return nil
}

// Rights returns the units of sku this region may reserve alone (its
// unused rights), for an escrow sku homed elsewhere; ok is false for
// other skus.
func (n *Node) rightsOf(sku string, it *crdt.Item, l *ledger, now time.Time) (int64, bool) {
	if !n.escrow(sku) || n.decides(n.HomeOf(sku), sku) {
		return 0, false
	}
	if n.store.CatchingUp() {
		// Its reservations go to the home until the catch-up ends
		// (reserveEscrow): it decides none alone.
		return 0, true
	}
	var held int64
	if l != nil {
		held = l.heldAt(now) // an expired hold's units are free again
	}
	return max(0, it.Outstanding(string(n.name))-held), true
}

func (req *HomeRequest) checkGrant(n *Node) *Error {
	switch {
	case !n.escrow(req.SKU):
		return InvalidField("sku", "%s is not an escrow sku at %s", req.SKU, n.name)
	case req.From == string(n.name) || !crdt.ValidID(req.From) || !n.isRegion(req.From):
		return InvalidField("from", "rights for %q", req.From)
	case req.Qty < 1 || req.Qty > crdt.MaxQty || req.Delta < 1 || req.Delta > req.Qty:
		return InvalidField("qty", "rights of %d (at least %d) asked for", req.Qty, req.Delta)
	}
	return nil
}
