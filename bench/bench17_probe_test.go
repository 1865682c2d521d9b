package bench

import (
	"context"
	"testing"
)

// TestProbeZeroRunsNoConcernProbe checks the documented meaning of
// `--probe 0` (docs/configuration.md: "how long the probe of write
// concerns and quorum reads runs after the workload (0: none)"): the
// command line passes --probe straight to Config.Probe, so a run with
// Probe 0 must not run the concern probe.
func TestProbeZeroRunsNoConcernProbe(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a cluster; skipped under -short")
	}
	cfg := shortConfig(1)
	cfg.Probe = 0 // what `lattice bench --probe 0` passes
	cfg.Out = ""
	res, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if c := res.Concerns; c != nil && (c.DurationS > 0 || len(c.Regions) > 0) {
		t.Errorf("--probe 0 ran the concern probe for %.1f s (%d regions' tables); docs/configuration.md says 0 runs none", c.DurationS, len(c.Regions))
	}
}
