package protocol_test

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/latticedb/lattice/crdt"
	"github.com/latticedb/lattice/region"
	"github.com/latticedb/lattice/region/store"
)

var (
	simeSeeds = flag.Int("sime.seeds", 100, "number of seeds TestSimulationEscrow runs")
	simeSeed  = flag.Uint64("sime.seed", 0, "run TestSimulationEscrow for this seed only (replay)")
	simeFirst = flag.Uint64("sime.first", 1, "first seed TestSimulationEscrow runs")
)

// escrowSkus are the skus of an escrow simulation: four escrow skus (the
// last digit names the home, as sim.home does: esku-0 at ap-south, esku-1
// and esku-4 at eu-west, esku-2 at us-east) and one sku decided at its
// home only (sku-3, at ap-south).
var escrowSkus = []string{"esku-0", "esku-1", "esku-2", "esku-4", "sku-3"}

func isEscrowSku(sku string) bool { return strings.HasPrefix(sku, "esku-") }

// esim is a sim (sim_test.go) whose regions decide reservations of escrow
// skus from rights their homes grant (region.Options.Escrow), with home
// requests — grants, reservations escalated to the home, commits and
// releases of another region's reservations, adjustments — carried by
// escrowForwarder, subject to the sim's crashes and cut links and to its
// loss (a request or its answer may be lost). The simulation keeps the
// ground truth of what was acknowledged (restocks, commits, adjustments,
// the last transition of every reservation) and checks, after every
// step, the regions' own stores against it (check).
type esim struct {
	s     *sim
	t     *testing.T
	seed  uint64
	rng   *rand.Rand
	trace bool

	// restocked, committed and adjusted are the units of each sku the
	// regions acknowledged restocking, committing and adjusting away.
	restocked, committed, adjusted map[string]int64
	// acked are the reservations the simulation knows of, by id, with the
	// state of the last transition acknowledged (to the caller, or seen
	// decided by the forwarder although its answer was lost).
	acked map[string]*ackedRes
	// ackedBy is the incarnation of the deciding region that acknowledged
	// each reservation's last transition.
	ackedBy map[string]crdt.ReplicaID
	// open are the ids of reservations held, to commit or release later.
	open []string
	// taintStock are the skus a lost or uncertain write (sim.lost,
	// sim.uncertain) changed the stock or the rights of; taintUse those
	// it took stock or rights from (a commit, an adjustment, a grant, a
	// use or a return). See check.
	taintStock, taintUse map[string]bool
	// twice are the skus a reservation of was committed again by a new
	// incarnation of the region that had committed it (its record lost
	// with its store's tail): a documented limitation takes the units off
	// stock twice when the first commit's decrement had replicated, so
	// the final count of the sku's stock is not checked.
	twice map[string]bool
	// views are the regions' stores as last read (a region down with its
	// store closed keeps the view it had when it went down).
	views []*eview
	// touched are the regions forwarded requests were served by during
	// the operation under way.
	touched []int
	stats   esimStats
}

// eview is what one region's store holds of the simulation's skus.
type eview struct {
	catching bool
	items    map[string]*crdt.Item
	holds    map[string][]ledgerHold
	// damaged are the skus whose item or ledger could not be read (a
	// torn tail awaiting repair).
	damaged map[string]bool
}

// ledgerHold is one hold of a region's ledger of a sku (l/SKU, stored as
// an array of [id, qty, expiry in Unix ms]).
type ledgerHold struct {
	_     struct{} `cbor:",toarray"`
	ID    string
	Qty   int64
	ExpMs int64
}

// esimStats counts what the escrow simulations exercised, beyond the
// counters of simStats.
type esimStats struct {
	simStats
	restocks, reserved, fromRights, atHome, escalated, refused int
	committed, fromRightsCommitted, released, adjusted         int
	grantsAsked, grantsGiven, lostAnswers, returns, expiries   int
	forwarded, fwdRefused, again, committedTwice               int
	checks, skipped, rightsChecks, homeChecks                  int
	taintedStock, taintedUse, skuHistories                     int
}

