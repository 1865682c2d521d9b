package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/latticedb/lattice/region/config"
	"github.com/latticedb/lattice/region/regiontest"
)

// freeRun returns the first of three consecutive free ports of network on
// 127.0.0.1 (free a moment ago).
func freeRun(t *testing.T, network string) int {
	t.Helper()
	return freeRunN(t, network, 3)
}

// freeRunN returns the first of n consecutive free ports of network on
// 127.0.0.1 (free a moment ago).
func freeRunN(t *testing.T, network string, n int) int {
	t.Helper()
	base := regiontest.FreeRun(network, n)
	if base == 0 {
		t.Fatalf("no %d consecutive free %s ports", n, network)
	}
	return base
}

// runDevUntilSignal starts `lattice dev` with extra flags and TMPDIR at
// tmp, waits until it serves, sends SIGINT and waits for it to exit; it
// returns the data directory the cluster printed.
func runDevUntilSignal(t *testing.T, bin, tmp string, extra ...string) string {
	t.Helper()
	args := append([]string{"dev", "--latency", "none", "--log-level", "warn",
		"--api-port", fmt.Sprint(freeRun(t, "tcp")), "--peer-port", fmt.Sprint(freeRun(t, "udp"))}, extra...)
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), "TMPDIR="+tmp)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	dataCh := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if _, dir, ok := strings.Cut(sc.Text(), ", data in "); ok {
				dataCh <- dir
			}
		}
		exited <- cmd.Wait()
	}()
	var dir string
	select {
	case dir = <-dataCh:
	case err := <-exited:
		t.Fatalf("lattice dev exited before serving: %v\n%s", err, stderr.String())
	case <-time.After(60 * time.Second):
		cmd.Process.Kill()
		t.Fatalf("lattice dev did not serve within 60 s\n%s", stderr.String())
	}
	if _, err := os.Stat(filepath.Join(dir, "certs")); err != nil {
		t.Fatalf("the data directory %s lacks its certificates while the cluster runs: %v", dir, err)
	}
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("lattice dev after SIGINT: %v\n%s", err, stderr.String())
		}
	case <-time.After(60 * time.Second):
		cmd.Process.Kill()
		t.Fatalf("lattice dev did not stop within 60 s of SIGINT\n%s", stderr.String())
	}
	return dir
}

// TestDevRemovesItsTemporaryData runs `lattice dev` as a real process and
// stops it with SIGINT: without --data its temporary data directory is
// gone afterwards; with --data the directory and its data stay.
func TestDevRemovesItsTemporaryData(t *testing.T) {
	bin := buildLattice(t)
	tmp := t.TempDir()

	dir := runDevUntilSignal(t, bin, tmp)
	if !strings.HasPrefix(dir, tmp) {
		t.Fatalf("data directory %s is not under TMPDIR %s", dir, tmp)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("the temporary data directory %s is still there after exit (stat: %v)", dir, err)
	}

	kept := filepath.Join(t.TempDir(), "kept")
	if got := runDevUntilSignal(t, bin, tmp, "--data", kept); got != kept {
		t.Fatalf("data directory %s, want %s", got, kept)
	}
	for _, f := range []string{"certs", "us-east"} {
		if _, err := os.Stat(filepath.Join(kept, f)); err != nil {
			t.Errorf("--data %s lost %s after exit: %v", kept, f, err)
		}
	}
}

