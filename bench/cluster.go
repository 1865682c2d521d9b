package bench

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"slices"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/latticedb/lattice/cmd/server"
	"github.com/latticedb/lattice/crdt"
	"github.com/latticedb/lattice/region"
	"github.com/latticedb/lattice/region/config"
	"github.com/latticedb/lattice/sync/certs"
	"github.com/latticedb/lattice/sync/protocol"
	"github.com/latticedb/lattice/sync/replication"
	"github.com/latticedb/lattice/sync/wan"
)

// MaxRegions bounds --regions: every region runs in this process with its
// own store, fsyncs and QUIC endpoint.
const MaxRegions = 16

// MaxNodes bounds the nodes of all regions (--regions × --nodes): every
// node runs in this process with its own stores and QUIC endpoint.
const MaxNodes = 32

// MaxPartitions bounds --partitions: each partition of each region is a
// store of its own in this process.
const MaxPartitions = 256

// RoundRobin is how the workload's requests for a region are spread over
// its nodes: to each node in turn, as a load balancer in front of them
// would, whatever partition the request's key is in (the node forwards it
// to the partition's owner in its region when that is another node).
const RoundRobin = "round_robin"

// ExtraRegionLatency is the emulated one-way latency between a region
// past the first three (region-4, region-5, …) and any other region.
const ExtraRegionLatency = 50 * time.Millisecond

// RegionNames returns the names of an n-region benchmark cluster: the
// three regions of `lattice dev` (us-east, eu-west, ap-south), then
// region-4, region-5, …; fewer than three take the first n of those.
func RegionNames(n int) []string {
	names := config.DefaultConfig().RegionNames()
	for i := len(names); i < n; i++ {
		names = append(names, fmt.Sprintf("region-%d", i+1))
	}
	return names[:n]
}

// LatencyMatrix returns the emulated one-way latencies (milliseconds, as
// config emulate.latency_ms) between the regions of names: those of
// `lattice dev` between us-east, eu-west and ap-south (34, 92, 60 ms), and
// ExtraRegionLatency between any other pair.
func LatencyMatrix(names []string) map[string]int {
	dev := config.DefaultConfig().Emulate.LatencyMS
	m := map[string]int{}
	for i, a := range names {
		for _, b := range names[i+1:] {
			ms, ok := dev[a+"/"+b]
			if !ok {
				ms, ok = dev[b+"/"+a]
			}
			if !ok {
				ms = int(ExtraRegionLatency / time.Millisecond)
			}
			m[a+"/"+b] = ms
		}
	}
	return m
}

// cluster is the benchmark's regions, running in this process and
// replicating over QUIC on 127.0.0.1 through the emulated WAN. Each region
// runs one node, or several of a partitioned cluster.
type cluster struct {
	cfg        *config.Config
	names      []string
	partitions int
	nodes      [][]*benchNode // by region, in config order
}

// benchNode is one running node of a region.
type benchNode struct {
	server *server.Server
	// Exactly one of q (a region of one partition) and p (a node of a
	// partitioned region) is set once the node runs.
	q *replication.QUICReplication
	p *replication.Partitioned
	// peer is the resolved UDP address of its QUIC endpoint.
	peer string
	// owned are the partitions it owns.
	owned []int
}

// wan returns the emulated WAN under the node's QUIC socket.
func (n *benchNode) wan() *wan.Conn {
	if n.p != nil {
		return n.p.WAN()
	}
	return n.q.WAN()
}

// connected reports whether every partition of the node has a
// connection to every peer region.
func (n *benchNode) connected(peers int) bool {
	var sts [][]region.PeerStatus
	if n.p != nil {
		for _, part := range n.owned {
			sts = append(sts, n.p.Replicator(part).Status())
		}
	} else {
		sts = append(sts, n.q.Status())
	}
	for _, st := range sts {
		if len(st) != peers {
			return false
		}
		for _, p := range st {
			if !p.Connected {
				return false
			}
		}
	}
	return true
}

// node returns the region.Node of partition part, which n owns.
func (n *benchNode) node(part int) *region.Node {
	if ps := n.server.Partitions(); ps != nil {
		return ps.Node(part)
	}
	return n.server.Node()
}

// hooks are what the cluster reports to the benchmark.
type hooks struct {
	onPublish func(region string, d region.Delta, at time.Time)
	onApply   func(region, from string, ranges []protocol.DotRange, at time.Time)
}

// layout is how the benchmark's regions are partitioned: the cluster's
// partitions and the nodes of every region.
type layout struct{ partitions, nodes int }

