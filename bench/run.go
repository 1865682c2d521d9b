package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/latticedb/lattice/cmd/server"
	"github.com/latticedb/lattice/crdt"
	"github.com/latticedb/lattice/region"
	"github.com/latticedb/lattice/region/config"
	"github.com/latticedb/lattice/sync/protocol"
)

// InitialStock is the stock each hot sku is given, at its home, before
// the workload starts.
const InitialStock = 50

// Config configures a benchmark run.
type Config struct {
	// Regions is the number of regions (1..MaxRegions); see RegionNames
	// and LatencyMatrix.
	Regions int
	// Partitions is the cluster's number of partitions (a power of two
	// 1..MaxPartitions); 0 means 1.
	Partitions int
	// Nodes is the number of nodes of each region (1..Partitions), each
	// owning a contiguous range of the partitions; 0 means 1. The
	// workload's requests for a region go to its nodes in turn.
	Nodes int
	// Rate is the target rate, operations per second.
	Rate float64
	// Duration is how long the measured workload runs, after Warmup.
	Duration time.Duration
	// Warmup is how long the workload runs before it is measured.
	Warmup time.Duration
	// Seed seeds the workload (and the emulated WAN's loss).
	Seed uint64
	// Latency is "wan" (LatencyMatrix) or "none".
	Latency string
	// LossPct is the emulated packet loss between regions, in percent.
	LossPct float64
	// Partition, if set, is "REGION@START+DUR": REGION is cut off from
	// every other region from START after the measured period begins, for
	// DUR or until the workload ends, whichever is first (see
	// ParsePartition).
	Partition string
	// Concurrency bounds the requests in flight.
	Concurrency int
	// Settle bounds the wait, after the workload, for every region to hold
	// every write and show the same state.
	Settle time.Duration
	// Durability is the regions' durability: always or everysec.
	Durability string
	// Carts is the number of carts of each set (add-only, mixed); 0 means
	// DefaultCarts.
	Carts int
	// Escrow adds escrow skus beside the hot skus: the config gets the
	// homes rules of EscrowHomes, and the workload reserves and restocks
	// both kinds alike (Workload.Escrow). A hold refused with
	// insufficient_stock is followed by a read of the sku's stock
	// (EscrowResult).
	Escrow bool
	// Stock is the stock each hot sku is given before the workload; 0
	// means InitialStock.
	Stock int64
	// RequestTimeout bounds one HTTP request of the workload.
	RequestTimeout time.Duration
	// Probe is how long the concern probe runs after the workload has
	// settled (see ConcernResult); 0 runs none (DefaultConfig sets
	// DefaultProbe).
	Probe time.Duration
	// Out is the directory the report is written to ("" writes nothing).
	Out string
	// Command is the command line, recorded in the report.
	Command string
	// Logger receives the regions' records (default: discarded).
	Logger *slog.Logger
	// Progress receives one line per phase (default: discarded).
	Progress io.Writer
}

// MaxCarts bounds --carts: the workload names every cart before the run.
const MaxCarts = 1_000_000

// MaxOps bounds the operations of a run (rate × (warm-up + duration)):
// the schedule is made, and every operation tracked, in memory.
const MaxOps = 5_000_000

// DefaultConfig returns the defaults of `lattice bench`: 3 regions of one
// node and one partition over the WAN, 500 ops/s for 20 s after a 2 s warm-up, seed 1, at most 128
// requests in flight, 60 s to settle, durability always, output in
// ./bench-out.
func DefaultConfig() Config {
	return Config{Regions: 3, Partitions: 1, Nodes: 1, Rate: 500, Duration: 20 * time.Second, Warmup: 2 * time.Second, Seed: 1,
		Latency: "wan", Concurrency: 128, Settle: 60 * time.Second, Durability: string(config.DurabilityAlways),
		RequestTimeout: 10 * time.Second, Probe: DefaultProbe, Out: "bench-out"}
}

