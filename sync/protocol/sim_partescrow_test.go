package protocol_test

import (
	"bytes"
	"context"
	"flag"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/latticedb/lattice/crdt"
	"github.com/latticedb/lattice/region"
)

var (
	simpeSeeds = flag.Int("simpe.seeds", 24, "number of seeds TestSimulationPartitionedEscrow runs")
	simpeSeed  = flag.Uint64("simpe.seed", 0, "run TestSimulationPartitionedEscrow for this seed only (replay)")
	simpeFirst = flag.Uint64("simpe.first", 1, "first seed TestSimulationPartitionedEscrow runs")
	simpeParts = flag.Int("simpe.partitions", 0, "partitions of the cluster TestSimulationPartitionedEscrow runs (a power of two, at least 2; 0: 2 for odd seeds, 4 for even ones)")
)

// pesim runs escrow skus (sim_escrow_test.go) in partitioned regions
// (sim_partitions_test.go): a psim whose nodes decide reservations of
// escrow skus from rights their homes grant, with one esim per partition
// keeping the ground truth of that partition's skus and checking it
// against the stores of the partition's replicas (esim.check). A sku's
// item, ledgers and reservations live in its partition only: its home's
// replica of the partition grants rights to the other regions' replicas
// of it, which decide reservations from them. Home requests — grants,
// escalated reservations, commits and releases forwarded to the region
// and partition a reservation id names, recalls, adjustments — go
// through peForwarder, to the replica of the request's partition in the
// region asked (within one region too, between its nodes), refused while
// that replica's node is down or the link between the regions is cut,
// and lost on the way or on the way back with the network's loss chance.
// Faults strike nodes: every partition a node owns at once (psim.chaos).
type pesim struct {
	ps *psim
	es []*esim // by partition
	// skus are the skus of the simulation: two escrow skus and one
	// decided at its home only, in every partition.
	skus []string
	// open are the ids of reservations held, to commit or release later
	// (each names its region and partition).
	open  []string
	stats pesimStats
}

// pesimStats counts what the partitioned escrow simulations exercised,
// beyond the counters of esimStats.
type pesimStats struct {
	esimStats
	// crossPartition counts home requests forwarded to a replica of
	// another partition than the asking replica's, intraRegion those
	// forwarded to another partition within the asking region.
	crossPartition, intraRegion int
	// misrouted counts reservations of a sku without escrow asked of a
	// replica of another partition (which forwards them) and decided;
	// escrowMisrouted reservations of an escrow sku asked of a replica of
	// another partition, escrowMisroutedDecided those of them decided.
	misrouted, escrowMisrouted, escrowMisroutedDecided int
	// nodeDown counts operations that found the node owning their key's
	// partition down in the region asked (the API answers
	// partition_unavailable).
	nodeDown int
	// recalls counts recalls of unused rights a home sent that reached
	// the region holding them.
	recalls int
}

func (a *pesimStats) add(b pesimStats) {
	a.esimStats.add(b.esimStats)
	a.crossPartition += b.crossPartition
	a.intraRegion += b.intraRegion
	a.misrouted += b.misrouted
	a.escrowMisrouted += b.escrowMisrouted
	a.escrowMisroutedDecided += b.escrowMisroutedDecided
	a.nodeDown += b.nodeDown
	a.recalls += b.recalls
}

var (
	petotalsMu sync.Mutex
	petotals   pesimStats
)

func newPesim(t *testing.T, seed uint64, partitions int) *pesim {
	pe := &pesim{skus: append(keysByPartition("esku-", partitions, 2), keysByPartition("sku-", partitions, 1)...)}
	opts := func(p, i int, o *region.Options) {
		o.Escrow = isEscrowSku
		o.Background = func(f func()) { f() } // in line: the run stays a function of its seed
		o.Forwarder = peForwarder{pe, i, p}
	}
	pe.ps = newPsimWith(t, seed, partitions, pe.skus, opts, isEscrowSku)
	// No-oversell is checked by each partition's esim (esim.check), which
	// knows the reservations' outcomes and the phantoms faults leave, not
	// by psim.checkStock.
	pe.ps.skus = nil
	for _, s := range pe.ps.parts {
		pe.es = append(pe.es, esimOver(t, seed, s))
	}
	return pe
}

