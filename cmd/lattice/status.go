package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/latticedb/lattice/api/client"
	"github.com/latticedb/lattice/region/config"
)

// regionStatus is what lattice status learnt of one region.
type regionStatus struct {
	name, url string
	health    *client.Health // from /readyz; nil if not ready
	readyErr  error
	cluster   *client.ClusterStatus
	err       error // from /v1/cluster
}

// reachable reports whether the region answered at all.
func (s *regionStatus) reachable() bool {
	var p *client.Problem
	return s.health != nil || errors.As(s.readyErr, &p)
}

// runStatus asks every region of a config for its readiness and its
// replication, and prints them as tables (or, with --output json, the
// regions' answers as JSON). It fails if a region is
// unreachable or not ready.
func runStatus(ctx context.Context, cio cmdIO, args []string) int {
	cmd, _ := lookup("status")
	fs := newFlagSet(cio, cmd)
	cfgPath := fs.String("config", "", "cluster config `FILE` (YAML, see docs/configuration.md)")
	timeout := fs.Duration("timeout", 5*time.Second, "how long to wait for each region")
	output := addOutput(fs)
	auth := addAuth(fs)
	pos, err := parseFlags(fs, args)
	if err != nil {
		return flagStatus(err)
	}
	const me = "lattice status"
	if !required(cio, me, pos, "config", *cfgPath) || !checkOutput(cio, me, *output) {
		return exitUsage
	}
	if *timeout <= 0 {
		fmt.Fprintf(cio.stderr, "%s: --timeout must be positive\n", me)
		return exitUsage
	}
	cfg, err := config.Load(*cfgPath)
	if err != nil {
		printLines(cio.stderr, me+": ", err)
		return exitFail
	}
	copts, err := auth.options(client.Options{MaxAttempts: 1})
	if err != nil {
		fmt.Fprintf(cio.stderr, "%s: %v\n", me, err)
		return exitFail
	}
	// A region of several nodes is asked node by node: each node's
	// /readyz and /v1/cluster answer for the partitions it owns, so a
	// node that is down (its partitions unavailable in its region) shows,
	// as REGION/NODE.
	var sts []*regionStatus
	for _, rc := range cfg.Regions {
		nodes := cfg.Nodes(rc.Name)
		if len(nodes) <= 1 {
			sts = append(sts, &regionStatus{name: rc.Name, url: regionURL(cfg, rc)})
			continue
		}
		for _, nd := range nodes {
			sts = append(sts, &regionStatus{name: rc.Name + "/" + nd.Name, url: baseURL(cfg, nd.DialAPI())})
		}
	}
	var wg sync.WaitGroup
	for _, st := range sts {
		wg.Go(func() { st.ask(ctx, *timeout, copts) })
	}
	wg.Wait()
	if *output == outputJSON {
		if err := printStatusJSON(cio.stdout, sts); err != nil {
			fmt.Fprintf(cio.stderr, "%s: %v\n", me, err)
			return exitFail
		}
		for _, s := range sts {
			if !s.complete() {
				return exitFail
			}
		}
		return exitOK
	}
	if !printStatus(cio.stdout, sts) {
		return exitFail
	}
	return exitOK
}

// statusJSON is one region's entry in lattice status --output json: its
// GET /readyz answer (health) and its GET /v1/cluster answer (cluster),
// as the API gave them, or why they are missing.
type statusJSON struct {
	Region       string                `json:"region"`
	URL          string                `json:"url"`
	Reachable    bool                  `json:"reachable"`
	Ready        bool                  `json:"ready"`
	Health       *client.Health        `json:"health,omitempty"`
	NotReady     string                `json:"not_ready,omitempty"`
	Cluster      *client.ClusterStatus `json:"cluster,omitempty"`
	ClusterError string                `json:"cluster_error,omitempty"`
}

// printStatusJSON writes every region's answers as one indented JSON
// array.
func printStatusJSON(w io.Writer, sts []*regionStatus) error {
	out := make([]statusJSON, len(sts))
	for i, s := range sts {
		out[i] = statusJSON{Region: s.name, URL: s.url, Reachable: s.reachable(), Ready: s.health != nil,
			Health: s.health, Cluster: s.cluster}
		if s.readyErr != nil {
			out[i].NotReady = s.readyErr.Error()
		}
		if s.err != nil {
			out[i].ClusterError = s.err.Error()
		}
	}
	return printAnswer(w, outputJSON, out)
}

