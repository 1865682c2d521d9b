//go:build linux

package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/latticedb/lattice/crdt"
	"github.com/latticedb/lattice/region/config"
)

// capacityLinesEnv, if set, is the number of lines (skus, one add each)
// BenchmarkNodeCapacity gives every cart; the default is 1.
const capacityLinesEnv = "LATTICE_CAPACITY_LINES"

// capacityHeadroomEnv, if set, is the gc.headroom_mib of the region the
// capacity benchmark runs (default: the config's default).
const capacityHeadroomEnv = "LATTICE_CAPACITY_HEADROOM_MIB"

// capacityClients is the number of requests BenchmarkNodeCapacity keeps in
// flight.
const capacityClients = 64

// BenchmarkNodeCapacity measures what a node holds and spends per cart and
// per durable write, by region layout: it starts one region of real
// `lattice serve` processes (durability always, the default gc settings)
// with P partitions over K nodes, loads b.N carts into it (each one add
// per line, LATTICE_CAPACITY_LINES lines, default 1) from 64 keep-alive
// HTTP/1.1 clients in this process, and reads each node's resident set
// (/proc/PID/status VmRSS), Go heap (its /metrics), store files and live
// data (GET /v1/cluster) and CPU time (/proc/PID/stat utime + stime,
// over the load only). Requests go to the nodes in turn (route=rr, as
// behind a load balancer: (K−1)/K of them are forwarded to their
// partition's owner) or straight to the owner (route=owner, as a
// partition-aware client). Run it with a fixed count, as in
//
//	go test -run '^$' -bench 'NodeCapacity' -benchtime 200000x ./bench
//
// Reported: writes/s; cpu-us/write, all nodes' CPU per write;
// writes/fsync, the writes one fsync made durable (group commit, per
// store); rss-MiB and
// heap-MiB, the largest node's resident set and Go heap in use after the
// load; live-heap-B/cart, the Go heap the last collection kept (next GC
// target ÷ (1 + gc.percent/100)) less the empty nodes', per cart; rss-B/cart,
// the nodes' resident sets less the empty nodes', per cart; file-B/cart and
// live-B/cart, the store files' and their live data's bytes per cart. Each
// node's own figures are logged (-v).
func BenchmarkNodeCapacity(b *testing.B) {
	bin := capacityBinary(b)
	lines := 1
	if v := os.Getenv(capacityLinesEnv); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 64 {
			b.Fatalf("%s=%q: want 1..64", capacityLinesEnv, v)
		}
		lines = n
	}
	for _, c := range []struct {
		partitions, nodes int
		route             string
	}{{1, 1, "rr"}, {8, 1, "rr"}, {8, 2, "rr"}, {8, 2, "owner"}} {
		b.Run(fmt.Sprintf("partitions=%d/nodes=%d/route=%s", c.partitions, c.nodes, c.route), func(b *testing.B) {
			capacityRun(b, bin, c.partitions, c.nodes, c.route == "owner", lines)
		})
	}
}

// BenchmarkRemoteApply measures what a region spends on another region's
// writes: two regions of one `lattice serve` process each, P partitions,
// replicating over QUIC on 127.0.0.1 (no emulated latency); b.N cart adds
// (one line each) are sent to us-east from 64 clients, and the benchmark
// waits until eu-west has applied every one. Reported: writes/s at
// us-east; origin-cpu-us/write, us-east's CPU per write (the write, its
// HTTP request, and sending it); apply-cpu-us/write, eu-west's CPU per
// write applied (receiving and applying it durably); catch-up-ms, how long
// after the last answer eu-west held every write. Run it as
//
//	go test -run '^$' -bench 'RemoteApply' -benchtime 100000x ./bench
func BenchmarkRemoteApply(b *testing.B) {
	bin := capacityBinary(b)
	for _, partitions := range []int{1, 8} {
		b.Run(fmt.Sprintf("partitions=%d", partitions), func(b *testing.B) {
			remoteApplyRun(b, bin, partitions)
		})
	}
}

