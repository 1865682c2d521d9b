package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/latticedb/lattice/cmd/server"
	"github.com/latticedb/lattice/region/config"
	"github.com/latticedb/lattice/sync/replication"
)

// runServe runs one region until SIGINT or SIGTERM (or ctx ends), then
// stops it gracefully. A second signal during the shutdown kills the
// process.
func runServe(ctx context.Context, cio cmdIO, args []string) int {
	sa, status := parseServeArgs(cio, args)
	if sa == nil {
		return status
	}
	log, err := newLogger(cio.stderr, sa.level, sa.format)
	if err != nil {
		fmt.Fprintf(cio.stderr, "lattice serve: %v\n", err)
		return exitUsage
	}

	cfg, err := config.Load(sa.config)
	if err != nil {
		printLines(cio.stderr, "lattice serve: ", err)
		return exitFail
	}
	if _, ok := cfg.Region(sa.region); !ok {
		fmt.Fprintf(cio.stderr, "lattice serve: region %q is not in %s (regions: %s)\n",
			sa.region, sa.config, strings.Join(cfg.RegionNames(), ", "))
		return exitFail
	}
	if err := checkNode(cfg, sa.region, sa.node); err != nil {
		fmt.Fprintf(cio.stderr, "lattice serve: %v\n", err)
		return exitFail
	}

	ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	// A log whose reader went away (serve 2>&1 | tee, a log shipper
	// restarted) must not kill the region uncleanly: writes to it then
	// fail, which the logger ignores, and the region keeps serving.
	signal.Ignore(syscall.SIGPIPE)
	// SIGHUP (a closed terminal, or an operator expecting a reload) would
	// otherwise kill the process uncleanly; there is nothing to reload
	// (see logHangups).
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	opts := server.Options{Logger: log, Node: sa.node}
	if len(cfg.Regions) > 1 || len(cfg.Nodes(sa.region)) > 1 {
		opts.Replication = server.QUIC(replication.AttachOptions{WANSeed: 1})
		opts.PartitionedReplication = server.QUICPartitioned(replication.AttachOptions{WANSeed: 1})
	}
	srv, err := server.Start(ctx, cfg, sa.region, opts)
	// The server's own records carry region (and node); so do these.
	log = log.With("region", sa.region)
	if sa.node != "" {
		log = log.With("node", sa.node)
	}
	if err != nil {
		log.Error("cannot start region", "err", err)
		return exitFail
	}
	go logHangups(ctx, log, hup)
	status = exitOK
	select {
	case <-ctx.Done():
		log.Info("stopping", "cause", context.Cause(ctx))
	case <-srv.Done():
		log.Error("API server failed", "err", srv.Err())
		status = exitFail
	}
	stop() // a second signal now kills the process
	if err := srv.Close(); err != nil {
		log.Error("shutdown", "err", err)
		status = exitFail
	}
	return status
}

// logHangups notes each SIGHUP until ctx ends. The config is read only at
// start, and certificates and tokens reload on their own when their files
// change, so a hangup changes nothing.
func logHangups(ctx context.Context, log *slog.Logger, hup <-chan os.Signal) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			log.Info("SIGHUP ignored: the config is read only at start; certificates and tokens reload on their own")
		}
	}
}

// serveArgs are the flags of lattice serve.
type serveArgs struct {
	config, region, node, level, format string
}

// parseServeArgs parses the arguments of lattice serve. On a usage error
// (or -h) it prints it on cio.stderr and returns nil and the exit status.
func parseServeArgs(cio cmdIO, args []string) (*serveArgs, int) {
	cmd, _ := lookup("serve")
	fs := newFlagSet(cio, cmd)
	var sa serveArgs
	fs.StringVar(&sa.config, "config", "", "cluster config `FILE` (YAML, see docs/configuration.md)")
	fs.StringVar(&sa.region, "region", "", "`NAME` of the region to run, one of the config's regions")
	fs.StringVar(&sa.node, "node", "", "`NODE` of the region to run: one of its nodes (default: the region's only node)")
	fs.StringVar(&sa.level, "log-level", "info", "log `LEVEL`: debug, info, warn or error")
	fs.StringVar(&sa.format, "log-format", "text", "log `FORMAT` on stderr: text or json")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return nil, flagStatus(err)
	}
	switch {
	case len(pos) > 0:
		fmt.Fprintf(cio.stderr, "lattice serve: unexpected argument %q\n", pos[0])
		return nil, exitUsage
	case sa.config == "":
		fmt.Fprintln(cio.stderr, "lattice serve: --config is required")
		return nil, exitUsage
	case sa.region == "":
		fmt.Fprintln(cio.stderr, "lattice serve: --region is required")
		return nil, exitUsage
	}
	return &sa, exitOK
}

// checkNode checks that node (or, when node is "", the region's only
// node) is a node of region in cfg. A region without nodes is one node
// named after the region; a region of several nodes needs --node.
func checkNode(cfg *config.Config, region, node string) error {
	nodes := cfg.Nodes(region)
	names := make([]string, len(nodes))
	for i, n := range nodes {
		names[i] = n.Name
	}
	if node != "" {
		if _, ok := cfg.Node(region, node); !ok {
			return fmt.Errorf("node %q is not a node of region %s (nodes: %s)", node, region, strings.Join(names, ", "))
		}
	} else if len(nodes) > 1 {
		return fmt.Errorf("region %s runs on %d nodes (%s): name the one to run with --node", region, len(nodes), strings.Join(names, ", "))
	}
	return nil
}

// newLogger returns a slog logger writing to w at the given level and
// format.
func newLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var l slog.Level
	// slog also takes offsets ("info+2"), which name no documented level.
	if err := l.UnmarshalText([]byte(level)); err != nil || strings.ContainsAny(level, "+-") {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: l}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: want text or json", format)
}

// printLines prints err one line at a time, each with prefix (a config
// error lists every problem on a line of its own).
func printLines(w io.Writer, prefix string, err error) {
	for line := range strings.SplitSeq(err.Error(), "\n") {
		fmt.Fprintf(w, "%s%s\n", prefix, line)
	}
}