// ranges returns the partitions node j of a region owns: a contiguous
// range, j·P/K to (j+1)·P/K − 1.
func (l layout) ranges(j int) (lo, hi int) {
	return j * l.partitions / l.nodes, (j+1)*l.partitions/l.nodes - 1
}

// startCluster makes the certificates and config of the regions names
// under dir, each run by lay.nodes nodes owning contiguous ranges of
// lay.partitions partitions, with the homes rules homes, and starts every
// node. On failure it closes what it started.
func startCluster(ctx context.Context, dir string, names []string, lay layout, homes []config.HomeRule, latency map[string]int, lossPct float64, wanSeed uint64,
	durability config.Durability, log *slog.Logger, h hooks) (_ *cluster, err error) {
	cfg := config.DefaultConfig()
	cfg.Cluster = "bench"
	cfg.DataDir = filepath.Join(dir, "data")
	cfg.TLSDir = filepath.Join(dir, "certs")
	cfg.Durability = durability
	cfg.Emulate.LatencyMS = latency
	cfg.Emulate.LossPct = lossPct
	cfg.Partitions = lay.partitions
	cfg.Homes = homes
	cfg.Regions = nil
	lns := map[[2]int]net.Listener{} // by region and node
	defer func() {
		for _, ln := range lns {
			ln.Close()
		}
	}()
	for i, name := range names {
		rc := config.RegionConfig{Name: name}
		for j := range lay.nodes {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				return nil, fmt.Errorf("bench: %w", err)
			}
			lns[[2]int{i, j}] = ln
			peer, err := freeUDP()
			if err != nil {
				return nil, err
			}
			if lay.nodes == 1 {
				rc.API, rc.Peer = ln.Addr().String(), peer
				continue
			}
			lo, hi := lay.ranges(j)
			rc.Nodes = append(rc.Nodes, config.NodeConfig{Name: fmt.Sprintf("n%d", j), API: ln.Addr().String(), Peer: peer,
				Partitions: config.PartitionSet{fmt.Sprintf("%d-%d", lo, hi)}})
		}
		cfg.Regions = append(cfg.Regions, rc)
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := certs.Generate(cfg.TLSDir, cfg.Cluster, names); err != nil {
		return nil, err
	}
	c := &cluster{cfg: cfg, names: names, partitions: cfg.PartitionCount(), nodes: make([][]*benchNode, len(names))}
	attach := replication.AttachOptions{WANSeed: wanSeed, WAN: true, OnPublish: h.onPublish, OnApply: h.onApply}
	for i, name := range names {
		for j, nc := range cfg.Nodes(name) {
			addr, err := net.ResolveUDPAddr("udp", nc.DialPeer())
			if err != nil {
				c.close()
				return nil, fmt.Errorf("bench: %w", err)
			}
			n := &benchNode{peer: addr.String()}
			for p := range c.partitions {
				if nc.Owns(p) {
					n.owned = append(n.owned, p)
				}
			}
			o := server.Options{Listener: lns[[2]int{i, j}], Logger: log,
				Replication: func(env server.ReplicationEnv) (server.Replication, error) {
					n.q = replication.NewQUIC(attach, env)
					return n.q, nil
				},
				PartitionedReplication: func(env server.ReplicationEnv) (server.PartitionedReplication, error) {
					n.p = replication.NewPartitioned(attach, env)
					return n.p, nil
				},
			}
			if len(cfg.Nodes(name)) > 1 {
				o.Node = nc.Name
			}
			delete(lns, [2]int{i, j}) // the server owns it, even when Start fails
			s, err := server.Start(ctx, cfg, name, o)
			if err != nil {
				c.close()
				return nil, fmt.Errorf("bench: region %s node %s: %w", name, nc.Name, err)
			}
			n.server = s
			c.nodes[i] = append(c.nodes[i], n)
		}
	}
	return c, nil
}

// freeUDP returns a UDP address on 127.0.0.1 that was free a moment ago.
func freeUDP() (string, error) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("bench: %w", err)
	}
	defer pc.Close()
	return pc.LocalAddr().String(), nil
}

// all returns every node of every region.
func (c *cluster) all() []*benchNode {
	var out []*benchNode
	for _, ns := range c.nodes {
		out = append(out, ns...)
	}
	return out
}

// close stops every node.
func (c *cluster) close() error {
	var errs []error
	for _, n := range c.all() {
		errs = append(errs, n.server.Close())
	}
	return errors.Join(errs...)
}