func (pe *pesim) logf(format string, args ...any) { pe.ps.logf(format, args...) }

// peForwarder carries a home request from region from's replica of
// partition part to the replica of the request's partition in the region
// asked (see pesim), and records what it decided there (esim.observe, in
// the esim of its partition).
type peForwarder struct {
	pe         *pesim
	from, part int
}

func (f peForwarder) Forward(ctx context.Context, home string, req *region.HomeRequest) (*region.HomeResponse, error) {
	pe, ps := f.pe, f.pe.ps
	h := slices.Index(names, crdt.ReplicaID(home))
	q, ok := req.Partition(len(ps.parts))
	if h < 0 || !ok || q >= len(ps.parts) || h == f.from && q == f.part {
		ps.t.Fatalf("seed %d: %s partition %d forwards %s of %s %s to %s partition %d (%v)", ps.seed, names[f.from], f.part, req.Op, req.SKU, req.ID, home, q, ok)
	}
	es := pe.es[q]
	if req.Op == region.OpGrant {
		es.stats.grantsAsked++
	}
	if q != f.part {
		pe.stats.crossPartition++
	}
	if h == f.from {
		pe.stats.intraRegion++
	}
	unreachable := region.Errorf(region.CodeHomeUnavailable, "sim: %s partition %d cannot be reached from %s partition %d", home, q, names[f.from], f.part)
	r := ps.replica(q, h)
	if !r.alive || h != f.from && ps.cut[[2]int{min(h, f.from), max(h, f.from)}] || ps.rng.Float64() < ps.parts[q].loss {
		es.stats.fwdRefused++
		return nil, unreachable
	}
	es.stats.forwarded++
	if req.Op == region.OpRecall {
		pe.stats.recalls++
	}
	c := *req
	c.Escrow = false // never travels
	resp := r.node.ServeForwarded(ctx, &c)
	es.touched = append(es.touched, h)
	es.observe(&c, resp)
	if req.Op == region.OpGrant {
		es.logf("%s partition %d asks %s for %d of %s (at least %d): %v", names[f.from], q, home, req.Qty, req.SKU, req.Delta, resp.Err)
	}
	if ps.rng.Float64() < ps.parts[q].loss {
		es.stats.lostAnswers++
		es.logf("%s %s of %s %s at %s partition %d decided (%v), its answer lost", names[f.from], req.Op, req.SKU, req.ID, home, q, resp.Err)
		return nil, unreachable
	}
	return resp, nil
}

// processTouched carries out the output of every replica forwarded
// requests wrote at.
func (pe *pesim) processTouched() {
	for _, es := range pe.es {
		es.processTouched()
	}
}

