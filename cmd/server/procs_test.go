package server

import (
	"os"
	"runtime"
	"testing"

	"github.com/latticedb/lattice/region/config"
)

func TestExtraProcs(t *testing.T) {
	for _, c := range []struct {
		env        bool
		base, cpus int
		limit      float64
		want       bool
	}{
		{false, 2, 2, 0, true},
		{false, 8, 8, 0, true},
		{false, 1, 1, 0, false},   // one CPU: the store's syncer
		{true, 2, 2, 0, false},    // GOMAXPROCS in the environment
		{false, 2, 4, 2, false},   // a CPU limit below the CPUs
		{false, 4, 2, 0, true},    // Ps set above the CPUs before the first store
		{false, 2, 2, 1.5, false}, // a limit the runtime rounds up to the CPUs
		{false, 4, 4, 3.5, false}, // the same on 4 CPUs
		{false, 4, 4, 4, true},    // a limit of every CPU
		{false, 2, 2, 1000, true}, // a limit above the CPUs
	} {
		if got := extraProcs(c.env, c.base, c.cpus, c.limit); got != c.want {
			t.Errorf("extraProcs(env %v, GOMAXPROCS %d, %d CPUs, limit %v) = %v, want %v", c.env, c.base, c.cpus, c.limit, got, c.want)
		}
	}
}

// TestProcsFollowStores starts two regions in one process, one of them
// with four partitions on its node, and checks that GOMAXPROCS is the
// runtime's own plus one per open store beyond the first (at most twice
// the runtime's own) while they run,
// and the runtime's own again once they stopped; or untouched, where the
// process may not add Ps (see extraProcs).
func TestProcsFollowStores(t *testing.T) {
	base := runtime.GOMAXPROCS(0)
	_, env := os.LookupEnv("GOMAXPROCS")
	extra := extraProcs(env, base, runtime.NumCPU(), cpuLimit())
	t.Logf("GOMAXPROCS %d, %d CPUs, GOMAXPROCS in the environment: %v; adds Ps: %v", base, runtime.NumCPU(), env, extra)
	want := func(stores int) int {
		if extra {
			return base + min(max(stores-1, 0), base)
		}
		return base
	}

	dir := t.TempDir()
	cfg := testConfig(dir, config.DurabilityAlways)
	a := startRegion(t, cfg, "us-east", Options{})
	if got := runtime.GOMAXPROCS(0); got != want(1) {
		t.Fatalf("one region open: GOMAXPROCS %d, want %d", got, want(1))
	}

	pcfg := testConfig(t.TempDir(), config.DurabilityAlways)
	pcfg.Partitions = 4
	b := startRegion(t, pcfg, "eu-west", Options{})
	if got := runtime.GOMAXPROCS(0); got != want(5) {
		t.Fatalf("a region and a node of four partitions open: GOMAXPROCS %d, want %d", got, want(5))
	}
	if err := b.srv.Close(); err != nil {
		t.Fatal(err)
	}
	if got := runtime.GOMAXPROCS(0); got != want(1) {
		t.Fatalf("the partitioned node closed: GOMAXPROCS %d, want %d", got, want(1))
	}
	if err := a.srv.Close(); err != nil {
		t.Fatal(err)
	}
	if got := runtime.GOMAXPROCS(0); got != base {
		t.Fatalf("every region closed: GOMAXPROCS %d, want the runtime's %d", got, base)
	}
}