func (a *esimStats) add(b esimStats) {
	a.simStats.add(b.simStats)
	a.restocks += b.restocks
	a.reserved += b.reserved
	a.fromRights += b.fromRights
	a.atHome += b.atHome
	a.escalated += b.escalated
	a.refused += b.refused
	a.committed += b.committed
	a.fromRightsCommitted += b.fromRightsCommitted
	a.released += b.released
	a.adjusted += b.adjusted
	a.grantsAsked += b.grantsAsked
	a.grantsGiven += b.grantsGiven
	a.lostAnswers += b.lostAnswers
	a.committedTwice += b.committedTwice
	a.returns += b.returns
	a.expiries += b.expiries
	a.forwarded += b.forwarded
	a.fwdRefused += b.fwdRefused
	a.again += b.again
	a.checks += b.checks
	a.skipped += b.skipped
	a.rightsChecks += b.rightsChecks
	a.homeChecks += b.homeChecks
	a.taintedStock += b.taintedStock
	a.taintedUse += b.taintedUse
	a.skuHistories += b.skuHistories
}

var (
	etotalsMu sync.Mutex
	etotals   esimStats
)

func newEsim(t *testing.T, seed uint64) *esim {
	s := &sim{t: t, seed: seed, rng: rand.New(rand.NewPCG(seed, seed^0x2545f4914f6cdd1d)), clock: &simClock{t: time.Unix(1_800_000_000, 0)},
		cfg: simConfig(), cut: map[[2]int]bool{}, deltas: map[crdt.Dot]*crdt.Group{}, lost: map[crdt.Dot]bool{}, orphans: map[crdt.Dot]bool{},
		lines: map[entryKey]crdt.Line{}, skus: escrowSkus, tag: " escrow"}
	es := esimOver(t, seed, s)
	if base := simBaseDir(); base != "" {
		d, err := os.MkdirTemp(base, "lattice-sime-")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(d) })
		s.dir = d
	} else {
		s.dir = t.TempDir()
	}
	s.loss = s.rng.Float64() * 0.2
	s.dup = s.rng.Float64() * 0.1
	s.delay = [2]time.Duration{time.Duration(5+s.rng.IntN(95)) * time.Millisecond, time.Duration(1+s.rng.IntN(60)) * time.Millisecond}
	s.nodeOpts = func(i int, o *region.Options) {
		o.Escrow = isEscrowSku
		o.Background = func(f func()) { f() } // in line: the run stays a function of its seed
		o.Forwarder = escrowForwarder{es, i}
	}
	t.Cleanup(func() {
		for _, r := range s.regions {
			if r.node != nil {
				r.node.Close()
			}
		}
		for _, st := range s.stores {
			st.Close()
		}
	})
	for _, n := range names {
		s.regions = append(s.regions, &simRegion{name: n, path: filepath.Join(s.dir, string(n)+".db")})
		s.start(len(s.regions) - 1)
	}
	for i := range s.regions {
		s.connectivity(i)
	}
	return es
}

// esimOver returns an esim that checks the skus of s (s.skus), whose
// regions it neither makes nor starts.
func esimOver(t *testing.T, seed uint64, s *sim) *esim {
	return &esim{t: t, seed: seed, s: s, rng: s.rng, restocked: map[string]int64{}, committed: map[string]int64{}, adjusted: map[string]int64{},
		acked: map[string]*ackedRes{}, ackedBy: map[string]crdt.ReplicaID{}, taintStock: map[string]bool{}, taintUse: map[string]bool{},
		twice: map[string]bool{}, views: make([]*eview, len(names))}
}

func (es *esim) logf(format string, args ...any) {
	if es.trace {
		es.t.Logf("%s "+format, append([]any{es.s.clock.t.Format("05.000")}, args...)...)
	}
}

// escrowForwarder carries a home request from region from to the home,
// as the API does between regions: refused while the home is down or the
// link between them is cut; else lost on the way with the sim's loss
// chance, or decided at the home with its answer lost on the way back
// (the caller sees home_unavailable either way). It records what the home
// decided, answer lost or not (observe).
type escrowForwarder struct {
	es   *esim
	from int
}

