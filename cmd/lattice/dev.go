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
// its data lives in a new temporary directory, removed on exit.
func runDev(ctx context.Context, cio cmdIO, args []string) int {
	cmd, _ := lookup("dev")
	fs := newFlagSet(cio, cmd)
	data := fs.String("data", "", "data directory (default: a fresh temporary directory)")
	latency := fs.String("latency", "wan", "emulated WAN between regions: wan (the one-way latencies of docs/configuration.md) or none")
	loss := fs.Float64("loss", 0, "emulated packet loss between regions, in percent")
	apiBase := fs.Int("api-port", 7101, "API port of us-east; eu-west and ap-south take the next two")
	peerBase := fs.Int("peer-port", 7201, "QUIC port of us-east; eu-west and ap-south take the next two")
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
	cfg, temp, err := devConfig(*data, *latency, *loss, *apiBase, *peerBase)
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
	servers, _, err := startDevCluster(ctx, cfg, server.Options{Logger: log})
	if err != nil {
		log.Error("cannot start the cluster", "err", err)
		return exitFail
	}
	fmt.Fprintf(cio.stdout, "Lattice dev cluster %q, data in %s\n", cfg.Cluster, cfg.DataDir)
	if *latency == "wan" {
		fmt.Fprintln(cio.stdout, "emulated one-way latency: us-east<->eu-west 34 ms, us-east<->ap-south 92 ms, eu-west<->ap-south 60 ms")
	}
	for _, s := range servers {
		fmt.Fprintf(cio.stdout, "  %-9s %s   console %s%s\n", s.Region(), s.URL(), s.URL(), console.Path)
	}
	fmt.Fprintf(cio.stdout, "console: open %s%s (every region serves one; its development controls cut regions off and change the WAN)\n",
		servers[0].URL(), console.Path)
	fmt.Fprintf(cio.stdout, "try:  curl -s -X POST %s/v1/carts/demo/items -d '{\"sku\":\"book\",\"qty\":1}'; curl -s %s/v1/carts/demo\n",
		servers[0].URL(), servers[1].URL())
	status := exitOK
	done := make(chan *server.Server, len(servers))
	for _, s := range servers {
		go func() { <-s.Done(); done <- s }()
	}
	select {
	case <-ctx.Done():
		log.Info("stopping")
	case s := <-done:
		log.Error("a region stopped", "region", s.Region(), "err", s.Err())
		status = exitFail
	}
	stop()
	for _, s := range servers {
		if err := s.Close(); err != nil {
			log.Error("shutdown", "region", s.Region(), "err", err)
			status = exitFail
		}
	}
	return status
}

// devConfig returns the dev cluster's config with its data and
// certificates under data, or under a new temporary directory when data
// is empty (temp is then true, and the caller removes it).
func devConfig(data, latency string, loss float64, apiBase, peerBase int) (_ *config.Config, temp bool, err error) {
	cfg := config.DefaultConfig()
	switch latency {
	case "wan":
	case "none":
		cfg.Emulate.LatencyMS = nil
	default:
		return nil, false, fmt.Errorf("--latency %q: want wan or none", latency)
	}
	cfg.Emulate.LossPct = loss
	for i := range cfg.Regions {
		cfg.Regions[i].API = fmt.Sprintf("127.0.0.1:%d", apiBase+i)
		cfg.Regions[i].Peer = fmt.Sprintf("127.0.0.1:%d", peerBase+i)
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
	return startClusterWith(ctx, cfg, opts, replication.AttachOptions{WANSeed: 1})
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
	servers, err := startClusterWith(ctx, cfg, opts, replication.AttachOptions{WANSeed: 1, WAN: true, Started: ctl.attach})
	if err != nil {
		return nil, nil, err
	}
	return servers, ctl, nil
}

// startClusterWith starts every region of cfg with the replication
// attach options.
func startClusterWith(ctx context.Context, cfg *config.Config, opts server.Options, attach replication.AttachOptions) ([]*server.Server, error) {
	var servers []*server.Server
	for _, r := range cfg.Regions {
		o := opts
		o.Replication = server.QUIC(attach)
		s, err := server.Start(ctx, cfg, r.Name, o)
		if err != nil {
			for _, s := range servers {
				s.Close()
			}
			return nil, fmt.Errorf("region %s: %w", r.Name, err)
		}
		servers = append(servers, s)
	}
	return servers, nil
}

// devControls are the console's development controls of the dev
// cluster: they cut regions off, heal them, and change the emulated
// latency and loss of the WAN under every region's QUIC socket. A cut
// drops packets in both directions at both ends, as a real partition
// would; QUIC notices it by its idle timeout and anti-entropy repairs what
// was missed after the heal.
type devControls struct {
	regions []string
	addrs   map[string]string // region -> its peer UDP address, resolved

	mu      sync.Mutex
	wans    map[string]*wan.Conn // region -> the WAN under its socket
	cut     map[string]bool
	latency map[[2]string]time.Duration // by pairKey
	lossPct float64
}

var _ console.Controls = (*devControls)(nil)

// newDevControls returns the controls of cfg's regions, set as cfg
// emulates the WAN.
func newDevControls(cfg *config.Config) (*devControls, error) {
	c := &devControls{addrs: map[string]string{}, wans: map[string]*wan.Conn{}, cut: map[string]bool{},
		latency: map[[2]string]time.Duration{}, lossPct: cfg.Emulate.LossPct}
	for _, r := range cfg.Regions {
		a, err := net.ResolveUDPAddr("udp", r.DialPeer())
		if err != nil {
			return nil, fmt.Errorf("region %s peer address %q: %w", r.Name, r.DialPeer(), err)
		}
		c.regions = append(c.regions, r.Name)
		c.addrs[r.Name] = a.String()
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

// attach takes a region's replication once it runs and puts the
// controls' current settings on its WAN.
func (c *devControls) attach(q *replication.QUICReplication) {
	w := q.WAN()
	if w == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.wans[q.Region()] = w
	for _, p := range c.regions {
		if p != q.Region() {
			c.applyLocked(q.Region(), p)
		}
	}
}

// applyLocked puts the link settings and the cut between a and b on both
// of their WANs that are attached.
func (c *devControls) applyLocked(a, b string) {
	link := wan.Link{Delay: c.latency[pairKey(a, b)], Loss: c.lossPct / 100}
	cut := c.cut[a] || c.cut[b]
	for _, d := range [][2]string{{a, b}, {b, a}} {
		w := c.wans[d[0]]
		if w == nil {
			continue
		}
		to := c.addrs[d[1]]
		w.SetLink(to, link)
		if cut {
			w.Partition(to)
		} else {
			w.Heal(to)
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
