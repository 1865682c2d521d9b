package store

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the collectors the store reports to. The store's opener
// defines and registers them (region.NewMetrics, with the region's
// others); a nil field is not reported.
type Metrics struct {
	// FsyncBatch observes the transactions one fsync made durable.
	FsyncBatch prometheus.Observer
	// FsyncSeconds observes the duration of each group commit fsync.
	FsyncSeconds prometheus.Observer
	// ChecksumFailures counts stored values that failed their checksum.
	ChecksumFailures prometheus.Counter
	// TornTails counts torn final transactions cut off at open.
	TornTails prometheus.Counter
	// Shrinks counts rewrites of the file.
	Shrinks prometheus.Counter
	// Incarnations counts new incarnations begun at open.
	Incarnations prometheus.Counter
}

func inc(c prometheus.Counter) {
	if c != nil {
		c.Inc()
	}
}

func observe(o prometheus.Observer, v float64) {
	if o != nil {
		o.Observe(v)
	}
}