func TestDevLayout(t *testing.T) {
	owners := func(l devLayout) map[string][]string {
		cfg := config.DefaultConfig()
		if err := l.apply(cfg, 7101, 7201); err != nil {
			t.Fatalf("%+v: %v", l, err)
		}
		if err := cfg.Validate(); err != nil {
			t.Fatalf("%+v: %v", l, err)
		}
		out := map[string][]string{}
		for _, r := range cfg.Regions {
			for _, n := range cfg.Nodes(r.Name) {
				out[r.Name] = append(out[r.Name], fmt.Sprintf("%s %s %s %s", n.Name, n.API, n.Peer, strings.Join(n.Partitions, ",")))
			}
		}
		return out
	}
	// The defaults are today's cluster: one node per region, ports in
	// region order.
	if got := owners(devLayout{partitions: 1, nodes: 1})["eu-west"]; !slices.Equal(got, []string{"eu-west 127.0.0.1:7102 127.0.0.1:7202 0"}) {
		t.Errorf("default eu-west: %q", got)
	}
	if got := owners(devLayout{partitions: 8, nodes: 1})["ap-south"]; !slices.Equal(got, []string{"ap-south 127.0.0.1:7103 127.0.0.1:7203 0-7"}) {
		t.Errorf("8 partitions, 1 node, ap-south: %q", got)
	}
	// Contiguous ranges, ports region by region.
	got := owners(devLayout{partitions: 8, nodes: 3})
	if want := []string{"n0 127.0.0.1:7104 127.0.0.1:7204 0-1", "n1 127.0.0.1:7105 127.0.0.1:7205 2-4", "n2 127.0.0.1:7106 127.0.0.1:7206 5-7"}; !slices.Equal(got["eu-west"], want) {
		t.Errorf("8 partitions, 3 nodes, eu-west: %q, want %q", got["eu-west"], want)
	}
	if got := owners(devLayout{partitions: 2, nodes: 2})["us-east"]; !slices.Equal(got, []string{"n0 127.0.0.1:7101 127.0.0.1:7201 0", "n1 127.0.0.1:7102 127.0.0.1:7202 1"}) {
		t.Errorf("2 partitions, 2 nodes, us-east: %q", got)
	}
	for _, l := range []devLayout{{partitions: 6, nodes: 1}, {partitions: 0, nodes: 1}, {partitions: 2, nodes: 3}, {partitions: 4, nodes: 0}, {partitions: 8192, nodes: 1}} {
		if err := l.apply(config.DefaultConfig(), 7101, 7201); err == nil {
			t.Errorf("%+v accepted", l)
		}
	}
	if err := (devLayout{partitions: 8, nodes: 8}).apply(config.DefaultConfig(), 65520, 7201); err == nil {
		t.Error("ports past 65535 accepted")
	}
	if code, _, stderr := runCLI(t, "dev", "--partitions", "8", "--nodes", "16"); code != exitUsage || !strings.Contains(stderr, "--nodes 16") {
		t.Errorf("--nodes 16 of 8 partitions: exit %d, stderr %q", code, stderr)
	}
}

// devNodeLine is a node's line in the listing `lattice dev` prints.
var devNodeLine = regexp.MustCompile(`(?m)^  (\S+)/(n\d+)\s+(http://\S+)\s+partitions (\S+)\s+console `)

