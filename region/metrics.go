package region

import "github.com/prometheus/client_golang/prometheus"

// Metrics are a region's storage and ledger metrics.
type Metrics struct {
	FsyncBatch       prometheus.Histogram
	FsyncSeconds     prometheus.Histogram
	ChecksumFailures prometheus.Counter
	TornTails        prometheus.Counter
	Shrinks          prometheus.Counter
	Reservations     *prometheus.CounterVec
	Expired          prometheus.Counter
	Incarnations     prometheus.Counter
	// DivergentKeys counts keys found holding a dot with other content
	// than a peer's (a divergence no join repairs).
	DivergentKeys prometheus.Counter
}

// NewMetrics creates the metrics and registers them with reg (nil: not
// registered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		FsyncBatch: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "lattice_store_fsync_batch_size",
			Help:    "Transactions made durable by one fsync (group commit).",
			Buckets: prometheus.ExponentialBuckets(1, 2, 10),
		}),
		FsyncSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "lattice_store_fsync_seconds",
			Help:    "Duration of store fsyncs.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 14),
		}),
		ChecksumFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "lattice_store_checksum_failures_total",
			Help: "Stored values that failed their checksum (refused, never served).",
		}),
		TornTails: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "lattice_store_torn_transactions_total",
			Help: "Torn final transactions cut off when the store was opened.",
		}),
		Shrinks: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "lattice_store_shrinks_total",
			Help: "Rewrites of the store file to its live data.",
		}),
		Reservations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "lattice_reservations_total",
			Help: "Reservation ledger decisions at this home region, by operation and result.",
		}, []string{"op", "result"}),
		Expired: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "lattice_reservations_expired_total",
			Help: "Held reservations expired by their TTL.",
		}),
		Incarnations: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "lattice_store_new_incarnations_total",
			Help: "Times the store started a new incarnation because it may have lost writes it had handed out.",
		}),
		DivergentKeys: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "lattice_replication_divergent_dots_total",
			Help: "Remote deltas that carried a dot this region holds with other content (a divergence joins cannot repair).",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.FsyncBatch, m.FsyncSeconds, m.ChecksumFailures, m.TornTails, m.Shrinks, m.Reservations, m.Expired,
			m.Incarnations, m.DivergentKeys)
	}
	return m
}
