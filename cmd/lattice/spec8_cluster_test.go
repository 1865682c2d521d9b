package main

import (
	"context"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/latticedb/lattice/region/regiontest"
)

// devRegionLine is a region's line in the listing of a one-node-per-region
// `lattice dev`.
var devRegionLine = regexp.MustCompile(`(?m)^  (us-east|eu-west|ap-south)\s+(http://\S+)\s+console `)

// startDevInProcess runs `lattice dev --latency none` in this process on
// free ports and returns a client of each region, by name. The cluster
// stops when the test ends.
func startDevInProcess(t *testing.T, extra ...string) map[string]*api {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var stdout, stderr syncBuffer
	exited := make(chan int, 1)
	args := append([]string{"dev", "--latency", "none", "--log-level", "error",
		"--data", t.TempDir(), "--api-port", fmt.Sprint(freeRun(t, "tcp")), "--peer-port", fmt.Sprint(freeRun(t, "udp"))}, extra...)
	go func() { exited <- run(ctx, args, &stdout, &stderr) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-exited:
		case <-time.After(60 * time.Second):
			t.Errorf("lattice dev did not stop within 60 s")
		}
	})
	regiontest.WaitFor(t, 60*time.Second, "lattice dev listing its regions", func() bool {
		select {
		case code := <-exited:
			exited <- code
			t.Fatalf("lattice dev exited with %d:\n%s\n%s", code, stdout.String(), stderr.String())
		default:
		}
		return strings.Contains(stdout.String(), "try:")
	})
	regions := map[string]*api{}
	for _, m := range devRegionLine.FindAllStringSubmatch(stdout.String(), -1) {
		regions[m[1]] = newAPI(m[2])
	}
	if len(regions) != 3 {
		t.Fatalf("listing names %d regions, want 3:\n%s", len(regions), stdout.String())
	}
	// Every region ready and connected to both peers.
	for name, a := range regions {
		regiontest.WaitFor(t, 30*time.Second, name+" connected to both peers", func() bool {
			peers, ok := clusterPeers(a)
			if !ok || len(peers) != 2 {
				return false
			}
			for _, p := range peers {
				if !p.Connected {
					return false
				}
			}
			return true
		})
	}
	return regions
}
