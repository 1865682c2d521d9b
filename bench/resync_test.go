//go:build linux

package bench

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// Environment knobs of BenchmarkResync.
const (
	resyncLinesEnv = "LATTICE_RESYNC_LINES" // lines per preloaded cart (default 3)
	resyncRateEnv  = "LATTICE_RESYNC_RATE"  // writes per second at the healthy region (default 500)
	resyncIdleEnv  = "LATTICE_RESYNC_IDLE"  // how long the idle window runs (default 10s)
	// LATTICE_RESYNC_AE_RATE is the regions' anti_entropy_rate_bytes_per_sec
	// (default: the config's default).
	resyncAERateEnv = "LATTICE_RESYNC_AE_RATE"
	// LATTICE_RESYNC_HEALTHY_CPUS is a CPU list (taskset's form, such as
	// 0 or 0-1) for us-east, the healthy region: it then runs on those
	// CPUs alone, as it would run on a machine of its own, while eu-west
	// and the load generator run where the benchmark runs (start it with
	// taskset -c on the other CPUs).
	resyncHealthyCPUsEnv = "LATTICE_RESYNC_HEALTHY_CPUS"
)

// BenchmarkResync measures what a full resync costs and what it does to
// the live path of the region that serves it. Two regions of real
// `lattice serve` processes (durability always, 34 ms one way emulated
// between them) start empty and eu-west is backed up (`lattice backup`);
// b.N carts of LATTICE_RESYNC_LINES lines (default 3) are then added at
// us-east from 64 clients, and the benchmark waits until eu-west holds
// them all. It then writes to fresh carts at us-east at a steady
// LATTICE_RESYNC_RATE (default 500 writes/s, open loop, evenly spaced)
// for LATTICE_RESYNC_IDLE (default 10 s): the idle window (both regions
// run with anti_entropy_rate_bytes_per_sec LATTICE_RESYNC_AE_RATE, when
// set). Without
// pausing that load it SIGKILLs eu-west, restores the empty backup
// (`lattice restore`: eu-west comes back as a new incarnation that has
// lost everything) and starts it again; the resync window runs from
// that start until eu-west reports it is no longer catching up (anti-
// entropy completed with us-east, GET /v1/cluster catching_up false),
// and the benchmark checks that eu-west then holds every cart.
//
// Reported: resync-s, the resync window; resync-MB, the replication
// bytes both ways between the regions in it (us-east's counters: the
// live deltas of the load are in it too, about 100 B a write); keys/s,
// the keys us-east shipped per second of the window; idle-p50-ms,
// idle-p99-ms, resync-p50-ms and resync-p99-ms, the latency of us-east's
// writes (request to answer, from this process) sent in each window;
// p99-ratio, resync-p99-ms ÷ idle-p99-ms; idle-slow-fsyncs and
// resync-slow-fsyncs, us-east's fsyncs slower than 50 ms in each window
// (a stall of the disk, which decides a p99 on its own). Run it as
//
//	go test -run '^$' -bench Resync -benchtime 100000x ./bench
//
// On a machine of few cores the two regions and the load generator share
// them, and eu-west's catch-up (a CPU-bound apply of every key) then
// slows us-east's writes as two machines would not. To measure what the
// resync itself costs the healthy region, give it cores of its own:
//
//	LATTICE_RESYNC_HEALTHY_CPUS=0 taskset -c 1 go test -run '^$' -bench Resync -benchtime 50000x ./bench
//
// It is a benchmark: make test does not run it.
func BenchmarkResync(b *testing.B) {
	bin := capacityBinary(b)
	lines := envInt(b, resyncLinesEnv, 3, 1, 64)
	rate := envInt(b, resyncRateEnv, 500, 1, 20000)
	idle := 10 * time.Second
	if v := os.Getenv(resyncIdleEnv); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			b.Fatalf("%s=%q: want a positive duration", resyncIdleEnv, v)
		}
		idle = d
	}

	dir := b.TempDir()
	regions := []string{"us-east", "eu-west"}
	extra := "durability: always\nemulate:\n  latency_ms: {\"us-east/eu-west\": 34}\n"
	if v := os.Getenv(resyncAERateEnv); v != "" {
		extra += "anti_entropy_rate_bytes_per_sec: " + v + "\n"
	}
	cfgPath, bases := writeRegions(b, bin, dir, "resync", extra, regions)
	// eu-west keeps its store in memory (/dev/shm) when it can: its
	// catch-up writes would otherwise share us-east's disk, which in a
	// deployment they do not, and a stall of this machine's shared disk
	// decides us-east's p99 on its own (see the slow-fsync counts).
	if fi, err := os.Stat("/dev/shm"); err == nil && fi.IsDir() {
		shm, err := os.MkdirTemp("/dev/shm", "lattice-resync-")
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { os.RemoveAll(shm) })
		if err := os.MkdirAll(filepath.Join(dir, "data"), 0o755); err != nil {
			b.Fatal(err)
		}
		if err := os.Symlink(shm, filepath.Join(dir, "data", "eu-west")); err != nil {
			b.Fatal(err)
		}
	}
	healthyCPUs := os.Getenv(resyncHealthyCPUsEnv)
	if healthyCPUs != "" {
		if _, err := exec.LookPath("taskset"); err != nil {
			b.Fatalf("%s needs taskset: %v", resyncHealthyCPUsEnv, err)
		}
	}
	procs := map[string]*exec.Cmd{}
	start := func(r string) {
		cmd := exec.Command(bin, "serve", "--config", cfgPath, "--region", r, "--log-level", "warn")
		if r == "us-east" && healthyCPUs != "" {
			cmd = exec.Command("taskset", "-c", healthyCPUs, bin, "serve", "--config", cfgPath, "--region", r, "--log-level", "warn")
		}
		logf, err := os.OpenFile(filepath.Join(dir, r+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			b.Fatal(err)
		}
		cmd.Stdout, cmd.Stderr = logf, logf
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		go func() { cmd.Wait(); logf.Close() }()
		procs[r] = cmd
	}
	defer func() {
		for _, cmd := range procs {
			cmd.Process.Signal(syscall.SIGTERM)
		}
		for _, cmd := range procs {
			for cmd.ProcessState == nil && cmd.Process.Signal(syscall.Signal(0)) == nil {
				time.Sleep(20 * time.Millisecond)
			}
		}
	}()
	for _, r := range regions {
		start(r)
	}
	hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: capacityClients, DisableCompression: true}}
	state := func(r string) (clusterState, bool) { return fetchClusterState(hc, bases[r]) }
	waitFor := func(what string, limit time.Duration, cond func() bool) time.Time {
		deadline := time.Now().Add(limit)
		for !cond() {
			if time.Now().After(deadline) {
				b.Fatalf("%s: not within %v", what, limit)
			}
			time.Sleep(20 * time.Millisecond)
		}
		return time.Now()
	}
	connected := func() bool {
		for _, r := range regions {
			st, ok := state(r)
			if !ok || len(st.Peers) != 1 || !st.Peers[0].Connected {
				return false
			}
		}
		return true
	}
	waitFor("the regions connect", 60*time.Second, connected)

	snap := filepath.Join(dir, "eu-west-empty.backup")
	if out, err := exec.Command(bin, "backup", "--config", cfgPath, "--region", "eu-west", "--out", snap).CombinedOutput(); err != nil {
		b.Fatalf("lattice backup: %v\n%s", err, out)
	}

	// Preload b.N carts at us-east.
	post := func(base, cart, sku string) error {
		resp, err := hc.Post(base+"/v1/carts/"+cart+"/items", "application/json", strings.NewReader(`{"sku":"`+sku+`","qty":1}`))
		if err != nil {
			return err
		}
		msg, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("POST %s: %d %s", cart, resp.StatusCode, msg)
		}
		return nil
	}
	var next atomic.Uint64
	var failed atomic.Value
	var wg sync.WaitGroup
	loadStart := time.Now()
	for range capacityClients {
		wg.Go(func() {
			for failed.Load() == nil {
				i := int(next.Add(1) - 1)
				if i >= b.N {
					return
				}
				for l := range lines {
					if err := post(bases["us-east"], fmt.Sprintf("rs-%08d", i), fmt.Sprintf("sku-%02d", l)); err != nil {
						failed.Store(err)
						return
					}
				}
			}
		})
	}
	wg.Wait()
	if err, _ := failed.Load().(error); err != nil {
		b.Fatal(err)
	}
	ours := func(r string) uint64 {
		st, _ := state(r)
		var n uint64
		for rep, c := range st.VersionVector {
			if strings.HasPrefix(rep, "us-east") {
				n += c
			}
		}
		return n
	}
	want := ours("us-east")
	waitFor("eu-west holds the preloaded carts", 10*time.Minute, func() bool { return ours("eu-west") >= want })
	b.Logf("preloaded %d carts of %d lines in %v", b.N, lines, time.Since(loadStart).Round(time.Millisecond))

	// The steady load at us-east, through both windows.
	type sample struct {
		at  time.Time
		lat time.Duration
	}
	var (
		mu      sync.Mutex
		samples []sample
		errs    atomic.Int64
	)
	ctx, stop := context.WithCancel(context.Background())
	loadDone := make(chan struct{})
	go func() {
		defer close(loadDone)
		sem := make(chan struct{}, capacityClients)
		var lw sync.WaitGroup
		t0 := time.Now()
		for i := 0; ctx.Err() == nil; i++ {
			at := t0.Add(time.Duration(i) * time.Second / time.Duration(rate))
			if d := time.Until(at); d > 0 {
				select {
				case <-ctx.Done():
				case <-time.After(d):
				}
			}
			sem <- struct{}{}
			lw.Go(func() {
				defer func() { <-sem }()
				sent := time.Now()
				if err := post(bases["us-east"], fmt.Sprintf("live-%08d", i), "sku-live"); err != nil {
					errs.Add(1)
					return
				}
				mu.Lock()
				samples = append(samples, sample{sent, time.Since(sent)})
				mu.Unlock()
			})
		}
		lw.Wait()
	}()
	idleStart := time.Now()
	atIdle := metrics(b, hc, bases["us-east"])
	time.Sleep(idle) // the idle window: the load runs meanwhile
	idleEnd := time.Now()

	sentBefore := metrics(b, hc, bases["us-east"])
	procs["eu-west"].Process.Signal(syscall.SIGKILL)
	waitFor("eu-west exits", 30*time.Second, func() bool { return procs["eu-west"].Process.Signal(syscall.Signal(0)) != nil })
	if out, err := exec.Command(bin, "restore", "--config", cfgPath, "--region", "eu-west", "--from", snap).CombinedOutput(); err != nil {
		b.Fatalf("lattice restore: %v\n%s", err, out)
	}
	b.ResetTimer()
	resyncStart := time.Now()
	start("eu-west")
	waitFor("eu-west starts catching up", 60*time.Second, func() bool { st, ok := state("eu-west"); return ok && st.CatchingUp })
	resyncEnd := waitFor("eu-west catches up", 30*time.Minute, func() bool { st, ok := state("eu-west"); return ok && !st.CatchingUp })
	b.StopTimer()
	sentAfter := metrics(b, hc, bases["us-east"])
	stop()
	<-loadDone
	if n := errs.Load(); n > 0 {
		b.Errorf("%d writes at us-east failed during the benchmark", n)
	}
	// eu-west now holds every preloaded cart: their dots are in its
	// version vector.
	if got := ours("eu-west"); got < want {
		b.Errorf("eu-west holds %d of us-east's first %d writes after catching up", got, want)
	}

	window := func(from, to time.Time) []float64 {
		var ms []float64
		for _, s := range samples {
			if !s.at.Before(from) && s.at.Before(to) {
				ms = append(ms, float64(s.lat.Microseconds())/1000)
			}
		}
		slices.Sort(ms)
		return ms
	}
	q := func(xs []float64, p float64) float64 {
		if len(xs) == 0 {
			return 0
		}
		return xs[min(len(xs)-1, int(p*float64(len(xs))))]
	}
	idleMS, resyncMS := window(idleStart, idleEnd), window(resyncStart, resyncEnd)
	delta := func(name string) float64 { return sumOf(sentAfter, name) - sumOf(sentBefore, name) }
	bytes := delta("lattice_replication_bytes_sent_total") + delta("lattice_replication_bytes_received_total")
	keys := delta("lattice_antientropy_keys_total")
	secs := resyncEnd.Sub(resyncStart).Seconds()
	// Fsyncs slower than 50 ms: a stall of the disk holds up every write
	// waiting for it, and at 500 writes/s one such stall decides a p99.
	slow := func(from, to map[string]float64) float64 {
		n := func(m map[string]float64) float64 {
			return m[`lattice_store_fsync_seconds_count{region="us-east"}`] - m[`lattice_store_fsync_seconds_bucket{region="us-east",le="0.05"}`]
		}
		return n(to) - n(from)
	}
	pressure, _ := os.ReadFile("/proc/pressure/cpu")
	b.Logf("idle window: %d writes, resync window: %d writes over %.1f s; keys shipped %.0f; CPU pressure after: %s",
		len(idleMS), len(resyncMS), secs, keys, strings.TrimSpace(strings.SplitN(string(pressure), "\n", 2)[0]))
	b.ReportMetric(slow(atIdle, sentBefore), "idle-slow-fsyncs")
	b.ReportMetric(slow(sentBefore, sentAfter), "resync-slow-fsyncs")
	b.ReportMetric(secs, "resync-s")
	b.ReportMetric(bytes/1e6, "resync-MB")
	b.ReportMetric(keys/secs, "keys/s")
	b.ReportMetric(q(idleMS, 0.5), "idle-p50-ms")
	b.ReportMetric(q(idleMS, 0.99), "idle-p99-ms")
	b.ReportMetric(q(resyncMS, 0.5), "resync-p50-ms")
	b.ReportMetric(q(resyncMS, 0.99), "resync-p99-ms")
	if p := q(idleMS, 0.99); p > 0 {
		b.ReportMetric(q(resyncMS, 0.99)/p, "p99-ratio")
	}
	b.ReportMetric(0, "ns/op")
}

// envInt returns the integer in environment variable name, def when it
// is unset; it fails b when the value is not an integer in lo..hi.
func envInt(b *testing.B, name string, def, lo, hi int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < lo || n > hi {
		b.Fatalf("%s=%q: want %d..%d", name, v, lo, hi)
	}
	return n
}
