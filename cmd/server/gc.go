package server

import (
	"bytes"
	"math"
	"os"
	"runtime/debug"
	"runtime/metrics"
	"strconv"
	"sync"
	"time"

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
		tuner.set(0, 0)
	} else {
		s.percent = g.EffectivePercent()
		debug.SetGCPercent(s.percent)
		tuner.set(s.percent, g.EffectiveHeadroom())
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

// tunedPercent is the collector's percentage for a live heap of live
// bytes, given the configured percent and headroom (config.GC.HeadroomMiB
// in bytes, 0: no bound): percent while percent % of live stays within
// headroom, else headroom as a percentage of live, but not below 100 (nor
// below percent, if that is lower).
func tunedPercent(percent int, headroom, live int64) int {
	if percent <= 0 || headroom <= 0 || live <= 0 || int64(percent)*live/100 <= headroom {
		return percent
	}
	return max(min(percent, 100), int(headroom*100/live))
}

// gcTuner keeps the collector's percentage at tunedPercent of the live
// heap: it looks after each collection (polling the runtime's count once
// a second) and sets the percentage when it changed. One runs per process,
// started by the first applyGC.
type gcTuner struct {
	mu               sync.Mutex
	percent, applied int
	headroom         int64
	once             sync.Once
}

var tuner gcTuner

// tunerInterval is how often the tuner looks for a new collection.
const tunerInterval = time.Second

// set makes percent and headroom the tuner's settings (percent 0: leave
// the collector alone) and applies them to the current live heap.
func (t *gcTuner) set(percent int, headroom int64) {
	t.mu.Lock()
	t.percent, t.headroom, t.applied = percent, headroom, percent
	t.mu.Unlock()
	t.tune()
	if percent > 0 && headroom > 0 {
		t.once.Do(func() { go t.run() })
	}
}

func (t *gcTuner) run() {
	samples := []metrics.Sample{{Name: "/gc/cycles/total:gc-cycles"}}
	var cycles uint64
	for range time.Tick(tunerInterval) {
		metrics.Read(samples)
		if c := samples[0].Value.Uint64(); c != cycles {
			cycles = c
			t.tune()
		}
	}
}

// tune sets the collector's percentage for the live heap the last
// collection left.
func (t *gcTuner) tune() {
	samples := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	metrics.Read(samples)
	if samples[0].Value.Kind() != metrics.KindUint64 {
		return
	}
	live := int64(samples[0].Value.Uint64())
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.percent <= 0 {
		return
	}
	if p := tunedPercent(t.percent, t.headroom, live); p != t.applied {
		debug.SetGCPercent(p)
		t.applied = p
	}
}
