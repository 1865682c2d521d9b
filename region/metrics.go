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
	// Merges counts remote states joined into this region's keys, by
	// source (delta, repair); Concurrent counts those that combined
	// edits of one cart line made at two regions (crdt.Cart.Concurrent);
	// MergeFailures counts joins that failed (none can: a join is
	// defined for every pair of states; it is counted to be seen at 0).
	Merges        *prometheus.CounterVec
	Concurrent    prometheus.Counter
	MergeFailures prometheus.Counter
	// PendingDeltas counts remote deltas kept aside for a damaged key
	// (pending.go).
	PendingDeltas prometheus.Counter
	// ReadRepairs counts keys repaired by quorum reads, sent to other
	// regions or received from them; ReadRepairBytes the bytes sent.
	ReadRepairs     *prometheus.CounterVec
	ReadRepairBytes prometheus.Counter
	// ConcernWait is how long write concerns (kind write) and quorum
	// reads (kind read) took when met; ConcernTimeouts counts those not
	// met in time.
	ConcernWait     *prometheus.HistogramVec
	ConcernTimeouts *prometheus.CounterVec
	// EscrowGranted counts the units of stock rights this region granted
	// other regions as a home, EscrowReturned those it gave back unused.
	EscrowGranted, EscrowReturned prometheus.Counter
	// EscrowRecalls counts the times this region, as a home, recalled
	// unused rights to decide a reservation it would have refused.
	EscrowRecalls prometheus.Counter
}

// ConcernBuckets are the bounds of lattice_concern_wait_seconds: 1 ms to
// 2.5 s (cross-region round trips).
var ConcernBuckets = []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 1, 2.5}

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
		Merges: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "lattice_replication_merges_total",
			Help: "Remote states joined into this region's keys (every one resolved automatically by the join), by source.",
		}, []string{"source"}),
		Concurrent: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "lattice_replication_concurrent_merges_total",
			Help: "Remote cart deltas that combined edits of one line made at two regions (the join keeps both).",
		}),
		PendingDeltas: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "lattice_replication_pending_deltas_total",
			Help: "Remote deltas to a damaged cart or item, kept aside until a peer's whole state repairs it and joined into it then.",
		}),
		MergeFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "lattice_replication_merge_failures_total",
			Help: "Joins of remote states that failed (a join cannot fail; always 0).",
		}),
		ReadRepairs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "lattice_read_repairs_total",
			Help: "Keys repaired by quorum reads: sent to regions found behind, or received from another region's quorum read.",
		}, []string{"direction"}),
		ReadRepairBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "lattice_read_repair_bytes_total",
			Help: "Bytes of states sent by read repair.",
		}),
		ConcernWait: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "lattice_concern_wait_seconds",
			Help:    "Time a write concern (Lattice-Replicas) or quorum read (?quorum=) took to be met, by kind.",
			Buckets: ConcernBuckets,
		}, []string{"kind"}),
		ConcernTimeouts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "lattice_concern_timeouts_total",
			Help: "Write concerns (replication_timeout) and quorum reads (quorum_unavailable) not met in time, by kind.",
		}, []string{"kind"}),
		EscrowGranted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "lattice_escrow_granted_units_total",
			Help: "Units of stock rights this region granted other regions as the home of escrow skus.",
		}),
		EscrowReturned: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "lattice_escrow_returned_units_total",
			Help: "Units of stock rights this region gave back to escrow skus' homes unused.",
		}),
		EscrowRecalls: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "lattice_escrow_recalls_total",
			Help: "Times this region, as an escrow sku's home, recalled unused rights from other regions before refusing a reservation.",
		}),
	}
	for _, src := range []string{"delta", "repair"} {
		m.Merges.WithLabelValues(src)
	}
	for _, d := range []string{"sent", "received"} {
		m.ReadRepairs.WithLabelValues(d)
	}
	for _, k := range []string{"write", "read"} {
		m.ConcernWait.WithLabelValues(k)
		m.ConcernTimeouts.WithLabelValues(k)
	}
	// Every ledger operation's successes exist from the start, so that
	// rate() sees their first increment.
	for _, op := range []string{OpReserve, OpCommit, OpRelease, OpReturn, OpAdjust} {
		m.Reservations.WithLabelValues(op, "ok")
	}
	if reg != nil {
		reg.MustRegister(m.FsyncBatch, m.FsyncSeconds, m.ChecksumFailures, m.TornTails, m.Shrinks, m.Reservations, m.Expired,
			m.Incarnations, m.DivergentKeys, m.Merges, m.Concurrent, m.PendingDeltas, m.MergeFailures, m.ReadRepairs, m.ReadRepairBytes,
			m.ConcernWait, m.ConcernTimeouts, m.EscrowGranted, m.EscrowReturned, m.EscrowRecalls)
	}
	return m
}

// Store returns the collectors the store reports to (store.Options.Metrics).
func (m *Metrics) Store() *store.Metrics {
	return &store.Metrics{FsyncBatch: m.FsyncBatch, FsyncSeconds: m.FsyncSeconds, ChecksumFailures: m.ChecksumFailures,
		TornTails: m.TornTails, Shrinks: m.Shrinks, Incarnations: m.Incarnations}
}