func (f escrowForwarder) Forward(ctx context.Context, home string, req *region.HomeRequest) (*region.HomeResponse, error) {
	es, s := f.es, f.es.s
	h := slices.Index(names, crdt.ReplicaID(home))
	if h < 0 || h == f.from {
		es.t.Fatalf("seed %d: %s forwards %s of %s to %s", es.seed, names[f.from], req.Op, req.SKU, home)
	}
	if req.Op == region.OpGrant {
		es.stats.grantsAsked++
	}
	unreachable := region.Errorf(region.CodeHomeUnavailable, "sim: %s cannot be reached from %s", home, names[f.from])
	if !s.connected(f.from, h) || s.rng.Float64() < s.loss {
		es.stats.fwdRefused++
		return nil, unreachable
	}
	es.stats.forwarded++
	c := *req
	c.Escrow = false // never travels
	resp := s.regions[h].node.ServeForwarded(ctx, &c)
	es.touched = append(es.touched, h)
	es.observe(&c, resp)
	if req.Op == region.OpGrant {
		es.logf("%s asks %s for %d of %s (at least %d): %v", names[f.from], home, req.Qty, req.SKU, req.Delta, resp.Err)
	}
	if s.rng.Float64() < s.loss {
		es.stats.lostAnswers++
		es.logf("%s %s of %s at %s decided (%v), its answer lost", names[f.from], req.Op, req.SKU, home, resp.Err)
		return nil, unreachable
	}
	return resp, nil
}

// observe records what a home decided for a forwarded request.
func (es *esim) observe(req *region.HomeRequest, resp *region.HomeResponse) {
	if resp.Err != nil {
		return
	}
	switch req.Op {
	case region.OpGrant:
		es.stats.grantsGiven++
	case region.OpAdjust:
		es.adjusted[req.SKU] += -req.Delta
		es.stats.adjusted++
	case region.OpCommit, region.OpRelease:
		es.transitioned(resp.Res.ID, resp.Res.SKU, resp.Res.Qty, resp.Res.State)
	}
}

// transitioned records that the region that decided reservation id
// acknowledged it in state (committed, released, or expired for a
// release that came late). A reservation moves once, unless a fault took
// the transition from that region's store in between (its hold is held
// again there, see held): only a new incarnation of the region may
// acknowledge another. The units of a commit count once.
func (es *esim) transitioned(id, sku string, qty int64, state string) {
	at, _ := region.ReservationHome(id)
	self := es.s.regions[slices.Index(names, crdt.ReplicaID(at))].self
	a := es.acked[id]
	if a == nil {
		a = &ackedRes{sku: sku, qty: qty, state: region.StateHeld}
		es.acked[id] = a
	}
	if a.state == state {
		if state == region.StateCommitted && es.ackedBy[id] != self {
			es.twice[sku] = true
			es.stats.committedTwice++
			es.ackedBy[id] = self
		}
		return
	}
	if a.state != region.StateHeld && es.ackedBy[id] == self {
		es.t.Fatalf("seed %d at %s: reservation %s of %s went from %s to %s at %s", es.seed, es.s.clock.t.Format("05.000"), id, sku, a.state, state, self)
	}
	if a.state != region.StateHeld {
		es.stats.again++
	}
	prev := a.state
	a.state = state
	es.ackedBy[id] = self
	switch state {
	case region.StateCommitted:
		if prev != region.StateCommitted {
			es.committed[sku] += qty
		}
		es.stats.committed++
		if at != es.s.home(sku) {
			es.stats.fromRightsCommitted++
		}
	case region.StateReleased:
		es.stats.released++
	}
}

// expect fails unless err is a region error with one of codes.
func (es *esim) expect(err error, what string, codes ...string) {
	var e *region.Error
	if !errors.As(err, &e) || !slices.Contains(codes, e.Code) {
		es.t.Fatalf("seed %d at %s: %s: %v, not one of %v", es.seed, es.s.clock.t.Format("05.000"), what, err, codes)
	}
}

