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
	"github.com/latticedb/lattice/region/config"
	"github.com/latticedb/lattice/region/store"
)

var (
	simpSeeds = flag.Int("simp.seeds", 100, "number of seeds TestSimulationPartitions runs")
	simpSeed  = flag.Uint64("simp.seed", 0, "run TestSimulationPartitions for this seed only (replay)")
	simpFirst = flag.Uint64("simp.first", 1, "first seed TestSimulationPartitions runs")
	simpParts = flag.Int("simp.partitions", 4, "partitions of the cluster TestSimulationPartitions runs (a power of two, at least 2)")
)

// simpNodes is how many nodes (processes) each region of a partitioned
// simulation runs; node n owns partitions n×P/simpNodes to
// (n+1)×P/simpNodes−1.
const simpNodes = 2

// psim is a partitioned cluster: three regions of simpNodes nodes each,
// every node owning some of the cluster's partitions, and one replica
// (a region.Node on a store of its own, with its protocol and driver) per
// region and partition. parts[p] is partition p: its replicas of the three
// regions, the network between them (a message of partition p goes only to
// partition p of another region, and only while the node owning p there
// is up) and the accounting of its writes, as a sim of its own (sim_test.go)
// that shares the clock, the random source and the links between regions
// with the others.
//
// Operations go to the replica of their key's partition (a cart's id, a
// sku) in a random region; reservations may come to any region and to a
// replica of another partition, which forwards them (simForwarder) to
// the replica of the sku's partition in its home region. Faults strike
// nodes: a crash, a lost or torn tail, a power loss, a restore and a
// failing disk take every partition of the node at once, each store in its
// own way (its own unsynced tail, its own last transactions); the other
// node of the region runs on.
type psim struct {
	t     *testing.T
	seed  uint64
	rng   *rand.Rand
	clock *simClock
	parts []*sim
	cut   map[[2]int]bool
	carts []string
	skus  []string
	// tainted are the skus a write lost or uncertain at some fault
	// touched: a decision may have counted stock that no region holds
	// any more, or missed a decrement that only a message still
	// carried, so no-oversell is not required of them.
	tainted map[string]bool
	// acked are the reservations the simulation made, by id, with the
	// outcome of the last transition their home acknowledged.
	acked map[string]*ackedRes
	// touched are the replicas ({partition, region}) forwarded requests
	// were served by during the operation under way.
	touched [][2]int
	// escrow, if set, reports the skus decided from rights: every region
	// keeps a ledger of such a sku (in its partition) for the holds it
	// decides from them.
	escrow func(sku string) bool
	trace  bool
	stats  psimStats
}

// psimStats counts what the partitioned simulations exercised, beyond
// the counters of simStats (whose chaos counters count node events).
type psimStats struct {
	simStats
	forwarded, refused, misrouted int
	reserved, committed, released int
	stockChecks, skuHistories     int
	taintedSkus, phantomChecks    int
}

func (a *psimStats) add(b psimStats) {
	a.simStats.add(b.simStats)
	a.forwarded += b.forwarded
	a.refused += b.refused
	a.misrouted += b.misrouted
	a.reserved += b.reserved
	a.committed += b.committed
	a.released += b.released
	a.stockChecks += b.stockChecks
	a.taintedSkus += b.taintedSkus
	a.phantomChecks += b.phantomChecks
	a.skuHistories += b.skuHistories
}

var (
	ptotalsMu sync.Mutex
	ptotals   psimStats
)

// partOf returns the partition of a cart id or a sku.
func (ps *psim) partOf(key string) int { return config.PartitionOf(key, len(ps.parts)) }

// owned returns the partitions node n of a region owns.
func (ps *psim) owned(n int) []int {
	per := len(ps.parts) / simpNodes
	var out []int
	for p := n * per; p < (n+1)*per; p++ {
		out = append(out, p)
	}
	return out
}

// replica returns the replica of region i in partition p.
func (ps *psim) replica(p, i int) *simRegion { return ps.parts[p].regions[i] }

// nodeUp reports whether node n of region i runs (its partitions go up
// and down together).
func (ps *psim) nodeUp(i, n int) bool { return ps.replica(ps.owned(n)[0], i).alive }

