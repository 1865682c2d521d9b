package main

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/latticedb/lattice/region/config"
	"github.com/latticedb/lattice/region/regiontest"
)

// partitionsSeed fixes the workload of TestPartitionedCluster.
const partitionsSeed = 20261205

// partNode is one `lattice serve --node` process of the partitioned
// cluster and its API client.
type partNode struct {
	region, node, base, log string
	a                       *api
	c                       *child
}

// startNode starts `lattice serve --node` as a child process.
func startNode(t *testing.T, bin, cfg string, n *partNode) {
	t.Helper()
	n.c = startServe(t, bin, cfg, n.region, n.log, "--node", n.node)
}

// TestPartitionedCluster runs 3 regions × 2 nodes of real `lattice serve`
// processes with partitions: 8 over QUIC: writes through every node of
// every region converge everywhere; a causal token carries
// read-your-writes across regions and partitions; a node killed with
// SIGKILL makes its partitions answer 503 partition_unavailable in its
// region while its other partitions, and the same partitions in other
// regions, keep serving; restarted, it catches up; reservations of a sku
// decided at its home partition never oversell; a checkout of skus of
// several partitions and homes commits them all.
func TestPartitionedCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("runs six processes for about a minute; skipped with -short")
	}
	bin := buildLattice(t)
	dir := t.TempDir()
	const partitions = 8
	var b strings.Builder
	fmt.Fprintf(&b, "cluster: parts\ndata_dir: ./data\ntls_dir: ./certs\ndurability: always\npartitions: %d\n", partitions)
	b.WriteString("homes:\n  - {prefix: ue-, region: us-east}\n  - {prefix: ew-, region: eu-west}\n  - {prefix: as-, region: ap-south}\nregions:\n")
	var nodes []*partNode
	for _, r := range clusterRegions {
		fmt.Fprintf(&b, "  - name: %s\n    nodes:\n", r)
		for i, owns := range []string{"0-3", "4-7"} {
			n := &partNode{region: r, node: fmt.Sprintf("n-%d", i), base: freeAddr(t)}
			n.log = filepath.Join(dir, r+"-"+n.node+".log")
			fmt.Fprintf(&b, "      - {name: %s, api: %q, peer: %q, partitions: %q}\n", n.node, n.base, freeUDPAddr(t), owns)
			n.base = "http://" + n.base
			n.a = newAPI(n.base)
			nodes = append(nodes, n)
		}
	}
	b.WriteString("emulate:\n  latency_ms: {\"us-east/eu-west\": 3, \"us-east/ap-south\": 6, \"eu-west/ap-south\": 4}\n")
	cfgPath := filepath.Join(dir, "lattice.yaml")
	if err := os.WriteFile(cfgPath, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := config.Load(cfgPath); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(bin, append([]string{"certs", "--dir", filepath.Join(dir, "certs"), "--cluster", "parts"}, clusterRegions...)...).CombinedOutput(); err != nil {
		t.Fatalf("lattice certs: %v\n%s", err, out)
	}
	for _, n := range nodes {
		startNode(t, bin, cfgPath, n)
	}
	for _, n := range nodes {
		waitReady(t, n.base, n.c.exited)
	}
	for _, n := range nodes {
		waitCaughtUp(t, n.base)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, n := range nodes {
				t.Logf("%s/%s log tail:\n%s", n.region, n.node, n.c.logTail())
			}
		}
	})
	byName := func(region, node string) *partNode {
		for _, n := range nodes {
			if n.region == region && n.node == node {
				return n
			}
		}
		t.Fatalf("no node %s/%s", region, node)
		return nil
	}
	// carts names a cart id of each partition.
	carts := map[int][]string{}
	for i := 0; len(carts) < partitions || i < 64; i++ {
		id := fmt.Sprintf("pc-%d", i)
		p := config.PartitionOf(id, partitions)
		carts[p] = append(carts[p], id)
	}
	var cartIDs []string
	for p := range partitions {
		cartIDs = append(cartIDs, carts[p][0])
	}

	// Every node of every region takes writes to carts of every
	// partition; each answer names the answering region.
	t.Logf("seed %d", partitionsSeed)
	rng := rand.New(rand.NewPCG(partitionsSeed, 0))
	want := map[string]map[string]bool{} // cart → skus added
	for i := range 96 {
		n := nodes[i%len(nodes)]
		cart := cartIDs[rng.IntN(len(cartIDs))]
		sku := fmt.Sprintf("sku-%d", i)
		status, _, body, err := n.a.call("POST", "/v1/carts/"+cart+"/items", fmt.Sprintf(`{"sku":%q,"qty":1}`, sku))
		if err != nil || status != 200 {
			t.Fatalf("add %s to %s at %s/%s: %d %s %v", sku, cart, n.region, n.node, status, body, err)
		}
		if want[cart] == nil {
			want[cart] = map[string]bool{}
		}
		want[cart][sku] = true
	}
	converged := func(what string, check func(n *partNode, cart string) bool) {
		t.Helper()
		for _, n := range nodes {
			if n.c.status != 0 {
				continue
			}
			for cart := range want {
				regiontest.WaitFor(t, 30*time.Second, fmt.Sprintf("%s: cart %s at %s/%s", what, cart, n.region, n.node), func() bool { return check(n, cart) })
			}
		}
	}
	hasAll := func(n *partNode, cart string) bool {
		var c struct {
			Items []struct {
				SKU string `json:"sku"`
			} `json:"items"`
		}
		status, _, body, err := n.a.call("GET", "/v1/carts/"+cart, "")
		if err != nil || status != 200 || json.Unmarshal(body, &c) != nil {
			return false
		}
		got := map[string]bool{}
		for _, it := range c.Items {
			got[it.SKU] = true
		}
		for sku := range want[cart] {
			if !got[sku] {
				return false
			}
		}
		return len(got) == len(want[cart])
	}
	converged("writes through every node", hasAll)

	// Read-your-writes across regions and partitions: writes to carts of
	// three partitions, each with the token of the one before, through
	// three regions; the last token read at a fourth node shows all.
	token := ""
	for i, p := range []int{1, 5, 6} {
		n := nodes[(2*i+1)%len(nodes)]
		cart := carts[p][1]
		var hdr []string
		if token != "" {
			hdr = []string{"Lattice-Token", token}
		}
		status, h, body, err := n.a.call("POST", "/v1/carts/"+cart+"/items", `{"sku":"ryw","qty":1}`, hdr...)
		if err != nil || status != 200 || h.Get("Lattice-Token") == "" {
			t.Fatalf("add with token at %s/%s: %d %s %v", n.region, n.node, status, body, err)
		}
		token = h.Get("Lattice-Token")
	}
	if len(token) > 2048 {
		t.Errorf("a token of 3 partitions is %d characters", len(token))
	}
	for _, p := range []int{1, 5, 6} {
		reader := byName("ap-south", "n-0")
		status, _, body, err := reader.a.call("GET", "/v1/carts/"+carts[p][1], "", "Lattice-Token", token, "Lattice-Wait", "5000")
		if err != nil || status != 200 || !strings.Contains(string(body), `"ryw"`) {
			t.Fatalf("read with the token of partition %d: %d %s %v", p, status, body, err)
		}
	}

	// No oversell: 40 units of a sku homed at us-east, asked for 3 at a
	// time from every node of every region at once.
	sku := "ue-stock"
	if status, _, body, err := byName("eu-west", "n-1").a.call("POST", "/v1/inventory/"+sku+"/restock", `{"qty":40}`); err != nil || status != 200 {
		t.Fatalf("restock: %d %s %v", status, body, err)
	}
	regiontest.WaitFor(t, 30*time.Second, "the restock at the home", func() bool {
		var it struct {
			Stock int `json:"stock"`
		}
		status, _, body, err := byName("us-east", "n-0").a.call("GET", "/v1/inventory/"+sku+"?consistent=true", "")
		return err == nil && status == 200 && json.Unmarshal(body, &it) == nil && it.Stock == 40
	})
	var mu sync.Mutex
	held := 0
	var wg sync.WaitGroup
	for _, n := range nodes {
		for range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				status, _, _, err := n.a.call("POST", "/v1/reservations", fmt.Sprintf(`{"sku":%q,"qty":3,"ttl_ms":600000}`, sku))
				if err == nil && status == 201 {
					mu.Lock()
					held += 3
					mu.Unlock()
				}
			}()
		}
	}
	wg.Wait()
	if held > 40 || held < 39 {
		t.Fatalf("24 reservations of 3 against 40 units held %d", held)
	}

	// A checkout of a cart (coordinated at its partition's home) with
	// skus of other partitions and homes.
	for _, s := range []string{"ue-a", "ew-b", "as-c", "ue-d"} {
		if status, _, body, err := byName("us-east", "n-1").a.call("POST", "/v1/inventory/"+s+"/restock", `{"qty":5}`); err != nil || status != 200 {
			t.Fatalf("restock %s: %d %s %v", s, status, body, err)
		}
	}
	shopper := byName("eu-west", "n-0")
	buy := "buy-cart"
	for _, s := range []string{"ue-a", "ew-b", "as-c", "ue-d"} {
		if status, _, body, err := shopper.a.call("POST", "/v1/carts/"+buy+"/items", fmt.Sprintf(`{"sku":%q,"qty":2}`, s)); err != nil || status != 200 {
			t.Fatalf("add %s: %d %s %v", s, status, body, err)
		}
	}
	var order struct {
		Lines []struct {
			SKU string `json:"sku"`
		} `json:"lines"`
	}
	regiontest.WaitFor(t, 30*time.Second, "a checkout across partitions", func() bool {
		status, _, body, err := shopper.a.call("POST", "/v1/carts/"+buy+"/checkout", `{}`, "Idempotency-Key", "buy-1")
		if err == nil && status != 201 && status != 503 && status != 409 {
			t.Fatalf("checkout: %d %s", status, body)
		}
		return err == nil && status == 201 && json.Unmarshal(body, &order) == nil
	})
	if len(order.Lines) != 4 {
		t.Fatalf("the order has %d lines, want 4", len(order.Lines))
	}

	// SIGKILL us-east/n-1 (partitions 4-7).
	victim := byName("us-east", "n-1")
	victim.c.kill(t)
	survivor := byName("us-east", "n-0")
	for _, p := range []int{4, 7} {
		status, h, body, err := survivor.a.call("POST", "/v1/carts/"+carts[p][0]+"/items", `{"sku":"down","qty":1}`)
		// partition_unanswered when the request went out on a kept-alive
		// connection the kill had not yet closed: it was written, and
		// whether the node read it cannot be told.
		unavailable := strings.Contains(string(body), "partition_unavailable") || strings.Contains(string(body), "partition_unanswered")
		if err != nil || status != 503 || !unavailable || h.Get("Retry-After") == "" {
			t.Fatalf("a write to partition %d while its node is down: %d %s %v", p, status, body, err)
		}
	}
	for _, p := range []int{0, 3} {
		cart := carts[p][0]
		if status, _, body, err := survivor.a.call("POST", "/v1/carts/"+cart+"/items", `{"sku":"up","qty":1}`); err != nil || status != 200 {
			t.Fatalf("a write to partition %d on the live node: %d %s %v", p, status, body, err)
		}
		want[cart]["up"] = true
	}
	// Other regions still serve partitions 4-7.
	for _, p := range []int{4, 7} {
		cart := carts[p][0]
		n := byName("eu-west", "n-0")
		if status, _, body, err := n.a.call("POST", "/v1/carts/"+cart+"/items", `{"sku":"elsewhere","qty":1}`); err != nil || status != 200 {
			t.Fatalf("a write to partition %d in eu-west while us-east's owner is down: %d %s %v", p, status, body, err)
		}
		want[cart]["elsewhere"] = true
	}
	// Restarted, the node catches up with what eu-west took meanwhile.
	startNode(t, bin, cfgPath, victim)
	waitReady(t, victim.base, victim.c.exited)
	converged("after the restart", hasAll)
}