// randomOp runs one operation in a random region at the replica of its
// sku's partition (as the API routes it; nothing if the node owning it
// there is down), or, for some reservations, at a replica of another
// partition; a commit or release mostly at the replica its id names,
// sometimes at any replica of any region, which forwards it. Then it
// carries out the output of every replica it wrote at.
func (pe *pesim) randomOp() {
	ps := pe.ps
	i := ps.rng.IntN(len(names))
	sku := pe.skus[ps.rng.IntN(len(pe.skus))]
	p := ps.partOf(sku)
	es := pe.es[p]
	home := homeIndex(sku)
	r := ps.replica(p, i)
	switch op := ps.rng.IntN(100); {
	case op < 18:
		if !r.alive {
			pe.stats.nodeDown++
			return
		}
		q := int64(1 + ps.rng.IntN(6))
		if _, err := r.node.Restock(bg, sku, q); err != nil {
			ps.t.Fatalf("seed %d: restock at %s partition %d: %v", ps.seed, r.name, p, err)
		}
		es.restocked[sku] += q
		es.stats.restocks++
		pe.logf("%s restocks %d of %s", r.name, q, sku)
	case op < 55:
		at := p
		misrouted := ps.rng.IntN(6) == 0
		if misrouted {
			at = (p + 1 + ps.rng.IntN(len(ps.parts)-1)) % len(ps.parts)
		}
		n := ps.replica(at, i)
		if !n.alive {
			pe.stats.nodeDown++
			return
		}
		q := int64(1 + ps.rng.IntN(3))
		ttl := time.Duration(1+ps.rng.IntN(8)) * time.Second
		if misrouted && isEscrowSku(sku) {
			pe.stats.escrowMisrouted++
		}
		res, err := n.node.Reserve(bg, sku, q, ttl, region.Idem{})
		ps.parts[at].process(i)
		pe.processTouched()
		if err != nil {
			es.expect(err, "reserve", region.CodeInsufficientStock, region.CodeHomeUnavailable, region.CodeUnavailable)
			es.stats.refused++
			pe.logf("%s partition %d reserves %d of %s: %v", r.name, at, q, sku, err)
			return
		}
		dec, _ := region.ReservationHome(res.ID)
		if part, ok := region.ReservationPartition(res.ID); !ok || part != p {
			ps.t.Fatalf("seed %d: reservation %s of %s names partition %d (%v), not its sku's %d", ps.seed, res.ID, sku, part, ok, p)
		}
		switch {
		case dec != string(names[home]):
			if !isEscrowSku(sku) || dec != string(r.name) {
				ps.t.Fatalf("seed %d: %s partition %d reserved %s of %s, decided at %s (home %s)", ps.seed, r.name, at, res.ID, sku, dec, names[home])
			}
			es.stats.fromRights++
		case i != home && isEscrowSku(sku):
			es.stats.escalated++
		default:
			es.stats.atHome++
		}
		if misrouted {
			if isEscrowSku(sku) {
				pe.stats.escrowMisroutedDecided++
			} else {
				pe.stats.misrouted++
			}
		}
		es.stats.reserved++
		es.acked[res.ID] = &ackedRes{sku: sku, qty: q, state: region.StateHeld}
		pe.open = append(pe.open, res.ID)
		pe.logf("%s partition %d reserves %d of %s for %s: %s", r.name, at, q, sku, ttl, res.ID)
		return
	case op < 80:
		// A held reservation is committed or released, mostly at the
		// replica that decided it (its id names its region and
		// partition), sometimes at any replica of any region, which
		// forwards it.
		if len(pe.open) == 0 {
			return
		}
		k := ps.rng.IntN(len(pe.open))
		id := pe.open[k]
		dec, _ := region.ReservationHome(id)
		p, _ = region.ReservationPartition(id)
		es = pe.es[p]
		at := p
		if ps.rng.IntN(4) != 0 {
			i = slices.Index(names, crdt.ReplicaID(dec))
		} else {
			at = ps.rng.IntN(len(ps.parts))
		}
		n := ps.replica(at, i)
		if !n.alive {
			pe.stats.nodeDown++
			return
		}
		commit := ps.rng.IntN(2) == 0
		var res region.Reservation
		var err error
		if commit {
			res, err = n.node.Commit(bg, id, region.Idem{})
		} else {
			res, err = n.node.Release(bg, id, region.Idem{})
		}
		ps.parts[at].process(i)
		pe.processTouched()
		pe.logf("%s partition %d: commit %v %s: %v", n.name, at, commit, id, err)
		if es.settled(commit, id, res, err) {
			pe.open = slices.Delete(pe.open, k, k+1)
		}
		return
	case op < 85:
		// An adjustment down, decided by the sku's home.
		if !r.alive {
			pe.stats.nodeDown++
			return
		}
		q := int64(1 + ps.rng.IntN(2))
		_, err := r.node.Adjust(bg, sku, -q, "sim")
		pe.logf("%s adjusts %s by -%d: %v", r.name, sku, q, err)
		if err != nil {
			es.expect(err, "adjust", region.CodeInsufficientStock, region.CodeHomeUnavailable, region.CodeUnavailable)
		} else if i == home {
			es.adjusted[sku] += q
			es.stats.adjusted++
		} // else the forwarder saw it decided
	case op < 92:
		// Time passes: holds expire.
		pe.advance(time.Duration(200+ps.rng.IntN(4000)) * time.Millisecond)
		pe.expireAll()
		pe.es[0].stats.expiries++
		return
	default:
		// The region's nodes return the rights of their idle skus.
		pe.returnIdle(i)
		return
	}
	ps.parts[p].process(i)
	pe.processTouched()
}