// homeIndex returns the index of a sku's home region.
func homeIndex(sku string) int { return int(sku[len(sku)-1]-'0') % len(names) }

// keysByPartition returns the first ids prefix0, prefix1, ... such that
// every one of partitions partitions has per of them.
func keysByPartition(prefix string, partitions, per int) []string {
	count := make([]int, partitions)
	var out []string
	for i := 0; len(out) < partitions*per; i++ {
		id := fmt.Sprintf("%s%d", prefix, i)
		if p := config.PartitionOf(id, partitions); count[p] < per {
			count[p]++
			out = append(out, id)
		}
	}
	return out
}

func newPsim(t *testing.T, seed uint64, partitions int) *psim {
	return newPsimWith(t, seed, partitions, keysByPartition("sku-", partitions, 3), nil, nil)
}

// newPsimWith is newPsim with skus for its skus; opts, if not nil,
// completes the options of the nodes of region i's replica of partition p
// after their partition and forwarder, and escrow, if not nil, reports
// the skus whose ledgers every region may keep (see misplaced).
func newPsimWith(t *testing.T, seed uint64, partitions int, skus []string, opts func(p, i int, o *region.Options), escrow func(string) bool) *psim {
	ps := &psim{t: t, seed: seed, rng: rand.New(rand.NewPCG(seed, seed^0x5bd1e9955bd1e995)), clock: &simClock{t: time.Unix(1_800_000_000, 0)},
		cut: map[[2]int]bool{}, tainted: map[string]bool{}, acked: map[string]*ackedRes{}, escrow: escrow}
	ps.carts = keysByPartition("cart-", partitions, 2)
	ps.skus = skus
	var dir string
	if base := simBaseDir(); base != "" {
		d, err := os.MkdirTemp(base, "lattice-simp-")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(d) })
		dir = d
	} else {
		dir = t.TempDir()
	}
	loss, dup := ps.rng.Float64()*0.2, ps.rng.Float64()*0.1
	delay := [2]time.Duration{time.Duration(5+ps.rng.IntN(95)) * time.Millisecond, time.Duration(1+ps.rng.IntN(60)) * time.Millisecond}
	for p := range partitions {
		s := &sim{t: t, seed: seed, rng: ps.rng, clock: ps.clock, cfg: simConfig(), cut: ps.cut, loss: loss, dup: dup, delay: delay,
			deltas: map[crdt.Dot]*crdt.Group{}, lost: map[crdt.Dot]bool{}, orphans: map[crdt.Dot]bool{}, lines: map[entryKey]crdt.Line{},
			dir: filepath.Join(dir, fmt.Sprintf("p%d", p)), tag: fmt.Sprintf(" p%d", p)}
		if err := os.Mkdir(s.dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for _, c := range ps.carts {
			if config.PartitionOf(c, partitions) == p {
				s.carts = append(s.carts, c)
			}
		}
		for _, k := range ps.skus {
			if config.PartitionOf(k, partitions) == p {
				s.skus = append(s.skus, k)
			}
		}
		s.nodeOpts = func(i int, o *region.Options) {
			o.Partition, o.Partitions = p, partitions
			o.Forwarder = simForwarder{ps, i}
			if opts != nil {
				opts(p, i, o)
			}
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
		ps.parts = append(ps.parts, s)
		for _, n := range names {
			s.regions = append(s.regions, &simRegion{name: n, path: filepath.Join(s.dir, string(n)+".db")})
			s.start(len(s.regions) - 1)
		}
	}
	for _, s := range ps.parts {
		for i := range s.regions {
			s.connectivity(i)
		}
	}
	return ps
}

func (ps *psim) logf(format string, args ...any) {
	if ps.trace {
		ps.t.Logf("%s "+format, append([]any{ps.clock.t.Format("05.000")}, args...)...)
	}
}

// simForwarder carries a home request from a replica of region from to
// the replica of the request's partition in its home region, as the API
// does between nodes of a region and between regions: refused while that
// replica's node is down or the link between the regions is cut.
type simForwarder struct {
	ps   *psim
	from int
}

func (f simForwarder) Forward(ctx context.Context, home string, req *region.HomeRequest) (*region.HomeResponse, error) {
	ps := f.ps
	h := slices.Index(names, crdt.ReplicaID(home))
	p, ok := req.Partition(len(ps.parts))
	if h < 0 || !ok {
		ps.t.Fatalf("seed %d: %s forwards %s to %s, which names no replica (partition %d, %v)", ps.seed, names[f.from], req.Op, home, p, ok)
	}
	r := ps.replica(p, h)
	if !r.alive || (h != f.from && ps.cut[[2]int{min(h, f.from), max(h, f.from)}]) {
		ps.stats.refused++
		return nil, region.Errorf(region.CodeHomeUnavailable, "sim: %s partition %d cannot be reached from %s", home, p, names[f.from])
	}
	ps.stats.forwarded++
	ps.touched = append(ps.touched, [2]int{p, h})
	return r.node.ServeForwarded(ctx, req), nil
}

// openRes are the reservations the simulation holds open, to commit or
// release later from anywhere.
type openRes struct{ ids []string }

// randomOp runs one operation at the replica of its key's partition in
// a random region (or, for some reservations, of another partition),
// then carries out the output of every replica it wrote at.
func (ps *psim) randomOp(open *openRes) {
	i := ps.rng.IntN(len(names))
	cart := ps.carts[ps.rng.IntN(len(ps.carts))]
	sku := ps.skus[ps.rng.IntN(len(ps.skus))]
	p := ps.partOf(cart)
	var err error
	switch op := ps.rng.IntN(100); {
	case op < 50:
		n := ps.replica(p, i)
		if !n.alive {
			return
		}
		switch {
		case op < 22:
			_, err = n.node.AddItem(bg, cart, sku, int64(1+ps.rng.IntN(3)))
		case op < 34:
			_, err = n.node.SetItem(bg, cart, sku, int64(ps.rng.IntN(5)))
		case op < 45:
			_, err = n.node.RemoveItem(bg, cart, sku)
		default:
			_, err = n.node.ClearCart(bg, cart)
		}
	case op < 65:
		p = ps.partOf(sku)
		n := ps.replica(p, i)
		if !n.alive {
			return
		}
		_, err = n.node.Restock(bg, sku, int64(1+ps.rng.IntN(5)))
	case op < 88:
		// A reservation, at a random region; one in four at the replica
		// of another partition, which must forward it (also within its
		// own region).
		p = ps.partOf(sku)
		misrouted := ps.rng.IntN(4) == 0
		if misrouted {
			p = (p + 1 + ps.rng.IntN(len(ps.parts)-1)) % len(ps.parts)
		}
		n := ps.replica(p, i)
		if !n.alive {
			return
		}
		qty := int64(1 + ps.rng.IntN(3))
		res, rerr := n.node.Reserve(bg, sku, qty, time.Minute, region.Idem{})
		if rerr != nil {
			ps.expect(rerr, "reserve", region.CodeInsufficientStock, region.CodeHomeUnavailable, region.CodeUnavailable)
			var e *region.Error
			if errors.As(rerr, &e) && e.Code == region.CodeInsufficientStock {
				// Decided by the sku's home replica: it has too little.
				h := ps.replica(ps.partOf(sku), homeIndex(sku))
				it, err := h.node.GetItem(bg, sku, false)
				if err != nil || it.Available >= qty {
					ps.t.Fatalf("seed %d: %s partition %d: %d of %s refused (%v), but its home %s has %d available (%v)",
						ps.seed, names[i], p, qty, sku, rerr, h.name, it.Available, err)
				}
			}
			break
		}
		ps.stats.reserved++
		ps.acked[res.ID] = &ackedRes{sku: sku, qty: qty, state: region.StateHeld}
		ps.logf("%s partition %d reserves %d of %s: %s", names[i], p, qty, sku, res.ID)
		if misrouted {
			ps.stats.misrouted++
		}
		if part, ok := region.ReservationPartition(res.ID); !ok || part != ps.partOf(sku) {
			ps.t.Fatalf("seed %d: reservation %s of %s names partition %d (%v), not its sku's %d", ps.seed, res.ID, sku, part, ok, ps.partOf(sku))
		}
		if ps.rng.IntN(2) == 0 {
			// Committed at once by the replica that reserved: nothing
			// changed since the home decided the reservation.
			if _, err = n.node.Commit(bg, res.ID, region.Idem{}); err == nil {
				ps.stats.committed++
				ps.acked[res.ID].state = region.StateCommitted
				ps.logf("%s committed at once", res.ID)
			}
		} else {
			open.ids = append(open.ids, res.ID)
		}
	default:
		// A reservation held open is committed or released later, from
		// any replica of any region: the id names its home and
		// partition.
		if len(open.ids) == 0 {
			return
		}
		k := ps.rng.IntN(len(open.ids))
		id := open.ids[k]
		p = ps.rng.IntN(len(ps.parts))
		n := ps.replica(p, i)
		if !n.alive {
			return
		}
		commit := ps.rng.IntN(2) == 0
		var rerr error
		if commit {
			_, rerr = n.node.Commit(bg, id, region.Idem{})
		} else {
			_, rerr = n.node.Release(bg, id, region.Idem{})
		}
		ps.logf("%s partition %d: commit %v %s: %v", names[i], p, commit, id, rerr)
		switch {
		case rerr == nil && commit:
			ps.stats.committed++
			ps.acked[id].state = region.StateCommitted
		case rerr == nil:
			ps.stats.released++
			ps.acked[id].state = region.StateReleased
		default:
			// The home may be out of reach or catching up, or may have
			// lost the reservation (not_found) or let it expire; nothing
			// else committed or released it.
			ps.expect(rerr, "commit or release", region.CodeHomeUnavailable, region.CodeUnavailable, region.CodeNotFound, region.CodeReservationExpired)
		}
		var e *region.Error
		if rerr == nil || errors.As(rerr, &e) && e.Code != region.CodeHomeUnavailable && e.Code != region.CodeUnavailable {
			open.ids = slices.Delete(open.ids, k, k+1)
		}
	}
	if err != nil {
		ps.t.Fatalf("seed %d: op at %s partition %d: %v", ps.seed, names[i], p, err)
	}
	ps.parts[p].process(i)
	ps.processTouched()
}

// expect fails unless err is a region error with one of codes.
func (ps *psim) expect(err error, what string, codes ...string) {
	var e *region.Error
	if !errors.As(err, &e) || !slices.Contains(codes, e.Code) {
		ps.t.Fatalf("seed %d: %s: %v, not one of %v", ps.seed, what, err, codes)
	}
}

// processTouched carries out the output of the replicas forwarded
// requests wrote at.
func (ps *psim) processTouched() {
	for len(ps.touched) > 0 {
		pi := ps.touched[0]
		ps.touched = ps.touched[1:]
		if ps.replica(pi[0], pi[1]).alive {
			ps.parts[pi[0]].process(pi[1])
		}
	}
}

// step advances virtual time by dt and runs every partition's step at
// the new time, then checks where keys are and that no sku is oversold.
func (ps *psim) step(dt time.Duration) {
	ps.clock.t = ps.clock.t.Add(dt)
	for _, s := range ps.parts {
		s.step(0)
	}
	for i := range names {
		for n := range simpNodes {
			for _, p := range ps.owned(n) {
				if ps.replica(p, i).alive != ps.nodeUp(i, n) {
					ps.t.Fatalf("seed %d at %s: the partitions of %s node %d are not all up or all down", ps.seed, ps.clock.t.Format("05.000"), names[i], n)
				}
			}
		}
	}
	ps.checkPlacement()
	ps.checkStock()
}

// connectivity tells every partition's protocols of region i which peers
// they reach.
func (ps *psim) connectivity(i int) {
	for _, s := range ps.parts {
		s.connectivity(i)
	}
}

// chaos is sim.chaos with faults that strike a node: every partition it
// owns at once.
func (ps *psim) chaos() {
	i, n := ps.rng.IntN(len(names)), ps.rng.IntN(simpNodes)
	owned := ps.owned(n)
	switch ps.rng.IntN(100) {
	case 0, 1:
		a, b := ps.rng.IntN(3), ps.rng.IntN(3)
		if a != b {
			k := [2]int{min(a, b), max(a, b)}
			ps.cut[k] = !ps.cut[k]
			ps.logf("link %s-%s cut=%v", names[a], names[b], ps.cut[k])
			ps.stats.cuts++
			ps.connectivity(a)
		}
	case 4:
		a, b := ps.rng.IntN(3), ps.rng.IntN(3)
		if k := [2]int{min(a, b), max(a, b)}; a != b && !ps.cut[k] {
			ps.logf("link %s-%s flaps", names[a], names[b])
			ps.cut[k] = true
			ps.connectivity(a)
			ps.cut[k] = false
			ps.connectivity(a)
		}
	case 3:
		// The node's disk fails some applies of each of its stores.
		if ps.nodeUp(i, n) {
			for _, p := range owned {
				ps.replica(p, i).failing = 1 + ps.rng.IntN(4)
			}
			ps.logf("%s node %d: stores fail some applies", names[i], n)
		}
	case 2:
		if ps.nodeUp(i, n) {
			clean := ps.rng.IntN(2) == 0
			ps.logf("crash %s node %d (clean stop %v)", names[i], n, clean)
			ps.stats.crashes++
			for _, p := range owned {
				ps.parts[p].down(i, clean)
			}
		} else if ps.replica(owned[0], i).restartAt.IsZero() {
			ps.logf("restart %s node %d", names[i], n)
			for _, p := range owned {
				ps.parts[p].restart(i)
			}
		}
	case 5, 6:
		torn := ps.rng.IntN(2) == 0
		if torn {
			ps.stats.tornTails++
		} else {
			ps.stats.lostTails++
		}
		ps.fault(i, n, func(s *sim, r *simRegion) {
			k := 1 + ps.rng.IntN(6)
			cut, err := store.CutTransactions(r.path, k, torn)
			if err != nil {
				ps.t.Fatal(err)
			}
			s.logf("%s loses its last %d transactions (%d bytes, torn %v)", r.name, k, cut, torn)
		})
	case 7:
		ps.stats.powerLosses++
		ps.fault(i, n, func(s *sim, r *simRegion) {
			if err := os.Truncate(r.path, r.synced); err != nil {
				ps.t.Fatal(err)
			}
			s.logf("%s loses power: its file goes back to %d bytes", r.name, r.synced)
		})
	case 8:
		// A snapshot of every store of the node, taken while it runs.
		if !ps.nodeUp(i, n) {
			return
		}
		for _, p := range owned {
			s, r := ps.parts[p], ps.replica(p, i)
			path := filepath.Join(s.dir, string(r.name)+".backup")
			f, err := os.Create(path)
			if err != nil {
				ps.t.Fatal(err)
			}
			_, err = store.Backup(r.path, f)
			if err == nil {
				err = f.Close()
			}
			if err != nil {
				ps.t.Fatalf("seed %d: backup of %s partition %d: %v", ps.seed, r.name, p, err)
			}
			r.backup, r.backupState = path, s.readState(i)
		}
		ps.stats.backups++
		ps.logf("%s node %d backed up", names[i], n)
	case 9:
		if ps.replica(owned[0], i).backup == "" {
			return
		}
		ps.stats.restores++
		ps.fault(i, n, func(s *sim, r *simRegion) {
			if err := store.Restore(r.path, r.backup); err != nil {
				ps.t.Fatalf("seed %d: restore of %s: %v", ps.seed, r.name, err)
			}
			s.logf("%s restored from its snapshot", r.name)
		})
	}
}

// fault is sim.fault of every partition node n of region i owns: each
// store is damaged by damage, and the node starts again once the restart
// of each of them is due. Writes a fault left lost or uncertain taint
// their skus.
func (ps *psim) fault(i, n int, damage func(s *sim, r *simRegion)) {
	ps.logf("fault at %s node %d", names[i], n)
	var at time.Time
	for _, p := range ps.owned(n) {
		s := ps.parts[p]
		s.fault(i, func(r *simRegion) { damage(s, r) })
		if r := s.regions[i]; r.restartAt.After(at) {
			at = r.restartAt
		}
	}
	for _, p := range ps.owned(n) {
		if r := ps.replica(p, i); !r.restartAt.IsZero() {
			r.restartAt = at
		}
	}
	for _, s := range ps.parts {
		for _, m := range []map[crdt.Dot]bool{s.lost, s.uncertain} {
			for d := range m {
				for sku := range s.deltas[d].Items {
					ps.tainted[sku] = true
				}
			}
		}
	}
}

// misplaced returns why a key must not be in the store of region i's
// replica of partition p, or "" if it may be: every cart (its head and
// lines) and item is in the stores of its partition only, every ledger
// in its sku's partition of its sku's home only (of an escrow sku, of
// any region that decides from rights), and every reservation
// record at the home and partition its id names.
func (ps *psim) misplaced(p, i int, key string) string {
	kind, rest, _ := strings.Cut(key, "/")
	switch kind {
	case "c", "i":
		if q := ps.partOf(rest); q != p {
			return fmt.Sprintf("a key of partition %d", q)
		}
	case "e":
		id, _, _ := strings.Cut(rest, "/")
		if q := ps.partOf(id); q != p {
			return fmt.Sprintf("a line of cart %s of partition %d", id, q)
		}
	case "l":
		if q, h := ps.partOf(rest), homeIndex(rest); q != p || h != i && (ps.escrow == nil || !ps.escrow(rest)) {
			return fmt.Sprintf("the ledger of a sku of partition %d homed at %s", q, names[h])
		}
	case "r":
		home, hok := region.ReservationHome(rest)
		q, pok := region.ReservationPartition(rest)
		if !hok || !pok || home != string(names[i]) || q != p {
			return fmt.Sprintf("a reservation of %s partition %d", home, q)
		}
	}
	return ""
}

// checkPlacement verifies that every open store holds only keys of its
// partition (misplaced).
func (ps *psim) checkPlacement() {
	for p, s := range ps.parts {
		for i, r := range s.regions {
			if r.store == nil {
				continue
			}
			var bad, why string
			err := r.store.Scan("", func(k string, _ []byte, _ error) bool {
				if why = ps.misplaced(p, i, k); why != "" {
					bad = k
					return false
				}
				return true
			})
			if err != nil {
				ps.t.Fatal(err)
			}
			if bad != "" {
				ps.t.Fatalf("seed %d at %s: the store of %s partition %d holds %s, %s", ps.seed, ps.clock.t.Format("05.000"), names[i], p, bad, why)
			}
		}
	}
}

// ackedRes is a reservation the simulation made: its sku, units, and the
// state its home last acknowledged (held, committed or released).
type ackedRes struct {
	sku   string
	qty   int64
	state string
}

// phantom returns the units of sku that home replica h holds for
// reservations it acknowledged as committed or released: a fault took
// the transition from its store (its peers may hold what the commit took
// off the stock; its ledger cannot get it back), and the hold stays
// until its ttl.
func (ps *psim) phantom(h *simRegion, sku string) int64 {
	var units int64
	for id, a := range ps.acked {
		if a.sku != sku || a.state == region.StateHeld {
			continue
		}
		if r, err := h.node.GetReservation(bg, id); err == nil && r.State == region.StateHeld {
			units += a.qty
		}
	}
	return units
}

// checkStock verifies no-oversell where each sku's decisions are made:
// at the replica of its partition in its home region, while it runs and
// decides (it does not while catching up), its stock is not negative and
// covers the units its ledger holds, phantom holds aside (see phantom).
// Tainted skus are not required to.
func (ps *psim) checkStock() {
	for _, sku := range ps.skus {
		if ps.tainted[sku] {
			continue
		}
		r := ps.replica(ps.partOf(sku), homeIndex(sku))
		if !r.alive || r.node.CatchingUp() {
			continue
		}
		it, err := r.node.GetItem(bg, sku, false)
		var e *region.Error
		if errors.As(err, &e) && e.Code == region.CodeUnavailable {
			continue // damaged, awaiting repair
		}
		if err != nil {
			ps.t.Fatal(err)
		}
		ps.stats.stockChecks++
		var phantom int64
		if it.Available < 0 {
			phantom = ps.phantom(r, sku)
			ps.stats.phantomChecks++
		}
		if it.Stock < 0 || it.Available+phantom < 0 {
			ps.t.Fatalf("seed %d at %s: %s is oversold at its home %s: stock %d, reserved %d (%d of them for reservations it acknowledged as committed or released), available %d",
				ps.seed, ps.clock.t.Format("05.000"), sku, r.name, it.Stock, it.Reserved, phantom, it.Available)
		}
	}
}

// converged reports whether every partition converged.
func (ps *psim) converged() bool {
	for _, s := range ps.parts {
		if !s.converged() {
			return false
		}
	}
	return true
}

// runPsim runs one seeded history of a partitioned cluster, heals it and
// checks the outcome.
func runPsim(t *testing.T, seed uint64, partitions int, trace bool) {
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("replay with go test -v ./sync/protocol -run 'TestSimulationPartitions$' -args -simp.seed=%d -simp.partitions=%d", seed, partitions)
		}
	})
	ps := newPsim(t, seed, partitions)
	ps.trace = trace
	for _, s := range ps.parts {
		s.trace = trace
		s.setApplyKeys([]int{0, 1, 3}[seed%3])
	}
	var open openRes
	ops := (60 + ps.rng.IntN(120)) * partitions / 2
	for range ops {
		ps.randomOp(&open)
		ps.chaos()
		ps.step(time.Duration(1+ps.rng.IntN(40)) * time.Millisecond)
	}
	// A node a fault took down starts when its restart is due.
	for slices.ContainsFunc(ps.parts, func(s *sim) bool {
		return slices.ContainsFunc(s.regions, func(r *simRegion) bool { return !r.restartAt.IsZero() })
	}) {
		ps.step(10 * time.Millisecond)
	}
	// Heal: every node up, every link whole, no more loss.
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
	for !ps.converged() {
		if ps.clock.t.After(deadline) {
			for p, s := range ps.parts {
				s.checkEntries()
				s.checkLost()
				if !s.converged() {
					for _, r := range s.regions {
						a := r.node.Applied()
						t.Logf("partition %d: %s (as %s) applied=%v, %d dots out of order, %d unheld", p, r.name, r.node.Self(), a.VV, len(a.Cloud), len(unheld(&s.dots, &a)))
						g, _ := r.node.ReadObjects(s.carts, s.skus)
						for _, c := range s.carts {
							if got, want := g.Carts[c], s.ref.Carts[c]; got == nil || want == nil || !bytes.Equal(crdt.EncodeCart(got), crdt.EncodeCart(want)) {
								t.Logf("  cart %s: got %+v want %+v", c, got, want)
							}
						}
						for _, k := range s.skus {
							if got, want := g.Items[k], s.ref.Items[k]; (got == nil) != (want == nil) || (got != nil && !bytes.Equal(crdt.EncodeItem(got), crdt.EncodeItem(want))) {
								t.Logf("  item %s: got %+v want %+v", k, got, want)
							}
						}
					}
					t.Logf("partition %d: want dots=%v (%d writes lost, %d uncertain)", p, s.dots.VV, len(s.lost), len(s.uncertain))
				}
			}
			t.Fatalf("seed %d: partitions did not converge within 5 virtual minutes after healing", seed)
		}
		ps.step(10 * time.Millisecond)
	}
	for p, s := range ps.parts {
		ps.checkWrites(p, s)
		// No-oversell of what every region holds: the stock of every
		// untainted sku is not negative.
		for _, sku := range s.skus {
			ps.stats.skuHistories++
			if ps.tainted[sku] {
				ps.stats.taintedSkus++
				continue
			}
			if it := s.ref.Items[sku]; it != nil && it.Stock.Value() < 0 {
				t.Fatalf("seed %d: %s is oversold: the regions converged on stock %d", seed, sku, it.Stock.Value())
			}
		}
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
	ps.checkStock()
	ps.stats.seeds = 1
	ptotalsMu.Lock()
	ptotals.add(ps.stats)
	ptotalsMu.Unlock()
}

