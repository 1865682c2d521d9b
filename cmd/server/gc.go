package server

import (
	"bytes"
	"math"
	"os"
	"runtime/debug"
	"strconv"

	"github.com/latticedb/lattice/region/config"
)

// cgroupMemoryMax is the cgroup v2 file holding the container's memory
// limit ("max" when there is none).
const cgroupMemoryMax = "/sys/fs/cgroup/memory.max"

// gcSettings is what applyGC set: the collector's percentage and the soft
// memory limit in bytes (math.MaxInt64: none), and whether each came from
// the environment instead of the config.
type gcSettings struct {
	percent     int
	percentEnv  bool
	limit       int64
	limitSource string // "config", "container", "none" or "GOMEMLIMIT"
}

// applyGC sets the process's garbage collector from g: its percentage
// (g.EffectivePercent) and its soft memory limit (g.MemoryLimitMiB, or
// 90 % of the container's memory limit read from memory.max). GOGC and
// GOMEMLIMIT in the environment, which the runtime has applied already,
// take precedence over the config.
func applyGC(g config.GC, memoryMax string) gcSettings {
	var s gcSettings
	if _, ok := os.LookupEnv("GOGC"); ok {
		s.percentEnv = true
		s.percent = debug.SetGCPercent(-1)
		debug.SetGCPercent(s.percent)
	} else {
		s.percent = g.EffectivePercent()
		debug.SetGCPercent(s.percent)
	}
	switch _, env := os.LookupEnv("GOMEMLIMIT"); {
	case env:
		s.limitSource = "GOMEMLIMIT"
		s.limit = debug.SetMemoryLimit(-1)
	case g.MemoryLimitMiB > 0:
		s.limitSource = "config"
		s.limit = g.MemoryLimitMiB << 20
		debug.SetMemoryLimit(s.limit)
	default:
		s.limit = math.MaxInt64
		s.limitSource = "none"
		if n, ok := containerMemory(memoryMax); ok {
			s.limit = n / 10 * 9
			s.limitSource = "container"
		}
		debug.SetMemoryLimit(s.limit)
	}
	return s
}

// containerMemory reads the limit in bytes from the cgroup v2 file path;
// false when it cannot be read or says "max".
func containerMemory(path string) (int64, bool) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, false
	}
	n, err := strconv.ParseInt(string(bytes.TrimSpace(b)), 10, 64)
	if err != nil || n <= 0 {
		return 0, false
	}
	return n, true
}
