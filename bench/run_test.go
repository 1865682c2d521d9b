package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/latticedb/lattice/cmd/server"
)

// runShort runs a short benchmark into a temporary directory and checks
// what every run must produce: the files, the JSON fields, and
// correctness counters at 0.
func runShort(t *testing.T, cfg Config) (*Result, map[string]any) {
	t.Helper()
	t.Logf("seed %d", cfg.Seed)
	cfg.Out = t.TempDir()
	res, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{ResultsFile, SummaryFile, ConvergencePlotFile, WriteLatencyPlotFile, ReservationPlotFile} {
		b, err := os.ReadFile(filepath.Join(cfg.Out, name))
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasSuffix(name, ".png") && !bytes.HasPrefix(b, []byte("\x89PNG\r\n\x1a\n")) {
			t.Errorf("%s is not a PNG image", name)
		}
	}
	b, err := os.ReadFile(filepath.Join(cfg.Out, ResultsFile))
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{
		"version", "commit", "seed", "regions", "throughput_ops_per_s",
		"write_latency.p50_ms", "write_latency.p99_ms", "write_latency.p999_ms",
		"reservations.from_home.p50_ms", "reservations.from_home.p99_ms",
		"reservations.from_non_home.p50_ms", "reservations.from_non_home.p99_ms",
		"bytes.replication_bytes_per_op", "bytes.udp_bytes_per_op",
		"converged_via_anti_entropy", "convergence", "convergence_cdf",
		"correctness.oversold_units", "correctness.lost_cart_writes", "correctness.regions_not_converged",
		"ok",
	} {
		if _, ok := lookupJSON(doc, path); !ok {
			t.Errorf("results.json has no %s", path)
		}
	}
	pairs, _ := doc["convergence"].([]any)
	if want := len(res.Regions) * (len(res.Regions) - 1); len(pairs) != want {
		t.Errorf("%d convergence pairs, want %d", len(pairs), want)
	}
	for _, p := range pairs {
		for _, k := range []string{"from", "to", "one_way_ms", "p50_ms", "p99_ms", "p999_ms"} {
			if _, ok := p.(map[string]any)[k]; !ok {
				t.Errorf("a convergence pair has no %s", k)
			}
		}
	}
	for _, k := range []string{"oversold_units", "lost_cart_writes", "regions_not_converged", "phantom_cart_units", "stock_mismatches", "unconverged_dots"} {
		if v, _ := lookupJSON(doc, "correctness."+k); v != 0.0 {
			t.Errorf("correctness.%s = %v, want 0", k, v)
		}
	}
	if !res.OK || doc["ok"] != true {
		t.Errorf("not OK: %+v", res.Correctness)
	}
	md, err := os.ReadFile(filepath.Join(cfg.Out, SummaryFile))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(md), "| oversold units | 0 |") || !strings.Contains(string(md), "**PASS**") {
		t.Errorf("summary.md:\n%s", md)
	}
	if res.Ops.Answered == 0 || res.WriteLatency.Count == 0 || res.DotsMeasured == 0 || res.Bytes.Replication == 0 || res.Bytes.UDP == 0 {
		t.Errorf("nothing measured: ops %+v, writes %d, dots %d, bytes %+v", res.Ops, res.WriteLatency.Count, res.DotsMeasured, res.Bytes)
	}
	for _, p := range res.Convergence {
		if p.Count+p.ViaAntiEntropy == 0 {
			t.Errorf("%s → %s: no write converged", p.From, p.To)
		}
	}
	checkConcerns(t, res, doc, string(md))
	checkSessions(t, res, doc, string(md))
	return res, doc
}

// checkSessions checks the session probe's part of a run's results:
// sessions answered, none missing its own writes, in results.json and
// the summary.
func checkSessions(t *testing.T, res *Result, doc map[string]any, md string) {
	t.Helper()
	if len(res.Regions) < 2 {
		return
	}
	s := res.Sessions
	if s == nil {
		t.Fatal("no session probe in the results")
	}
	if s.Sessions == 0 || s.Violations != 0 || len(s.Errors) != 0 || res.Correctness.ReadYourWrites != 0 {
		t.Errorf("session probe: %d sessions, %d reads that missed their writes, errors %v", s.Sessions, s.Violations, s.Errors)
	}
	if _, ok := lookupJSON(doc, "correctness.read_your_writes_violations"); !ok {
		t.Error("results.json has no correctness.read_your_writes_violations")
	}
	if !strings.Contains(md, "## Read-your-writes for a client that moves") {
		t.Error("summary.md has no session probe")
	}
}

