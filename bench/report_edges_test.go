package bench

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestRunWithNoOperationInTheMeasuredPeriod: a rate so low that no
// operation falls in the measured period (none at all, or only warm-up
// ones answered before the warm-up ends) is a valid configuration; the
// run reports zero measured operations and writes a parseable
// results.json instead of failing.
func TestRunWithNoOperationInTheMeasuredPeriod(t *testing.T) {
	one := []string{"us-east"}
	home := func(string) string { return "us-east" }
	for name, c := range map[string]struct {
		seed           uint64
		rate           float64
		warmup, period time.Duration
		warmupOps      int
	}{
		// rate 0.01 ops/s for 0.2 s: the schedule is empty.
		"no operation": {seed: 1, rate: 0.01, warmup: 0, period: 200 * time.Millisecond, warmupOps: 0},
		// rate 4 ops/s, seed 22: one operation at 0.29 s of a 1 s
		// warm-up, none in the 0.3 s measured after it.
		"warm-up operations only": {seed: 22, rate: 4, warmup: time.Second, period: 300 * time.Millisecond, warmupOps: 1},
	} {
		t.Run(name, func(t *testing.T) {
			sched, err := Generate(Workload{Seed: c.seed, Rate: c.rate, Span: c.warmup + c.period, Regions: one, Home: home})
			if err != nil {
				t.Fatal(err)
			}
			if len(sched.Ops) != c.warmupOps || (len(sched.Ops) > 0 && sched.Ops[len(sched.Ops)-1].At > c.warmup/2) {
				t.Fatalf("fixture: %d operations, want %d in the first half of the warm-up", len(sched.Ops), c.warmupOps)
			}
			cfg := DefaultConfig()
			cfg.Regions, cfg.Latency, cfg.Seed, cfg.Rate = 1, "none", c.seed, c.rate
			cfg.Warmup, cfg.Duration = c.warmup, c.period
			cfg.Settle, cfg.Probe = 5*time.Second, 100*time.Millisecond
			cfg.Out = t.TempDir()
			res, err := Run(context.Background(), cfg)
			if err != nil {
				t.Fatalf("Run: %v; want a report of 0 measured operations", err)
			}
			if res.Ops.Scheduled != 0 || res.Ops.WarmupOps != c.warmupOps {
				t.Errorf("ops %+v, want 0 scheduled and %d in the warm-up", res.Ops, c.warmupOps)
			}
			b, err := os.ReadFile(filepath.Join(cfg.Out, ResultsFile))
			if err != nil {
				t.Fatal(err)
			}
			var back Result
			if err := json.Unmarshal(b, &back); err != nil {
				t.Fatalf("results.json does not parse: %v", err)
			}
		})
	}
}

// TestValidateRefusesWarmupAndDurationPastTheClock: --warmup and
// --duration whose sum does not fit a time.Duration make a schedule of
// more than MaxOps operations at the default rate; Validate refuses them
// (a usage error) instead of passing them to the run.
func TestValidateRefusesWarmupAndDurationPastTheClock(t *testing.T) {
	c := DefaultConfig()
	c.Duration = 2_000_000 * time.Hour
	c.Warmup = 1_000_000 * time.Hour
	if err := c.Validate(); err == nil {
		t.Fatalf("Validate accepts --rate %v --duration %v --warmup %v (warm-up + duration = %v)", c.Rate, c.Duration, c.Warmup, c.Warmup+c.Duration)
	}
}