// Validate reports the first problem of c.
func (c *Config) Validate() error {
	switch {
	case c.Regions < 1 || c.Regions > MaxRegions:
		return fmt.Errorf("bench: --regions %d, want 1..%d", c.Regions, MaxRegions)
	case c.Partitions < 0 || c.Partitions > MaxPartitions || c.Partitions&(c.Partitions-1) != 0:
		return fmt.Errorf("bench: --partitions %d, want a power of two 1..%d", c.Partitions, MaxPartitions)
	case c.Nodes < 0 || c.Nodes > max(c.Partitions, 1):
		return fmt.Errorf("bench: --nodes %d, want 1..%d (--partitions: each node owns at least one partition)", c.Nodes, max(c.Partitions, 1))
	case c.Regions*max(c.Nodes, 1) > MaxNodes:
		return fmt.Errorf("bench: --regions %d × --nodes %d = %d nodes, want at most %d (every node runs in this process)",
			c.Regions, c.Nodes, c.Regions*c.Nodes, MaxNodes)
	case !(c.Rate > 0) || c.Rate > 1e6:
		return fmt.Errorf("bench: --rate %v, want > 0 and at most 1,000,000", c.Rate)
	case c.Duration <= 0:
		return fmt.Errorf("bench: --duration %v, want > 0", c.Duration)
	case c.Warmup < 0:
		return fmt.Errorf("bench: --warmup %v, want ≥ 0", c.Warmup)
	case c.Latency != "wan" && c.Latency != "none":
		return fmt.Errorf("bench: --latency %q, want wan or none", c.Latency)
	case !(c.LossPct >= 0 && c.LossPct <= 100):
		return fmt.Errorf("bench: --loss %v, want 0..100", c.LossPct)
	case c.Concurrency < 1:
		return fmt.Errorf("bench: --concurrency %d, want ≥ 1", c.Concurrency)
	case c.Settle <= 0:
		return fmt.Errorf("bench: --settle %v, want > 0", c.Settle)
	case c.Durability != string(config.DurabilityAlways) && c.Durability != string(config.DurabilityEverySec):
		return fmt.Errorf("bench: --durability %q, want always or everysec", c.Durability)
	case c.Carts < 0 || c.Carts > MaxCarts:
		return fmt.Errorf("bench: --carts %d, want 0..%d", c.Carts, MaxCarts)
	case c.Rate*(c.Warmup.Seconds()+c.Duration.Seconds()) > MaxOps || c.Warmup+c.Duration <= 0:
		return fmt.Errorf("bench: --rate %v for --duration %v (and %v of warm-up) is %.0f operations, at most %d (the schedule is made before the run)",
			c.Rate, c.Duration, c.Warmup, c.Rate*(c.Warmup.Seconds()+c.Duration.Seconds()), MaxOps)
	case c.Stock < 0 || c.Stock > crdt.MaxQty:
		return fmt.Errorf("bench: --stock %d, want 0..%d (0 means %d)", c.Stock, crdt.MaxQty, InitialStock)
	case c.RequestTimeout <= 0:
		return fmt.Errorf("bench: request timeout %v, want > 0", c.RequestTimeout)
	case c.Probe < 0:
		return fmt.Errorf("bench: --probe %v, want ≥ 0", c.Probe)
	}
	if c.Partition != "" {
		p, err := ParsePartition(c.Partition)
		if err != nil {
			return err
		}
		if !slices.Contains(RegionNames(c.Regions), p.Region) {
			return fmt.Errorf("bench: --partition %q: region %q is not one of %s", c.Partition, p.Region,
				strings.Join(RegionNames(c.Regions), ", "))
		}
		if p.Start >= c.Duration {
			return fmt.Errorf("bench: --partition %q starts at or after the end of the measured period (--duration %s)", c.Partition, c.Duration)
		}
	}
	return nil
}

// Partition isolates Region from every other region from Start (after
// the measured period begins) for Duration.
type Partition struct {
	Region   string
	Start    time.Duration
	Duration time.Duration
}

// String formats p as ParsePartition reads it.
func (p Partition) String() string { return fmt.Sprintf("%s@%s+%s", p.Region, p.Start, p.Duration) }

