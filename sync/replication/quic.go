package replication

import (
	"context"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"net"
	"sync/atomic"
	"time"

	"log/slog"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/latticedb/lattice/region"
	"github.com/latticedb/lattice/region/config"
	"github.com/latticedb/lattice/sync/certs"
	"github.com/latticedb/lattice/sync/protocol"
	"github.com/latticedb/lattice/sync/transport"
	"github.com/latticedb/lattice/sync/wan"
)

// AttachOptions tune the replication NewQUIC builds.
type AttachOptions struct {
	// Protocol overrides the protocol's defaults when its Buckets is set.
	Protocol protocol.Config
	// Transport, if set, adjusts the transport's config before use.
	Transport func(*transport.Config)
	// WANSeed seeds the emulated WAN's randomness (loss, jitter).
	WANSeed uint64
	// WAN puts the emulated WAN under the region's socket even when the
	// config emulates nothing, so tests and benchmarks can partition a
	// region and count its UDP bytes. Without it, and without an emulate
	// key, QUIC runs on the plain UDP socket (with its GSO and ECN).
	WAN bool
	// OnApply, if set, is called after each durable apply of remote deltas
	// at region with the dot ranges it made visible, and the time.
	OnApply func(region, from string, ranges []protocol.DotRange, at time.Time)
	// OnPublish, if set, is called when a local delta of region is
	// durable and handed to replication (when its write is acknowledged),
	// with the time. The benchmark measures convergence from it.
	OnPublish func(region string, d region.Delta, at time.Time)
	// Started, if set, is called with each region's replication once it
	// runs (tests use it to partition a region's WAN).
	Started func(*QUICReplication)
}

// Env is what a region's replication is built from.
type Env struct {
	// Config is the cluster's configuration (regions, peer addresses,
	// emulated WAN); it must not be modified.
	Config *config.Config
	// Region is this region's name.
	Region string
	// PeerAddr is the UDP address this region's QUIC endpoint listens on
	// (the region's peer key in the config); the other regions' addresses
	// are in Config.Peers(Region).
	PeerAddr string
	// TLS is this region's certificate and the cluster CA, loaded from
	// the config's tls_dir, for mutual TLS between regions.
	TLS *certs.Bundle
	// Logger names the region in every record.
	Logger *slog.Logger
	// Registerer registers replication metrics; what it registers is
	// labelled region=Region and served by the region's /metrics.
	Registerer prometheus.Registerer
	// Node and Owned are, for a node of a partitioned region
	// (NewPartitioned), the node's name and the partitions it owns.
	Node  string
	Owned []int
}

// protocolConfig is the protocol's config for a region of cfg:
// opts.Protocol when its Buckets is set, else the defaults, with the
// config's anti_entropy_rate_bytes_per_sec when it sets one.
func protocolConfig(opts AttachOptions, cfg *config.Config) protocol.Config {
	pc := opts.Protocol
	if pc.Buckets == 0 {
		pc = protocol.DefaultConfig()
	}
	if cfg != nil && cfg.AntiEntropyRate != 0 {
		pc.AntiEntropyRate = int(cfg.EffectiveAntiEntropyRate())
	}
	return pc
}

// NewQUIC returns the replication of a region over QUIC with mutual TLS,
// through an emulated WAN when the config's emulate key (or opts.WAN) asks
// for one. Start runs it.
func NewQUIC(opts AttachOptions, env Env) *QUICReplication {
	var peers []string
	for _, p := range env.Config.Peers(env.Region) {
		peers = append(peers, p.Name)
	}
	m := NewMetrics(env.Registerer)
	m.InitPeers(peers)
	o := Options{Region: env.Region, Peers: peers, Protocol: protocolConfig(opts, env.Config), Logger: env.Logger, Metrics: m}
	name := env.Region
	if opts.OnApply != nil {
		o.OnApply = func(from string, rs []protocol.DotRange, at time.Time) { opts.OnApply(name, from, rs, at) }
	}
	if opts.OnPublish != nil {
		o.OnPublish = func(d region.Delta, at time.Time) { opts.OnPublish(name, d, at) }
	}
	q := &QUICReplication{Replicator: New(o), env: env, opts: opts}
	m.WatchConnected(q.protocolStatus)
	return q
}

// QUICReplication is a region's replication over QUIC: the Replicator,
// its UDP socket (wrapped in an emulated WAN) and its transport.
type QUICReplication struct {
	*Replicator
	env  Env
	opts AttachOptions
	udp  net.PacketConn
	wan  *wan.Conn
	t    *transport.QUICTransport
	// started is t once Start has made it, for Peers (which /v1/cluster
	// may call meanwhile).
	started atomic.Pointer[transport.QUICTransport]
}