// checkConcerns checks the concern probe's part of a run's results: a
// row per region and level 1..3 with writes and reads measured and none
// refused, in results.json and the summary.
func checkConcerns(t *testing.T, res *Result, doc map[string]any, md string) {
	t.Helper()
	if _, ok := lookupJSON(doc, "concerns.regions"); !ok || res.Concerns == nil {
		t.Fatal("results.json has no concerns.regions")
	}
	if len(res.Concerns.Regions) != len(res.Regions) {
		t.Fatalf("concerns of %d regions, want %d", len(res.Concerns.Regions), len(res.Regions))
	}
	if !strings.Contains(md, "## Write concern and quorum reads") {
		t.Errorf("summary.md has no concern table")
	}
	for _, rc := range res.Concerns.Regions {
		if len(rc.Levels) != min(MaxConcern, len(res.Regions)) {
			t.Fatalf("%s: %d concern levels", rc.Region, len(rc.Levels))
		}
		for _, lv := range rc.Levels {
			if lv.Write.Count == 0 || lv.Read.Count == 0 || len(lv.WriteErrors)+len(lv.ReadErrors) != 0 {
				t.Errorf("%s N=%d: %d writes, %d reads, errors %v %v", rc.Region, lv.N, lv.Write.Count, lv.Read.Count, lv.WriteErrors, lv.ReadErrors)
			}
			if !strings.Contains(md, fmt.Sprintf("| %s | %d | %s | %d |", rc.Region, lv.N, f(lv.FloorMS), lv.Write.Count)) {
				t.Errorf("summary.md has no row for %s N=%d", rc.Region, lv.N)
			}
		}
	}
}

func TestConcernFloors(t *testing.T) {
	names := RegionNames(3)
	got := concernFloors(names, LatencyMatrix(names), 3)
	want := map[string][]float64{"us-east": {0, 68, 184}, "eu-west": {0, 68, 120}, "ap-south": {0, 120, 184}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("floors %v, want %v", got, want)
	}
	if got := concernFloors(names, nil, 3); !reflect.DeepEqual(got["eu-west"], []float64{0, 0, 0}) {
		t.Fatalf("floors without latency: %v", got)
	}
}

func lookupJSON(doc map[string]any, path string) (any, bool) {
	var v any = doc
	for k := range strings.SplitSeq(path, ".") {
		m, ok := v.(map[string]any)
		if !ok {
			return nil, false
		}
		if v, ok = m[k]; !ok {
			return nil, false
		}
	}
	return v, true
}

func shortConfig(seed uint64) Config {
	cfg := DefaultConfig()
	cfg.Seed = seed
	cfg.Rate, cfg.Duration, cfg.Warmup = 200, 2*time.Second, 500*time.Millisecond
	cfg.Latency = "none"
	cfg.Settle = 20 * time.Second
	// The probe's reads begin after probeReadBehind cycles of writes
	// (0.48 s with three regions): 1.2 s gives each level a few.
	cfg.Probe = 1200 * time.Millisecond
	cfg.Command = "go test ./bench"
	return cfg
}

func TestRunEndToEnd(t *testing.T) {
	cfg := shortConfig(1)
	var progress lockedBuffer
	cfg.Progress = &progress
	res, _ := runShort(t, cfg)
	if res.Version == "" || res.Version != server.Build().Version || res.Commit != server.Build().Commit {
		t.Errorf("results version %q commit %q, want those of server.Build(): %+v", res.Version, res.Commit, server.Build())
	}
	// 2.5 s of workload: a progress line a second, so two or three.
	lines := progressLine.FindAllString(progress.String(), -1)
	if len(lines) < 2 || len(lines) > 3 {
		t.Errorf("%d progress lines during a 2.5 s workload, want 2 or 3:\n%s", len(lines), progress.String())
	}
	if res.Reservations.Home.Count == 0 || res.Reservations.NonHome.Count == 0 {
		t.Errorf("reservations from home %d, from non-home %d: want both", res.Reservations.Home.Count, res.Reservations.NonHome.Count)
	}
	if res.Ops.Unknown != 0 {
		t.Errorf("%d operations failed without an answer on a healthy cluster: %v", res.Ops.Unknown, res.Ops.Codes)
	}
	// Three regions' stores in one process: one Go processor more than
	// the runtime's own for each beyond the first, at most twice as many,
	// unless GOMAXPROCS is set or the runtime chose fewer than the CPUs.
	want := runtime.GOMAXPROCS(0)
	if _, env := os.LookupEnv("GOMAXPROCS"); !env && want > 1 && want >= runtime.NumCPU() {
		want += min(2, want)
	}
	if res.GOMAXPROCS != want {
		t.Errorf("results GOMAXPROCS %d, want %d (%d CPUs, %d Go processors without regions)", res.GOMAXPROCS, want, runtime.NumCPU(), runtime.GOMAXPROCS(0))
	}
	// The ideal replication: (R−1) × the writes' encoded deltas, which
	// the regions' protocol bytes exceed (envelopes, acknowledgements,
	// anti-entropy) but not by an order of magnitude.
	if b := res.Bytes; b.Deltas == 0 || b.Ideal != uint64(len(res.Regions)-1)*b.Deltas || b.ReplicationPerIdeal < 0.5 || b.ReplicationPerIdeal > 10 {
		t.Errorf("bytes %+v: want deltas counted, the ideal (R−1) × deltas and replication within 0.5–10 × it", b)
	}
	// The regions compress their message streams (lattice-repl/2): the
	// streams carry fewer bytes than the messages.
	if b := res.Bytes; b.Stream == 0 || b.Stream >= b.Replication || b.StreamPerIdeal != float64(b.Stream)/float64(b.Ideal) {
		t.Errorf("bytes %+v: want the message streams counted, below the messages' bytes", b)
	}
	if md := res.Markdown(); !strings.Contains(md, "replication's messages came to") || !strings.Contains(md, "their streams to") {
		t.Errorf("the summary does not compare replication with the ideal:\n%s", md)
	}
	if md := res.Markdown(); !strings.Contains(md, fmt.Sprintf("GOMAXPROCS %d.", want)) {
		t.Errorf("the summary does not give GOMAXPROCS %d:\n%.600s", want, md)
	}
}

