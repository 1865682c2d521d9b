package replication

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/latticedb/lattice/region"
	"github.com/latticedb/lattice/sync/protocol"
	"github.com/latticedb/lattice/sync/transport"
	"github.com/latticedb/lattice/sync/wan"
)

// Partitioned is the replication of one node of a partitioned region
// (SPEC §10). Each partition the node owns is a replica of its own with a
// Replicator of its own, replicating only with the same partition of the
// other regions; all of them share one QUIC endpoint and one connection
// per pair of nodes (transport.Mux). Home requests go to the node that
// owns the request's partition in the home region, which may be another
// node of this region, or this node (then no network is involved).
type Partitioned struct {
	env   Env
	opts  AttachOptions
	node  string
	count int
	mux   *transport.Mux
	reps  map[int]*Replicator
	owned []int

	mu    sync.RWMutex
	nodes map[int]*region.Node

	udp net.PacketConn
	wan *wan.Conn
	t   *transport.QUICTransport
}

// PeerName returns the transport peer name of node of region: "REGION/NODE".
func PeerName(region, node string) string { return region + "/" + node }

// NewPartitioned returns the replication of node env.Node of env.Region,
// which owns the partitions env.Owned; env.PeerAddr is the node's peer
// address. Every partition's metrics carry a partition label.
func NewPartitioned(opts AttachOptions, env Env) *Partitioned {
	node, owned := env.Node, env.Owned
	cfg := env.Config
	var peers []string
	for _, p := range cfg.Peers(env.Region) {
		peers = append(peers, p.Name)
	}
	q := &Partitioned{env: env, opts: opts, node: node, count: cfg.PartitionCount(), reps: map[int]*Replicator{},
		owned: owned, nodes: map[int]*region.Node{}}
	q.mux = transport.NewMux(env.Region, func(r string, p int) string {
		if o := cfg.Owner(r, p); o.Name != "" {
			return PeerName(r, o.Name)
		}
		return ""
	})
	for _, part := range owned {
		var reg prometheus.Registerer
		if env.Registerer != nil {
			reg = prometheus.WrapRegistererWith(prometheus.Labels{"partition": strconv.Itoa(part)}, env.Registerer)
		}
		m := NewMetrics(reg)
		m.InitPeers(peers)
		o := Options{Region: env.Region, Peers: peers, Protocol: protocolConfig(opts, env.Config), Logger: env.Logger.With("partition", part), Metrics: m}
		name := env.Region
		if opts.OnApply != nil {
			o.OnApply = func(from string, rs []protocol.DotRange, at time.Time) { opts.OnApply(name, from, rs, at) }
		}
		if opts.OnPublish != nil {
			o.OnPublish = func(d region.Delta, at time.Time) { opts.OnPublish(name, d, at) }
		}
		r := New(o)
		m.WatchConnected(r.protocolStatus)
		q.reps[part] = r
	}
	return q
}

// Replicator returns the replicator of partition part, nil when the node
// does not own it.
func (q *Partitioned) Replicator(part int) *Replicator { return q.reps[part] }

// WAN returns the emulated WAN under the node's QUIC socket, or nil.
func (q *Partitioned) WAN() *wan.Conn { return q.wan }

// Forwarder returns the region.Forwarder of partition part's node: it
// carries a home request to the node owning the request's partition in
// the home region — partition part's own replication link, another
// partition's, or this node's other partition directly. The answer's
// token of another partition is kept for the request's partitioned token
// (region.NoteHomeToken), not mixed into part's.
func (q *Partitioned) Forwarder(part int) region.Forwarder {
	return forwarderFunc(func(ctx context.Context, home string, req *region.HomeRequest) (*region.HomeResponse, error) {
		target, ok := req.Partition(q.count)
		if !ok {
			target = part
		}
		var resp *region.HomeResponse
		var err error
		if n := q.localNode(target); home == q.env.Region && n != nil {
			resp = n.ServeForwarded(ctx, req)
		} else {
			resp, err = forward(ctx, q.mux.Partition(target, nil), home, req)
		}
		if err != nil {
			return resp, err
		}
		// The home's tokens of other partitions (a checkout coordinated
		// there reserved at their homes) are kept for this answer too.
		return region.TakePartitionAnswer(ctx, resp, part, target, q.count), nil
	})
}

type forwarderFunc func(ctx context.Context, home string, req *region.HomeRequest) (*region.HomeResponse, error)

func (f forwarderFunc) Forward(ctx context.Context, home string, req *region.HomeRequest) (*region.HomeResponse, error) {
	return f(ctx, home, req)
}

func (q *Partitioned) localNode(part int) *region.Node {
	q.mu.RLock()
	defer q.mu.RUnlock()
	return q.nodes[part]
}

// Start listens on the node's peer address, dials every other node of
// every region (this region's too, for home requests of its partitions)
// and starts each partition's replicator with its node.
func (q *Partitioned) Start(_ context.Context, nodes map[int]*region.Node) error {
	for _, part := range q.owned {
		n := nodes[part]
		if n == nil {
			return fmt.Errorf("replication: no node for partition %d", part)
		}
		if err := q.reps[part].Check(n); err != nil {
			return fmt.Errorf("replication: partition %d: %w", part, err)
		}
	}
	cfg := q.env.Config
	udp, w, pc, err := listenPeer(q.env, q.opts)
	if err != nil {
		return err
	}
	q.udp, q.wan = udp, w
	tc := transport.DefaultConfig()
	tc.Region, tc.Node, tc.Certs, tc.Logger = q.env.Region, q.node, q.env.TLS, q.env.Logger
	tc.Peers = map[string]string{}
	for _, r := range cfg.RegionNames() {
		for _, nc := range cfg.Nodes(r) {
			if r == q.env.Region && nc.Name == q.node {
				continue
			}
			tc.Peers[PeerName(r, nc.Name)] = nc.DialPeer()
			if err := emulateLink(q.wan, cfg, q.env.Region, r, PeerName(r, nc.Name), nc.DialPeer()); err != nil {
				udp.Close()
				return err
			}
		}
	}
	if q.opts.Transport != nil {
		q.opts.Transport(&tc)
	}
	q.mu.Lock()
	for _, part := range q.owned {
		q.nodes[part] = nodes[part]
	}
	q.mu.Unlock()
	parts := make(map[int]transport.Transport, len(q.owned))
	for _, part := range q.owned {
		parts[part] = q.mux.Partition(part, q.reps[part])
	}
	t, err := transport.NewQUIC(pc, tc, q.mux)
	if err != nil {
		udp.Close()
		return fmt.Errorf("replication: %w", err)
	}
	q.t = t
	registerStreams(q.env, t) // once for the node's partitions
	q.mux.SetBase(t)
	for _, part := range q.owned {
		q.reps[part].Start(nodes[part], parts[part])
	}
	return nil
}

// Peers returns, per partition owned, each peer region's replication
// state.
func (q *Partitioned) Peers(part int) []region.PeerStatus {
	if r := q.reps[part]; r != nil {
		return r.Status()
	}
	return nil
}

// Close stops every partition's replication and releases the socket.
func (q *Partitioned) Close() error {
	for _, r := range q.reps {
		r.Close()
	}
	return closeEndpoint(q.t, q.wan, q.udp)
}
