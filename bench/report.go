package bench

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// Files written to the output directory.
const (
	ResultsFile           = "results.json"
	SummaryFile           = "summary.md"
	ConvergencePlotFile   = "convergence_cdf.png"
	WriteLatencyPlotFile  = "write_latency.png"
	ReservationPlotFile   = "reservation_latency.png"
	cdfPointsPerPairInRes = 200
)

// Result is what a benchmark run measured; it is results.json.
type Result struct {
	Command string `json:"command,omitempty"`
	// Version and Commit name the build that ran (as lattice version
	// prints them).
	Version   string    `json:"version"`
	Commit    string    `json:"commit"`
	Seed      uint64    `json:"seed"`
	StartedAt time.Time `json:"started_at"`
	GoVersion string    `json:"go_version"`
	Platform  string    `json:"platform"`
	NumCPU    int       `json:"num_cpu"`
	// GOMAXPROCS is the Go processors the process ran the regions on: one
	// more than the CPUs for each store beyond the first, unless the
	// environment sets it (docs/operations.md, Durability).
	GOMAXPROCS int      `json:"gomaxprocs"`
	Regions    []string `json:"regions"`
	// Partitions is the cluster's partitions and NodesPerRegion the nodes
	// each region runs (each owning a contiguous range of the
	// partitions); Routing says which node of a region a request is sent
	// to (RoundRobin).
	Partitions     int    `json:"partitions"`
	NodesPerRegion int    `json:"nodes_per_region"`
	Routing        string `json:"routing"`
	// Latency is wan or none; LatencyMS the one-way latencies emulated.
	Latency     string           `json:"latency"`
	LatencyMS   map[string]int   `json:"latency_ms"`
	LossPct     float64          `json:"loss_pct"`
	Partition   *PartitionWindow `json:"partition,omitempty"`
	TargetRate  float64          `json:"target_rate_ops_per_s"`
	DurationS   float64          `json:"duration_s"`
	WarmupS     float64          `json:"warmup_s"`
	Concurrency int              `json:"concurrency"`
	Durability  string           `json:"durability"`
	// EscrowSKUs says whether the run had escrow skus (Config.Escrow);
	// Escrow is then their figures beside the home-decided skus'.
	EscrowSKUs bool          `json:"escrow_skus"`
	Escrow     *EscrowResult `json:"escrow,omitempty"`

	Ops OpsResult `json:"ops"`
	// Throughput is the operations answered per second during the
	// measured period (answers read between its start and its end,
	// whatever the operation's target time); ThroughputOK counts the
	// 2xx answers only.
	Throughput   float64 `json:"throughput_ops_per_s"`
	ThroughputOK float64 `json:"throughput_ok_ops_per_s"`
	// WriteLatency is the HTTP latency of the local writes (cart writes
	// and restocks) acknowledged by the region they were sent to,
	// measured by the client from sending the request to reading the
	// answer.
	WriteLatency       Summary            `json:"write_latency"`
	WriteLatencyByKind map[string]Summary `json:"write_latency_by_kind"`
	// ScheduleLag is how late operations were sent after their target
	// time (a lag that grows means the cluster did not keep up).
	ScheduleLag  Summary           `json:"schedule_lag"`
	Reservations ReservationResult `json:"reservations"`
	// Convergence is, per ordered pair of regions, the time from a
	// write's acknowledgement at its origin to its durable application
	// at the other region, for every write of the measured period.
	Convergence []PairResult `json:"convergence"`
	// DotsMeasured counts the writes (region-level dots: cart writes,
	// restocks, ledger updates, commits) of the measured period.
	DotsMeasured int `json:"dots_measured"`
	// ConvergedViaAntiEntropy counts (write, region) pairs that reached
	// the region through anti-entropy rather than a delta.
	ConvergedViaAntiEntropy int `json:"converged_via_anti_entropy"`
	// SettleMS is how long after the workload every region held every
	// write.
	SettleMS float64     `json:"settle_ms"`
	Bytes    BytesResult `json:"bytes"`
	// Concerns is the latency of writes with a write concern and of
	// quorum reads, measured by a probe after the workload settled.
	Concerns *ConcernResult `json:"concerns,omitempty"`
	// Sessions is the session probe's check of read-your-writes for
	// clients that move between regions with the causal token.
	Sessions *SessionResult `json:"sessions,omitempty"`
	// Stores is what each region's store did over the run.
	Stores      []StoreStats `json:"stores"`
	Stock       []SKUStock   `json:"stock"`
	Correctness Correctness  `json:"correctness"`
	// OK is true when every correctness counter is 0.
	OK bool `json:"ok"`

	writeSamples, homeSamples, nonHomeSamples []float64
}

