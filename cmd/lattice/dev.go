package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/latticedb/lattice/cmd/server"
	"github.com/latticedb/lattice/region/config"
	"github.com/latticedb/lattice/sync/certs"
	"github.com/latticedb/lattice/sync/replication"
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
	servers, err := startCluster(ctx, cfg, server.Options{Logger: log})
	if err != nil {
		log.Error("cannot start the cluster", "err", err)
		return exitFail
	}
	fmt.Fprintf(cio.stdout, "Lattice dev cluster %q, data in %s\n", cfg.Cluster, cfg.DataDir)
	if *latency == "wan" {
		fmt.Fprintln(cio.stdout, "emulated one-way latency: us-east<->eu-west 34 ms, us-east<->ap-south 92 ms, eu-west<->ap-south 60 ms")
	}
	for _, s := range servers {
		fmt.Fprintf(cio.stdout, "  %-9s %s\n", s.Region(), s.URL())
	}
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
	var servers []*server.Server
	for _, r := range cfg.Regions {
		o := opts
		o.Replication = server.QUIC(replication.AttachOptions{WANSeed: 1})
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
