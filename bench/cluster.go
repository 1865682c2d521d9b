package bench

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"sync"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/latticedb/lattice/cmd/server"
	"github.com/latticedb/lattice/crdt"
	"github.com/latticedb/lattice/region"
	"github.com/latticedb/lattice/region/config"
	"github.com/latticedb/lattice/sync/certs"
	"github.com/latticedb/lattice/sync/protocol"
	"github.com/latticedb/lattice/sync/replication"
)

// MaxRegions bounds --regions: every region runs in this process with its
// own store, fsyncs and QUIC endpoint.
const MaxRegions = 16

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
// replicating over QUIC on 127.0.0.1 through the emulated WAN.
type cluster struct {
	cfg     *config.Config
	names   []string
	servers []*server.Server
	peers   []string // resolved UDP address of each region's QUIC endpoint

	mu   sync.Mutex
	repl map[string]*replication.QUICReplication
}

// hooks are what the cluster reports to the benchmark.
type hooks struct {
	onPublish func(region string, d region.Delta, at time.Time)
	onApply   func(region, from string, ranges []protocol.DotRange, at time.Time)
}

// startCluster makes the certificates and config of the regions names
// under dir and starts every region. On failure it closes what it
// started.
func startCluster(ctx context.Context, dir string, names []string, latency map[string]int, lossPct float64, wanSeed uint64,
	durability config.Durability, log *slog.Logger, h hooks) (_ *cluster, err error) {
	cfg := config.DefaultConfig()
	cfg.Cluster = "bench"
	cfg.DataDir = filepath.Join(dir, "data")
	cfg.TLSDir = filepath.Join(dir, "certs")
	cfg.Durability = durability
	cfg.Emulate.LatencyMS = latency
	cfg.Emulate.LossPct = lossPct
	cfg.Regions = nil
	var lns []net.Listener
	defer func() {
		if err != nil {
			for _, ln := range lns {
				ln.Close()
			}
		}
	}()
	for _, name := range names {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("bench: %w", err)
		}
		lns = append(lns, ln)
		peer, err := freeUDP()
		if err != nil {
			return nil, err
		}
		cfg.Regions = append(cfg.Regions, config.RegionConfig{Name: name, API: ln.Addr().String(), Peer: peer})
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := certs.Generate(cfg.TLSDir, cfg.Cluster, names); err != nil {
		return nil, err
	}
	c := &cluster{cfg: cfg, names: names, repl: map[string]*replication.QUICReplication{}}
	for _, r := range cfg.Regions {
		addr, err := net.ResolveUDPAddr("udp", r.Peer)
		if err != nil {
			return nil, fmt.Errorf("bench: %w", err)
		}
		c.peers = append(c.peers, addr.String())
	}
	attach := server.QUIC(replication.AttachOptions{
		WANSeed:   wanSeed,
		WAN:       true,
		OnPublish: h.onPublish,
		OnApply:   h.onApply,
		Started: func(q *replication.QUICReplication) {
			c.mu.Lock()
			c.repl[q.Region()] = q
			c.mu.Unlock()
		},
	})
	for i, name := range names {
		s, err := server.Start(ctx, cfg, name, server.Options{Listener: lns[i], Logger: log, Replication: attach})
		lns[i] = nil // the server owns it, even when Start fails
		if err != nil {
			c.close()
			return nil, fmt.Errorf("bench: region %s: %w", name, err)
		}
		c.servers = append(c.servers, s)
	}
	lns = nil
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

// close stops every region.
func (c *cluster) close() error {
	var errs []error
	for _, s := range c.servers {
		errs = append(errs, s.Close())
	}
	return errors.Join(errs...)
}

func (c *cluster) replication(i int) *replication.QUICReplication {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.repl[c.names[i]]
}

// urls returns the base URL of each region's API.
func (c *cluster) urls() []string {
	out := make([]string, len(c.servers))
	for i, s := range c.servers {
		out[i] = s.URL()
	}
	return out
}

// isolate cuts region i off from every other region, in both directions,
// or heals it.
func (c *cluster) isolate(i int, on bool) {
	w := c.replication(i).WAN()
	for j, addr := range c.peers {
		if j == i {
			continue
		}
		if on {
			w.Partition(addr)
		} else {
			w.Heal(addr)
		}
	}
}

// connected reports whether every region has a connection to every peer.
func (c *cluster) connected() bool {
	for i := range c.servers {
		q := c.replication(i)
		if q == nil {
			return false
		}
		st := q.Status()
		if len(st) != len(c.servers)-1 {
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

// applied returns each region's applied causal context.
func (c *cluster) applied() []crdt.Context {
	out := make([]crdt.Context, len(c.servers))
	for i, s := range c.servers {
		out[i] = s.Node().Applied()
	}
	return out
}

// wireBytes returns the replication protocol bytes every region has sent
// (lattice_replication_bytes_sent_total) and the UDP bytes their emulated
// WANs have sent (QUIC packets: replication, forwarded home requests,
// handshakes, acknowledgements and keep-alives).
func (c *cluster) wireBytes() (app, udp uint64, err error) {
	for i := range c.servers {
		mfs, err := c.gather(i)
		if err != nil {
			return 0, 0, err
		}
		if mf := mfs["lattice_replication_bytes_sent_total"]; mf != nil {
			for _, m := range mf.GetMetric() {
				app += uint64(m.GetCounter().GetValue())
			}
		}
		udp += c.replication(i).WAN().Stats().SentBytes
	}
	return app, udp, nil
}

func (c *cluster) gather(i int) (map[string]*dto.MetricFamily, error) {
	mfs, err := c.servers[i].Registry().Gather()
	if err != nil {
		return nil, fmt.Errorf("bench: region %s metrics: %w", c.names[i], err)
	}
	out := make(map[string]*dto.MetricFamily, len(mfs))
	for _, mf := range mfs {
		out[mf.GetName()] = mf
	}
	return out, nil
}

// StoreStats is what a region's store did over the whole run (set-up and
// settle included), from its metrics: it tells write latency tails from
// the disk apart from the rest.
type StoreStats struct {
	Region string `json:"region"`
	// Fsyncs, their mean duration, and how many took longer than 51.2 ms
	// (the fsync histogram's bucket bound nearest 50 ms).
	Fsyncs      uint64  `json:"fsyncs"`
	FsyncMeanMS float64 `json:"fsync_mean_ms"`
	FsyncsOver  uint64  `json:"fsyncs_over_51ms"`
	// BatchMean is the mean number of transactions one fsync made durable
	// (group commit).
	BatchMean float64 `json:"fsync_batch_mean"`
	// Shrinks counts rewrites of the store file to its live data.
	Shrinks uint64 `json:"shrinks"`
}

// storeStats returns the store statistics of every region.
func (c *cluster) storeStats() ([]StoreStats, error) {
	var out []StoreStats
	for i, name := range c.names {
		mfs, err := c.gather(i)
		if err != nil {
			return nil, err
		}
		st := StoreStats{Region: name}
		if h := histogramOf(mfs["lattice_store_fsync_seconds"]); h != nil && h.GetSampleCount() > 0 {
			st.Fsyncs = h.GetSampleCount()
			st.FsyncMeanMS = h.GetSampleSum() / float64(st.Fsyncs) * 1000
			st.FsyncsOver = st.Fsyncs
			for _, b := range h.GetBucket() {
				if b.GetUpperBound() <= 0.0512+1e-9 {
					st.FsyncsOver = st.Fsyncs - b.GetCumulativeCount()
				}
			}
		}
		if h := histogramOf(mfs["lattice_store_fsync_batch_size"]); h != nil && h.GetSampleCount() > 0 {
			st.BatchMean = h.GetSampleSum() / float64(h.GetSampleCount())
		}
		if mf := mfs["lattice_store_shrinks_total"]; mf != nil && len(mf.GetMetric()) > 0 {
			st.Shrinks = uint64(mf.GetMetric()[0].GetCounter().GetValue())
		}
		out = append(out, st)
	}
	return out, nil
}

func histogramOf(mf *dto.MetricFamily) *dto.Histogram {
	if mf == nil || len(mf.GetMetric()) == 0 {
		return nil
	}
	return mf.GetMetric()[0].GetHistogram()
}