// TestRunPartitionedNodes runs 3 regions of 2 nodes each over 4
// partitions: the report records the layout, every node's stores hold
// data, and the convergence of every write of the measured period is
// measured at every other region, by a delta (the dots of different
// partitions, numbered apart under the same replica id, are told apart).
func TestRunPartitionedNodes(t *testing.T) {
	cfg := shortConfig(3)
	cfg.Partitions, cfg.Nodes = 4, 2
	res, doc := runShort(t, cfg)
	if res.Partitions != 4 || res.NodesPerRegion != 2 || res.Routing != RoundRobin {
		t.Errorf("layout recorded as %d partitions, %d nodes per region, routing %q", res.Partitions, res.NodesPerRegion, res.Routing)
	}
	for k, want := range map[string]any{"partitions": 4.0, "nodes_per_region": 2.0, "routing": RoundRobin} {
		if v, _ := lookupJSON(doc, k); v != want {
			t.Errorf("results.json %s = %v, want %v", k, v, want)
		}
	}
	if md := res.Markdown(); !strings.Contains(md, "4 partition(s), 2 node(s) per region") {
		t.Errorf("the summary does not give the layout:\n%.600s", md)
	}
	for _, st := range res.Stores {
		if len(st.Nodes) != 2 {
			t.Fatalf("%s: stores of %d nodes, want 2", st.Region, len(st.Nodes))
		}
		for _, n := range st.Nodes {
			if n.Partitions != 2 || n.LiveBytes == 0 {
				t.Errorf("%s/%s: %d partitions, %d live bytes", st.Region, n.Node, n.Partitions, n.LiveBytes)
			}
		}
	}
	pairs, viaAE := 0, 0
	for _, p := range res.Convergence {
		if p.Missing != 0 {
			t.Errorf("%s → %s: %d writes missing", p.From, p.To, p.Missing)
		}
		pairs += p.Count + p.ViaAntiEntropy
		viaAE += p.ViaAntiEntropy
	}
	if want := res.DotsMeasured * (len(res.Regions) - 1); pairs != want {
		t.Errorf("%d (write, region) pairs measured, want %d (%d writes at %d other regions)", pairs, want, res.DotsMeasured, len(res.Regions)-1)
	}
	if viaAE*100 > pairs {
		t.Errorf("%d of %d (write, region) pairs counted as arrived by anti-entropy on a healthy cluster: an apply not matched to its partition's write?", viaAE, pairs)
	}
	if res.Ops.Unknown != 0 {
		t.Errorf("%d operations failed without an answer on a healthy cluster: %v", res.Ops.Unknown, res.Ops.Codes)
	}
}

func TestClientSendsToANodeOfTheRegionInTurn(t *testing.T) {
	cl := newClient([][]string{{"http://a0", "http://a1"}, {"http://b0"}}, 4, time.Second)
	var got []string
	for range 3 {
		got = append(got, cl.url(0), cl.url(1))
	}
	if want := "http://a0 http://b0 http://a1 http://b0 http://a0 http://b0"; strings.Join(got, " ") != want {
		t.Fatalf("%s, want %s", strings.Join(got, " "), want)
	}
}

