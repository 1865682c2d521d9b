package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestConcernFlagsUsage(t *testing.T) {
	const u = "http://127.0.0.1:1"
	cases := []struct {
		name   string
		args   []string
		stderr string
	}{
		{"replicas on cart get", []string{"cart", "get", "c1", "--replicas", "2", "--url", u}, "--replicas does not apply to cart get"},
		{"quorum on cart add", []string{"cart", "add", "c1", "book", "1", "--quorum", "2", "--url", u}, "--quorum does not apply to cart add"},
		{"quorum on stock restock", []string{"stock", "restock", "book", "1", "--quorum", "all", "--url", u}, "--quorum does not apply to stock restock"},
		{"replicas on stock get", []string{"stock", "get", "book", "--replicas", "majority", "--url", u}, "--replicas does not apply to stock get"},
		{"bad replicas", []string{"cart", "clear", "c1", "--replicas", "0", "--url", u}, `--replicas must be a number of regions from 1, majority or all, not "0"`},
		{"bad quorum", []string{"stock", "get", "book", "--quorum", "most", "--url", u}, `--quorum must be a number of regions from 1, majority or all, not "most"`},
		{"bad replicas on reserve", []string{"reserve", "book", "1", "--replicas", "two", "--url", u}, `--replicas must be`},
		{"quorum on reserve", []string{"reserve", "book", "1", "--quorum", "2", "--url", u}, "flag provided but not defined: -quorum"},
		{"replicas on reservation", []string{"reservation", "us-east:1", "--replicas", "2", "--url", u}, "flag provided but not defined: -replicas"},
		{"bad replicas on commit", []string{"commit", "us-east:1", "--replicas", "-1", "--url", u}, `--replicas must be`},
		{"bad replicas on release", []string{"release", "us-east:1", "--replicas", "1x", "--url", u}, `--replicas must be`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, stdout, stderr := runCLI(t, tc.args...)
			if code != exitUsage || stdout != "" || !strings.Contains(stderr, tc.stderr) {
				t.Fatalf("exit %d, stdout %q, stderr %q; want %d and %q", code, stdout, stderr, exitUsage, tc.stderr)
			}
		})
	}
	for _, cmd := range []string{"cart", "stock", "reserve", "commit", "release"} {
		if code, stdout, _ := runCLI(t, "help", cmd); code != 0 || !strings.Contains(stdout, "-replicas N") {
			t.Errorf("help %s lacks --replicas: %s", cmd, stdout)
		}
	}
}

// concernRegionsLatency is the emulated one-way latency, in ms, of
// TestConcernsWithRealProcesses: us-east's nearest peer is eu-west.
var concernRegionsLatency = map[string]int{"us-east/eu-west": 15, "us-east/ap-south": 40, "eu-west/ap-south": 25}