// urls returns the base URL of the API of each node of each region.
func (c *cluster) urls() [][]string {
	out := make([][]string, len(c.nodes))
	for i, ns := range c.nodes {
		for _, n := range ns {
			out[i] = append(out[i], n.server.URL())
		}
	}
	return out
}

// owner returns the node of region i that owns partition part.
func (c *cluster) owner(i, part int) *benchNode {
	for _, n := range c.nodes[i] {
		if slices.Contains(n.owned, part) {
			return n
		}
	}
	return nil
}

// isolate cuts region i off from every other region, in both directions,
// or heals it: every node of region i from every node of the others.
func (c *cluster) isolate(i int, on bool) {
	for _, n := range c.nodes[i] {
		w := n.wan()
		for j, ns := range c.nodes {
			if j == i {
				continue
			}
			for _, m := range ns {
				if on {
					w.Partition(m.peer)
				} else {
					w.Heal(m.peer)
				}
			}
		}
	}
}

// connected reports whether every partition of every region has a
// connection to every peer region.
func (c *cluster) connected() bool {
	for _, n := range c.all() {
		if !n.connected(len(c.names) - 1) {
			return false
		}
	}
	return true
}

// caughtUp reports whether every partition of every region is out of
// catch-up: a region of several starts a new store in catch-up and
// decides as a home only once it has completed anti-entropy with every
// peer.
func (c *cluster) caughtUp() bool {
	for i := range c.nodes {
		for p := range c.partitions {
			if c.owner(i, p).node(p).CatchingUp() {
				return false
			}
		}
	}
	return true
}

// appliedOf returns the applied causal context of partition part at
// region i.
func (c *cluster) appliedOf(i, part int) crdt.Context {
	return c.owner(i, part).node(part).Applied()
}

// applied returns each region's applied causal context of each
// partition, by region and partition.
func (c *cluster) applied() [][]crdt.Context {
	out := make([][]crdt.Context, len(c.nodes))
	for i := range c.nodes {
		out[i] = make([]crdt.Context, c.partitions)
		for p := range c.partitions {
			out[i][p] = c.appliedOf(i, p)
		}
	}
	return out
}

// has returns the Has of the contexts applied returned: the dots of the
// replica each origin's partition writes as (its region's name and
// incarnation).
func (c *cluster) has(applied [][]crdt.Context) Has {
	self := make([][]crdt.ReplicaID, len(c.nodes))
	for i := range c.nodes {
		self[i] = make([]crdt.ReplicaID, c.partitions)
		for p := range c.partitions {
			self[i][p] = c.owner(i, p).node(p).Self()
		}
	}
	return func(r, part, origin int, seq uint64) bool {
		return applied[r][part].Contains(crdt.Dot{Replica: self[origin][part], Counter: seq})
	}
}

// wire is what the regions have sent each other so far: the replication
// protocol bytes every region has sent (lattice_replication_bytes_sent_total,
// every partition's), what its message streams carried for them
// (lattice_replication_stream_bytes_sent_total, every node's), the bytes of the encoded deltas of their own writes
// (lattice_replication_delta_bytes_total), and the UDP bytes their nodes'
// emulated WANs have sent (QUIC packets: replication, forwarded home
// requests, handshakes, acknowledgements and keep-alives; with several
// nodes per region, also what the nodes of one region send each other).
type wire struct {
	app, stream, deltas, udp uint64
}

// wireBytes returns what the regions have sent so far.
func (c *cluster) wireBytes() (wire, error) {
	var w wire
	for _, n := range c.all() {
		mfs, err := gather(n.server)
		if err != nil {
			return wire{}, err
		}
		w.app += counterTotal(mfs["lattice_replication_bytes_sent_total"])
		w.stream += counterTotal(mfs["lattice_replication_stream_bytes_sent_total"])
		w.deltas += counterTotal(mfs["lattice_replication_delta_bytes_total"])
		w.udp += n.wan().Stats().SentBytes
	}
	return w, nil
}

// counterTotal returns the sum of the series of the counter mf (0 for
// none).
func counterTotal(mf *dto.MetricFamily) uint64 {
	var sum uint64
	if mf != nil {
		for _, m := range mf.GetMetric() {
			sum += uint64(m.GetCounter().GetValue())
		}
	}
	return sum
}

// counterSum returns the sum over every node of the counter name.
func (c *cluster) counterSum(name string) (float64, error) {
	var sum float64
	for _, n := range c.all() {
		mfs, err := gather(n.server)
		if err != nil {
			return 0, err
		}
		if mf := mfs[name]; mf != nil {
			for _, m := range mf.GetMetric() {
				sum += m.GetCounter().GetValue()
			}
		}
	}
	return sum, nil
}