// TestRunThroughAPartitionAndLoss cuts a region off mid-run on lossy
// links: its writes and the others' reach everyone after the heal, and
// nothing is lost or oversold.
func TestRunThroughAPartitionAndLoss(t *testing.T) {
	cfg := shortConfig(2)
	cfg.Rate = 150
	cfg.LossPct = 1
	cfg.Partition = "ap-south@200ms+800ms"
	res, _ := runShort(t, cfg)
	if res.Partition == nil || res.Partition.Region != "ap-south" || res.Partition.EndMS <= res.Partition.StartMS {
		t.Fatalf("partition window %+v", res.Partition)
	}
	var ap float64
	for _, p := range res.Convergence {
		if p.From == "ap-south" {
			ap = max(ap, p.Max)
		}
	}
	if ap < 500 {
		t.Errorf("ap-south's writes converged within %v ms while it was cut off for 800 ms", ap)
	}
}

func TestConfigValidate(t *testing.T) {
	bad := map[string]func(*Config){
		"no regions":                 func(c *Config) { c.Regions = 0 },
		"too many regions":           func(c *Config) { c.Regions = MaxRegions + 1 },
		"zero rate":                  func(c *Config) { c.Rate = 0 },
		"zero duration":              func(c *Config) { c.Duration = 0 },
		"negative warmup":            func(c *Config) { c.Warmup = -time.Second },
		"latency":                    func(c *Config) { c.Latency = "slow" },
		"loss":                       func(c *Config) { c.LossPct = 101 },
		"concurrency":                func(c *Config) { c.Concurrency = 0 },
		"durability":                 func(c *Config) { c.Durability = "never" },
		"partition syntax":           func(c *Config) { c.Partition = "ap-south" },
		"partition region":           func(c *Config) { c.Partition = "mars@1s+1s" },
		"partition duration":         func(c *Config) { c.Partition = "ap-south@1s+0s" },
		"region-4 of three":          func(c *Config) { c.Partition = "region-4@1s+1s" },
		"partition too late":         func(c *Config) { c.Partition = "ap-south@20s+1s" },
		"negative probe":             func(c *Config) { c.Probe = -time.Second },
		"negative stock":             func(c *Config) { c.Stock = -1 },
		"stock beyond a restock":     func(c *Config) { c.Stock = 1_000_001 },
		"partitions not 2^n":         func(c *Config) { c.Partitions = 6 },
		"too many partitions":        func(c *Config) { c.Partitions = 2 * MaxPartitions },
		"more nodes than partitions": func(c *Config) { c.Partitions, c.Nodes = 2, 4 },
		"too many nodes":             func(c *Config) { c.Regions, c.Partitions, c.Nodes = 3, 16, 16 },
	}
	for name, mutate := range bad {
		t.Run(name, func(t *testing.T) {
			c := DefaultConfig()
			mutate(&c)
			if err := c.Validate(); err == nil {
				t.Fatal("accepted")
			}
		})
	}
	c := DefaultConfig()
	c.Regions, c.Partition = 5, "region-5@2s+3s"
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestParsePartition(t *testing.T) {
	p, err := ParsePartition("eu-west@1.5s+250ms")
	if err != nil {
		t.Fatal(err)
	}
	if want := (Partition{Region: "eu-west", Start: 1500 * time.Millisecond, Duration: 250 * time.Millisecond}); p != want {
		t.Fatalf("%+v, want %+v", p, want)
	}
	if p.String() != "eu-west@1.5s+250ms" {
		t.Fatalf("String %q", p.String())
	}
	for _, s := range []string{"", "@1s+1s", "eu-west", "eu-west@1s", "eu-west@x+1s", "eu-west@1s+y", "eu-west@-1s+1s"} {
		if _, err := ParsePartition(s); err == nil {
			t.Errorf("%q accepted", s)
		}
	}
}

func TestRegionNamesAndLatencies(t *testing.T) {
	names := RegionNames(5)
	want := []string{"us-east", "eu-west", "ap-south", "region-4", "region-5"}
	if strings.Join(names, ",") != strings.Join(want, ",") {
		t.Fatalf("names %v, want %v", names, want)
	}
	if got := RegionNames(2); len(got) != 2 || got[1] != "eu-west" {
		t.Fatalf("RegionNames(2) = %v", got)
	}
	m := LatencyMatrix(names)
	if len(m) != 10 {
		t.Fatalf("%d pairs, want 10", len(m))
	}
	for pair, ms := range map[string]int{"us-east/eu-west": 34, "us-east/ap-south": 92, "eu-west/ap-south": 60,
		"us-east/region-4": 50, "region-4/region-5": 50, "ap-south/region-5": 50} {
		if m[pair] != ms {
			t.Errorf("%s = %d ms, want %d", pair, m[pair], ms)
		}
	}
}