// writeWANCluster writes the config of a three-region cluster (regions on
// 127.0.0.1, concernRegionsLatency emulated, durability always, extra
// inserted before the regions) and its certificates into a new temporary
// directory, and returns the directory, the config's path and each
// region's API address.
func writeWANCluster(t *testing.T, bin, cluster, extra string) (dir, cfg string, apis map[string]string) {
	t.Helper()
	dir = t.TempDir()
	apis = map[string]string{}
	var b strings.Builder
	fmt.Fprintf(&b, "cluster: %s\ndata_dir: ./data\ntls_dir: ./certs\ndurability: always\n%sregions:\n", cluster, extra)
	for _, r := range clusterRegions {
		apis[r] = freeAddr(t)
		fmt.Fprintf(&b, "  - name: %s\n    api: %s\n    peer: %s\n", r, apis[r], freeUDPAddr(t))
	}
	lat, _ := json.Marshal(concernRegionsLatency)
	fmt.Fprintf(&b, "emulate:\n  latency_ms: %s\n", lat)
	cfg = filepath.Join(dir, "lattice.yaml")
	if err := os.WriteFile(cfg, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(bin, append([]string{"certs", "--dir", filepath.Join(dir, "certs"), "--cluster", cluster}, clusterRegions...)...).CombinedOutput(); err != nil {
		t.Fatalf("lattice certs: %v\n%s", err, out)
	}
	return dir, cfg, apis
}

// signal sends sig to the child process.
func (c *child) signal(t *testing.T, sig syscall.Signal) {
	t.Helper()
	if err := c.cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
}

// TestConcernsWithRealProcesses runs three regions as `lattice serve`
// child processes over an emulated WAN and checks, through HTTP and the
// lattice command: a write with Lattice-Replicas: 2 succeeds with every
// region up and costs at least the round trip to the nearest peer; a
// quorum=2 read at a region that was stopped (SIGSTOP) during the write,
// with the writer stopped in turn, sees it; with the two other regions
// stopped, a write with Lattice-Replicas: 2 answers 503
// replication_timeout (at once once the region has seen them
// disconnect), stays applied, and reaches them once they run again
// (SIGCONT).
func TestConcernsWithRealProcesses(t *testing.T) {
	bin := buildLattice(t)
	dir, cfg, apis := writeWANCluster(t, bin, "concern", "")
	children := map[string]*child{}
	clients := map[string]*api{}
	urls := map[string]string{}
	for _, r := range clusterRegions {
		urls[r] = "http://" + apis[r]
		children[r] = startRegion(t, bin, cfg, r, urls[r], filepath.Join(dir, r+".log"))
		clients[r] = newAPI(urls[r])
	}
	defer func() {
		if t.Failed() {
			for _, r := range clusterRegions {
				t.Logf("%s log:\n%s", r, children[r].logTail())
			}
		}
	}()
	// connected reports whether region sees exactly the peers of want
	// connected.
	connected := func(region string, want map[string]bool) bool {
		peers, ok := clusterPeers(clients[region])
		if !ok || len(peers) != len(clusterRegions)-1 {
			return false
		}
		for _, p := range peers {
			if p.Connected != want[p.Region] {
				return false
			}
		}
		return true
	}
	allUp := func() bool {
		for _, r := range clusterRegions {
			want := map[string]bool{}
			for _, o := range clusterRegions {
				want[o] = o != r
			}
			if !connected(r, want) {
				return false
			}
		}
		return true
	}
	pollUntil(t, 30*time.Second, "every region connected to its peers", allUp)
	east := clients["us-east"]
	cartHas := func(a *api, cart, sku string, query string, header ...string) (int, bool) {
		status, _, body, err := a.call("GET", "/v1/carts/"+cart+query, "", header...)
		if err != nil || status != 200 {
			return status, false
		}
		return status, strings.Contains(string(body), fmt.Sprintf(`"sku":%q`, sku))
	}

	// Every region up: a write concern of 2 is met, in at least the round
	// trip to eu-west.
	start := time.Now()
	status, _, body, err := east.call("POST", "/v1/carts/up/items", `{"sku":"book","qty":1}`, "Lattice-Replicas", "2")
	took := time.Since(start)
	if err != nil || status != 200 {
		t.Fatalf("write with Lattice-Replicas: 2, every region up: %d %s %v", status, body, err)
	}
	if rtt := 2 * time.Duration(concernRegionsLatency["us-east/eu-west"]) * time.Millisecond; took < rtt {
		t.Fatalf("write with Lattice-Replicas: 2 answered in %v, under the %v round trip to eu-west", took, rtt)
	}
	t.Logf("Lattice-Replicas: 2 at us-east, every region up: %v", took)
	code, stdout, stderr := runCLI(t, "cart", "add", "up", "pen", "1", "--replicas", "all", "--url", urls["us-east"], "--output", "json")
	if code != 0 || !strings.Contains(stdout, `"sku": "pen"`) {
		t.Fatalf("lattice cart add --replicas all: %d %s %s", code, stdout, stderr)
	}
	// Acknowledged by all three: a plain read anywhere sees it.
	for _, r := range clusterRegions {
		if _, ok := cartHas(clients[r], "up", "pen", ""); !ok {
			t.Fatalf("%s lacks a write acknowledged with --replicas all", r)
		}
	}
	code, stdout, stderr = runCLI(t, "cart", "get", "up", "--quorum", "majority", "--url", urls["ap-south"], "--output", "json")
	if code != 0 || !strings.Contains(stdout, `"sku": "book"`) || !strings.Contains(stdout, `"region": "ap-south"`) {
		t.Fatalf("lattice cart get --quorum majority at ap-south: %d %s %s", code, stdout, stderr)
	}

	// ap-south stopped during a write acknowledged by us-east and
	// eu-west; then the writer stopped and ap-south running again: its
	// quorum=2 read (joining eu-west's state) sees the write.
	children["ap-south"].signal(t, syscall.SIGSTOP)
	status, _, body, err = east.call("POST", "/v1/carts/q/items", `{"sku":"ink","qty":2}`, "Lattice-Replicas", "2")
	if err != nil || status != 200 {
		t.Fatalf("write with Lattice-Replicas: 2, ap-south stopped: %d %s %v", status, body, err)
	}
	children["us-east"].signal(t, syscall.SIGSTOP)
	children["ap-south"].signal(t, syscall.SIGCONT)
	cont := time.Now()
	south := clients["ap-south"]
	pollUntil(t, 20*time.Second, "a quorum=2 read at ap-south to be answered", func() bool {
		status, ok := cartHas(south, "q", "ink", "?quorum=2")
		switch {
		case status == 200 && !ok:
			t.Fatalf("a quorum=2 read at ap-south misses the write acknowledged with Lattice-Replicas: 2 at us-east")
		case status == 200:
			return true
		case status != 503:
			t.Fatalf("quorum=2 read at ap-south: status %d", status)
		}
		return false
	})
	t.Logf("quorum=2 read at ap-south, us-east stopped: saw the write %v after SIGCONT", time.Since(cont).Round(time.Millisecond))
	children["us-east"].signal(t, syscall.SIGCONT)
	pollUntil(t, 30*time.Second, "every region connected again", allUp)

	// us-east alone: the write concern cannot be met. The write stays.
	children["eu-west"].signal(t, syscall.SIGSTOP)
	children["ap-south"].signal(t, syscall.SIGSTOP)
	start = time.Now()
	status, _, body, err = east.call("POST", "/v1/carts/alone/items", `{"sku":"a","qty":1}`, "Lattice-Replicas", "2")
	took = time.Since(start)
	if err != nil || status != 503 || !strings.Contains(string(body), `"code":"replication_timeout"`) {
		t.Fatalf("write with Lattice-Replicas: 2, both peers stopped: %d %s %v", status, body, err)
	}
	if took > 3*time.Second {
		t.Fatalf("replication_timeout after %v, beyond the 2 s deadline", took)
	}
	t.Logf("replication_timeout before us-east saw its peers go: %v: %s", took, body)
	pollUntil(t, 20*time.Second, "us-east to see both peers disconnected", func() bool { return connected("us-east", nil) })
	start = time.Now()
	code, stdout, stderr = runCLI(t, "cart", "add", "alone", "b", "3", "--replicas", "2", "--url", urls["us-east"])
	took = time.Since(start)
	if code != exitFail || stdout != "" || !strings.HasPrefix(stderr, "replication_timeout: the write was applied at us-east") {
		t.Fatalf("lattice cart add --replicas 2, peers gone: %d %q %q", code, stdout, stderr)
	}
	if took > time.Second {
		t.Fatalf("replication_timeout with both peers known gone took %v, want it at once", took)
	}
	t.Logf("replication_timeout once us-east saw its peers go: %v", took)
	for _, sku := range []string{"a", "b"} {
		if _, ok := cartHas(east, "alone", sku, ""); !ok {
			t.Fatalf("us-east lacks %s, written with a write concern that timed out", sku)
		}
	}
	if status, _ := cartHas(east, "alone", "a", "?quorum=2"); status != 503 {
		t.Fatalf("quorum=2 read with both peers gone: %d, want 503", status)
	}

	// Running again: the writes reach every region.
	children["eu-west"].signal(t, syscall.SIGCONT)
	children["ap-south"].signal(t, syscall.SIGCONT)
	pollUntil(t, 30*time.Second, "every region to hold the writes that timed out", func() bool {
		for _, r := range []string{"eu-west", "ap-south"} {
			for _, sku := range []string{"a", "b"} {
				if _, ok := cartHas(clients[r], "alone", sku, ""); !ok {
					return false
				}
			}
		}
		return true
	})
	pollUntil(t, 30*time.Second, "every region connected again", allUp)
	code, stdout, stderr = runCLI(t, "cart", "get", "alone", "--quorum", "all", "--url", urls["eu-west"])
	if code != 0 || !strings.Contains(stdout, "a    1") || !strings.Contains(stdout, "b    3") {
		t.Fatalf("lattice cart get --quorum all after the peers came back: %d %q %s", code, stdout, stderr)
	}
}
