package main

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/latticedb/lattice/region/regiontest"
)

// clusterCrashSeed fixes the kill point of TestClusterRegionKilledCatchesUp.
const clusterCrashSeed = 20261123

var clusterRegions = []string{"us-east", "eu-west", "ap-south"}

// freeUDPAddr returns a loopback UDP address whose port was free a moment
// ago.
func freeUDPAddr(t *testing.T) string {
	t.Helper()
	return regiontest.FreePort(t, "udp")
}

// writeClusterConfig writes a three-region config into dir (regions on
// 127.0.0.1, a small emulated WAN latency) and returns its path and each
// region's API address.
func writeClusterConfig(t *testing.T, dir string) (string, map[string]string) {
	t.Helper()
	apis := map[string]string{}
	var b strings.Builder
	b.WriteString("cluster: ccrash\ndata_dir: ./data\ntls_dir: ./certs\ndurability: always\nregions:\n")
	for _, r := range clusterRegions {
		apis[r] = freeAddr(t)
		fmt.Fprintf(&b, "  - name: %s\n    api: %s\n    peer: %s\n", r, apis[r], freeUDPAddr(t))
	}
	b.WriteString("emulate:\n  latency_ms: {\"us-east/eu-west\": 3, \"us-east/ap-south\": 6, \"eu-west/ap-south\": 4}\n")
	path := filepath.Join(dir, "lattice.yaml")
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return path, apis
}

// startRegion starts `lattice serve` for one region of the config as a
// child process logging to logPath, and waits until it is ready.
func startRegion(t *testing.T, bin, cfg, region, base, logPath string) *child {
	t.Helper()
	c := startServe(t, bin, cfg, region, logPath)
	if err := readyErr(base, c.exited); err != nil {
		t.Fatalf("%s: %v; its log:\n%s", region, err, c.logTail())
	}
	return c
}

// clusterPeer is a peer's entry in /v1/cluster.
type clusterPeer struct {
	Region            string `json:"region"`
	Connected         bool   `json:"connected"`
	AntiEntropyRounds uint64 `json:"anti_entropy_rounds"`
	Protocol          string `json:"protocol"`
	BytesSent         uint64 `json:"bytes_sent"`
	StreamBytesSent   uint64 `json:"stream_bytes_sent"`
}

func clusterPeers(a *api) ([]clusterPeer, bool) {
	status, _, b, err := a.call("GET", "/v1/cluster", "")
	var st struct {
		Peers []clusterPeer `json:"peers"`
	}
	if err != nil || status != 200 || json.Unmarshal(b, &st) != nil {
		return nil, false
	}
	return st.Peers, true
}

// pollUntil waits on a condition with a deadline (regiontest.WaitFor).
var pollUntil = regiontest.WaitFor

// writer is a client pinned to one region that adds to its own cart, adds
// its own sku to a cart every writer shares, and restocks its own sku. It
// counts what it tried and what was acknowledged.
type writer struct {
	region string
	id     int
	// cart is its own cart, sharedSKU what it adds to the shared cart,
	// stockSKU what it restocks.
	cart, sharedSKU, stockSKU string

	mu           sync.Mutex
	tried, acked [3]int // own cart, shared cart, restocks
	token        string // of the last acknowledged write
}

func (w *writer) counts() (tried, acked [3]int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.tried, w.acked
}

