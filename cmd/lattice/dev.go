package main

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/latticedb/lattice/api/console"
	"github.com/latticedb/lattice/cmd/server"
	"github.com/latticedb/lattice/region/config"
	"github.com/latticedb/lattice/sync/certs"
	"github.com/latticedb/lattice/sync/replication"
	"github.com/latticedb/lattice/sync/wan"
)

// runDev starts the three-region development cluster of SPEC §7 in this
// process: us-east, eu-west and ap-south on 127.0.0.1, real QUIC between
// them through an emulated WAN, until SIGINT or SIGTERM. Without --data
// its data lives in a new temporary directory, removed on exit. With
// --partitions P and --nodes K each region runs K nodes, every one in this
// process, owning contiguous ranges of the P partitions (SPEC §10).
func runDev(ctx context.Context, cio cmdIO, args []string) int {
	cmd, _ := lookup("dev")
	fs := newFlagSet(cio, cmd)
	data := fs.String("data", "", "data directory (default: a fresh temporary directory)")
	latency := fs.String("latency", "wan", "emulated WAN between regions: wan (the one-way latencies of docs/configuration.md) or none")
	loss := fs.Float64("loss", 0, "emulated packet loss between regions, in percent")
	apiBase := fs.Int("api-port", 7101, "API port of us-east (of its first node); eu-west and ap-south (and the other nodes, region by region) take the next ones")
	peerBase := fs.Int("peer-port", 7201, "QUIC port of us-east (of its first node); the others follow as for --api-port")
	partitions := fs.Int("partitions", 1, fmt.Sprintf("partitions of the cluster: a power of two 1..%d", config.MaxPartitions))
	nodes := fs.Int("nodes", 1, "nodes per region, each owning a contiguous range of the partitions (at most --partitions); all run in this process")
	level := fs.String("log-level", "info", "log level: debug, info, warn or error")
	format := fs.String("log-format", "text", "log format: text or json")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return flagStatus(err)
	}
	if len(pos) > 0 {
		fmt.Fprintf(cio.stderr, "lattice dev: unexpected argument %q\n", pos[0])
		return exitUsage
	}
	log, err := newLogger(cio.stderr, *level, *format)
	if err != nil {
		fmt.Fprintf(cio.stderr, "lattice dev: %v\n", err)
		return exitUsage
	}
	cfg, temp, err := devConfig(*data, *latency, *loss, *apiBase, *peerBase, devLayout{partitions: *partitions, nodes: *nodes})
	if err != nil {
		fmt.Fprintf(cio.stderr, "lattice dev: %v\n", err)
		return exitUsage
	}
	if temp {
		// The temporary data directory goes with the cluster; --data
		// keeps it.
		defer func() {
			if err := os.RemoveAll(cfg.DataDir); err != nil {
				log.Error("cannot remove the temporary data directory", "dir", cfg.DataDir, "err", err)
				return
			}
			log.Info("removed the temporary data directory (--data DIR keeps the data)", "dir", cfg.DataDir)
		}()
	}

	ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	signal.Ignore(syscall.SIGPIPE) // as serve: a log reader gone is no reason to stop
	servers, _, err := startDevCluster(ctx, cfg, server.Options{Logger: log})
	if err != nil {
		log.Error("cannot start the cluster", "err", err)
		return exitFail
	}
	fmt.Fprintf(cio.stdout, "Lattice dev cluster %q, data in %s\n", cfg.Cluster, cfg.DataDir)
	if *latency == "wan" {
		fmt.Fprintln(cio.stdout, "emulated one-way latency: us-east<->eu-west 34 ms, us-east<->ap-south 92 ms, eu-west<->ap-south 60 ms")
	}
	layout := devLayout{partitions: cfg.PartitionCount(), nodes: *nodes}
	if layout.partitioned() {
		fmt.Fprintf(cio.stdout, "partitions: %d, %d node(s) per region; any node answers for every partition and forwards to the owner\n",
			layout.partitions, layout.nodes)
	}
	first := map[string]*server.Server{} // each region's first node
	for _, s := range servers {
		if first[s.Region()] == nil {
			first[s.Region()] = s
		}
		if !layout.partitioned() {
			fmt.Fprintf(cio.stdout, "  %-9s %s   console %s%s\n", s.Region(), s.URL(), s.URL(), console.Path)
			continue
		}
		nc, _ := cfg.Node(s.Region(), s.NodeName())
		fmt.Fprintf(cio.stdout, "  %-12s %s   partitions %-7s console %s%s\n", devNodeLabel(cfg, s), s.URL(),
			strings.Join(nc.Partitions, ","), s.URL(), console.Path)
	}
	fmt.Fprintf(cio.stdout, "console: open %s%s (every region serves one; its development controls cut regions off and change the WAN)\n",
		servers[0].URL(), console.Path)
	fmt.Fprintf(cio.stdout, "try:  curl -s -X POST %s/v1/carts/demo/items -d '{\"sku\":\"book\",\"qty\":1}'; curl -s %s/v1/carts/demo\n",
		servers[0].URL(), first[cfg.Regions[1].Name].URL())
	status := exitOK
	done := make(chan *server.Server, len(servers))
	for _, s := range servers {
		go func() { <-s.Done(); done <- s }()
	}
	select {
	case <-ctx.Done():
		log.Info("stopping")
	case s := <-done:
		log.Error("a region stopped", "region", s.Region(), "node", s.NodeName(), "err", s.Err())
		status = exitFail
	}
	stop()
	for _, s := range servers {
		if err := s.Close(); err != nil {
			log.Error("shutdown", "region", s.Region(), "node", s.NodeName(), "err", err)
			status = exitFail
		}
	}
	return status
}