// PartitionWindow is when a region was cut off, in milliseconds from the
// start of the measured period.
type PartitionWindow struct {
	Region  string  `json:"region"`
	StartMS float64 `json:"start_ms"`
	EndMS   float64 `json:"end_ms"`
}

// BytesResult is what crossed the network between regions from the end
// of the warm-up until every region held every write.
type BytesResult struct {
	// Replication is the protocol bytes sent by every region
	// (lattice_replication_bytes_sent_total: deltas, acks, status,
	// anti-entropy), before QUIC framing and encryption.
	Replication uint64 `json:"replication_bytes"`
	// Stream is what the regions' message streams carried for those
	// messages (lattice_replication_stream_bytes_sent_total): framed, and
	// compressed between regions that agree on lattice-repl/2. It is
	// the replication's bytes on the wire, before QUIC's own headers,
	// encryption and acknowledgements (those are in UDP).
	Stream uint64 `json:"stream_bytes"`
	// UDP is the UDP payload bytes every region's emulated WAN sent: QUIC
	// packets carrying replication, forwarded home requests (reservations
	// sent to a non-home region, consistent reads), acknowledgements and
	// keep-alives.
	UDP uint64 `json:"udp_bytes"`
	// Per operation answered, and per write (dot).
	ReplicationPerOp  float64 `json:"replication_bytes_per_op"`
	UDPPerOp          float64 `json:"udp_bytes_per_op"`
	ReplicationPerDot float64 `json:"replication_bytes_per_dot"`
	StreamPerOp       float64 `json:"stream_bytes_per_op"`
	StreamPerDot      float64 `json:"stream_bytes_per_dot"`
	UDPPerDot         float64 `json:"udp_bytes_per_dot"`
	// Deltas is the bytes of the encoded deltas (crdt.EncodeGroup) of
	// every region's own writes in the same period
	// (lattice_replication_delta_bytes_total); Ideal is (R−1) × Deltas,
	// what a replication that sent each delta once to each other region
	// and nothing else would send; ReplicationPerIdeal is Replication ÷
	// Ideal, and StreamPerIdeal Stream ÷ Ideal.
	Deltas              uint64  `json:"delta_bytes"`
	Ideal               uint64  `json:"ideal_bytes"`
	ReplicationPerIdeal float64 `json:"replication_per_ideal"`
	StreamPerIdeal      float64 `json:"stream_per_ideal"`
}

func bytesResult(w0, w1 wire, regions, ops, dots int) BytesResult {
	b := BytesResult{Replication: w1.app - w0.app, Stream: w1.stream - w0.stream, UDP: w1.udp - w0.udp, Deltas: w1.deltas - w0.deltas}
	b.Ideal = uint64(max(regions-1, 0)) * b.Deltas
	if b.Ideal > 0 {
		b.ReplicationPerIdeal = float64(b.Replication) / float64(b.Ideal)
		b.StreamPerIdeal = float64(b.Stream) / float64(b.Ideal)
	}
	if ops > 0 {
		b.ReplicationPerOp = float64(b.Replication) / float64(ops)
		b.StreamPerOp = float64(b.Stream) / float64(ops)
		b.UDPPerOp = float64(b.UDP) / float64(ops)
	}
	if dots > 0 {
		b.ReplicationPerDot = float64(b.Replication) / float64(dots)
		b.StreamPerDot = float64(b.Stream) / float64(dots)
		b.UDPPerDot = float64(b.UDP) / float64(dots)
	}
	return b
}

