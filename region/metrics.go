package region

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/latticedb/lattice/region/store"
)

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

// FsyncBuckets are the bounds of lattice_store_fsync_seconds: 0.1 ms to
// 1 s, written out so that the exposition shows them exactly.
var FsyncBuckets = []float64{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1}

// NewMetrics creates the metrics and registers them with reg (nil: not
// registered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		FsyncBatch: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "lattice_store_fsync_batch_size",
			Help:    "Transactions made durable by one fsync (group commit).",
			Buckets: []float64{1, 2, 4, 8, 16, 32, 64, 128, 256, 512},
		}),
		FsyncSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "lattice_store_fsync_seconds",
			Help:    "Duration of store fsyncs.",
			Buckets: FsyncBuckets,
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
	// Every ledger operation's successes exist from the start, so that
	// rate() sees their first increment.
	for _, op := range []string{OpReserve, OpCommit, OpRelease, OpReturn, OpAdjust} {
		m.Reservations.WithLabelValues(op, "ok")
	}
	if reg != nil {
		reg.MustRegister(m.FsyncBatch, m.FsyncSeconds, m.ChecksumFailures, m.TornTails, m.Shrinks, m.Reservations, m.Expired,
			m.Incarnations, m.DivergentKeys)
	}
	return m
}

// Store returns the collectors the store reports to (store.Options.Metrics).
func (m *Metrics) Store() *store.Metrics {
	return &store.Metrics{FsyncBatch: m.FsyncBatch, FsyncSeconds: m.FsyncSeconds, ChecksumFailures: m.ChecksumFailures,
		TornTails: m.TornTails, Shrinks: m.Shrinks, Incarnations: m.Incarnations}
}