// complete reports whether the region is reachable and ready and its
// /v1/cluster was read: a status that could not be read (a token the
// region refuses) is a failure too, not a clean bill of health.
func (s *regionStatus) complete() bool {
	return s.reachable() && s.health != nil && s.err == nil
}

// ask fills s from /readyz and /v1/cluster of its region.
func (s *regionStatus) ask(ctx context.Context, timeout time.Duration, opts client.Options) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cl, err := client.New([]string{s.url}, opts)
	if err != nil {
		s.readyErr, s.err = err, err
		return
	}
	s.health, s.readyErr = cl.Ready(ctx)
	if !s.reachable() {
		s.err = s.readyErr
		return
	}
	s.cluster, s.err = cl.Cluster(ctx)
}

// printStatus writes the regions table, the replication table and the
// problems, and reports whether every region is reachable and ready.
func printStatus(w io.Writer, sts []*regionStatus) bool {
	ok := true
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "REGION\tAPI\tREACHABLE\tREADY\tCATCHING UP\tPEERS CONNECTED\tMAX LAG\tWARNINGS")
	for _, s := range sts {
		ready, catching, peers, lag := "no", "-", "-", "-"
		if s.health != nil {
			ready = "yes"
		}
		if !s.complete() {
			ok = false
		}
		if c := s.cluster; c != nil {
			catching = yesNo(c.CatchingUp)
			up, maxLag := 0, int64(0)
			for _, p := range c.Peers {
				if p.Connected {
					up++
				}
				maxLag = max(maxLag, p.LagMs)
			}
			peers = fmt.Sprintf("%d/%d", up, len(c.Peers))
			lag = (time.Duration(maxLag) * time.Millisecond).String()
		}
		warnings := 0
		if s.health != nil {
			warnings = len(s.health.Warnings)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\n", s.name, strings.TrimPrefix(s.url, "http://"),
			yesNo(s.reachable()), ready, catching, peers, lag, warnings)
	}
	tw.Flush()

	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "FROM\tTO\tCONNECTED\tLAG\tPENDING DELTAS\tINFLIGHT\tANTI-ENTROPY\tLAST ACK")
	for _, s := range sts {
		if s.cluster == nil {
			continue
		}
		for _, p := range s.cluster.Peers {
			ack := "never"
			if p.LastAck != nil {
				ack = p.LastAck.UTC().Format(time.RFC3339)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\t%s\t%s\n", s.name, p.Region, yesNo(p.Connected),
				time.Duration(p.LagMs)*time.Millisecond, p.PendingDeltas, p.InflightMessages, p.AntiEntropy, ack)
		}
	}
	tw.Flush()

	var notes []string
	for _, s := range sts {
		switch {
		case !s.reachable():
			notes = append(notes, fmt.Sprintf("%s: unreachable: %v", s.name, strings.TrimPrefix(s.readyErr.Error(), "lattice client: ")))
		case s.health == nil:
			notes = append(notes, fmt.Sprintf("%s: not ready: %v", s.name, s.readyErr))
		}
		if s.health != nil {
			for _, wn := range s.health.Warnings {
				notes = append(notes, fmt.Sprintf("%s: warning: %s", s.name, wn))
			}
		}
		if s.reachable() && s.err != nil {
			notes = append(notes, fmt.Sprintf("%s: cluster status: %v", s.name, s.err))
		}
		if c := s.cluster; c != nil {
			if len(c.DivergentKeys) > 0 {
				notes = append(notes, fmt.Sprintf("%s: divergent keys: %s", s.name, strings.Join(c.DivergentKeys, ", ")))
			}
			for _, p := range c.Peers {
				if len(p.UnrepairedKeys) > 0 {
					notes = append(notes, fmt.Sprintf("%s: unrepaired keys with %s: %s", s.name, p.Region, strings.Join(p.UnrepairedKeys, ", ")))
				}
			}
		}
	}
	if len(notes) > 0 {
		fmt.Fprintln(w)
		for _, n := range notes {
			fmt.Fprintln(w, n)
		}
	}
	return ok
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}