// SKUStock is a hot sku's final state at its home and its ledger.
type SKUStock struct {
	SKU      string `json:"sku"`
	Home     string `json:"home"`
	Stock    int64  `json:"stock"`
	Reserved int64  `json:"reserved"`
	// Granted is an escrow sku's rights held by other regions.
	Granted int64 `json:"granted,omitempty"`
	StockLedger
}

// Correctness holds the counters that must all be 0.
type Correctness struct {
	// OversoldUnits: units held and committed beyond the stock at the
	// sku's home, read with ?consistent=true (see CheckStock).
	OversoldUnits int64 `json:"oversold_units"`
	// OversoldInViews: units held and committed beyond the stock in the
	// final view of some region, summed over skus (see ViewOversold).
	OversoldInViews int64 `json:"oversold_units_in_region_views"`
	// OversoldSampled: the most units by which a home's answer, read
	// while the workload ran, showed held and granted beyond its stock
	// (see sampleHomes).
	OversoldSampled int64 `json:"oversold_units_sampled_at_home"`
	// LostCartWrites: acknowledged adds missing from a final cart (see
	// AddModel.Check).
	LostCartWrites int64 `json:"lost_cart_writes"`
	// RegionsNotConverged: regions whose final state differs from the
	// others', or that lack a write, after the settle period.
	RegionsNotConverged int `json:"regions_not_converged"`
	// PhantomCartUnits: cart units no add can explain.
	PhantomCartUnits int64 `json:"phantom_cart_units"`
	// StockMismatches: skus whose final stock no set of restocks and
	// commits can explain.
	StockMismatches int `json:"stock_mismatches"`
	// UnconvergedDots: (write, region) pairs missing at the end.
	UnconvergedDots int `json:"unconverged_dots"`
	// ReadYourWrites: reads of the session probe that, sent with the
	// token of the session's last write, did not show it (see
	// probeSessions).
	ReadYourWrites int `json:"read_your_writes_violations"`
	// DivergedKeys lists (at most 20) keys whose state differs.
	DivergedKeys []string `json:"diverged_keys,omitempty"`
}

func (c Correctness) zero() bool {
	return c.OversoldUnits == 0 && c.OversoldInViews == 0 && c.OversoldSampled == 0 && c.LostCartWrites == 0 && c.RegionsNotConverged == 0 &&
		c.PhantomCartUnits == 0 && c.StockMismatches == 0 && c.UnconvergedDots == 0 && c.ReadYourWrites == 0
}

// resultJSON is a Result with the convergence CDFs, downsampled.
type resultJSON struct {
	*Result
	ConvergenceCDF []pairCDF `json:"convergence_cdf"`
}

type pairCDF struct {
	From   string  `json:"from"`
	To     string  `json:"to"`
	Points []Point `json:"points"`
}

// Write writes results.json, summary.md and the plots to dir, making it
// if needed.
func (r *Result) Write(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	rj := resultJSON{Result: r}
	for _, p := range r.Convergence {
		rj.ConvergenceCDF = append(rj.ConvergenceCDF, pairCDF{From: p.From, To: p.To, Points: Downsample(CDF(p.Samples), cdfPointsPerPairInRes)})
	}
	b, err := json.MarshalIndent(rj, "", "  ")
	if err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, ResultsFile), append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, SummaryFile), []byte(r.Markdown()), 0o644); err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	return r.plot(dir)
}