// randomOp runs one operation at a random region that runs, then carries
// out the output of every region it wrote at.
func (es *esim) randomOp() {
	s := es.s
	i := es.rng.IntN(len(names))
	r := s.regions[i]
	if !r.alive {
		return
	}
	n := r.node
	sku := escrowSkus[es.rng.IntN(len(escrowSkus))]
	home := slices.Index(names, crdt.ReplicaID(s.home(sku)))
	switch op := es.rng.IntN(100); {
	case op < 18:
		q := int64(1 + es.rng.IntN(6))
		if _, err := n.Restock(bg, sku, q); err != nil {
			es.t.Fatalf("seed %d: restock at %s: %v", es.seed, r.name, err)
		}
		es.restocked[sku] += q
		es.stats.restocks++
		es.logf("%s restocks %d of %s", r.name, q, sku)
	case op < 55:
		q := int64(1 + es.rng.IntN(3))
		ttl := time.Duration(1+es.rng.IntN(8)) * time.Second
		res, err := n.Reserve(bg, sku, q, ttl, region.Idem{})
		if err != nil {
			es.expect(err, "reserve", region.CodeInsufficientStock, region.CodeHomeUnavailable, region.CodeUnavailable)
			es.stats.refused++
			es.logf("%s reserves %d of %s: %v", r.name, q, sku, err)
			break
		}
		at, _ := region.ReservationHome(res.ID)
		switch {
		case at != s.home(sku):
			if !isEscrowSku(sku) || at != string(r.name) {
				es.t.Fatalf("seed %d: %s reserved %s of %s, decided at %s (home %s)", es.seed, r.name, res.ID, sku, at, s.home(sku))
			}
			es.stats.fromRights++
		case i != home && isEscrowSku(sku):
			es.stats.escalated++
		default:
			es.stats.atHome++
		}
		es.stats.reserved++
		es.acked[res.ID] = &ackedRes{sku: sku, qty: q, state: region.StateHeld}
		es.open = append(es.open, res.ID)
		es.logf("%s reserves %d of %s for %s: %s", r.name, q, sku, ttl, res.ID)
	case op < 80:
		// A held reservation is committed or released, mostly at the
		// region that decided it (its id names it), sometimes from
		// another, which forwards it.
		if len(es.open) == 0 {
			return
		}
		k := es.rng.IntN(len(es.open))
		id := es.open[k]
		at, _ := region.ReservationHome(id)
		if es.rng.IntN(4) != 0 {
			i = slices.Index(names, crdt.ReplicaID(at))
			if r = s.regions[i]; !r.alive {
				return
			}
			n = r.node
		}
		commit := es.rng.IntN(2) == 0
		var res region.Reservation
		var err error
		if commit {
			res, err = n.Commit(bg, id, region.Idem{})
		} else {
			res, err = n.Release(bg, id, region.Idem{})
		}
		es.logf("%s: commit %v %s: %v", r.name, commit, id, err)
		if es.settled(commit, id, res, err) {
			es.open = slices.Delete(es.open, k, k+1)
		}
	case op < 85:
		// An adjustment down, decided by the sku's home.
		q := int64(1 + es.rng.IntN(2))
		_, err := n.Adjust(bg, sku, -q, "sim")
		es.logf("%s adjusts %s by -%d: %v", r.name, sku, q, err)
		if err != nil {
			es.expect(err, "adjust", region.CodeInsufficientStock, region.CodeHomeUnavailable, region.CodeUnavailable)
		} else if i == home {
			es.adjusted[sku] += q
			es.stats.adjusted++
		} // else the forwarder saw it decided
	case op < 92:
		// Time passes: holds expire.
		es.advance(time.Duration(200+es.rng.IntN(4000)) * time.Millisecond)
		for j, r := range s.regions {
			if r.alive {
				if err := r.node.ExpireDue(); err != nil {
					es.t.Fatalf("seed %d: expire at %s: %v", es.seed, r.name, err)
				}
				s.process(j)
			}
		}
		es.stats.expiries++
		return
	default:
		// The region returns the rights of its idle skus.
		before := es.returned(i)
		r.node.ReturnIdleRights()
		s.process(i)
		if es.returned(i) > before {
			es.stats.returns++
			es.logf("%s returns idle rights", r.name)
		}
		return
	}
	s.process(i)
	es.processTouched()
}

// returned returns the units of rights region i returned, as its store
// shows them.
func (es *esim) returned(i int) uint64 {
	v := es.read(i)
	var sum uint64
	for _, it := range v.items {
		sum += it.Returned(string(names[i]))
	}
	return sum
}

// processTouched carries out the output of the regions forwarded
// requests wrote at.
func (es *esim) processTouched() {
	for len(es.touched) > 0 {
		h := es.touched[0]
		es.touched = es.touched[1:]
		if es.s.regions[h].alive {
			es.s.process(h)
		}
	}
}

// advance lets d of virtual time pass in steps, checking after each.
func (es *esim) advance(d time.Duration) {
	for end := es.s.clock.t.Add(d); es.s.clock.t.Before(end); {
		es.step(time.Duration(20+es.rng.IntN(100)) * time.Millisecond)
	}
}