// ParsePartition reads "REGION@START+DUR", START and DUR Go durations
// ("ap-south@5s+4s"): REGION is cut off from START for DUR.
func ParsePartition(s string) (Partition, error) {
	bad := func(why string) (Partition, error) {
		return Partition{}, fmt.Errorf("bench: --partition %q: %s (want REGION@START+DUR, for example ap-south@5s+4s)", s, why)
	}
	name, rest, ok := strings.Cut(s, "@")
	if !ok || name == "" {
		return bad("no REGION@")
	}
	start, dur, ok := strings.Cut(rest, "+")
	if !ok {
		return bad("no +DUR")
	}
	p := Partition{Region: name}
	var err error
	if p.Start, err = time.ParseDuration(start); err != nil || p.Start < 0 {
		return bad("START is not a duration ≥ 0")
	}
	if p.Duration, err = time.ParseDuration(dur); err != nil || p.Duration <= 0 {
		return bad("DUR is not a duration > 0")
	}
	return p, nil
}

// Run starts the regions, drives the workload, lets the regions settle,
// checks the outcome and, when cfg.Out is set, writes the report there.
// It returns an error when the benchmark could not run; a run whose
// correctness counters are not all 0 returns a Result with OK false.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	progress := cfg.Progress
	if progress == nil {
		progress = io.Discard
	}
	say := func(format string, args ...any) { fmt.Fprintf(progress, "bench: "+format+"\n", args...) }

	names := RegionNames(cfg.Regions)
	var latency map[string]int
	if cfg.Latency == "wan" {
		latency = LatencyMatrix(names)
	}
	var part *Partition
	partIdx := -1
	if cfg.Partition != "" {
		p, _ := ParsePartition(cfg.Partition)
		part, partIdx = &p, slices.Index(names, p.Region)
	}

	dir, err := os.MkdirTemp("", "lattice-bench-")
	if err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	defer os.RemoveAll(dir)

	lay := layout{partitions: max(cfg.Partitions, 1), nodes: max(cfg.Nodes, 1)}
	// The tracker asks the cluster which partition applied a dot; the
	// cluster is made after the hooks that feed the tracker.
	var running atomic.Pointer[cluster]
	tr := NewPartitionedTracker(names, lay.partitions, func(r, part int) crdt.Context {
		if c := running.Load(); c != nil {
			return c.appliedOf(r, part)
		}
		return crdt.Context{}
	})
	h := hooks{
		onPublish: func(r string, d region.Delta, at time.Time) {
			tr.Published(r, deltaPartition(d, lay.partitions), d.Seq, at)
		},
		onApply: func(r, _ string, rs []protocol.DotRange, at time.Time) { tr.Applied(r, rs, at) },
	}
	var homes []config.HomeRule
	if cfg.Escrow {
		homes = EscrowHomes(names)
	}
	say("starting %d regions (%s) of %d node(s) and %d partition(s), latency %s, loss %v %%, durability %s, escrow skus %v", len(names),
		strings.Join(names, ", "), lay.nodes, lay.partitions, cfg.Latency, cfg.LossPct, cfg.Durability, cfg.Escrow)
	c, err := startCluster(ctx, dir, names, lay, homes, latency, cfg.LossPct, cfg.Seed, config.Durability(cfg.Durability), cfg.Logger, h)
	if err != nil {
		return nil, err
	}
	running.Store(c)
	defer c.close()
	if err := poll(ctx, 30*time.Second, c.connected); err != nil {
		return nil, fmt.Errorf("bench: regions did not connect to each other: %w", err)
	}
	if err := poll(ctx, 30*time.Second, c.caughtUp); err != nil {
		return nil, fmt.Errorf("bench: regions did not finish their first anti-entropy with each other: %w", err)
	}

	sched, err := Generate(Workload{Seed: cfg.Seed, Rate: cfg.Rate, Span: cfg.Warmup + cfg.Duration,
		Regions: names, Home: c.cfg.Home, Carts: cfg.Carts, Escrow: cfg.Escrow})
	if err != nil {
		return nil, err
	}
	cl := newClient(c.urls(), cfg.Concurrency, cfg.RequestTimeout)
	defer cl.close()
	cl.names, cl.probeRefusals = names, cfg.Escrow

	// Set-up: stock for the hot skus, at their homes, seen everywhere.
	stock := StockModel{}
	initial := cfg.Stock
	if initial == 0 {
		initial = InitialStock
	}
	for _, sku := range sched.Hot {
		home := slices.Index(names, c.cfg.Home(sku))
		r := cl.do(ctx, home, "POST", "/v1/inventory/"+url.PathEscape(sku)+"/restock", map[string]any{"qty": initial}, nil)
		if r.Outcome != OK {
			return nil, fmt.Errorf("bench: set-up restock of %s at %s: %d %s", sku, names[home], r.Status, r.Code)
		}
		stock.Ledger(sku).RestockAcked += initial
	}
	if err := poll(ctx, 30*time.Second, func() bool { return pending(c, tr) == 0 }); err != nil {
		return nil, fmt.Errorf("bench: the set-up's writes did not reach every region: %w", err)
	}

	say("running %d operations: %s warm-up, then %s measured, at %v ops/s (seed %d)",
		len(sched.Ops), cfg.Warmup, cfg.Duration, cfg.Rate, cfg.Seed)
	start := time.Now().Add(50 * time.Millisecond)
	measureStart := start.Add(cfg.Warmup)
	tr.Measure(measureStart)

	var wg sync.WaitGroup
	bg, stopBG := context.WithCancel(ctx)
	type snap struct {
		w   wire
		err error
	}
	before := make(chan snap, 1)
	wg.Go(func() {
		// A workload that ends before the warm-up does (no operation in
		// the measured period) stops the wait: the counters are read at
		// once then, and nothing is measured. Only the run's own context
		// ending is an error.
		if sleepUntil(bg, measureStart) != nil && ctx.Err() != nil {
			before <- snap{err: ctx.Err()}
			return
		}
		w, err := c.wireBytes()
		before <- snap{w, err}
	})
	// partWindow is set only once the cut is made: a workload that ended
	// before the partition's start never cut anything.
	var partWindow *PartitionWindow
	if part != nil {
		wg.Go(func() {
			if sleepUntil(bg, measureStart.Add(part.Start)) != nil {
				say("partition: not applied, the workload ended before %s", part.Start)
				return
			}
			c.isolate(partIdx, true)
			w := &PartitionWindow{Region: part.Region, StartMS: ms(time.Since(measureStart))}
			say("partition: %s cut off", part.Region)
			sleepUntil(bg, measureStart.Add(part.Start+part.Duration))
			c.isolate(partIdx, false)
			w.EndMS = ms(time.Since(measureStart))
			say("partition: %s healed", part.Region)
			partWindow = w
		})
	}
	wg.Go(func() {
		if sleepUntil(bg, start) != nil {
			return
		}
		reportProgress(bg, progress, time.Second, start, cfg.Warmup+cfg.Duration, func() progressSample {
			return progressSample{done: cl.done.Load(), failed: cl.failed.Load(), pending: pending(c, tr)}
		})
	})
	var sampled int64
	wg.Go(func() {
		if sleepUntil(bg, start) != nil {
			return
		}
		sampled = sampleHomes(bg, cl, names, sched.Hot, c.cfg.Home)
	})
	results := cl.drive(ctx, sched.Ops, start, cfg.Concurrency)
	workloadEnd := time.Now()
	stopBG()
	wg.Wait()
	if partIdx >= 0 {
		c.isolate(partIdx, false)
	}
	b0 := <-before
	if b0.err != nil {
		return nil, fmt.Errorf("bench: %w", b0.err)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("bench: stopped: %w", err)
	}

	say("workload done in %s; waiting up to %s for every region to hold every write", workloadEnd.Sub(start).Round(time.Millisecond), cfg.Settle)
	settleDeadline := workloadEnd.Add(cfg.Settle)
	pollUntil(ctx, settleDeadline, func() bool { return pending(c, tr) == 0 })
	settled := time.Now()
	wireEnd, err := c.wireBytes()
	if err != nil {
		return nil, err
	}
	stores, err := c.storeStats()
	if err != nil {
		return nil, err
	}

	// Final states: every region the same, polled until the deadline.
	var states []RegionState
	var divergent []int
	var divergedKeys []string
	var readErr error
	pollUntil(ctx, settleDeadline.Add(10*time.Second), func() bool {
		states, readErr = readStates(ctx, cl, len(names), sched)
		if readErr != nil {
			return false
		}
		divergent, divergedKeys = Divergence(states)
		return len(divergent) == 0
	})
	if readErr != nil {
		return nil, readErr
	}
	home := map[string]ItemState{}
	for _, sku := range sched.Hot {
		var it region.Item
		if err := cl.get(ctx, slices.Index(names, c.cfg.Home(sku)), "/v1/inventory/"+url.PathEscape(sku)+"?consistent=true", &it); err != nil {
			return nil, err
		}
		home[sku] = itemState(it)
	}

	procs := runtime.GOMAXPROCS(0) // while the regions' stores are open
	a := analyze(sched, results, start, cfg.Warmup, cfg.Duration, stock)
	build := server.Build()
	res := &Result{
		Command: cfg.Command, Version: build.Version, Commit: build.Commit, Seed: cfg.Seed, StartedAt: start.UTC().Truncate(time.Second),
		GoVersion: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH, NumCPU: runtime.NumCPU(), GOMAXPROCS: procs,
		Regions: names, Partitions: lay.partitions, NodesPerRegion: lay.nodes, Routing: RoundRobin, Latency: cfg.Latency, LatencyMS: latency, LossPct: cfg.LossPct, Partition: partWindow,
		TargetRate: cfg.Rate, DurationS: cfg.Duration.Seconds(), WarmupS: cfg.Warmup.Seconds(),
		Concurrency: cfg.Concurrency, Durability: cfg.Durability, EscrowSKUs: cfg.Escrow,
		Ops: a.ops, Throughput: a.throughput, ThroughputOK: a.throughputOK,
		WriteLatency: a.write, WriteLatencyByKind: a.writeByKind, ScheduleLag: a.lag,
		Reservations: a.res, SettleMS: ms(settled.Sub(workloadEnd)), Stores: stores,
		writeSamples: a.writeSamples, homeSamples: a.homeSamples, nonHomeSamples: a.nonHomeSamples,
	}
	has := c.has(c.applied())
	res.Convergence, res.DotsMeasured = tr.Pairs(has, c.cfg.Latency)
	for _, p := range res.Convergence {
		res.ConvergedViaAntiEntropy += p.ViaAntiEntropy
	}
	res.Bytes = bytesResult(b0.w, wireEnd, len(names), a.ops.Answered, res.DotsMeasured)

	lost, phantom := a.adds.Check(states, sched.AddCarts, sched.MixCarts)
	oversold, mismatches := CheckStock(a.stock, home)
	viewOver := ViewOversold(states, a.stock)
	var inViews int64
	for _, u := range viewOver {
		inViews += u
	}
	notConverged := map[int]bool{}
	for _, r := range divergent {
		notConverged[r] = true
	}
	unconverged := tr.PendingBy(has, func(r int) { notConverged[r] = true })
	if len(divergedKeys) > 20 {
		divergedKeys = divergedKeys[:20]
	}
	res.Correctness = Correctness{OversoldUnits: oversold, OversoldInViews: inViews, OversoldSampled: sampled, LostCartWrites: lost, RegionsNotConverged: len(notConverged),
		PhantomCartUnits: phantom, StockMismatches: mismatches, UnconvergedDots: unconverged, DivergedKeys: divergedKeys}
	for _, sku := range sched.Hot {
		res.Stock = append(res.Stock, SKUStock{SKU: sku, Home: c.cfg.Home(sku), Stock: home[sku].Stock,
			Reserved: home[sku].Reserved, Granted: home[sku].Granted, StockLedger: *a.stock.Ledger(sku)})
	}
	res.OK = res.Correctness.zero()
	if cfg.Escrow {
		homeOver := map[string]int64{}
		for _, sku := range sched.Hot {
			homeOver[sku] = skuOversold(a.stock.Ledger(sku), home[sku])
		}
		rtt := func(a, b int) float64 { return 2 * ms(c.cfg.Latency(names[a], names[b])) }
		res.Escrow = analyzeEscrow(sched, results, names, rtt, cfg.Warmup, homeOver, viewOver)
		if res.Escrow.UnitsGranted, err = c.counterSum("lattice_escrow_granted_units_total"); err != nil {
			return nil, err
		}
		if res.Escrow.UnitsReturned, err = c.counterSum("lattice_escrow_returned_units_total"); err != nil {
			return nil, err
		}
	}

	// The concern probe, on the settled cluster, once everything above is
	// measured: its writes are counted by nothing else.
	if probe := cfg.Probe; probe > 0 {
		say("probing write concerns and quorum reads for %s", probe)
		res.Concerns = probeConcerns(ctx, cl, names, latency, probe)
	}
	if len(names) > 1 {
		say("probing read-your-writes for clients that move, for %s", SessionProbe)
		res.Sessions = probeSessions(ctx, cl, names, latency, SessionProbe)
		res.Correctness.ReadYourWrites = res.Sessions.Violations
		res.OK = res.Correctness.zero()
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("bench: stopped: %w", err)
	}

	if cfg.Out != "" {
		if err := res.Write(cfg.Out); err != nil {
			return res, err
		}
	}
	return res, nil
}