func gather(s *server.Server) (map[string]*dto.MetricFamily, error) {
	mfs, err := s.Registry().Gather()
	if err != nil {
		return nil, fmt.Errorf("bench: region %s node %s metrics: %w", s.Region(), s.NodeName(), err)
	}
	out := make(map[string]*dto.MetricFamily, len(mfs))
	for _, mf := range mfs {
		out[mf.GetName()] = mf
	}
	return out, nil
}

// StoreStats is what a region's stores did over the whole run (set-up and
// settle included), from its metrics: it tells write latency tails from
// the disk apart from the rest. A partitioned region's figures are those
// of all its partitions' stores, on all its nodes.
type StoreStats struct {
	Region string `json:"region"`
	// Fsyncs, their mean duration, and how many took longer than
	// SlowFsync (a bound of the fsync histogram's buckets).
	Fsyncs      uint64  `json:"fsyncs"`
	FsyncMeanMS float64 `json:"fsync_mean_ms"`
	FsyncsOver  uint64  `json:"fsyncs_over_50ms"`
	// BatchMean is the mean number of transactions one fsync made durable
	// (group commit).
	BatchMean float64 `json:"fsync_batch_mean"`
	// Shrinks counts rewrites of the store files to their live data.
	Shrinks uint64 `json:"shrinks"`
	// Nodes holds each node's stores' sizes at the end of the run.
	Nodes []NodeStore `json:"nodes"`
}

// NodeStore is the size of a node's stores (all its partitions') at the
// end of a run, as its GET /v1/cluster reports it.
type NodeStore struct {
	Node       string `json:"node"`
	Partitions int    `json:"partitions"`
	FileBytes  int64  `json:"file_bytes"`
	LiveBytes  int64  `json:"live_bytes"`
}

// storeStats returns the store statistics of every region.
func (c *cluster) storeStats() ([]StoreStats, error) {
	var out []StoreStats
	for i, name := range c.names {
		st := StoreStats{Region: name}
		var secs, batches, batchSum float64
		for _, n := range c.nodes[i] {
			mfs, err := gather(n.server)
			if err != nil {
				return nil, err
			}
			for _, h := range histogramsOf(mfs["lattice_store_fsync_seconds"]) {
				st.Fsyncs += h.GetSampleCount()
				secs += h.GetSampleSum()
				over := h.GetSampleCount()
				for _, b := range h.GetBucket() {
					if b.GetUpperBound() <= SlowFsync+1e-9 {
						over = h.GetSampleCount() - b.GetCumulativeCount()
					}
				}
				st.FsyncsOver += over
			}
			for _, h := range histogramsOf(mfs["lattice_store_fsync_batch_size"]) {
				batches += float64(h.GetSampleCount())
				batchSum += h.GetSampleSum()
			}
			if mf := mfs["lattice_store_shrinks_total"]; mf != nil {
				for _, m := range mf.GetMetric() {
					st.Shrinks += uint64(m.GetCounter().GetValue())
				}
			}
			var file, live int64
			if ps := n.server.Partitions(); ps != nil {
				cs := ps.Cluster()
				file, live = cs.Store.FileBytes, cs.Store.LiveBytes
			} else {
				cs := n.server.Node().Cluster()
				file, live = cs.Store.FileBytes, cs.Store.LiveBytes
			}
			st.Nodes = append(st.Nodes, NodeStore{Node: n.server.NodeName(), Partitions: len(n.owned), FileBytes: file, LiveBytes: live})
		}
		if st.Fsyncs > 0 {
			st.FsyncMeanMS = secs / float64(st.Fsyncs) * 1000
		}
		if batches > 0 {
			st.BatchMean = batchSum / batches
		}
		out = append(out, st)
	}
	return out, nil
}

// histogramsOf returns the histograms of mf, one per label set (one per
// partition of a partitioned node).
func histogramsOf(mf *dto.MetricFamily) []*dto.Histogram {
	if mf == nil {
		return nil
	}
	var out []*dto.Histogram
	for _, m := range mf.GetMetric() {
		if h := m.GetHistogram(); h != nil {
			out = append(out, h)
		}
	}
	return out
}

// SlowFsync is the duration past which the report counts an fsync as
// slow (StoreStats.FsyncsOver), in seconds: a bound of the fsync
// histogram's buckets (region.FsyncBuckets), so the count is exact.
const SlowFsync = 0.05