func (es *esim) step(dt time.Duration) {
	es.s.step(dt)
	es.check("step")
}

// read returns region i's view of the simulation's skus: read from its
// store while it is open (the region runs, or a fault left it open until
// the region restarts), else the view it had when it went down.
func (es *esim) read(i int) *eview {
	r := es.s.regions[i]
	if r.store == nil {
		return es.views[i]
	}
	v := &eview{catching: r.store.CatchingUp(), items: map[string]*crdt.Item{}, holds: map[string][]ledgerHold{}, damaged: map[string]bool{}}
	for _, sku := range es.s.skus {
		err := r.store.View([]string{crdt.ItemPrefix + sku}, func(rd store.Reader) error {
			it := &crdt.Item{}
			b, ok, err := rd.Get(crdt.ItemPrefix + sku)
			if err != nil {
				return err
			}
			if ok {
				if it, err = crdt.DecodeItemStored(b); err != nil {
					return &store.CorruptError{Key: crdt.ItemPrefix + sku}
				}
			}
			v.items[sku] = it
			b, ok, err = rd.Get("l/" + sku)
			if err != nil || !ok {
				return err
			}
			var hs []ledgerHold
			if err := crdt.Unmarshal(b, &hs, crdt.MaxObjectBytes); err != nil {
				return &store.CorruptError{Key: "l/" + sku}
			}
			v.holds[sku] = hs
			return nil
		})
		if ce := (*store.CorruptError)(nil); errors.As(err, &ce) {
			v.damaged[sku] = true
			continue
		}
		if err != nil {
			es.t.Fatalf("seed %d: read the store of %s: %v", es.seed, r.name, err)
		}
	}
	es.views[i] = v
	return v
}

// held returns the units of sku that view v holds for reservations not
// expired at now, leaving out phantoms: holds of reservations acknowledged
// as committed or released whose transition a fault took from the store
// of the region that decided them (the other regions may hold the commit's
// decrement and use, which its ledger cannot take back; the hold stays
// until its ttl, on the safe side for the region itself).
func (es *esim) held(v *eview, sku string, now int64) (units, phantom int64) {
	for _, h := range v.holds[sku] {
		if now >= h.ExpMs {
			continue
		}
		if a := es.acked[h.ID]; a != nil && a.state != region.StateHeld {
			phantom += h.Qty
			continue
		}
		units += h.Qty
	}
	return units, phantom
}

// taint marks the skus that lost or uncertain writes changed (see
// esim.taintStock and esim.taintUse).
func (es *esim) taint() {
	s := es.s
	for _, m := range []map[crdt.Dot]bool{s.lost, s.uncertain} {
		for d := range m {
			for sku, it := range s.deltas[d].Items {
				if len(it.Stock.P) > 0 || len(it.Stock.N) > 0 || len(it.Escrow) > 0 {
					es.taintStock[sku] = true
				}
				if len(it.Stock.N) > 0 || len(it.Escrow) > 0 {
					es.taintUse[sku] = true
				}
			}
		}
	}
}