// progressSample is what a progress line reports: operations finished and
// failed so far, and writes some region has not applied yet.
type progressSample struct {
	done, failed int64
	pending      int
}

// reportProgress writes a progress line to w every interval (so at most
// once per interval) until ctx ends: time elapsed since start out of
// total, operations answered per second over the last interval, failed
// operations so far and writes pending convergence.
func reportProgress(ctx context.Context, w io.Writer, interval time.Duration, start time.Time, total time.Duration, sample func() progressSample) {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	last, lastAt := sample(), time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		now, cur := time.Now(), sample()
		rate := float64(cur.done-last.done) / now.Sub(lastAt).Seconds()
		fmt.Fprintf(w, "bench: %s / %s, %.0f ops/s, %d errors, %d writes pending convergence\n",
			now.Sub(start).Round(time.Second), total, rate, cur.failed, cur.pending)
		last, lastAt = cur, now
	}
}

// pending returns the writes some region does not hold yet.
func pending(c *cluster, tr *Tracker) int {
	return tr.Pending(c.has(c.applied()))
}

// deltaPartition returns the partition of a local delta of a cluster of
// partitions: its keys' (a node writes only the keys of its partition).
func deltaPartition(d region.Delta, partitions int) int {
	if partitions <= 1 || d.Group == nil {
		return 0
	}
	for id := range d.Group.Carts {
		return config.PartitionOf(id, partitions)
	}
	for sku := range d.Group.Items {
		return config.PartitionOf(sku, partitions)
	}
	return 0
}

