package store

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// unlocked locks no key: the tests of the file (framing, group commit,
// recovery, rewrite, faults) open stores with it, and are about what the
// file holds, not about isolation (locks_test.go is).
func unlocked(string) string { return "" }

// newMetrics returns unregistered collectors for a test store.
func newMetrics() *Metrics {
	return &Metrics{
		FsyncBatch:       prometheus.NewHistogram(prometheus.HistogramOpts{Name: "fsync_batch", Buckets: prometheus.ExponentialBuckets(1, 2, 10)}),
		FsyncSeconds:     prometheus.NewHistogram(prometheus.HistogramOpts{Name: "fsync_seconds"}),
		ChecksumFailures: prometheus.NewCounter(prometheus.CounterOpts{Name: "checksum_failures"}),
		TornTails:        prometheus.NewCounter(prometheus.CounterOpts{Name: "torn_tails"}),
		Shrinks:          prometheus.NewCounter(prometheus.CounterOpts{Name: "shrinks"}),
		Incarnations:     prometheus.NewCounter(prometheus.CounterOpts{Name: "incarnations"}),
	}
}

type dtoHist struct{ count, sum uint64 }

// read reads the fsync batch histogram of m.
func (h *dtoHist) read(t *testing.T, m *Metrics) {
	t.Helper()
	var pb dto.Metric
	if err := m.FsyncBatch.(prometheus.Histogram).Write(&pb); err != nil {
		t.Fatal(err)
	}
	h.count = pb.GetHistogram().GetSampleCount()
	h.sum = uint64(pb.GetHistogram().GetSampleSum())
}
