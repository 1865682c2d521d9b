package server

import (
	"math"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
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

// TestTunedPercent checks the percentage the collector runs at for a
// live heap: the configured one while its headroom stays within the
// bound, else the bound as a share of the live heap, not below 100.
func TestTunedPercent(t *testing.T) {
	const mib = 1 << 20
	for _, c := range []struct {
		percent        int
		headroom, live int64
		want           int
	}{
		{400, 1024 * mib, 100 * mib, 400},  // 400 MiB of headroom: within a 1 GiB bound
		{400, 1024 * mib, 256 * mib, 400},  // exactly the bound
		{400, 1024 * mib, 512 * mib, 200},  // 1 GiB is 200 % of 512 MiB
		{400, 1024 * mib, 4096 * mib, 100}, // 25 % would be below Go's default
		{50, 1024 * mib, 4096 * mib, 50},   // a configured percentage below 100 stays
		{400, 0, 4096 * mib, 400},          // no bound
		{-1, 1024 * mib, 4096 * mib, -1},   // collections off: left alone
		{400, 1024 * mib, 0, 400},          // nothing live yet
	} {
		if got := tunedPercent(c.percent, c.headroom, c.live); got != c.want {
			t.Errorf("tunedPercent(%d, %d MiB, %d MiB) = %d, want %d", c.percent, c.headroom/mib, c.live/mib, got, c.want)
		}
	}
}

// TestGCHeadroom checks that applyGC's tuner lowers the runtime's
// percentage once the live heap makes the configured percentage's
// headroom exceed gc.headroom_mib, and restores it when told to.
func TestGCHeadroom(t *testing.T) {
	if _, ok := os.LookupEnv("GOGC"); ok {
		t.Skip("GOGC is set in the environment, which applyGC leaves alone")
	}
	percent := debug.SetGCPercent(100)
	limit := debug.SetMemoryLimit(math.MaxInt64)
	t.Cleanup(func() {
		tuner.set(0, 0)
		debug.SetGCPercent(percent)
		debug.SetMemoryLimit(limit)
	})
	live := make([][]byte, 64)
	for i := range live {
		live[i] = make([]byte, 1<<20)
	}
	runtime.GC()
	read := func() int {
		s := []metrics.Sample{{Name: "/gc/gogc:percent"}}
		metrics.Read(s)
		return int(s[0].Value.Uint64())
	}
	applyGC(config.GC{Percent: 400, HeadroomMiB: 16}, filepath.Join(t.TempDir(), "none"))
	// 16 MiB is 25 % of the 64 MiB kept live: the floor, 100.
	if got := read(); got != 100 {
		t.Errorf("with 64 MiB live and gc.headroom_mib 16, the runtime's percentage is %d, want 100", got)
	}
	applyGC(config.GC{Percent: 400, HeadroomMiB: -1}, filepath.Join(t.TempDir(), "none"))
	if got := read(); got != 400 {
		t.Errorf("with gc.headroom_mib -1, the runtime's percentage is %d, want 400", got)
	}
	runtime.KeepAlive(live)
}