// readStates reads every cart and hot item of sched at every region.
func readStates(ctx context.Context, cl *client, regions int, sched *Schedule) ([]RegionState, error) {
	states := make([]RegionState, regions)
	errs := make([]error, regions)
	var wg sync.WaitGroup
	for r := range regions {
		wg.Go(func() { states[r], errs[r] = readState(ctx, cl, r, sched) })
	}
	wg.Wait()
	return states, errors.Join(errs...)
}

func readState(ctx context.Context, cl *client, r int, sched *Schedule) (RegionState, error) {
	st := RegionState{Carts: map[string]CartState{}, Items: map[string]ItemState{}}
	carts := append(slices.Clone(sched.AddCarts), sched.MixCarts...)
	for _, id := range carts {
		var v region.Cart
		if err := cl.get(ctx, r, "/v1/carts/"+url.PathEscape(id), &v); err != nil {
			return st, err
		}
		cs := CartState{}
		for _, it := range v.Items {
			cs[it.SKU] += it.Qty // a sku listed twice counts twice
		}
		st.Carts[id] = cs
	}
	for _, sku := range sched.Hot {
		var it region.Item
		if err := cl.get(ctx, r, "/v1/inventory/"+url.PathEscape(sku), &it); err != nil {
			return st, err
		}
		st.Items[sku] = itemState(it)
	}
	return st, nil
}

// itemState returns what the checks compare of an item as a region shows
// it.
func itemState(it region.Item) ItemState {
	st := ItemState{Stock: it.Stock, Reserved: it.Reserved}
	if it.Granted != nil {
		st.Granted = *it.Granted
	}
	return st
}

// poll checks cond every 20 ms until it holds; it fails after d.
func poll(ctx context.Context, d time.Duration, cond func() bool) error {
	if pollUntil(ctx, time.Now().Add(d), cond) {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	return fmt.Errorf("not within %s", d)
}

// pollUntil checks cond every 20 ms until it holds (true) or deadline
// passes or ctx ends (false).
func pollUntil(ctx context.Context, deadline time.Time, cond func() bool) bool {
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			return false
		}
	}
}

// sleepUntil waits until t or ctx's end, whichever is first.
func sleepUntil(ctx context.Context, t time.Time) error {
	timer := time.NewTimer(time.Until(t))
	defer timer.Stop()
	select {
	case <-timer.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