func remoteApplyRun(b *testing.B, bin string, partitions int) {
	dir := b.TempDir()
	regions := []string{"us-east", "eu-west"}
	cfgPath, bases := writeRegions(b, bin, dir, "capacity", fmt.Sprintf("durability: always\npartitions: %d\n", partitions), regions)
	pids := map[string]int{}
	for _, r := range regions {
		cmd := exec.Command(bin, "serve", "--config", cfgPath, "--region", r, "--log-level", "warn")
		logf, err := os.Create(filepath.Join(dir, r+".log"))
		if err != nil {
			b.Fatal(err)
		}
		cmd.Stdout, cmd.Stderr = logf, logf
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		pids[r] = cmd.Process.Pid
		defer func() {
			cmd.Process.Signal(syscall.SIGTERM)
			cmd.Wait()
			logf.Close()
		}()
	}
	hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: capacityClients, DisableCompression: true}}
	state := func(r string) (clusterState, bool) { return fetchClusterState(hc, bases[r]) }
	// applied counts us-east's dots eu-west holds, over its partitions.
	applied := func() uint64 {
		st, ok := state("eu-west")
		if !ok {
			return 0
		}
		vvs := []map[string]uint64{st.VersionVector}
		for _, p := range st.Partitions {
			vvs = append(vvs, p.VersionVector)
		}
		var n uint64
		for _, vv := range vvs {
			for rep, c := range vv {
				if crdt.ReplicaID(rep).Region() == "us-east" {
					n += c
				}
			}
		}
		return n
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		connected := true
		for _, r := range regions {
			st, ok := state(r)
			connected = connected && ok && len(st.Peers) == 1 && st.Peers[0].Connected
		}
		if connected {
			break
		}
		if time.Now().After(deadline) {
			b.Fatal("the regions did not connect within 60 s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	cpu0 := map[string]time.Duration{}
	for _, r := range regions {
		cpu0[r] = procCPU(b, pids[r])
	}
	var next atomic.Uint64
	var failed atomic.Value
	var wg sync.WaitGroup
	b.ResetTimer()
	start := time.Now()
	for range capacityClients {
		wg.Go(func() {
			for failed.Load() == nil {
				i := int(next.Add(1) - 1)
				if i >= b.N {
					return
				}
				resp, err := hc.Post(fmt.Sprintf("%s/v1/carts/ra-%08d/items", bases["us-east"], i), "application/json", strings.NewReader(`{"sku":"sku-00","qty":1}`))
				if err != nil {
					failed.Store(err)
					return
				}
				msg, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					failed.Store(fmt.Errorf("POST at us-east: %d %s", resp.StatusCode, msg))
					return
				}
			}
		})
	}
	wg.Wait()
	answered := time.Now()
	if err, _ := failed.Load().(error); err != nil {
		b.Fatal(err)
	}
	deadline = time.Now().Add(120 * time.Second)
	for applied() < uint64(b.N) {
		if time.Now().After(deadline) {
			b.Fatalf("eu-west applied %d of %d writes within 120 s", applied(), b.N)
		}
		time.Sleep(20 * time.Millisecond)
	}
	caughtUp := time.Now()
	b.StopTimer()
	writes := float64(b.N)
	b.ReportMetric(writes/answered.Sub(start).Seconds(), "writes/s")
	b.ReportMetric(float64((procCPU(b, pids["us-east"])-cpu0["us-east"]).Microseconds())/writes, "origin-cpu-us/write")
	b.ReportMetric(float64((procCPU(b, pids["eu-west"])-cpu0["eu-west"]).Microseconds())/writes, "apply-cpu-us/write")
	b.ReportMetric(float64(caughtUp.Sub(answered).Milliseconds()), "catch-up-ms")
	b.ReportMetric(0, "ns/op")
}

var capacityBin struct {
	once sync.Once
	path string
	err  error
}

// capacityBinary builds the lattice binary once per test process.
func capacityBinary(b *testing.B) string {
	capacityBin.once.Do(func() {
		dir, err := os.MkdirTemp("", "lattice-capacity-")
		if err != nil {
			capacityBin.err = err
			return
		}
		capacityBin.path = filepath.Join(dir, "lattice")
		out, err := exec.Command("go", "build", "-o", capacityBin.path, "../cmd/lattice").CombinedOutput()
		if err != nil {
			capacityBin.err = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if capacityBin.err != nil {
		b.Fatal(capacityBin.err)
	}
	return capacityBin.path
}

// capacityNode is one `lattice serve` process of the benchmark.
type capacityNode struct {
	name, base  string
	cmd         *exec.Cmd
	owned       []int
	carts       int
	cpu0        time.Duration
	rss0, heap0 float64
}

func capacityRun(b *testing.B, bin string, partitions, nodes int, byOwner bool, lines int) {
	dir := b.TempDir()
	var cfg strings.Builder
	fmt.Fprintf(&cfg, "cluster: capacity\ndata_dir: ./data\ntls_dir: ./certs\ndurability: always\npartitions: %d\n", partitions)
	if v := os.Getenv(capacityHeadroomEnv); v != "" {
		fmt.Fprintf(&cfg, "gc: {headroom_mib: %s}\n", v)
	}
	fmt.Fprintf(&cfg, "regions:\n  - name: us-east\n")
	var ns []*capacityNode
	if nodes == 1 {
		base := freeTCP(b)
		fmt.Fprintf(&cfg, "    api: %q\n    peer: %q\n", base, freeUDPAddr(b))
		ns = append(ns, &capacityNode{name: "", base: "http://" + base})
		for p := range partitions {
			ns[0].owned = append(ns[0].owned, p)
		}
	} else {
		fmt.Fprintf(&cfg, "    nodes:\n")
		lay := layout{partitions: partitions, nodes: nodes}
		for j := range nodes {
			base := freeTCP(b)
			lo, hi := lay.ranges(j)
			fmt.Fprintf(&cfg, "      - {name: n%d, api: %q, peer: %q, partitions: \"%d-%d\"}\n", j, base, freeUDPAddr(b), lo, hi)
			n := &capacityNode{name: fmt.Sprintf("n%d", j), base: "http://" + base}
			for p := lo; p <= hi; p++ {
				n.owned = append(n.owned, p)
			}
			ns = append(ns, n)
		}
	}
	cfgPath := filepath.Join(dir, "lattice.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg.String()), 0o644); err != nil {
		b.Fatal(err)
	}
	if out, err := exec.Command(bin, "certs", "--dir", filepath.Join(dir, "certs"), "--cluster", "capacity", "us-east").CombinedOutput(); err != nil {
		b.Fatalf("lattice certs: %v\n%s", err, out)
	}
	owner := make([]*capacityNode, partitions)
	for _, n := range ns {
		for _, p := range n.owned {
			owner[p] = n
		}
		args := []string{"serve", "--config", cfgPath, "--region", "us-east", "--log-level", "warn"}
		if n.name != "" {
			args = append(args, "--node", n.name)
		}
		n.cmd = exec.Command(bin, args...)
		logf, err := os.Create(filepath.Join(dir, "node"+n.name+".log"))
		if err != nil {
			b.Fatal(err)
		}
		n.cmd.Stdout, n.cmd.Stderr = logf, logf
		if err := n.cmd.Start(); err != nil {
			b.Fatal(err)
		}
		defer func() {
			n.cmd.Process.Signal(syscall.SIGTERM)
			n.cmd.Wait()
			logf.Close()
		}()
	}
	hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: capacityClients, DisableCompression: true}}
	for _, n := range ns {
		deadline := time.Now().Add(30 * time.Second)
		for {
			resp, err := hc.Get(n.base + "/readyz")
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode == 200 {
					break
				}
			}
			if time.Now().After(deadline) {
				b.Fatalf("node %q not ready within 30 s: %v", n.name, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	for _, n := range ns {
		n.rss0 = procRSS(b, n.cmd.Process.Pid)
		n.heap0 = liveHeap(b, hc, n.base)
		n.cpu0 = procCPU(b, n.cmd.Process.Pid)
	}

	ids := make([]string, b.N)
	for i := range ids {
		ids[i] = fmt.Sprintf("cap-%08d", i)
		owner[config.PartitionOf(ids[i], partitions)].carts++
	}
	var next, rr atomic.Uint64
	var failed atomic.Value
	var wg sync.WaitGroup
	b.ResetTimer()
	start := time.Now()
	for range capacityClients {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= len(ids) || failed.Load() != nil {
					return
				}
				for l := range lines {
					n := ns[(rr.Add(1)-1)%uint64(len(ns))]
					if byOwner {
						n = owner[config.PartitionOf(ids[i], partitions)]
					}
					body := fmt.Sprintf(`{"sku":"sku-%02d","qty":1}`, l)
					resp, err := hc.Post(n.base+"/v1/carts/"+ids[i]+"/items", "application/json", strings.NewReader(body))
					if err != nil {
						failed.Store(err)
						return
					}
					msg, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					if resp.StatusCode != 200 {
						failed.Store(fmt.Errorf("POST %s at %s: %d %s", ids[i], n.base, resp.StatusCode, msg))
						return
					}
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	if err, _ := failed.Load().(error); err != nil {
		b.Fatal(err)
	}
	writes := float64(b.N * lines)
	var cpu time.Duration
	var rssMax, heapMax, rssGrowth, liveGrowth, file, live, fsyncs float64
	for _, n := range ns {
		c := procCPU(b, n.cmd.Process.Pid) - n.cpu0
		cpu += c
		rss := procRSS(b, n.cmd.Process.Pid)
		m := metrics(b, hc, n.base)
		lh := liveHeap(b, hc, n.base)
		var cl struct {
			Store struct {
				FileBytes int64 `json:"file_bytes"`
				LiveBytes int64 `json:"live_bytes"`
			} `json:"store"`
		}
		getJSON(b, hc, n.base+"/v1/cluster", &cl)
		rssMax, heapMax = max(rssMax, rss), max(heapMax, m["go_memstats_heap_inuse_bytes"])
		rssGrowth += rss - n.rss0
		liveGrowth += lh - n.heap0
		file += float64(cl.Store.FileBytes)
		live += float64(cl.Store.LiveBytes)
		fsyncs += sumOf(m, "lattice_store_fsync_seconds_count")
		if b.N > 1 && n.carts > 0 {
			b.Logf("node %q: %d partitions, %d carts (%.1f %%); CPU %.1f µs per write it owns; RSS %.1f MiB (%.1f before the load), heap in use %.1f MiB, live heap ≈ %.1f MiB (%.1f before); store file %.1f MiB, live %.1f MiB",
				n.name, len(n.owned), n.carts, 100*float64(n.carts)/float64(b.N), float64(c.Microseconds())/float64(n.carts*lines),
				rss/(1<<20), n.rss0/(1<<20), m["go_memstats_heap_inuse_bytes"]/(1<<20), lh/(1<<20), n.heap0/(1<<20),
				float64(cl.Store.FileBytes)/(1<<20), float64(cl.Store.LiveBytes)/(1<<20))
		}
	}
	carts := float64(b.N)
	b.ReportMetric(writes/elapsed.Seconds(), "writes/s")
	b.ReportMetric(float64(cpu.Microseconds())/writes, "cpu-us/write")
	b.ReportMetric(writes/fsyncs, "writes/fsync")
	b.ReportMetric(rssMax/(1<<20), "rss-MiB")
	b.ReportMetric(heapMax/(1<<20), "heap-MiB")
	b.ReportMetric(rssGrowth/carts, "rss-B/cart")
	b.ReportMetric(liveGrowth/carts, "live-heap-B/cart")
	b.ReportMetric(file/carts, "file-B/cart")
	b.ReportMetric(live/carts, "live-B/cart")
	b.ReportMetric(0, "ns/op")
}

// liveHeap returns the Go heap a node's last garbage collection kept, from
// its /metrics: the next collection's target over 1 + percent/100, the
// percentage the collector runs at (go_gc_gogc_percent; the region lowers
// it for a large heap, gc.headroom_mib).
func liveHeap(b *testing.B, hc *http.Client, base string) float64 {
	m := metrics(b, hc, base)
	return m["go_memstats_next_gc_bytes"] / (1 + m["go_gc_gogc_percent"]/100)
}

// sumOf returns the sum of the samples of name over its label sets, from
// metrics.
func sumOf(m map[string]float64, name string) float64 {
	var sum float64
	for k, v := range m {
		if k == name || strings.HasPrefix(k, name+"{") {
			sum += v
		}
	}
	return sum
}

// metrics returns the samples of a node's /metrics, by name with its
// labels as written ("name" or "name{label=...}").
func metrics(b *testing.B, hc *http.Client, base string) map[string]float64 {
	resp, err := hc.Get(base + "/metrics")
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		if f, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
			out[line[:i]] = f
		}
	}
	return out
}

func getJSON(b *testing.B, hc *http.Client, url string, v any) {
	resp, err := hc.Get(url)
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 {
		b.Fatalf("GET %s: %d %v %s", url, resp.StatusCode, err, body)
	}
	if err := json.Unmarshal(body, v); err != nil {
		b.Fatalf("GET %s: %v", url, err)
	}
}

// procRSS returns the resident set of process pid, in bytes.
func procRSS(b *testing.B, pid int) float64 {
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	for line := range bytes.Lines(st) {
		if v, ok := bytes.CutPrefix(line, []byte("VmRSS:")); ok {
			kb, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(string(v)), " kB"), 64)
			if err != nil {
				b.Fatal(err)
			}
			return kb * 1024
		}
	}
	b.Fatalf("no VmRSS in /proc/%d/status", pid)
	return 0
}

// procCPU returns the CPU time (user and system) process pid has used.
func procCPU(b *testing.B, pid int) time.Duration {
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	// The command name, in parentheses, may hold spaces: fields count
	// from after it. utime and stime are fields 14 and 15, in clock
	// ticks (100 a second on Linux).
	i := bytes.LastIndexByte(st, ')')
	f := strings.Fields(string(st[i+1:]))
	if len(f) < 13 {
		b.Fatal(errors.New("short /proc/PID/stat"))
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		b.Fatalf("/proc/%d/stat: %v %v", pid, err1, err2)
	}
	return time.Duration(ut+stime) * 10 * time.Millisecond
}

// freeTCP returns a TCP address on 127.0.0.1 that was free a moment ago.
func freeTCP(b *testing.B) string {
	var lc net.ListenConfig
	ln, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func freeUDPAddr(b *testing.B) string {
	a, err := freeUDP()
	if err != nil {
		b.Fatal(err)
	}
	return a
}

// writeRegions writes dir/lattice.yaml for a cluster of one `lattice serve`
// process per region of regions (free loopback addresses, data and
// certificates under dir), with extra (YAML lines, each ending in a
// newline) among its top-level keys, and makes the cluster's
// certificates with bin. It returns the config's path and each region's
// API base URL.
func writeRegions(b *testing.B, bin, dir, cluster, extra string, regions []string) (string, map[string]string) {
	var cfg strings.Builder
	fmt.Fprintf(&cfg, "cluster: %s\ndata_dir: ./data\ntls_dir: ./certs\n%sregions:\n", cluster, extra)
	bases := map[string]string{}
	for _, r := range regions {
		api := freeTCP(b)
		bases[r] = "http://" + api
		fmt.Fprintf(&cfg, "  - {name: %s, api: %q, peer: %q}\n", r, api, freeUDPAddr(b))
	}
	cfgPath := filepath.Join(dir, "lattice.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg.String()), 0o644); err != nil {
		b.Fatal(err)
	}
	if out, err := exec.Command(bin, append([]string{"certs", "--dir", filepath.Join(dir, "certs"), "--cluster", cluster}, regions...)...).CombinedOutput(); err != nil {
		b.Fatalf("lattice certs: %v\n%s", err, out)
	}
	return cfgPath, bases
}

// clusterState is what the benchmarks read of GET /v1/cluster.
type clusterState struct {
	CatchingUp    bool              `json:"catching_up"`
	VersionVector map[string]uint64 `json:"version_vector"`
	Peers         []struct {
		Connected bool `json:"connected"`
	} `json:"peers"`
	Partitions []struct {
		VersionVector map[string]uint64 `json:"version_vector"`
	} `json:"partitions"`
}

// fetchClusterState reads GET /v1/cluster of the region at base; false if
// it does not answer 200 with a status.
func fetchClusterState(hc *http.Client, base string) (clusterState, bool) {
	var st clusterState
	resp, err := hc.Get(base + "/v1/cluster")
	if err != nil {
		return st, false
	}
	defer resp.Body.Close()
	return st, resp.StatusCode == 200 && json.NewDecoder(resp.Body).Decode(&st) == nil
}
