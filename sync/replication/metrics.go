package replication

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/latticedb/lattice/sync/protocol"
	"github.com/latticedb/lattice/sync/transport"
)

// Metrics are a region's replication metrics, labelled by peer.
//
// Every per-peer series exists from the start at zero (InitPeers), so that
// rate() and absent-data alerts work before the first message, and
// lattice_replication_peer_connected{peer} is 1 or 0 at every scrape: an
// idle peer cut off shows lag 0 and nothing pending, so lag alone does not
// reveal a partition.
type Metrics struct {
	BytesSent *prometheus.CounterVec
	// DeltaBytes (lattice_replication_delta_bytes_total) counts the bytes
	// of the canonical encodings of the region's own deltas: the ideal
	// replication sends each peer these bytes and no more.
	DeltaBytes       prometheus.Counter
	BytesReceived    *prometheus.CounterVec
	MessagesSent     *prometheus.CounterVec
	MessagesReceived *prometheus.CounterVec
	SendErrors       *prometheus.CounterVec
	Rejected         *prometheus.CounterVec
	PendingDeltas    *prometheus.GaugeVec
	PendingBytes     *prometheus.GaugeVec
	LagSeconds       *prometheus.GaugeVec
	// AERounds (lattice_antientropy_rounds_total) and AEKeys
	// (lattice_antientropy_keys_total) are counters set from the
	// protocol's running totals.
	AERounds     *TotalVec
	AEUnrepaired *prometheus.GaugeVec
	AEKeys       *TotalVec
	Convergence  *prometheus.HistogramVec
	// PeerConnected is lattice_replication_peer_connected{peer}: 1 while
	// the peer is connected, read at each scrape from the function given
	// to WatchConnected.
	PeerConnected *ConnectedCollector
}

// ConvergenceBuckets are the bounds of
// lattice_replication_convergence_seconds: 1 ms to 30 s, written out so
// that the exposition shows them exactly.
var ConvergenceBuckets = []float64{
	0.001, 0.002, 0.005, 0.01, 0.02, 0.035, 0.05, 0.065, 0.08, 0.1, 0.125, 0.15, 0.2,
	0.25, 0.3, 0.4, 0.5, 0.75, 1, 2, 5, 10, 30,
}

// NewMetrics creates the metrics and registers them with reg (nil: not
// registered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	peer := []string{"peer"}
	m := &Metrics{
		BytesSent: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "lattice_replication_bytes_sent_total", Help: "Protocol message bytes sent to a peer."}, peer),
		DeltaBytes: prometheus.NewCounter(prometheus.CounterOpts{Name: "lattice_replication_delta_bytes_total",
			Help: "Bytes of the encoded deltas of this region's own writes (what an ideal replication would send each peer)."}),
		BytesReceived:    prometheus.NewCounterVec(prometheus.CounterOpts{Name: "lattice_replication_bytes_received_total", Help: "Protocol message bytes received from a peer."}, peer),
		MessagesSent:     prometheus.NewCounterVec(prometheus.CounterOpts{Name: "lattice_replication_messages_sent_total", Help: "Protocol messages sent, by kind."}, []string{"peer", "kind"}),
		MessagesReceived: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "lattice_replication_messages_received_total", Help: "Protocol messages received, by kind."}, []string{"peer", "kind"}),
		SendErrors:       prometheus.NewCounterVec(prometheus.CounterOpts{Name: "lattice_replication_send_errors_total", Help: "Messages the transport refused (peer down or queue full); the protocol resends."}, peer),
		Rejected:         prometheus.NewCounterVec(prometheus.CounterOpts{Name: "lattice_replication_rejected_messages_total", Help: "Malformed or hostile messages dropped."}, peer),
		PendingDeltas:    prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "lattice_replication_pending_deltas", Help: "Buffered deltas a peer has not acknowledged."}, peer),
		PendingBytes:     prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "lattice_replication_pending_bytes", Help: "Bytes of buffered deltas a peer has not acknowledged."}, peer),
		LagSeconds:       prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "lattice_replication_lag_seconds", Help: "Age of the oldest delta a peer has not acknowledged."}, peer),
		AERounds:         NewTotalVec("lattice_antientropy_rounds_total", "Anti-entropy rounds started with a peer.", peer),
		AEUnrepaired: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "lattice_antientropy_unrepaired_keys",
			Help: "Keys anti-entropy with a peer shipped several rounds in a row without either state changing (a divergence joins cannot repair; should be 0)."}, peer),
		AEKeys: NewTotalVec("lattice_antientropy_keys_total", "Keys shipped by anti-entropy with a peer, by direction (pushed, pulled).", []string{"peer", "direction"}),
		Convergence: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "lattice_replication_convergence_seconds",
			Help:    "Time from a delta's origin to its application here (origin clock to local clock).",
			Buckets: ConvergenceBuckets}, []string{"origin"}),
		PeerConnected: &ConnectedCollector{desc: prometheus.NewDesc("lattice_replication_peer_connected",
			"1 while the peer is connected, else 0.", peer, nil)},
	}
	if reg != nil {
		reg.MustRegister(m.BytesSent, m.DeltaBytes, m.BytesReceived, m.MessagesSent, m.MessagesReceived, m.SendErrors, m.Rejected,
			m.PendingDeltas, m.PendingBytes, m.LagSeconds, m.AERounds, m.AEKeys, m.Convergence,
			m.AEUnrepaired, m.PeerConnected)
	}
	return m
}

