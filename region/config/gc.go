package config

// DefaultGCPercent is the garbage collector's target percentage a region
// runs with when the config leaves gc.percent out: the heap may grow to
// five times what is live before a collection. A region's live heap is
// mostly the store's in-memory index, which every collection marks, while
// a write allocates short-lived garbage; at Go's own 100, collections cost
// a durable write about a tenth of its CPU.
const DefaultGCPercent = 400

// DefaultGCHeadroomMiB is gc.headroom_mib when the config leaves it out.
const DefaultGCHeadroomMiB = 256

// MaxGCPercent bounds gc.percent.
const MaxGCPercent = 10000

// MaxMemoryLimitMiB bounds gc.memory_limit_mib (1 PiB).
const MaxMemoryLimitMiB = 1 << 30

// GC configures the garbage collector of a region's process. The
// environment variables GOGC and GOMEMLIMIT, when set, take precedence
// over it.
type GC struct {
	// Percent is the collector's target percentage (GOGC): a collection
	// starts when the heap has grown by Percent % of what the last one
	// left live. 0 means DefaultGCPercent; -1 turns collections off
	// except as MemoryLimitMiB requires, which it must then set.
	Percent int `yaml:"percent"`
	// MemoryLimitMiB is a soft limit on the process's memory in MiB
	// (GOMEMLIMIT): near it the collector runs as often as it must,
	// whatever Percent says. 0 means 90 % of the container's memory
	// limit (cgroup v2 memory.max) when there is one, else no limit.
	MemoryLimitMiB int64 `yaml:"memory_limit_mib"`
	// HeadroomMiB bounds, in MiB, how far Percent lets the heap grow past
	// what the last collection left live: once the live heap exceeds
	// HeadroomMiB × 100 / Percent, the region lowers its percentage to
	// HeadroomMiB × 100 / live, but never below 100 (Go's default) nor
	// above Percent. A high Percent saves the CPU of collections while
	// the heap is small, and would multiply the memory of a large one. 0
	// means DefaultGCHeadroomMiB; -1 no bound.
	HeadroomMiB int64 `yaml:"headroom_mib"`
}

// EffectiveHeadroom is g.HeadroomMiB in bytes, with 0 read as
// DefaultGCHeadroomMiB and -1 as 0 (no bound).
func (g GC) EffectiveHeadroom() int64 {
	switch g.HeadroomMiB {
	case 0:
		return DefaultGCHeadroomMiB << 20
	case -1:
		return 0
	}
	return g.HeadroomMiB << 20
}

// EffectivePercent is g.Percent with 0 read as DefaultGCPercent.
func (g GC) EffectivePercent() int {
	if g.Percent == 0 {
		return DefaultGCPercent
	}
	return g.Percent
}

func (c *Config) validateGC(bad func(key, format string, args ...any)) {
	if p := c.GC.Percent; p < -1 || p > MaxGCPercent {
		bad("gc.percent", "%d is outside -1..%d", p, MaxGCPercent)
	}
	if m := c.GC.MemoryLimitMiB; m < 0 || m > MaxMemoryLimitMiB {
		bad("gc.memory_limit_mib", "%d is outside 0..%d", m, MaxMemoryLimitMiB)
	}
	if h := c.GC.HeadroomMiB; h < -1 || h > MaxMemoryLimitMiB {
		bad("gc.headroom_mib", "%d is outside -1..%d", h, MaxMemoryLimitMiB)
	}
	if c.GC.Percent == -1 && c.GC.MemoryLimitMiB == 0 {
		bad("gc.memory_limit_mib", "required when gc.percent is -1 (collections off)")
	}
}