// devLayout is how the dev cluster's regions are partitioned: the
// cluster's partitions and the nodes of each region.
type devLayout struct{ partitions, nodes int }

// partitioned reports whether the regions run partitioned (SPEC §10).
func (l devLayout) partitioned() bool { return l.partitions > 1 || l.nodes > 1 }

// devNodeName names node j of a region of the dev cluster.
func devNodeName(j int) string { return fmt.Sprintf("n%d", j) }

// devNodeLabel names a node of the dev cluster as its listing shows it:
// REGION/NODE when its region has several nodes, else REGION.
func devNodeLabel(cfg *config.Config, s *server.Server) string {
	if len(cfg.Nodes(s.Region())) > 1 {
		return s.Region() + "/" + s.NodeName()
	}
	return s.Region()
}

// apply sets cfg's partitions and gives each region l.nodes nodes owning
// contiguous ranges of them (node j of K owns j·P/K to (j+1)·P/K − 1), on
// consecutive ports from apiBase and peerBase, region by region. With one
// node a region lists none: it is its own only node.
func (l devLayout) apply(cfg *config.Config, apiBase, peerBase int) error {
	if l.partitions < 1 || l.partitions > config.MaxPartitions || l.partitions&(l.partitions-1) != 0 {
		return fmt.Errorf("--partitions %d: want a power of two 1..%d", l.partitions, config.MaxPartitions)
	}
	if l.nodes < 1 || l.nodes > l.partitions {
		return fmt.Errorf("--nodes %d: want 1..%d (--partitions: each node owns at least one partition)", l.nodes, l.partitions)
	}
	if last := max(apiBase, peerBase) + len(cfg.Regions)*l.nodes - 1; min(apiBase, peerBase) < 1 || last > 65535 {
		return fmt.Errorf("--api-port %d, --peer-port %d: %d nodes need ports up to %d, past 65535 (or below 1)",
			apiBase, peerBase, len(cfg.Regions)*l.nodes, last)
	}
	cfg.Partitions = l.partitions
	for i := range cfg.Regions {
		r := &cfg.Regions[i]
		if l.nodes == 1 {
			r.API = fmt.Sprintf("127.0.0.1:%d", apiBase+i)
			r.Peer = fmt.Sprintf("127.0.0.1:%d", peerBase+i)
			continue
		}
		r.API, r.Peer = "", ""
		for j := range l.nodes {
			lo, hi := j*l.partitions/l.nodes, (j+1)*l.partitions/l.nodes-1
			owns := strconv.Itoa(lo)
			if hi > lo {
				owns += "-" + strconv.Itoa(hi)
			}
			port := i*l.nodes + j
			r.Nodes = append(r.Nodes, config.NodeConfig{Name: devNodeName(j),
				API:        fmt.Sprintf("127.0.0.1:%d", apiBase+port),
				Peer:       fmt.Sprintf("127.0.0.1:%d", peerBase+port),
				Partitions: config.PartitionSet{owns}})
		}
	}
	return nil
}