// TestSimulationPartitions runs seeded histories of a cluster of
// -simp.partitions partitions (4 by default): three regions of two nodes
// each, every node owning half of the partitions, one replica per region
// and partition. Operations go to the replica of their key's partition
// (reservations also to another partition's, which forwards them to the
// sku's home and partition); faults crash, damage and restore nodes,
// all of a node's partitions at once, under loss, duplication, reordering
// and cut links. After every step every partition's claims are checked as
// in TestSimulation, every store holds only keys of its own partition
// (ledgers and reservations only at their sku's home), and no sku is
// oversold at its home; after healing every partition converges on the
// join of its acknowledged writes that were not lost, no two regions hold
// one entry with different lines, and no lost write or removed entry
// comes back.
func TestSimulationPartitions(t *testing.T) {
	partitions := *simpParts
	if partitions < 2 || partitions&(partitions-1) != 0 || partitions%simpNodes != 0 || partitions > config.MaxPartitions {
		t.Fatalf("-simp.partitions %d: want a power of two from 2 to %d", partitions, config.MaxPartitions)
	}
	if *simpSeed != 0 {
		runPsim(t, *simpSeed, partitions, testing.Verbose())
		return
	}
	ptotalsMu.Lock()
	ptotals = psimStats{}
	ptotalsMu.Unlock()
	start := time.Now()
	runSeeds(t, *simpFirst, *simpSeeds, func(t *testing.T, seed uint64) { runPsim(t, seed, partitions, false) })
	if t.Failed() {
		return
	}
	took := time.Since(start)
	st := ptotals
	t.Logf("over %d seeds of %d partitions in %s (%.1f seeds/s): %d node crashes, %d link cuts, %d failed applies, %d delta messages, %d keys repaired by anti-entropy; "+
		"node faults: %d lost tails, %d torn tails, %d power losses, %d restores of %d snapshots; %d new incarnations; "+
		"%d writes cut from a store, %d of them lost everywhere, %d back, %d orphaned (%d unclaimed somewhere at the end); "+
		"%d reservations (%d of them asked of another partition's replica), %d committed, %d released, %d home requests forwarded, %d refused; "+
		"%d no-oversell checks at the home (%d of them with holds beyond the stock, looked up), %d of %d sku histories tainted by lost writes",
		st.seeds, partitions, took.Round(time.Millisecond), float64(st.seeds)/took.Seconds(), st.crashes, st.cuts, st.failedApplies, st.deltas, st.aeKeys,
		st.lostTails, st.tornTails, st.powerLosses, st.restores, st.backups, st.incarnations,
		st.cutWrites, st.lostWrites, st.rescued, st.orphans, st.unclaimed,
		st.reserved, st.misrouted, st.committed, st.released, st.forwarded, st.refused,
		st.stockChecks, st.phantomChecks, st.taintedSkus, st.skuHistories)
	if *simpSeeds >= 30 && (st.crashes == 0 || st.cuts == 0 || st.aeKeys == 0 || st.failedApplies == 0 || st.lostTails == 0 || st.tornTails == 0 ||
		st.powerLosses == 0 || st.restores == 0 || st.lostWrites == 0 || st.forwarded == 0 || st.refused == 0 || st.committed == 0) {
		t.Fatal("the simulation did not exercise node crashes and faults, partitions, failed applies, anti-entropy, lost writes and forwarded reservations")
	}
}

// checkWrites checks partition p (s) once it has converged after healing:
// no dot issued twice (checkEntries), no lost write back (checkLost, the
// uncertain writes counted as lost), and every write made at its keys'
// partition.
func (ps *psim) checkWrites(p int, s *sim) {
	s.checkEntries()
	var applied []crdt.Context
	for _, r := range s.regions {
		applied = append(applied, r.node.Applied())
	}
	for d := range s.orphans {
		if !s.lost[d] && !s.uncertain[d] && slices.ContainsFunc(applied, func(a crdt.Context) bool { return !a.Contains(d) }) {
			s.stats.unclaimed++
		}
	}
	for d := range s.uncertain {
		s.lost[d] = true
		s.stats.lostWrites++
	}
	s.uncertain = nil
	s.checkLost()
	for d, g := range s.deltas {
		carts, items := g.Keys()
		for _, k := range append(carts, items...) {
			if q := ps.partOf(k); q != p {
				ps.t.Fatalf("seed %d: write %v of partition %d names %s, of partition %d", ps.seed, d, p, k, q)
			}
		}
	}
}