// TestClusterRegionKilledCatchesUp runs the three regions of a cluster as
// `lattice serve` child processes, writes carts and restocks to all of
// them, SIGKILLs one mid-writes, keeps writing to the other two, restarts
// the killed one on its data, and checks that every acknowledged write is
// visible at every region, that all regions show identical carts and
// stock, and that the restarted region ran anti-entropy with its peers.
func TestClusterRegionKilledCatchesUp(t *testing.T) {
	t.Logf("seed %d", clusterCrashSeed)
	rng := rand.New(rand.NewPCG(clusterCrashSeed, 1))
	bin := buildLattice(t)
	dir := t.TempDir()
	cfg, apis := writeClusterConfig(t, dir)
	if out, err := exec.Command(bin, append([]string{"certs", "--dir", filepath.Join(dir, "certs"), "--cluster", "ccrash"}, clusterRegions...)...).CombinedOutput(); err != nil {
		t.Fatalf("lattice certs: %v\n%s", err, out)
	}
	children := map[string]*child{}
	clients := map[string]*api{}
	for _, r := range clusterRegions {
		base := "http://" + apis[r]
		children[r] = startRegion(t, bin, cfg, r, base, filepath.Join(dir, r+".log"))
		clients[r] = newAPI(base)
	}
	allConnected := func() bool {
		for _, r := range clusterRegions {
			peers, ok := clusterPeers(clients[r])
			if !ok || len(peers) != 2 {
				return false
			}
			for _, p := range peers {
				if !p.Connected {
					return false
				}
			}
		}
		return true
	}
	pollUntil(t, 30*time.Second, "every region connected to its peers", allConnected)

	const victim = "eu-west"
	var writers []*writer
	for i := range 3 * len(clusterRegions) {
		r := clusterRegions[i%len(clusterRegions)]
		writers = append(writers, &writer{region: r, id: i, cart: fmt.Sprintf("cc-cart-%d", i),
			sharedSKU: fmt.Sprintf("w%d", i), stockSKU: fmt.Sprintf("cc-stock-%d", i)})
	}
	var acked atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for _, w := range writers {
		wg.Go(func() {
			a := clients[w.region]
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				kind := n % 3
				var method, path, body string
				switch kind {
				case 0:
					method, path, body = "POST", "/v1/carts/"+w.cart+"/items", fmt.Sprintf(`{"sku":"s%d","qty":1}`, n%4)
				case 1:
					method, path, body = "POST", "/v1/carts/cc-shared/items", fmt.Sprintf(`{"sku":%q,"qty":1}`, w.sharedSKU)
				case 2:
					method, path, body = "POST", "/v1/inventory/"+w.stockSKU+"/restock", `{"qty":1}`
				}
				w.mu.Lock()
				w.tried[kind]++
				w.mu.Unlock()
				status, hdr, b, err := a.call(method, path, body)
				if err != nil {
					if w.region != victim {
						t.Errorf("writer %d at %s: %s %s: no answer: %v", w.id, w.region, method, path, err)
					}
					return // the region is gone
				}
				if status != 200 {
					t.Errorf("writer %d at %s: %s %s: %d %s", w.id, w.region, method, path, status, b)
					return
				}
				w.mu.Lock()
				w.acked[kind]++
				w.token = hdr.Get("Lattice-Token")
				w.mu.Unlock()
				acked.Add(1)
			}
		})
	}
	waitAcked := func(n int64, what string) {
		t.Helper()
		target := acked.Load() + n
		pollUntil(t, 60*time.Second, what, func() bool { return acked.Load() >= target || t.Failed() })
	}
	killAt := int64(150 + rng.IntN(150))
	waitAcked(killAt, "writes before the kill")
	children[victim].kill(t)
	t.Logf("killed %s after %d acknowledged writes", victim, acked.Load())
	waitAcked(200, "writes to the surviving regions")
	children[victim] = startRegion(t, bin, cfg, victim, "http://"+apis[victim], filepath.Join(dir, victim+".log"))
	waitAcked(100, "writes after the restart")
	close(stop)
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}

	// Writes to the restarted region, after the kill.
	for _, w := range writers {
		if w.region != victim {
			continue
		}
		status, hdr, b, err := clients[victim].call("POST", "/v1/carts/"+w.cart+"/items", `{"sku":"after","qty":1}`)
		if err != nil || status != 200 {
			t.Fatalf("write to the restarted %s: %d %s %v", victim, status, b, err)
		}
		w.tried[0]++
		w.acked[0]++
		w.token = hdr.Get("Lattice-Token")
	}
	pollUntil(t, 30*time.Second, "every region connected after the restart", allConnected)

	// Every region has applied every writer's last acknowledged write.
	for _, w := range writers {
		for _, r := range clusterRegions {
			status, _, b, err := clients[r].call("GET", "/v1/carts/"+w.cart, "", "Lattice-Token", w.token, "Lattice-Wait", "10000")
			if err != nil || status != 200 {
				t.Errorf("%s with the token of writer %d's last write (at %s): %d %s %v", r, w.id, w.region, status, b, err)
			}
		}
	}

	// Identical views everywhere, each holding every acknowledged write.
	type view struct {
		carts map[string]map[string]int
		stock map[string]int
	}
	read := func(a *api) view {
		v := view{carts: map[string]map[string]int{}, stock: map[string]int{}}
		ids := []string{"cc-shared"}
		for _, w := range writers {
			ids = append(ids, w.cart)
		}
		for _, id := range ids {
			var cart struct {
				Items []struct {
					SKU string `json:"sku"`
					Qty int    `json:"qty"`
				} `json:"items"`
			}
			a.get(t, "/v1/carts/"+id, &cart)
			v.carts[id] = map[string]int{}
			for _, it := range cart.Items {
				v.carts[id][it.SKU] = it.Qty
			}
		}
		for _, w := range writers {
			var it struct{ Stock int }
			a.get(t, "/v1/inventory/"+w.stockSKU, &it)
			v.stock[w.stockSKU] = it.Stock
		}
		return v
	}
	var views map[string]view
	pollUntil(t, 30*time.Second, "identical carts and stock in every region", func() bool {
		views = map[string]view{}
		for _, r := range clusterRegions {
			views[r] = read(clients[r])
		}
		return reflect.DeepEqual(views["us-east"], views["eu-west"]) && reflect.DeepEqual(views["us-east"], views["ap-south"])
	})
	v := views[victim]
	for _, w := range writers {
		tried, ack := w.counts()
		total := 0
		for _, q := range v.carts[w.cart] {
			total += q
		}
		got := [3]int{total, v.carts["cc-shared"][w.sharedSKU], v.stock[w.stockSKU]}
		for k, what := range []string{"own cart units", "shared cart units", "stock"} {
			if got[k] < ack[k] || got[k] > tried[k] {
				t.Errorf("writer %d at %s: %s %d; %d acknowledged, %d tried", w.id, w.region, what, got[k], ack[k], tried[k])
			}
		}
	}

	// The restarted region repaired what deltas missed by anti-entropy.
	pollUntil(t, 30*time.Second, victim+" to run anti-entropy with both peers", func() bool {
		peers, ok := clusterPeers(clients[victim])
		if !ok || len(peers) != 2 {
			return false
		}
		for _, p := range peers {
			if p.AntiEntropyRounds == 0 {
				return false
			}
		}
		return true
	})
	peers, _ := clusterPeers(clients[victim])
	t.Logf("%s after the restart: peers %+v", victim, peers)
	// Regions of one version speak lattice-repl/2: their message streams
	// are compressed.
	for _, r := range clusterRegions {
		ps, _ := clusterPeers(clients[r])
		for _, p := range ps {
			if p.Protocol != "lattice-repl/2" || p.StreamBytesSent == 0 || p.StreamBytesSent >= p.BytesSent {
				t.Errorf("%s's peer %s: protocol %q, %d stream bytes for %d protocol bytes", r, p.Region, p.Protocol, p.StreamBytesSent, p.BytesSent)
			}
		}
	}
	if t.Failed() {
		t.Logf("%s log:\n%s", victim, children[victim].logTail())
	}
}