// devConfig returns the dev cluster's config, partitioned as layout says,
// with its data and certificates under data, or under a new temporary
// directory when data is empty (temp is then true, and the caller removes
// it).
func devConfig(data, latency string, loss float64, apiBase, peerBase int, layout devLayout) (_ *config.Config, temp bool, err error) {
	cfg := config.DefaultConfig()
	switch latency {
	case "wan":
	case "none":
		cfg.Emulate.LatencyMS = nil
	default:
		return nil, false, fmt.Errorf("--latency %q: want wan or none", latency)
	}
	cfg.Emulate.LossPct = loss
	if err := layout.apply(cfg, apiBase, peerBase); err != nil {
		return nil, false, err
	}
	if err := cfg.Validate(); err != nil {
		return nil, false, err
	}
	if data == "" {
		d, err := os.MkdirTemp("", "lattice-dev-")
		if err != nil {
			return nil, false, err
		}
		data, temp = d, true
		defer func() {
			if err != nil {
				os.RemoveAll(d)
			}
		}()
	}
	abs, err := filepath.Abs(data)
	if err != nil {
		return nil, false, err
	}
	cfg.DataDir = abs
	cfg.TLSDir = filepath.Join(abs, "certs")
	if _, err := os.Stat(filepath.Join(cfg.TLSDir, certs.CACertFile)); errors.Is(err, os.ErrNotExist) {
		if err := certs.Generate(cfg.TLSDir, cfg.Cluster, cfg.RegionNames()); err != nil {
			return nil, false, err
		}
	}
	return cfg, temp, nil
}

// startCluster starts every region of cfg in this process, replicating
// over QUIC; on failure it closes what it started.
func startCluster(ctx context.Context, cfg *config.Config, opts server.Options) ([]*server.Server, error) {
	return startClusterWith(ctx, cfg, opts, replication.AttachOptions{WANSeed: 1}, nil)
}

// startDevCluster starts the regions of cfg as startCluster does, every
// one on an emulated WAN (also with --latency none), and gives their
// consoles the development controls over that WAN.
func startDevCluster(ctx context.Context, cfg *config.Config, opts server.Options) ([]*server.Server, *devControls, error) {
	ctl, err := newDevControls(cfg)
	if err != nil {
		return nil, nil, err
	}
	opts.ConsoleControls = ctl
	opts.LoopbackOnly = true // 127.0.0.1 without tokens: not for web pages' own names
	servers, err := startClusterWith(ctx, cfg, opts, replication.AttachOptions{WANSeed: 1, WAN: true}, ctl.attach)
	if err != nil {
		return nil, nil, err
	}
	return servers, ctl, nil
}

// startClusterWith starts every node of every region of cfg with the
// replication attach options, in config order. onWAN, when set, is given
// each node's emulated WAN once the node runs.
func startClusterWith(ctx context.Context, cfg *config.Config, opts server.Options, attach replication.AttachOptions,
	onWAN func(region string, w *wan.Conn)) ([]*server.Server, error) {
	var servers []*server.Server
	fail := func(err error) ([]*server.Server, error) {
		for _, s := range servers {
			s.Close()
		}
		return nil, err
	}
	for _, r := range cfg.Regions {
		for _, n := range cfg.Nodes(r.Name) {
			o := opts
			if len(r.Nodes) > 0 {
				o.Node = n.Name
			}
			a := attach
			if onWAN != nil {
				a.Started = func(q *replication.QUICReplication) { onWAN(q.Region(), q.WAN()) }
			}
			o.Replication = server.QUIC(a)
			var part *replication.Partitioned
			o.PartitionedReplication = func(env server.ReplicationEnv) (server.PartitionedReplication, error) {
				part = replication.NewPartitioned(a, env)
				return part, nil
			}
			s, err := server.Start(ctx, cfg, r.Name, o)
			if err != nil {
				if len(r.Nodes) > 0 {
					return fail(fmt.Errorf("region %s node %s: %w", r.Name, n.Name, err))
				}
				return fail(fmt.Errorf("region %s: %w", r.Name, err))
			}
			servers = append(servers, s)
			if part != nil && onWAN != nil {
				// A partitioned node's replication runs once Start
				// returns; it has no Started hook.
				onWAN(r.Name, part.WAN())
			}
		}
	}
	return servers, nil
}

// devControls are the console's development controls of the dev
// cluster: they cut regions off, heal them, and change the emulated
// latency and loss of the WAN under every node's QUIC socket. A cut
// drops packets in both directions at both ends, between every node of
// the region and every node of the others, as a real partition would (the
// nodes of one region still reach each other); QUIC notices it by its idle
// timeout and anti-entropy repairs what was missed after the heal.
type devControls struct {
	regions []string
	addrs   map[string][]string // region -> its nodes' peer UDP addresses, resolved

	mu      sync.Mutex
	wans    map[string][]*wan.Conn // region -> the WANs under its nodes' sockets
	cut     map[string]bool
	latency map[[2]string]time.Duration // by pairKey
	lossPct float64
}