// expireAll expires the due holds of every replica that runs.
func (pe *pesim) expireAll() {
	ps := pe.ps
	for p, s := range ps.parts {
		for i, r := range s.regions {
			if r.alive {
				if err := r.node.ExpireDue(); err != nil {
					ps.t.Fatalf("seed %d: expire at %s partition %d: %v", ps.seed, r.name, p, err)
				}
				s.process(i)
			}
		}
	}
}

// returnIdle has every running replica of region i return the rights of
// its idle skus.
func (pe *pesim) returnIdle(i int) {
	ps := pe.ps
	for p, s := range ps.parts {
		r := s.regions[i]
		if !r.alive {
			continue
		}
		es := pe.es[p]
		before := es.returned(i)
		r.node.ReturnIdleRights()
		s.process(i)
		pe.processTouched()
		if es.returned(i) > before {
			es.stats.returns++
			pe.logf("%s partition %d returns idle rights", r.name, p)
		}
	}
}

// check runs every partition's esim.check.
func (pe *pesim) check(where string) {
	for _, es := range pe.es {
		es.check(where)
	}
}

// step advances virtual time by dt (psim.step: every partition's step,
// where keys are) and checks.
func (pe *pesim) step(dt time.Duration) {
	pe.ps.step(dt)
	pe.check("step")
}

// advance lets d of virtual time pass in steps, checking after each.
func (pe *pesim) advance(d time.Duration) {
	for end := pe.ps.clock.t.Add(d); pe.ps.clock.t.Before(end); {
		pe.step(time.Duration(20+pe.ps.rng.IntN(100)) * time.Millisecond)
	}
}

// catchingUp reports whether some replica is catching up.
func (pe *pesim) catchingUp() bool {
	return slices.ContainsFunc(pe.ps.parts, func(s *sim) bool {
		return slices.ContainsFunc(s.regions, func(r *simRegion) bool { return r.node.CatchingUp() })
	})
}

// heal brings every node up, makes every link whole and the network
// lossless, and runs until every partition converged on the join of
// every acknowledged write not lost and no replica is catching up.
func (pe *pesim) heal(what string) {
	ps := pe.ps
	for slices.ContainsFunc(ps.parts, func(s *sim) bool {
		return slices.ContainsFunc(s.regions, func(r *simRegion) bool { return !r.restartAt.IsZero() })
	}) {
		pe.step(10 * time.Millisecond)
	}
	for _, s := range ps.parts {
		for i, r := range s.regions {
			if !r.alive {
				s.start(i)
			}
		}
		s.loss, s.dup = 0, 0
	}
	clear(ps.cut)
	for i := range names {
		ps.connectivity(i)
	}
	deadline := ps.clock.t.Add(5 * time.Minute)
	for !ps.converged() || pe.catchingUp() {
		if ps.clock.t.After(deadline) {
			for p, s := range ps.parts {
				for _, r := range s.regions {
					a := r.node.Applied()
					g, _ := r.node.ReadObjects(nil, s.skus)
					ps.t.Logf("partition %d: %s (as %s, catching up %v) applied=%v", p, r.name, r.node.Self(), r.node.CatchingUp(), a.VV)
					for _, k := range s.skus {
						if got, want := g.Items[k], s.ref.Items[k]; (got == nil) != (want == nil) || (got != nil && !bytes.Equal(crdt.EncodeItem(got), crdt.EncodeItem(want))) {
							ps.t.Logf("  item %s: got %+v want %+v", k, got, want)
						}
					}
				}
			}
			ps.t.Fatalf("seed %d: partitions did not converge within 5 virtual minutes %s", ps.seed, what)
		}
		pe.step(10 * time.Millisecond)
	}
}

