package server

import (
	"math"
	"os"
	"path/filepath"
	"runtime/debug"
	"testing"

	"github.com/latticedb/lattice/region/config"
)

// TestApplyGC checks where the collector's percentage and memory limit
// come from: the config, the container's limit, or GOGC and GOMEMLIMIT.
func TestApplyGC(t *testing.T) {
	percent := debug.SetGCPercent(100)
	limit := debug.SetMemoryLimit(math.MaxInt64)
	t.Cleanup(func() {
		debug.SetGCPercent(percent)
		debug.SetMemoryLimit(limit)
	})
	if _, ok := os.LookupEnv("GOGC"); ok {
		t.Skip("GOGC is set in the environment, which applyGC leaves alone")
	}
	if _, ok := os.LookupEnv("GOMEMLIMIT"); ok {
		t.Skip("GOMEMLIMIT is set in the environment, which applyGC leaves alone")
	}
	dir := t.TempDir()
	memMax := filepath.Join(dir, "memory.max")
	write := func(s string) {
		if err := os.WriteFile(memMax, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	check := func(g config.GC, wantPercent int, wantLimit int64, wantFrom string) {
		t.Helper()
		s := applyGC(g, memMax)
		if s.percent != wantPercent || s.limit != wantLimit || s.limitSource != wantFrom {
			t.Errorf("applyGC(%+v) = %+v, want percent %d limit %d from %s", g, s, wantPercent, wantLimit, wantFrom)
		}
		if p := debug.SetGCPercent(wantPercent); p != wantPercent {
			t.Errorf("the runtime's percentage is %d, want %d", p, wantPercent)
		}
		if l := debug.SetMemoryLimit(-1); l != wantLimit {
			t.Errorf("the runtime's memory limit is %d, want %d", l, wantLimit)
		}
	}

	write("max\n")
	check(config.GC{}, config.DefaultGCPercent, math.MaxInt64, "none")
	write("1073741824\n")
	check(config.GC{}, config.DefaultGCPercent, 1073741824/10*9, "container")
	check(config.GC{Percent: 150, MemoryLimitMiB: 300}, 150, 300<<20, "config")
	check(config.GC{Percent: -1, MemoryLimitMiB: 300}, -1, 300<<20, "config")
	write("garbage")
	check(config.GC{}, config.DefaultGCPercent, math.MaxInt64, "none")
	os.Remove(memMax)
	check(config.GC{Percent: 200}, 200, math.MaxInt64, "none")

	t.Setenv("GOGC", "300")
	t.Setenv("GOMEMLIMIT", "1GiB")
	debug.SetGCPercent(300)
	debug.SetMemoryLimit(1 << 30)
	check(config.GC{Percent: 150, MemoryLimitMiB: 300}, 300, 1<<30, "GOMEMLIMIT")
}