// Markdown returns the summary as Markdown tables.
func (r *Result) Markdown() string {
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	w("# Lattice benchmark\n\n")
	net := "emulated WAN (one-way latencies below)"
	if r.Latency == "none" {
		net = "no emulated latency"
	}
	w("%d regions (%s) on 127.0.0.1, real QUIC, %s, loss %v %%", len(r.Regions), strings.Join(r.Regions, ", "), net, r.LossPct)
	w("; %d partition(s), %d node(s) per region", max(r.Partitions, 1), max(r.NodesPerRegion, 1))
	if r.NodesPerRegion > 1 {
		w(" (requests sent to a region's nodes in turn)")
	}
	if r.Partition != nil {
		w(", %s cut off from %.1f s to %.1f s", r.Partition.Region, r.Partition.StartMS/1000, r.Partition.EndMS/1000)
	}
	if r.EscrowSKUs {
		w("; escrow skus beside the home-decided ones")
	}
	w(".\nSeed %d; target %v ops/s for %v s after a %v s warm-up, at most %d requests in flight; durability %s; lattice %s (commit %s), %s, %s, %d CPUs, GOMAXPROCS %d.\n\n",
		r.Seed, r.TargetRate, r.DurationS, r.WarmupS, r.Concurrency, r.Durability, r.Version, r.Commit, r.GoVersion, r.Platform, r.NumCPU, r.GOMAXPROCS)
	if r.Command != "" {
		w("`%s`\n\n", r.Command)
	}

	w("| | |\n|---|---:|\n")
	w("| throughput (answered / 2xx) | %.1f / %.1f ops/s (target %v, scheduled %.1f) |\n", r.Throughput, r.ThroughputOK, r.TargetRate,
		float64(r.Ops.Scheduled)/r.DurationS)
	w("| measured operations | %d scheduled, %d ok, %d refused, %d unknown, %d not run |\n",
		r.Ops.Scheduled, r.Ops.OK, r.Ops.Refused, r.Ops.Unknown, r.Ops.NotRun)
	w("| schedule lag p50 / p99 / max | %s / %s / %s ms |\n", f(r.ScheduleLag.P50), f(r.ScheduleLag.P99), f(r.ScheduleLag.Max))
	w("| settle (all writes everywhere after the workload) | %s ms |\n", f(r.SettleMS))
	if len(r.Ops.Codes) > 0 {
		var codes []string
		for c, n := range r.Ops.Codes {
			codes = append(codes, fmt.Sprintf("%s %d", c, n))
		}
		sort.Strings(codes)
		w("| error answers | %s |\n", strings.Join(codes, ", "))
	}
	w("\n## Local write latency (HTTP, at the origin), ms\n\n")
	w("| writes | count | p50 | p99 | p99.9 | max |\n|---|---:|---:|---:|---:|---:|\n")
	w("| all local writes | %d | %s | %s | %s | %s |\n", r.WriteLatency.Count, f(r.WriteLatency.P50), f(r.WriteLatency.P99), p999(r.WriteLatency), f(r.WriteLatency.Max))
	for _, k := range Kinds() {
		if s, ok := r.WriteLatencyByKind[k.String()]; ok {
			w("| %s | %d | %s | %s | %s | %s |\n", k, s.Count, f(s.P50), f(s.P99), p999(s), f(s.Max))
		}
	}

	w("\n## Reservation latency, ms\n\n")
	w("Holds granted %d, refused insufficient_stock %d, home_unavailable %d.",
		r.Reservations.Granted, r.Reservations.Insufficient, r.Reservations.Unavailable)
	if r.Escrow != nil {
		w(" Both kinds of sku together; each apart below.")
	}
	w("\n\n")
	w("| request | count | p50 | p99 | p99.9 | max |\n|---|---:|---:|---:|---:|---:|\n")
	for _, row := range []struct {
		name string
		s    Summary
	}{{"hold, sent to the home", r.Reservations.Home}, {"hold, sent to a non-home region", r.Reservations.NonHome},
		{"commit", r.Reservations.Commit}, {"release", r.Reservations.Release}} {
		w("| %s | %d | %s | %s | %s | %s |\n", row.name, row.s.Count, f(row.s.P50), f(row.s.P99), p999(row.s), f(row.s.Max))
	}

	if r.Escrow != nil {
		r.escrowMarkdown(w)
	}

	w("\n## Cross-region convergence (acknowledged at the origin → durable at the remote), ms\n\n")
	w("%d writes measured; %d (write, region) pairs arrived by anti-entropy instead of a delta.\n\n", r.DotsMeasured, r.ConvergedViaAntiEntropy)
	w("| from → to | one-way floor | count | p50 | p99 | p99.9 | max | p50 − floor | via anti-entropy | missing |\n")
	w("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, p := range r.Convergence {
		w("| %s → %s | %s | %d | %s | %s | %s | %s | %s | %d | %d |\n", p.From, p.To, f(p.OneWayMS), p.Count,
			f(p.P50), f(p.P99), p999(p.Summary), f(p.Max), f(p.OverFloorP50MS), p.ViaAntiEntropy, p.Missing)
	}

	if r.Concerns != nil {
		r.concernsMarkdown(w)
	}
	if s := r.Sessions; s != nil {
		w("\n## Read-your-writes for a client that moves (probe after the workload settled)\n\n")
		w("Each region started, every %s ms for %.1f s, a session that adds to a cart of its own, reads it at the next region "+
			"with the add's `Lattice-Token`, removes the line at the region after with the read's token and reads the cart back "+
			"at the first with the removal's. %d sessions; reads that missed the session's own write: %d; errors: %s. "+
			"The read at the next region took p50 %s ms, p99 %s ms (it waits for the add to arrive: one-way delay %s ms on average).\n",
			f(ms(SessionInterval)), s.DurationS, s.Sessions, s.Violations, codes(s.Errors), f(s.MovedRead.P50), f(s.MovedRead.P99), f(s.OneWayMS))
	}

	w("\n## Bytes on the wire between regions (measured period and settle)\n\n")
	w("| | total | per operation | per write (dot) |\n|---|---:|---:|---:|\n")
	w("| replication messages | %d | %.0f | %.0f |\n", r.Bytes.Replication, r.Bytes.ReplicationPerOp, r.Bytes.ReplicationPerDot)
	w("| their message streams (framed, compressed) | %d | %.0f | %.0f |\n", r.Bytes.Stream, r.Bytes.StreamPerOp, r.Bytes.StreamPerDot)
	w("| UDP (QUIC packets, forwarding included) | %d | %.0f | %.0f |\n", r.Bytes.UDP, r.Bytes.UDPPerOp, r.Bytes.UDPPerDot)
	if r.Bytes.Ideal > 0 {
		w("\nThe writes' encoded deltas came to %d B; each sent once to each of the %d other regions, %d B: replication's messages came to %.2f × that, and their streams to %.2f ×.\n",
			r.Bytes.Deltas, len(r.Regions)-1, r.Bytes.Ideal, r.Bytes.ReplicationPerIdeal, r.Bytes.StreamPerIdeal)
	}

	w("\n## Stores (whole run)\n\n")
	w("| region | fsyncs | mean fsync | fsyncs > 50 ms | writes per fsync | file rewrites | file / live bytes at the end, per node |\n|---|---:|---:|---:|---:|---:|---|\n")
	for _, st := range r.Stores {
		var nodes []string
		for _, n := range st.Nodes {
			nodes = append(nodes, fmt.Sprintf("%s %d / %d", n.Node, n.FileBytes, n.LiveBytes))
		}
		w("| %s | %d | %s ms | %d | %.1f | %d | %s |\n", st.Region, st.Fsyncs, f(st.FsyncMeanMS), st.FsyncsOver, st.BatchMean, st.Shrinks,
			strings.Join(nodes, ", "))
	}

	w("\n## Correctness (each must be 0)\n\n")
	c := r.Correctness
	w("| counter | value |\n|---|---:|\n")
	w("| oversold units | %d |\n| oversold units in a region's view | %d |\n", c.OversoldUnits, c.OversoldInViews)
	w("| oversold units in a home's answer during the run (sampled every %s ms) | %d |\n", f(ms(HomeSampleInterval)), c.OversoldSampled)
	w("| lost cart writes | %d |\n| regions not converged | %d |\n", c.LostCartWrites, c.RegionsNotConverged)
	w("| phantom cart units | %d |\n| stock mismatches | %d |\n| writes missing at a region | %d |\n", c.PhantomCartUnits, c.StockMismatches, c.UnconvergedDots)
	w("| reads with a session's token that missed its write | %d |\n", c.ReadYourWrites)
	if len(c.DivergedKeys) > 0 {
		w("\nDiverged keys: %s\n", strings.Join(c.DivergedKeys, ", "))
	}
	if r.OK {
		w("\n**PASS**: every correctness counter is 0.\n")
	} else {
		w("\n**FAIL**: a correctness counter is not 0.\n")
	}
	return b.String()
}