// messageKinds are the kinds of protocol messages, for the kind label.
var messageKinds = []protocol.Kind{protocol.KindDelta, protocol.KindAck, protocol.KindDigest, protocol.KindDiff, protocol.KindObjects}

// InitPeers creates every series of every peer at zero (and the peers'
// series of lattice_replication_peer_connected), so that they are all
// exposed from the start.
func (m *Metrics) InitPeers(peers []string) {
	for _, p := range peers {
		for _, v := range []*prometheus.CounterVec{m.BytesSent, m.BytesReceived, m.SendErrors, m.Rejected} {
			v.WithLabelValues(p)
		}
		for _, k := range messageKinds {
			m.MessagesSent.WithLabelValues(p, k.String())
			m.MessagesReceived.WithLabelValues(p, k.String())
		}
		for _, v := range []*prometheus.GaugeVec{m.PendingDeltas, m.PendingBytes, m.LagSeconds, m.AEUnrepaired} {
			v.WithLabelValues(p)
		}
		m.AERounds.WithLabelValues(p)
		m.AEKeys.WithLabelValues(p, "pushed")
		m.AEKeys.WithLabelValues(p, "pulled")
		m.Convergence.WithLabelValues(p)
	}
	m.PeerConnected.mu.Lock()
	m.PeerConnected.peers = append([]string(nil), peers...)
	m.PeerConnected.mu.Unlock()
}

// WatchConnected makes lattice_replication_peer_connected read status at
// each scrape: a peer is connected when status lists it as connected.
func (m *Metrics) WatchConnected(status func() []protocol.PeerStatus) {
	m.PeerConnected.mu.Lock()
	m.PeerConnected.status = status
	m.PeerConnected.mu.Unlock()
}

// ConnectedCollector exposes lattice_replication_peer_connected{peer} for
// the peers given to InitPeers, read from the peers' status when scraped.
type ConnectedCollector struct {
	desc   *prometheus.Desc
	mu     sync.Mutex
	peers  []string
	status func() []protocol.PeerStatus
}

