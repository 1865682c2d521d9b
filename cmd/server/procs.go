package server

import (
	"os"
	"runtime"
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
// base is the runtime's GOMAXPROCS, cpus the CPUs it may run on, env
// whether GOMAXPROCS is set in the environment.
func extraProcs(env bool, base, cpus int) bool {
	return !env && base > 1 && base >= cpus
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
		t.off = !extraProcs(env, t.base, runtime.NumCPU())
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