var _ console.Controls = (*devControls)(nil)

// newDevControls returns the controls of cfg's regions, set as cfg
// emulates the WAN.
func newDevControls(cfg *config.Config) (*devControls, error) {
	c := &devControls{addrs: map[string][]string{}, wans: map[string][]*wan.Conn{}, cut: map[string]bool{},
		latency: map[[2]string]time.Duration{}, lossPct: cfg.Emulate.LossPct}
	for _, r := range cfg.Regions {
		for _, n := range cfg.Nodes(r.Name) {
			a, err := net.ResolveUDPAddr("udp", n.DialPeer())
			if err != nil {
				return nil, fmt.Errorf("region %s node %s peer address %q: %w", r.Name, n.Name, n.DialPeer(), err)
			}
			c.addrs[r.Name] = append(c.addrs[r.Name], a.String())
		}
		c.regions = append(c.regions, r.Name)
	}
	for i, a := range c.regions {
		for _, b := range c.regions[i+1:] {
			c.latency[pairKey(a, b)] = cfg.Latency(a, b)
		}
	}
	return c, nil
}

func pairKey(a, b string) [2]string {
	if b < a {
		a, b = b, a
	}
	return [2]string{a, b}
}

// attach takes the WAN under the socket of a node of region once the node
// runs, and puts the controls' current settings on it.
func (c *devControls) attach(region string, w *wan.Conn) {
	if w == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.wans[region] = append(c.wans[region], w)
	for _, p := range c.regions {
		if p != region {
			c.applyLocked(region, p)
		}
	}
}

// applyLocked puts the link settings and the cut between a and b on every
// WAN of their nodes that is attached, towards every node of the other.
func (c *devControls) applyLocked(a, b string) {
	link := wan.Link{Delay: c.latency[pairKey(a, b)], Loss: c.lossPct / 100}
	cut := c.cut[a] || c.cut[b]
	for _, d := range [][2]string{{a, b}, {b, a}} {
		for _, w := range c.wans[d[0]] {
			for _, to := range c.addrs[d[1]] {
				w.SetLink(to, link)
				if cut {
					w.Partition(to)
				} else {
					w.Heal(to)
				}
			}
		}
	}
}

func (c *devControls) known(r string) error {
	if !slices.Contains(c.regions, r) {
		return fmt.Errorf("no region %q in the dev cluster (regions: %s)", r, strings.Join(c.regions, ", "))
	}
	return nil
}

// State returns the cut regions and every link's latency.
func (c *devControls) State() console.ControlState {
	c.mu.Lock()
	defer c.mu.Unlock()
	st := console.ControlState{Cut: []string{}, LossPct: c.lossPct}
	for i, a := range c.regions {
		if c.cut[a] {
			st.Cut = append(st.Cut, a)
		}
		for _, b := range c.regions[i+1:] {
			st.Links = append(st.Links, console.LinkState{A: a, B: b, LatencyMS: c.latency[pairKey(a, b)].Milliseconds()})
		}
	}
	return st
}

// Cut cuts region r off from every other region.
func (c *devControls) Cut(r string) error { return c.setCut(r, true) }

// Heal undoes Cut(r).
func (c *devControls) Heal(r string) error { return c.setCut(r, false) }

func (c *devControls) setCut(r string, cut bool) error {
	if err := c.known(r); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.cut[r] = cut
	for _, p := range c.regions {
		if p != r {
			c.applyLocked(r, p)
		}
	}
	return nil
}

// SetLatency sets the one-way latency between a and b.
func (c *devControls) SetLatency(a, b string, d time.Duration) error {
	if err := errors.Join(c.known(a), c.known(b)); err != nil {
		return err
	}
	if a == b {
		return fmt.Errorf("a link joins two regions, not %s to itself", a)
	}
	if d < 0 || d > config.MaxLatencyMS*time.Millisecond {
		return fmt.Errorf("latency %v: want 0 to %d ms", d, config.MaxLatencyMS)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.latency[pairKey(a, b)] = d
	c.applyLocked(a, b)
	return nil
}

// SetLoss sets the loss of every link, in percent.
func (c *devControls) SetLoss(pct float64) error {
	if math.IsNaN(pct) || pct < 0 || pct > 100 {
		return fmt.Errorf("loss %v %%: want 0 to 100", pct)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.lossPct = pct
	for i, a := range c.regions {
		for _, b := range c.regions[i+1:] {
			c.applyLocked(a, b)
		}
	}
	return nil
}