// TestDevPartitionedNodes runs `lattice dev --partitions 8 --nodes 2` in
// this process: it lists six nodes, each region's owning partitions 0-3
// and 4-7; a cart of a partition that us-east's second node owns, written
// through its first, reads back through eu-west's first node (which
// forwards to its region's owner); cutting eu-west off in the console
// cuts both its nodes off from both of every other region's, and its
// writes of both halves arrive after the heal.
func TestDevPartitionedNodes(t *testing.T) {
	if testing.Short() {
		t.Skip("starts six nodes; skipped under -short")
	}
	const partitions = 8
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stdout, stderr syncBuffer
	exited := make(chan int, 1)
	go func() {
		exited <- run(ctx, []string{"dev", "--partitions", fmt.Sprint(partitions), "--nodes", "2", "--latency", "none", "--log-level", "warn",
			"--data", t.TempDir(), "--api-port", fmt.Sprint(freeRunN(t, "tcp", 6)), "--peer-port", fmt.Sprint(freeRunN(t, "udp", 6))}, &stdout, &stderr)
	}()
	stopped := false
	defer func() {
		if !stopped {
			cancel()
			<-exited
		}
	}()
	regiontest.WaitFor(t, 60*time.Second, "lattice dev listing its nodes", func() bool {
		select {
		case code := <-exited:
			stopped = true
			t.Fatalf("lattice dev exited with %d:\n%s\n%s", code, stdout.String(), stderr.String())
		default:
		}
		return strings.Contains(stdout.String(), "try:")
	})
	type node struct{ region, name, partitions string }
	nodes := map[node]*api{}
	for _, m := range devNodeLine.FindAllStringSubmatch(stdout.String(), -1) {
		nodes[node{m[1], m[2], m[4]}] = newAPI(m[3])
	}
	for _, r := range []string{"us-east", "eu-west", "ap-south"} {
		for i, owns := range []string{"0-3", "4-7"} {
			if nodes[node{r, fmt.Sprintf("n%d", i), owns}] == nil {
				t.Fatalf("no node %s/n%d owning %s in the listing:\n%s", r, i, owns, stdout.String())
			}
		}
	}
	at := func(region string, n int) *api {
		return nodes[node{region, fmt.Sprintf("n%d", n), []string{"0-3", "4-7"}[n]}]
	}
	var cl struct {
		Node           string `json:"node"`
		PartitionCount int    `json:"partition_count"`
		Partitions     []struct {
			Partition int `json:"partition"`
		} `json:"partitions"`
	}
	at("us-east", 1).get(t, "/v1/cluster", &cl)
	if cl.Node != "n1" || cl.PartitionCount != partitions || len(cl.Partitions) != 4 || cl.Partitions[0].Partition != 4 {
		t.Fatalf("us-east/n1's /v1/cluster: %+v", cl)
	}

	// cartOf returns a cart id of a partition node n of a region owns.
	cartOf := func(prefix string, n int) string {
		for i := 0; ; i++ {
			id := fmt.Sprintf("%s-%d", prefix, i)
			if config.PartitionOf(id, partitions)/(partitions/2) == n {
				return id
			}
		}
	}
	add := func(a *api, cart string) {
		t.Helper()
		if status, _, b, err := a.call("POST", "/v1/carts/"+cart+"/items", `{"sku":"book","qty":1}`); err != nil || status != 200 {
			t.Fatalf("add to %s at %s: %d %s %v", cart, a.base, status, b, err)
		}
	}
	holds := func(a *api, cart string) bool {
		status, _, b, err := a.call("GET", "/v1/carts/"+cart, "")
		if err != nil || status != 200 {
			return false
		}
		var c struct {
			Items []struct {
				SKU string `json:"sku"`
				Qty int    `json:"qty"`
			} `json:"items"`
		}
		return json.Unmarshal(b, &c) == nil && len(c.Items) == 1 && c.Items[0].Qty == 1
	}

	other := cartOf("dev-other", 1)
	add(at("us-east", 0), other)
	regiontest.WaitFor(t, 30*time.Second, "the cart written through us-east/n0 read through eu-west/n0", func() bool {
		return holds(at("eu-west", 0), other)
	})

	post := func(a *api, control, body string) {
		t.Helper()
		if status, _, b, err := a.call("POST", "/console/dev/"+control, body, "Content-Type", "application/json"); err != nil || status != 200 {
			t.Fatalf("console %s %s: %d %s %v", control, body, status, b, err)
		}
	}
	post(at("us-east", 1), "cut", `{"region":"eu-west"}`)
	cut := []string{cartOf("dev-cut", 0), cartOf("dev-cut", 1)}
	for _, c := range cut {
		add(at("eu-west", 1), c)
	}
	// Both halves are at eu-west at once; while it is cut off no node
	// of the other regions gets them.
	for _, c := range cut {
		if !holds(at("eu-west", 0), c) {
			t.Fatalf("%s written at eu-west is not read there", c)
		}
	}
	deadline := time.Now().Add(1500 * time.Millisecond)
	for time.Now().Before(deadline) {
		for _, r := range []string{"us-east", "ap-south"} {
			for n := range 2 {
				for _, c := range cut {
					if holds(at(r, n), c) {
						t.Fatalf("%s written at eu-west while it was cut off reached %s/n%d", c, r, n)
					}
				}
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	post(at("ap-south", 0), "heal", `{"region":"eu-west"}`)
	regiontest.WaitFor(t, 60*time.Second, "eu-west's writes at every node after the heal", func() bool {
		for _, r := range []string{"us-east", "ap-south"} {
			for n := range 2 {
				for _, c := range cut {
					if !holds(at(r, n), c) {
						return false
					}
				}
			}
		}
		return true
	})

	cancel()
	stopped = true
	select {
	case code := <-exited:
		if code != exitOK {
			t.Fatalf("lattice dev exited with %d after its context ended:\n%s", code, stderr.String())
		}
	case <-time.After(60 * time.Second):
		t.Fatal("lattice dev did not stop within 60 s of its context's end")
	}
}