// checkConverged runs every partition's esim.checkConverged.
func (pe *pesim) checkConverged(what string) {
	for _, es := range pe.es {
		es.checkConverged(what)
	}
}

// runPesim runs one seeded history of escrow skus in a partitioned
// cluster, heals it and checks the outcome; then lets every hold expire
// and every replica return its idle rights, and checks that the rights
// went home.
func runPesim(t *testing.T, seed uint64, partitions int, trace bool) {
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("replay with go test -v ./sync/protocol -run 'TestSimulationPartitionedEscrow$' -args -simpe.seed=%d -simpe.partitions=%d", seed, partitions)
		}
	})
	pe := newPesim(t, seed, partitions)
	ps := pe.ps
	ps.trace = trace
	for p, s := range ps.parts {
		s.trace = trace
		pe.es[p].trace = trace
		s.setApplyKeys([]int{0, 1, 3}[seed%3])
	}
	ops := (100 + ps.rng.IntN(150)) * partitions / 2
	for range ops {
		pe.randomOp()
		pe.check("op")
		ps.chaos()
		pe.check("chaos")
		pe.step(time.Duration(1+ps.rng.IntN(40)) * time.Millisecond)
	}
	pe.heal("after healing")
	pe.checkConverged("after healing")

	// Every hold expires, every replica returns its idle rights: the
	// rights of every sku go home, and the stock of every sku that no
	// lost write touched is what was restocked less what was committed
	// and adjusted away.
	pe.advance(9*time.Second + region.EscrowIdle)
	pe.expireAll()
	for i := range names {
		pe.returnIdle(i)
	}
	pe.heal("after the idle rights went home")
	pe.checkConverged("after the idle rights went home")
	for _, es := range pe.es {
		es.checkSettled()
	}

	// As in TestSimulationPartitions: no dot issued twice, no lost write
	// back, every write made at its keys' partition, every key where it
	// belongs.
	for p, s := range ps.parts {
		ps.checkWrites(p, s)
		for _, r := range s.regions {
			for _, st := range r.proto.Status() {
				s.stats.aeKeys += int(st.AEKeysPushed + st.AEKeysPulled)
				s.stats.deltas += int(st.DeltasSent)
			}
		}
		s.stats.seeds = 0
		ps.stats.simStats.add(s.stats)
	}
	ps.checkPlacement()

	for _, es := range pe.es {
		pe.stats.esimStats.add(es.stats)
	}
	pe.stats.simStats.add(ps.stats.simStats)
	pe.stats.seeds = 1
	petotalsMu.Lock()
	petotals.add(pe.stats)
	petotalsMu.Unlock()
}