// check verifies, from the regions' own stores, for every sku:
//
//   - no oversell: the units held in every region's ledger (unexpired,
//     phantoms aside), decided at the home or from rights, plus the
//     units committed and adjusted away are at most the units restocked.
//     The bound counts every restock acknowledged: one a fault took
//     later only lowers the stock the regions decide from. A sku a lost or
//     uncertain write took stock or rights from (a commit, an adjustment,
//     a grant, a use or a return that no region may ever see again) is
//     exempt (taintUse): its units may be decided anew, as TestSimulation
//     lets such writes be lost, and the acknowledged commit still counts.
//   - rights: every region R other than an escrow sku's home, while it
//     decides (not catching up: until then its view may show its own
//     uses, brought back by a peer, without the grants they were made
//     from), uses no more rights than its home granted it as its own
//     store sees it: used + returned + held ≤ granted. Exempt as above.
//   - no unit granted twice: the home, while it decides, counts its
//     stock as covering its own holds and every other region's
//     outstanding rights. Exempt also when a lost or uncertain write
//     changed the stock at all (taintStock): the home may have decided
//     from a restock no region holds any more.
func (es *esim) check(where string) {
	s := es.s
	es.taint()
	now := s.clock.t.UnixMilli()
	views := make([]*eview, len(s.regions))
	for i := range s.regions {
		views[i] = es.read(i)
	}
	for _, sku := range es.s.skus {
		h := slices.Index(names, crdt.ReplicaID(s.home(sku)))
		var held, phantom int64
		damaged := false
		for _, v := range views {
			u, p := es.held(v, sku, now)
			held, phantom = held+u, phantom+p
			damaged = damaged || v.damaged[sku]
		}
		if es.taintUse[sku] || damaged {
			es.stats.skipped++
		} else {
			es.stats.checks++
			if held+es.committed[sku]+es.adjusted[sku] > es.restocked[sku] {
				es.fail(where, "%s is oversold: %d units held (%d more held by phantoms), %d committed and %d adjusted away, of %d restocked",
					sku, held, phantom, es.committed[sku], es.adjusted[sku], es.restocked[sku])
			}
			for i, v := range views {
				if i == h || !isEscrowSku(sku) || v.catching {
					continue
				}
				es.stats.rightsChecks++
				it, r := v.items[sku], string(names[i])
				u, _ := es.held(v, sku, now)
				if g, used, ret := it.Granted(r), it.Used(r), it.Returned(r); int64(used+ret)+u > int64(g) {
					es.fail(where, "%s uses more rights to %s than %s granted it, as its own store shows: %d used + %d returned + %d held > %d granted (%v)",
						r, sku, s.home(sku), used, ret, u, g, it.Escrow)
				}
			}
		}
		if v := views[h]; !es.taintStock[sku] && !damaged && !v.catching {
			es.stats.homeChecks++
			it := v.items[sku]
			u, _ := es.held(v, sku, now)
			if out := it.OutstandingAll(s.home(sku)); it.Stock.Value()-u-out < 0 {
				es.fail(where, "%s's home %s counts stock %d, %d units held there and %d of rights outstanding elsewhere: granted or reserved twice",
					sku, s.home(sku), it.Stock.Value(), u, out)
			}
		}
	}
}

func (es *esim) fail(where, format string, args ...any) {
	es.t.Helper()
	es.t.Fatalf("seed %d at %s (%s): %s", es.seed, es.s.clock.t.Format("05.000"), where, fmt.Sprintf(format, args...))
}

// heal brings every region up, makes every link whole and the network
// lossless, and runs until the regions converged on the join of every
// acknowledged write not lost and none is catching up.
func (es *esim) heal(what string) {
	s := es.s
	for slices.ContainsFunc(s.regions, func(r *simRegion) bool { return !r.restartAt.IsZero() }) {
		es.step(10 * time.Millisecond)
	}
	for i, r := range s.regions {
		if !r.alive {
			s.start(i)
		}
	}
	clear(s.cut)
	s.loss, s.dup = 0, 0
	for i := range s.regions {
		s.connectivity(i)
	}
	deadline := s.clock.t.Add(5 * time.Minute)
	for !s.converged() || slices.ContainsFunc(s.regions, func(r *simRegion) bool { return r.node.CatchingUp() }) {
		if s.clock.t.After(deadline) {
			for _, r := range s.regions {
				a := r.node.Applied()
				g, _ := r.node.ReadObjects(nil, s.skus)
				es.t.Logf("%s (as %s, catching up %v) applied=%v", r.name, r.node.Self(), r.node.CatchingUp(), a.VV)
				for _, k := range s.skus {
					if got, want := g.Items[k], s.ref.Items[k]; (got == nil) != (want == nil) || (got != nil && !bytes.Equal(crdt.EncodeItem(got), crdt.EncodeItem(want))) {
						es.t.Logf("  item %s: got %+v want %+v", k, got, want)
					}
				}
			}
			es.t.Fatalf("seed %d: regions did not converge within 5 virtual minutes %s", es.seed, what)
		}
		es.step(10 * time.Millisecond)
	}
}