// Peers returns each peer's replication state, for /v1/cluster.
func (q *QUICReplication) Peers() []region.PeerStatus {
	st := q.Status()
	t := q.started.Load()
	if t == nil {
		return st
	}
	tp := map[string]transport.PeerStatus{}
	for _, p := range t.Peers() {
		tp[p.Peer] = p
	}
	for i := range st {
		if p, ok := tp[st[i].Region]; ok {
			st[i].Protocol, st[i].StreamBytesSent = p.Protocol, p.SentStreamBytes
		}
	}
	return st
}

// WAN returns the emulated WAN under the region's QUIC socket, or nil
// when the region runs on a plain socket.
func (q *QUICReplication) WAN() *wan.Conn { return q.wan }

// Region returns the region's name.
func (q *QUICReplication) Region() string { return q.env.Region }

// Start listens on the region's peer address, dials the peers and starts
// replicating node.
func (q *QUICReplication) Start(_ context.Context, node *region.Node) error {
	if err := q.Check(node); err != nil {
		return fmt.Errorf("replication: %w", err)
	}
	cfg := q.env.Config
	udp, w, pc, err := listenPeer(q.env, q.opts)
	if err != nil {
		return err
	}
	q.udp, q.wan = udp, w
	tc := transport.DefaultConfig()
	tc.Region, tc.Certs, tc.Logger = q.env.Region, q.env.TLS, q.env.Logger
	tc.Peers = map[string]string{}
	for _, p := range cfg.Peers(q.env.Region) {
		tc.Peers[p.Name] = p.DialPeer()
		if err := emulateLink(q.wan, cfg, q.env.Region, p.Name, p.Name, p.DialPeer()); err != nil {
			udp.Close()
			return err
		}
	}
	if q.opts.Transport != nil {
		q.opts.Transport(&tc)
	}
	t, err := transport.NewQUIC(pc, tc, q.Replicator)
	if err != nil {
		udp.Close()
		return fmt.Errorf("replication: %w", err)
	}
	q.t = t
	q.started.Store(t)
	registerStreams(q.env, t)
	q.Replicator.Start(node, t)
	if q.opts.Started != nil {
		q.opts.Started(q)
	}
	return nil
}

// listenPeer opens the UDP socket at env.PeerAddr, wrapped in an emulated
// WAN when the config's emulate key or opts.WAN ask for one (w and pc are
// then the WAN, else w is nil and pc the socket).
func listenPeer(env Env, opts AttachOptions) (udp net.PacketConn, w *wan.Conn, pc net.PacketConn, err error) {
	cfg := env.Config
	udp, err = net.ListenPacket("udp", env.PeerAddr)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("replication: listen %s: %w", env.PeerAddr, err)
	}
	pc = udp
	if opts.WAN || len(cfg.Emulate.LatencyMS) > 0 || cfg.Emulate.LossPct > 0 {
		// Each node draws from a stream of its own, derived from the run's
		// seed and its name (as wan.Network.Attach does): with one stream
		// for all, every region would lose its k-th packet together, and
		// loss would not be independent across links.
		h := fnv.New64a()
		h.Write([]byte(env.Region + "/" + env.Node))
		w = wan.Wrap(udp, wan.WithRand(rand.New(rand.NewPCG(opts.WANSeed, h.Sum64()))))
		pc = w
	}
	return udp, w, pc, nil
}

// emulateLink sets, on the emulated WAN w (none: nothing to do), the link
// to peer (named name, at addr, in region to) from region from: the
// config's latency between the regions and its loss; a link within a
// region has neither.
func emulateLink(w *wan.Conn, cfg *config.Config, from, to, name, addr string) error {
	if w == nil {
		return nil
	}
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return fmt.Errorf("replication: peer %s address %q: %w", name, addr, err)
	}
	var link wan.Link
	if from != to {
		link = wan.Link{Delay: cfg.Latency(from, to), Loss: cfg.Emulate.LossPct / 100}
	}
	if err := link.Validate(); err != nil {
		return fmt.Errorf("replication: emulated link to %s: %w", name, err)
	}
	w.SetLink(ua.String(), link)
	return nil
}

// Close stops replication and releases its sockets.
func (q *QUICReplication) Close() error {
	q.Replicator.Close()
	return closeEndpoint(q.t, q.wan, q.udp)
}

// closeEndpoint closes a QUIC transport (nil: none was made) and the
// socket under it: the emulated WAN when there is one, else the socket.
func closeEndpoint(t *transport.QUICTransport, w *wan.Conn, udp net.PacketConn) error {
	var err error
	if t != nil {
		err = t.Close()
	}
	if w != nil {
		w.Close()
	} else if udp != nil {
		udp.Close()
	}
	return err
}

// registerStreams registers the stream metrics of t with env's registry.
func registerStreams(env Env, t *transport.QUICTransport) {
	if env.Registerer == nil {
		return
	}
	sc := NewStreamCollector()
	sc.WatchStreams(t.Peers)
	if err := env.Registerer.Register(sc); err != nil {
		env.Logger.Warn("replication: stream metrics not registered", "err", err)
	}
}
