package replication

import "github.com/prometheus/client_golang/prometheus"

// Metrics are a region's replication metrics, labelled by peer.
type Metrics struct {
	BytesSent        *prometheus.CounterVec
	BytesReceived    *prometheus.CounterVec
	MessagesSent     *prometheus.CounterVec
	MessagesReceived *prometheus.CounterVec
	SendErrors       *prometheus.CounterVec
	Rejected         *prometheus.CounterVec
	PendingDeltas    *prometheus.GaugeVec
	PendingBytes     *prometheus.GaugeVec
	LagSeconds       *prometheus.GaugeVec
	AERounds         *prometheus.GaugeVec
	AEUnrepaired     *prometheus.GaugeVec
	AEKeys           *prometheus.GaugeVec
	Convergence      *prometheus.HistogramVec
}

// NewMetrics creates the metrics and registers them with reg (nil: not
// registered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	peer := []string{"peer"}
	m := &Metrics{
		BytesSent:        prometheus.NewCounterVec(prometheus.CounterOpts{Name: "lattice_replication_bytes_sent_total", Help: "Protocol message bytes sent to a peer."}, peer),
		BytesReceived:    prometheus.NewCounterVec(prometheus.CounterOpts{Name: "lattice_replication_bytes_received_total", Help: "Protocol message bytes received from a peer."}, peer),
		MessagesSent:     prometheus.NewCounterVec(prometheus.CounterOpts{Name: "lattice_replication_messages_sent_total", Help: "Protocol messages sent, by kind."}, []string{"peer", "kind"}),
		MessagesReceived: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "lattice_replication_messages_received_total", Help: "Protocol messages received, by kind."}, []string{"peer", "kind"}),
		SendErrors:       prometheus.NewCounterVec(prometheus.CounterOpts{Name: "lattice_replication_send_errors_total", Help: "Messages the transport refused (peer down or queue full); the protocol resends."}, peer),
		Rejected:         prometheus.NewCounterVec(prometheus.CounterOpts{Name: "lattice_replication_rejected_messages_total", Help: "Malformed or hostile messages dropped."}, peer),
		PendingDeltas:    prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "lattice_replication_pending_deltas", Help: "Buffered deltas a peer has not acknowledged."}, peer),
		PendingBytes:     prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "lattice_replication_pending_bytes", Help: "Bytes of buffered deltas a peer has not acknowledged."}, peer),
		LagSeconds:       prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "lattice_replication_lag_seconds", Help: "Age of the oldest delta a peer has not acknowledged."}, peer),
		AERounds:         prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "lattice_antientropy_rounds", Help: "Anti-entropy rounds started with a peer."}, peer),
		AEUnrepaired: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "lattice_antientropy_unrepaired_keys",
			Help: "Keys anti-entropy with a peer shipped several rounds in a row without either state changing (a divergence joins cannot repair; should be 0)."}, peer),
		AEKeys: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "lattice_antientropy_keys", Help: "Keys shipped by anti-entropy with a peer."}, []string{"peer", "direction"}),
		Convergence: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "lattice_replication_convergence_seconds",
			Help:    "Time from a delta's origin to its application here (origin clock to local clock).",
			Buckets: prometheus.ExponentialBuckets(0.001, 1.6, 24)}, []string{"origin"}),
	}
	if reg != nil {
		reg.MustRegister(m.BytesSent, m.BytesReceived, m.MessagesSent, m.MessagesReceived, m.SendErrors, m.Rejected,
			m.PendingDeltas, m.PendingBytes, m.LagSeconds, m.AERounds, m.AEKeys, m.Convergence,
			m.AEUnrepaired)
	}
	return m
}