// checkConverged verifies that every region holds the same item of every
// sku (stock and escrow counters), and that the rights of each region R
// as every region counts them cover the holds R's ledger keeps.
func (es *esim) checkConverged(what string) {
	s := es.s
	now := s.clock.t.UnixMilli()
	views := make([]*eview, len(s.regions))
	for i := range s.regions {
		views[i] = es.read(i)
	}
	for _, sku := range es.s.skus {
		want := crdt.EncodeItem(views[0].items[sku])
		for i, v := range views {
			if v.damaged[sku] {
				es.t.Fatalf("seed %d: %s: %s's store still has a damaged item or ledger of %s", es.seed, what, names[i], sku)
			}
			if got := crdt.EncodeItem(v.items[sku]); !bytes.Equal(got, want) {
				es.t.Fatalf("seed %d: %s: %s holds item %s as %+v, %s as %+v", es.seed, what, names[i], sku, v.items[sku], names[0], views[0].items[sku])
			}
		}
		if !isEscrowSku(sku) {
			continue
		}
		it := views[0].items[sku]
		for i, v := range views {
			r := string(names[i])
			if r == s.home(sku) {
				continue
			}
			var all int64
			for _, h := range v.holds[sku] {
				all += h.Qty
			}
			u, _ := es.held(v, sku, now)
			if out := it.Outstanding(r); out < u || (!es.taintUse[sku] && int64(it.Used(r)+it.Returned(r))+u > int64(it.Granted(r))) {
				es.t.Fatalf("seed %d: %s: %s holds %d units of %s (%d unexpired, phantoms aside) but the regions count %d of rights outstanding there (granted %d, used %d, returned %d)",
					es.seed, what, r, all, sku, u, out, it.Granted(r), it.Used(r), it.Returned(r))
			}
		}
	}
}

// runEsim runs one seeded history of escrow skus, heals the cluster and
// checks the outcome; then lets every hold expire and every region return
// its idle rights, and checks that the rights went home.
func runEsim(t *testing.T, seed uint64, trace bool) {
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("replay with go test -v ./sync/protocol -run 'TestSimulationEscrow$' -args -sime.seed=%d", seed)
		}
	})
	es := newEsim(t, seed)
	s := es.s
	es.trace, s.trace = trace, trace
	s.setApplyKeys([]int{0, 1, 3}[seed%3])
	ops := 150 + es.rng.IntN(200)
	for range ops {
		es.randomOp()
		es.check("op")
		s.chaos()
		es.check("chaos")
		es.step(time.Duration(1+es.rng.IntN(40)) * time.Millisecond)
	}
	es.heal("after healing")
	es.checkConverged("after healing")

	// Every hold expires, every region returns its idle rights: the
	// rights of every sku go home, and the stock of every sku that no
	// lost write touched is what was restocked less what was committed
	// and adjusted away.
	es.advance(9*time.Second + region.EscrowIdle)
	for i, r := range s.regions {
		if err := r.node.ExpireDue(); err != nil {
			t.Fatal(err)
		}
		r.node.ReturnIdleRights()
		s.process(i)
	}
	es.heal("after the idle rights went home")
	es.checkConverged("after the idle rights went home")
	es.checkSettled()
	for _, r := range s.regions {
		for _, ps := range r.proto.Status() {
			s.stats.aeKeys += int(ps.AEKeysPushed + ps.AEKeysPulled)
			s.stats.deltas += int(ps.DeltasSent)
		}
	}
	es.stats.simStats.add(s.stats)
	es.stats.seeds = 1
	etotalsMu.Lock()
	etotals.add(es.stats)
	etotalsMu.Unlock()
}

// checkSettled verifies, once every hold expired, every region returned
// its idle rights and the regions converged, that the stock of every sku
// no lost write touched is what was restocked less what was committed
// and adjusted away, and that no rights to any escrow sku are
// outstanding.
func (es *esim) checkSettled() {
	it := es.read(0).items
	for _, sku := range es.s.skus {
		es.stats.skuHistories++
		if es.taintStock[sku] {
			es.stats.taintedStock++
		}
		if es.taintUse[sku] {
			es.stats.taintedUse++
		}
		if !es.taintStock[sku] && !es.twice[sku] {
			if want := es.restocked[sku] - es.committed[sku] - es.adjusted[sku]; it[sku].Stock.Value() != want {
				es.t.Fatalf("seed %d: the regions count stock %d of %s, want %d restocked − %d committed − %d adjusted", es.seed, it[sku].Stock.Value(), sku,
					es.restocked[sku], es.committed[sku], es.adjusted[sku])
			}
		}
		if !isEscrowSku(sku) {
			continue
		}
		if out := it[sku].OutstandingAll(es.s.home(sku)); out != 0 {
			es.t.Fatalf("seed %d: after every hold expired and every region returned its idle rights, %d units of rights to %s are still outstanding (%v)",
				es.seed, out, sku, it[sku].Escrow)
		}
	}
}