// TestSimulationPartitionedEscrow runs seeded histories of escrow skus
// (and skus without escrow) in a cluster of partitioned regions: three
// regions of two nodes each, every node owning some of the partitions,
// one replica per region and partition (TestSimulationPartitions). A
// sku's item, ledgers and reservations are in its partition: its home's
// replica grants rights to the other regions' replicas of the partition,
// which decide reservations from them, escalate to the home, and commit,
// release and return idle rights there; reservations asked of a replica
// of another partition and commits and releases asked anywhere are
// forwarded to the region and partition that decides them. Faults crash,
// damage and restore nodes (all of a node's partitions at once) under
// loss, duplication and reordering of messages and of home requests and
// cut links. After every step the stores of every partition must show
// no sku oversold, no region using more rights than its home granted it,
// and no home granting or reserving a unit twice (esim.check), and hold
// only keys of their partition; after healing every region holds the
// same items and every region's rights cover its ledger's holds; once
// every hold expired and every region returned its idle rights, no
// rights are outstanding and the stock is what was restocked less what
// was committed and adjusted away.
func TestSimulationPartitionedEscrow(t *testing.T) {
	if p := *simpeParts; p != 0 && (p < 2 || p&(p-1) != 0 || p%simpNodes != 0) {
		t.Fatalf("-simpe.partitions %d: want 0 or a power of two of at least 2", p)
	}
	partitionsOf := func(seed uint64) int {
		if *simpeParts != 0 {
			return *simpeParts
		}
		return 2 << (1 - seed%2)
	}
	if *simpeSeed != 0 {
		runPesim(t, *simpeSeed, partitionsOf(*simpeSeed), testing.Verbose())
		return
	}
	petotalsMu.Lock()
	petotals = pesimStats{}
	petotalsMu.Unlock()
	start := time.Now()
	runSeeds(t, *simpeFirst, *simpeSeeds, func(t *testing.T, seed uint64) { runPesim(t, seed, partitionsOf(seed), false) })
	if t.Failed() {
		return
	}
	took := time.Since(start)
	st := petotals
	t.Logf("over %d seeds in %s (%.1f seeds/s): %d node crashes, %d link cuts, %d failed applies, %d lost tails, %d torn tails, %d power losses, %d restores, %d new incarnations, %d writes lost everywhere; "+
		"%d restocks, %d reservations (%d decided from rights, %d escalated to the home, %d at the home), %d refused, %d found the owning node down; "+
		"%d reservations without escrow forwarded by another partition's replica and decided; %d of escrow skus asked of another partition's replica, %d of them decided; "+
		"%d committed (%d from rights), %d released, %d adjustments, %d moved again after a fault, %d committed again by a new incarnation; "+
		"%d grants asked, %d given; %d home requests forwarded (%d to another partition, %d within the region), %d refused or lost, %d answers lost; %d returns of idle rights, %d recalls, %d expiry passes; "+
		"%d no-oversell checks (%d skipped), %d rights checks, %d home checks; %d of %d sku histories with stock changes lost, %d with uses lost",
		st.seeds, took.Round(time.Millisecond), float64(st.seeds)/took.Seconds(), st.crashes, st.cuts, st.failedApplies, st.lostTails, st.tornTails, st.powerLosses, st.restores, st.incarnations, st.lostWrites,
		st.restocks, st.reserved, st.fromRights, st.escalated, st.atHome, st.refused, st.nodeDown,
		st.misrouted, st.escrowMisrouted, st.escrowMisroutedDecided,
		st.committed, st.fromRightsCommitted, st.released, st.adjusted, st.again, st.committedTwice,
		st.grantsAsked, st.grantsGiven, st.forwarded+st.fwdRefused, st.crossPartition, st.intraRegion, st.fwdRefused, st.lostAnswers, st.returns, st.recalls, st.expiries,
		st.checks, st.skipped, st.rightsChecks, st.homeChecks, st.taintedStock, st.skuHistories, st.taintedUse)
	if *simpeSeeds >= 16 && (st.fromRights == 0 || st.escalated == 0 || st.fromRightsCommitted == 0 || st.released == 0 || st.grantsGiven == 0 || st.returns == 0 ||
		st.lostAnswers == 0 || st.misrouted == 0 || st.crossPartition == 0 || st.intraRegion == 0 || st.crashes == 0 || st.cuts == 0 ||
		st.lostTails+st.tornTails+st.powerLosses+st.restores == 0 || st.checks == 0 || st.rightsChecks == 0 || st.homeChecks == 0) {
		t.Fatal("the simulation did not exercise reservations and commits from rights, escalations, releases, grants, returns, lost answers, forwards to other partitions and within regions, node crashes, cuts and store faults, and its checks")
	}
}