// Describe implements prometheus.Collector.
func (c *ConnectedCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

// Collect implements prometheus.Collector.
func (c *ConnectedCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	peers, status := c.peers, c.status
	c.mu.Unlock()
	up := make(map[string]bool)
	if status != nil {
		for _, s := range status() {
			up[s.Region] = s.Connected
		}
	}
	for _, p := range peers {
		v := 0.0
		if up[p] {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, v, p)
	}
}

// TotalVec is a counter vector whose values are set from running totals
// kept elsewhere (the protocol's count of anti-entropy rounds and keys),
// rather than incremented. A total never goes down within a process, so
// it is exposed as a counter.
type TotalVec struct {
	desc   *prometheus.Desc
	mu     sync.Mutex
	values map[string]*totalChild
	order  []string
}

// NewTotalVec returns a TotalVec named name with the given labels.
func NewTotalVec(name, help string, labels []string) *TotalVec {
	return &TotalVec{desc: prometheus.NewDesc(name, help, labels, nil), values: make(map[string]*totalChild)}
}

// Total is one series of a TotalVec.
type Total interface {
	// Set sets the running total.
	Set(float64)
}

type totalChild struct {
	labels []string
	mu     sync.Mutex
	v      float64
}

func (c *totalChild) Set(v float64) {
	c.mu.Lock()
	c.v = v
	c.mu.Unlock()
}

// WithLabelValues returns the series of the label values, creating it at
// zero.
func (t *TotalVec) WithLabelValues(lvs ...string) Total {
	key := ""
	for _, v := range lvs {
		key += v + "\xff"
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	c, ok := t.values[key]
	if !ok {
		c = &totalChild{labels: append([]string(nil), lvs...)}
		t.values[key] = c
		t.order = append(t.order, key)
	}
	return c
}

// Describe implements prometheus.Collector.
func (t *TotalVec) Describe(ch chan<- *prometheus.Desc) { ch <- t.desc }

// Collect implements prometheus.Collector.
func (t *TotalVec) Collect(ch chan<- prometheus.Metric) {
	t.mu.Lock()
	children := make([]*totalChild, 0, len(t.order))
	for _, k := range t.order {
		children = append(children, t.values[k])
	}
	t.mu.Unlock()
	for _, c := range children {
		c.mu.Lock()
		v := c.v
		c.mu.Unlock()
		ch <- prometheus.MustNewConstMetric(t.desc, prometheus.CounterValue, v, c.labels...)
	}
}

// NewStreamCollector returns a StreamCollector that reports nothing until
// WatchStreams.
func NewStreamCollector() *StreamCollector {
	peer := []string{"peer"}
	return &StreamCollector{
		sent: prometheus.NewDesc("lattice_replication_stream_bytes_sent_total",
			"Bytes of the message stream to a peer: the protocol's messages as framed, and compressed when both regions speak lattice-repl/2.", peer, nil),
		received: prometheus.NewDesc("lattice_replication_stream_bytes_received_total",
			"Bytes of the message stream from a peer, as received (see lattice_replication_stream_bytes_sent_total).", peer, nil)}
}

// WatchStreams makes c read status at each scrape.
func (c *StreamCollector) WatchStreams(status func() []transport.PeerStatus) {
	c.mu.Lock()
	c.status = status
	c.mu.Unlock()
}

// StreamCollector is lattice_replication_stream_bytes_sent_total and
// _received_total{peer}: what a process's message streams to and from
// each peer carried (frames, compressed between regions that agree on
// lattice-repl/2), read from its transport when scraped. A node of a
// partitioned region has one transport for all its partitions, so the
// collector is registered once per transport, not per partition's
// Metrics. It exposes the bytes of the transport's message streams
// per peer, read from the transport when scraped (nothing before
// WatchStreams).
type StreamCollector struct {
	sent, received *prometheus.Desc
	mu             sync.Mutex
	status         func() []transport.PeerStatus
}

// Describe implements prometheus.Collector.
func (c *StreamCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.sent
	ch <- c.received
}

// Collect implements prometheus.Collector.
func (c *StreamCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	status := c.status
	c.mu.Unlock()
	if status == nil {
		return
	}
	for _, p := range status() {
		ch <- prometheus.MustNewConstMetric(c.sent, prometheus.CounterValue, float64(p.SentStreamBytes), p.Peer)
		ch <- prometheus.MustNewConstMetric(c.received, prometheus.CounterValue, float64(p.RecvStreamBytes), p.Peer)
	}
}