// settled checks the answer (res, err) to a commit (or, commit false, a
// release) of reservation id and records the transition it made. It
// reports whether id is settled for the simulation: decided, or refused
// for good; a home out of reach leaves it open.
func (es *esim) settled(commit bool, id string, res region.Reservation, err error) bool {
	if err != nil {
		es.expect(err, "commit or release", region.CodeHomeUnavailable, region.CodeUnavailable, region.CodeNotFound,
			region.CodeReservationExpired, region.CodeReservationReleased, region.CodeReservationCommit)
		var e *region.Error
		return errors.As(err, &e) && e.Code != region.CodeHomeUnavailable && e.Code != region.CodeUnavailable
	}
	switch {
	case commit && res.State == region.StateCommitted, !commit && res.State == region.StateReleased:
		es.transitioned(id, res.SKU, res.Qty, res.State)
	case !commit && res.State == region.StateExpired:
		// Releasing an expired hold changes nothing: its units are free
		// already.
	default:
		es.t.Fatalf("seed %d: %s of %s answered %s", es.seed, map[bool]string{true: "commit", false: "release"}[commit], id, res.State)
	}
	return true
}

// TestSimulationEscrow runs seeded histories of escrow skus (and one sku
// without escrow) over three regions running the real protocol and
// nodes: restocks anywhere, reservations at any region (decided from its
// rights, after asking its home for more, or at the home), commits and
// releases at the region that decided them or forwarded to it,
// adjustments, expiries and returns of idle rights, under loss,
// duplication and reordering of messages and of home requests, cut
// links, crashes, lost and torn store tails, power losses and restores.
// After every step the regions' own stores must show no sku oversold, no
// region using more rights than its home granted it, and no home
// granting or reserving a unit twice (esim.check); after healing every
// region holds the same items and every region's rights cover its
// ledger's holds; once every hold expired and every region returned its
// idle rights, no rights are outstanding.
func TestSimulationEscrow(t *testing.T) {
	if *simeSeed != 0 {
		runEsim(t, *simeSeed, testing.Verbose())
		return
	}
	etotalsMu.Lock()
	etotals = esimStats{}
	etotalsMu.Unlock()
	start := time.Now()
	runSeeds(t, *simeFirst, *simeSeeds, func(t *testing.T, seed uint64) { runEsim(t, seed, false) })
	if t.Failed() {
		return
	}
	took := time.Since(start)
	st := etotals
	t.Logf("over %d seeds in %s (%.1f seeds/s): %d crashes, %d link cuts, %d lost tails, %d torn tails, %d power losses, %d restores, %d writes lost everywhere; "+
		"%d restocks, %d reservations (%d decided from rights, %d escalated to the home, %d at the home), %d refused; %d committed (%d from rights), %d released, %d adjustments, %d moved again after a fault, %d committed again by a new incarnation; "+
		"%d grants asked, %d given; %d home requests forwarded, %d refused or lost, %d answers lost; %d returns of idle rights, %d expiry passes; "+
		"%d no-oversell checks (%d skipped), %d rights checks, %d home checks; %d of %d sku histories with stock changes lost, %d with uses lost",
		st.seeds, took.Round(time.Millisecond), float64(st.seeds)/took.Seconds(), st.crashes, st.cuts, st.lostTails, st.tornTails, st.powerLosses, st.restores, st.lostWrites,
		st.restocks, st.reserved, st.fromRights, st.escalated, st.atHome, st.refused, st.committed, st.fromRightsCommitted, st.released, st.adjusted, st.again, st.committedTwice,
		st.grantsAsked, st.grantsGiven, st.forwarded, st.fwdRefused, st.lostAnswers, st.returns, st.expiries,
		st.checks, st.skipped, st.rightsChecks, st.homeChecks, st.taintedStock, st.skuHistories, st.taintedUse)
	if *simeSeeds >= 30 && (st.fromRights == 0 || st.escalated == 0 || st.fromRightsCommitted == 0 || st.grantsGiven == 0 || st.returns == 0 ||
		st.lostAnswers == 0 || st.crashes == 0 || st.cuts == 0 || st.lostTails+st.tornTails+st.powerLosses+st.restores == 0) {
		t.Fatal("the simulation did not exercise reservations and commits from rights, escalations, grants, returns, lost answers, crashes, cuts and store faults")
	}
}
