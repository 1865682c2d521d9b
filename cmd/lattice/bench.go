package main

import (
	"context"
	"fmt"
	"os/signal"
	"strings"
	"syscall"

	"github.com/latticedb/lattice/bench"
)

// runBench runs the benchmark of SPEC §9 (see package bench): it prints
// the Markdown summary on stdout, writes the report to --out, and exits 1
// when a correctness counter is not 0.
func runBench(ctx context.Context, cio cmdIO, args []string) int {
	cmd, _ := lookup("bench")
	fs := newFlagSet(cio, cmd)
	d := bench.DefaultConfig()
	regions := fs.Int("regions", d.Regions, fmt.Sprintf("number of regions, 1..%d: us-east, eu-west, ap-south, then region-4, region-5, … (%d ms one way from every other region)",
		bench.MaxRegions, bench.ExtraRegionLatency.Milliseconds()))
	partitions := fs.Int("partitions", d.Partitions, fmt.Sprintf("partitions of the cluster: a power of two 1..%d", bench.MaxPartitions))
	nodes := fs.Int("nodes", d.Nodes, fmt.Sprintf("nodes per region, each owning a contiguous range of the partitions (at most --partitions, and %d nodes in all); a region's requests go to its nodes in turn",
		bench.MaxNodes))
	rate := fs.Float64("rate", d.Rate, "target rate, operations per second (open loop, Poisson arrivals)")
	duration := fs.Duration("duration", d.Duration, "how long the measured workload runs")
	warmup := fs.Duration("warmup", d.Warmup, "how long the workload runs before it is measured")
	seed := fs.Uint64("seed", d.Seed, "seed of the workload (operations and their target times) and of the emulated WAN")
	latency := fs.String("latency", d.Latency, "emulated WAN between regions: wan (one-way us-east<->eu-west 34 ms, us-east<->ap-south 92 ms, eu-west<->ap-south 60 ms) or none")
	loss := fs.Float64("loss", d.LossPct, "emulated packet loss between regions, in percent")
	partition := fs.String("partition", "", "cut a region off from every other region: `REGION@START+DUR`, START counted from the end of the warm-up (for example ap-south@5s+4s); healed at DUR's end or when the workload ends")
	out := fs.String("out", d.Out, "directory for results.json, summary.md and the plots")
	concurrency := fs.Int("concurrency", d.Concurrency, "most requests in flight")
	probe := fs.Duration("probe", bench.DefaultProbe, "how long the probe of write concerns (Lattice-Replicas 1..3) and quorum reads runs after the workload (its reads, of carts written four cycles before, begin after those cycles: 0.48 s with three regions)")
	settle := fs.Duration("settle", d.Settle, "longest wait after the workload for every region to hold every write and show the same state")
	durability := fs.String("durability", d.Durability, "regions' durability: always (fsync before the answer) or everysec")
	carts := fs.Int("carts", 0, fmt.Sprintf("carts in each of the add-only and mixed sets (0: %d, raised to keep ~1,000 adds per cart at most)", bench.DefaultCarts))
	escrow := fs.Bool("escrow", d.Escrow, "add escrow skus (homes rules with escrow: true), one homed at each region beside each hot sku, and measure both kinds side by side")
	stock := fs.Int64("stock", bench.InitialStock, "units of stock each hot (and escrow) sku starts with, restocked at its home before the workload")
	level := fs.String("log-level", "error", "regions' log level: debug, info, warn or error")
	format := fs.String("log-format", "text", "regions' log format: text or json")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return flagStatus(err)
	}
	if len(pos) > 0 {
		fmt.Fprintf(cio.stderr, "lattice bench: unexpected argument %q\n", pos[0])
		return exitUsage
	}
	// bench.Config takes 0 for "the default"; on the command line a count
	// of 0 is a mistake, not a request for the default.
	for _, f := range []struct {
		name string
		v    int64
	}{{"partitions", int64(*partitions)}, {"nodes", int64(*nodes)}, {"stock", *stock}} {
		if f.v == 0 {
			fmt.Fprintf(cio.stderr, "lattice bench: --%s 0: want at least 1\n", f.name)
			return exitUsage
		}
	}
	log, err := newLogger(cio.stderr, *level, *format)
	if err != nil {
		fmt.Fprintf(cio.stderr, "lattice bench: %v\n", err)
		return exitUsage
	}
	cfg := bench.Config{Regions: *regions, Partitions: *partitions, Nodes: *nodes, Rate: *rate, Duration: *duration, Warmup: *warmup, Seed: *seed,
		Latency: *latency, LossPct: *loss, Partition: *partition, Concurrency: *concurrency, Settle: *settle, Probe: *probe,
		Durability: *durability, Carts: *carts, Escrow: *escrow, Stock: *stock, RequestTimeout: d.RequestTimeout, Out: *out,
		Command: strings.Join(append([]string{"lattice", "bench"}, args...), " "), Logger: log, Progress: cio.stderr}
	if err := cfg.Validate(); err != nil {
		fmt.Fprintf(cio.stderr, "lattice bench: %s\n", strings.TrimPrefix(err.Error(), "bench: "))
		return exitUsage
	}

	ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	res, err := bench.Run(ctx, cfg)
	if res != nil {
		fmt.Fprint(cio.stdout, res.Markdown())
	}
	if err != nil {
		fmt.Fprintf(cio.stderr, "lattice bench: %v\n", err)
		return exitFail
	}
	if *out != "" {
		fmt.Fprintf(cio.stderr, "lattice bench: wrote %s, %s and the plots to %s\n", bench.ResultsFile, bench.SummaryFile, *out)
	}
	if !res.OK {
		fmt.Fprintln(cio.stderr, "lattice bench: FAIL: a correctness counter is not 0")
		return exitFail
	}
	return exitOK
}