// f formats milliseconds for a table.
func f(v float64) string {
	switch {
	case v == 0:
		return "0"
	case v < 10 && v > -10:
		return fmt.Sprintf("%.2f", v)
	case v < 1000 && v > -1000:
		return fmt.Sprintf("%.1f", v)
	}
	return fmt.Sprintf("%.0f", v)
}

// concernsMarkdown writes the concern probe's table.
func (r *Result) concernsMarkdown(w func(string, ...any)) {
	c := r.Concerns
	w("\n## Write concern and quorum reads (probe after the workload settled), ms\n\n")
	w("Each region sent, every %s ms for %.1f s, in turn a cart add with `Lattice-Replicas: N` and a read with `?quorum=N` "+
		"(of a cart it wrote a few cycles before, its writes done), N = 1, 2, 3, each on its own (latency, not queueing). "+
		"Floor: the emulated round trip to the (N−1)-th nearest other region (N − 1 other regions must hold the write): the nearest for N = 2, the second nearest for N = 3.\n\n", f(c.IntervalMS), c.DurationS)
	w("| region | N | floor | writes | write p50 | write p99 | write p50 − floor | reads | read p50 | read p99 | read p50 − floor | errors |\n")
	w("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n")
	for _, rc := range c.Regions {
		for _, lv := range rc.Levels {
			w("| %s | %d | %s | %d | %s | %s | %s | %d | %s | %s | %s | %s |\n", rc.Region, lv.N, f(lv.FloorMS),
				lv.Write.Count, f(lv.Write.P50), f(lv.Write.P99), f(lv.WriteOverFloorP50MS),
				lv.Read.Count, f(lv.Read.P50), f(lv.Read.P99), f(lv.ReadOverFloorP50MS), concernErrors(lv))
		}
	}
}

// codes lists error answers by code, or "0".
func codes(m map[string]int) string {
	keys := make([]string, 0, len(m))
	for code := range m {
		keys = append(keys, code)
	}
	sort.Strings(keys)
	var parts []string
	for _, code := range keys {
		parts = append(parts, fmt.Sprintf("%s %d", code, m[code]))
	}
	if len(parts) == 0 {
		return "0"
	}
	return strings.Join(parts, ", ")
}

// concernErrors lists a level's error answers, or "0".
func concernErrors(lv ConcernLevel) string {
	var parts []string
	for _, e := range []struct {
		kind string
		m    map[string]int
	}{{"write", lv.WriteErrors}, {"read", lv.ReadErrors}} {
		codes := make([]string, 0, len(e.m))
		for code := range e.m {
			codes = append(codes, code)
		}
		sort.Strings(codes)
		for _, code := range codes {
			parts = append(parts, fmt.Sprintf("%s %s %d", e.kind, code, e.m[code]))
		}
	}
	if len(parts) == 0 {
		return "0"
	}
	return strings.Join(parts, ", ")
}
