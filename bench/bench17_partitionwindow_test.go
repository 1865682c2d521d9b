package bench

import (
	"context"
	"strings"
	"testing"
	"time"
)

// TestPartitionNotReportedWhenWorkloadEndedFirst checks that a
// --partition whose START comes after the workload's last answer (the
// region is cut "from START ... or until the workload ends": here never)
// is not reported as a cut: results.json's partition window and the
// summary must not claim the region was cut off.
func TestPartitionNotReportedWhenWorkloadEndedFirst(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a cluster; skipped under -short")
	}
	cfg := shortConfig(17) // seed 17 at 5 ops/s over 2 s: the last operation is at 1.36 s
	cfg.Rate, cfg.Warmup, cfg.Duration = 5, 0, 2*time.Second
	cfg.Partition = "ap-south@1900ms+1s"
	cfg.Probe = 100 * time.Millisecond
	cfg.Out = ""
	res, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if p := res.Partition; p != nil && p.EndMS <= p.StartMS {
		t.Errorf("results report partition window %+v: ap-south was never cut off (the workload ended before 1.9 s)", *p)
	}
	if md := res.Markdown(); strings.Contains(md, "ap-south cut off from 0.0 s to 0.0 s") {
		t.Errorf("summary claims a cut that never happened: %q", firstLine(md, "cut off"))
	}
}

func firstLine(s, sub string) string {
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			return l
		}
	}
	return ""
}
