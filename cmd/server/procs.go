package server

import (
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
)

// An fsync holds its goroutine's P (GOMAXPROCS) for as long as it runs:
// the runtime hands a P in a system call to another thread only once
// sysmon has seen the call, and an idle sysmon sleeps up to 10 ms. A
// process whose stores fsync at once on all its Ps runs nothing else
// meanwhile: with three regions in one process on two CPUs (lattice
// bench, lattice dev), two group commits in flight stopped every request,
// delta and timer of all three until one returned, and local writes at
// 2,000 ops/s took p50 1.6–2.8 ms, p99 15–35 ms, where with two Ps more
// they took 0.8–0.9 ms and 5–8 ms (bench/RESULTS.md).
//
// So a process with several stores open runs one P more than the
// runtime's own number for each store beyond the first: however many of
// them fsync, as many Ps as a lone store leaves are free for the rest.
// (A lone store's fsync holds one P of several; one P more for it made
// no difference to a region's writes that the runs could separate, and
// cost CPU per write.) At most twice the runtime's number: while the
// collector marks, its background workers take a quarter of the Ps, so
// many more Ps than CPUs would hand it most of the CPUs. It leaves GOMAXPROCS alone when the environment
// sets it, when the runtime chose fewer Ps than the CPUs the process may
// run on (a container's CPU limit: more Ps would let the process exceed
// its quota and be throttled), and on one CPU, where each store hands its
// fsyncs to a syncer instead (region/store/commit.go).

// procTuner sets GOMAXPROCS for the stores open in the process. One runs
// per process.
type procTuner struct {
	mu     sync.Mutex
	read   bool // base and off are known
	off    bool // leave GOMAXPROCS alone
	base   int  // the runtime's GOMAXPROCS before the first store
	stores int
}

var procs procTuner

// extraProcs reports whether a process may run more Ps than base:
// base is the runtime's GOMAXPROCS, cpus the CPUs it may run on, limit
// its cgroup's CPU quota in CPUs (0: none), env whether GOMAXPROCS is set
// in the environment. The runtime rounds a quota up (to at least 2), so
// a quota within one CPU of the CPUs leaves base at cpus: the quota
// itself says whether there is one.
func extraProcs(env bool, base, cpus int, limit float64) bool {
	return !env && base > 1 && base >= cpus && (limit == 0 || limit >= float64(cpus))
}

// cpuLimit returns the CPU quota, in CPUs, of the process's cgroup and
// its ancestors (the smallest), or 0 if none is set or none can be read:
// cgroup v2's cpu.max, cgroup v1's cpu.cfs_quota_us over
// cpu.cfs_period_us, as the runtime reads them.
func cpuLimit() float64 {
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return 0
	}
	limit := 0.0
	take := func(l float64) {
		if l > 0 && (limit == 0 || l < limit) {
			limit = l
		}
	}
	walk := func(mount, path string, read func(dir string) float64) {
		for p := path; ; p = filepath.Dir(p) {
			take(read(filepath.Join(mount, p)))
			if p == "/" || p == "." || p == "" {
				return
			}
		}
	}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		f := strings.SplitN(line, ":", 3)
		switch {
		case len(f) != 3:
		case f[0] == "0" && f[1] == "":
			walk("/sys/fs/cgroup", f[2], cpuMaxV2)
		case slices.Contains(strings.Split(f[1], ","), "cpu"):
			for _, mount := range []string{"/sys/fs/cgroup/cpu", "/sys/fs/cgroup/cpu,cpuacct"} {
				walk(mount, f[2], cfsQuotaV1)
			}
		}
	}
	return limit
}

// cpuMaxV2 reads a cgroup v2 directory's quota ("max 100000": none).
func cpuMaxV2(dir string) float64 {
	b, err := os.ReadFile(filepath.Join(dir, "cpu.max"))
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return 0
	}
	return quotaOf(f[0], f[1])
}

// cfsQuotaV1 reads a cgroup v1 cpu directory's quota (-1: none).
func cfsQuotaV1(dir string) float64 {
	q, err1 := os.ReadFile(filepath.Join(dir, "cpu.cfs_quota_us"))
	p, err2 := os.ReadFile(filepath.Join(dir, "cpu.cfs_period_us"))
	if err1 != nil || err2 != nil {
		return 0
	}
	return quotaOf(strings.TrimSpace(string(q)), strings.TrimSpace(string(p)))
}

// quotaOf returns quota ÷ period, 0 if either is not a positive number.
func quotaOf(quota, period string) float64 {
	q, err1 := strconv.ParseFloat(quota, 64)
	p, err2 := strconv.ParseFloat(period, 64)
	if err1 != nil || err2 != nil || q <= 0 || p <= 0 {
		return 0
	}
	return q / p
}

// add records n stores opened (negative: closed) and sets GOMAXPROCS to
// the base plus one for each store open beyond the first, at most twice
// the base. It returns
// GOMAXPROCS as it left it.
func (t *procTuner) add(n int) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.read {
		_, env := os.LookupEnv("GOMAXPROCS")
		t.base = runtime.GOMAXPROCS(0)
		t.off = !extraProcs(env, t.base, runtime.NumCPU(), cpuLimit())
		t.read = true
	}
	t.stores = max(t.stores+n, 0)
	want := t.base + min(max(t.stores-1, 0), t.base)
	switch {
	case t.off || runtime.GOMAXPROCS(0) == want:
	case want == runtime.NumCPU():
		// The runtime's own choice, which follows a CPU limit set later.
		runtime.SetDefaultGOMAXPROCS()
	default:
		runtime.GOMAXPROCS(want)
	}
	if t.stores == 0 {
		t.read = false // read again at the next store
	}
	return runtime.GOMAXPROCS(0)
}
