package replication_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/latticedb/lattice/cmd/server"
	"github.com/latticedb/lattice/region/config"
	"github.com/latticedb/lattice/region/regiontest"
	"github.com/latticedb/lattice/sync/certs"
	"github.com/latticedb/lattice/sync/replication"
)

// cluster is three regions in this process, replicating over real QUIC on
// 127.0.0.1: through the emulated WAN when newCluster is given latencies,
// on plain UDP sockets when it is given nil.
type cluster struct {
	t       testing.TB
	cfg     *config.Config
	servers map[string]*server.Server
	repl    map[string]*replication.QUICReplication
	mu      sync.Mutex
	client  *http.Client
	// attach, if set, adjusts each region's replication options.
	attach func(*replication.AttachOptions)
}

var regions = []string{"us-east", "eu-west", "ap-south"}

func freeUDP(t testing.TB) string {
	t.Helper()
	return regiontest.FreePort(t, "udp")
}

func newCluster(t testing.TB, latencyMS map[string]int) *cluster {
	t.Helper()
	return newClusterWith(t, latencyMS, nil)
}

// newClusterWith is newCluster with attach adjusting the replication
// options of every region (nil for none).
func newClusterWith(t testing.TB, latencyMS map[string]int, attach func(*replication.AttachOptions)) *cluster {
	t.Helper()
	dir := t.TempDir()
	cfg := config.DefaultConfig()
	cfg.DataDir = filepath.Join(dir, "data")
	cfg.TLSDir = filepath.Join(dir, "certs")
	cfg.Emulate.LatencyMS = latencyMS
	for i := range cfg.Regions {
		cfg.Regions[i].Peer = freeUDP(t)
		cfg.Regions[i].API = fmt.Sprintf("127.0.0.1:%d", 1+i) // unused: each region gets a listener
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	if err := certs.Generate(cfg.TLSDir, cfg.Cluster, cfg.RegionNames()); err != nil {
		t.Fatal(err)
	}
	c := &cluster{t: t, cfg: cfg, servers: map[string]*server.Server{}, repl: map[string]*replication.QUICReplication{},
		client: &http.Client{Timeout: 15 * time.Second}, attach: attach}
	for _, r := range regions {
		c.start(r)
	}
	t.Cleanup(func() {
		for _, s := range c.servers {
			s.Close()
		}
	})
	for _, r := range regions {
		c.waitConnected(r)
	}
	// A new store of a region of several catches up with its peers
	// before it decides as a home.
	for _, r := range regions {
		waitFor(t, 20*time.Second, r+" caught up with its peers", func() bool { return !c.servers[r].Node().CatchingUp() })
	}
	return c
}

func (c *cluster) start(name string) {
	c.t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		c.t.Fatal(err)
	}
	opts := replication.AttachOptions{WANSeed: 7, WAN: c.cfg.Emulate.LatencyMS != nil, Started: func(q *replication.QUICReplication) {
		c.mu.Lock()
		c.repl[q.Region()] = q
		c.mu.Unlock()
	}}
	if c.attach != nil {
		c.attach(&opts)
	}
	s, err := server.Start(context.Background(), c.cfg, name, server.Options{Listener: ln, Replication: server.QUIC(opts)})
	if err != nil {
		c.t.Fatal(err)
	}
	c.servers[name] = s
}

func (c *cluster) stop(name string) {
	c.t.Helper()
	if err := c.servers[name].Close(); err != nil {
		c.t.Fatal(err)
	}
	delete(c.servers, name)
}

// waitFor waits on a condition with a deadline (regiontest.WaitFor).
var waitFor = regiontest.WaitFor

type peerStatus struct {
	Region        string `json:"region"`
	Connected     bool   `json:"connected"`
	PendingDeltas int    `json:"pending_deltas"`
}

func (c *cluster) waitConnected(name string) {
	waitFor(c.t, 20*time.Second, name+" connected to its peers", func() bool {
		var st struct {
			Peers []peerStatus `json:"peers"`
		}
		if code, _ := c.do(name, "GET", "/v1/cluster", nil, nil, &st); code != 200 || len(st.Peers) != 2 {
			return false
		}
		for _, p := range st.Peers {
			if !p.Connected {
				return false
			}
		}
		return true
	})
}

// do sends a request to region name and decodes the JSON answer into out.
func (c *cluster) do(name, method, path string, body any, hdr map[string]string, out any) (int, http.Header) {
	c.t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, c.servers[name].URL()+path, rd)
	if err != nil {
		c.t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := c.client.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			c.t.Fatalf("%s %s at %s: %d %s", method, path, name, resp.StatusCode, b)
		}
	}
	return resp.StatusCode, resp.Header
}

type cartView struct {
	CartID string `json:"cart_id"`
	Region string `json:"region"`
	Items  []struct {
		SKU string `json:"sku"`
		Qty int64  `json:"qty"`
	} `json:"items"`
}

func (v cartView) String() string {
	var b bytes.Buffer
	for _, it := range v.Items {
		fmt.Fprintf(&b, "%s=%d ", it.SKU, it.Qty)
	}
	return b.String()
}

func (c *cluster) cart(name, id string) cartView {
	var v cartView
	if code, _ := c.do(name, "GET", "/v1/carts/"+id, nil, nil, &v); code != 200 {
		c.t.Fatalf("GET cart %s at %s: %d", id, name, code)
	}
	return v
}

func (c *cluster) mustDo(name, method, path string, body any) {
	c.t.Helper()
	var out map[string]any
	if code, _ := c.do(name, method, path, body, nil, &out); code/100 != 2 {
		c.t.Fatalf("%s %s at %s: %d %v", method, path, name, code, out)
	}
}

// waitCart waits until every running region shows the cart as want
// ("sku=qty " pairs in sku order).
func (c *cluster) waitCart(id, want string) {
	c.t.Helper()
	waitFor(c.t, 20*time.Second, "cart "+id+" = "+want+" everywhere", func() bool {
		for name := range c.servers {
			if c.cart(name, id).String() != want {
				return false
			}
		}
		return true
	})
}

// isolate cuts region name off from both peers (both directions).
func (c *cluster) isolate(name string, on bool) {
	c.mu.Lock()
	q := c.repl[name]
	c.mu.Unlock()
	for _, p := range c.cfg.Peers(name) {
		addr, _ := net.ResolveUDPAddr("udp", p.Peer)
		if on {
			q.WAN().Partition(addr.String())
		} else {
			q.WAN().Heal(addr.String())
		}
	}
}

var specLatency = map[string]int{"us-east/eu-west": 34, "us-east/ap-south": 92, "eu-west/ap-south": 60}

// TestConcurrentEditsConvergeToSpecOutcomes makes the concurrent edits of
// SPEC §2 in two regions, each unseen by the other (the first region is
// cut off while both write), and checks every region ends with the
// SPEC's outcome.
func TestConcurrentEditsConvergeToSpecOutcomes(t *testing.T) {
	c := newCluster(t, specLatency)
	type edit struct {
		method, path string
		body         any
	}
	cases := []struct {
		name     string
		cart     string
		setup    []edit
		agreed   string
		a, b     edit
		want     string
		aIn, bIn string
	}{
		{"1 different skus", "o1", nil, "", edit{"POST", "/items", map[string]any{"sku": "apple", "qty": 1}}, edit{"POST", "/items", map[string]any{"sku": "pear", "qty": 1}}, "apple=1 pear=1 ", "us-east", "ap-south"},
		{"2 add vs add", "o2", []edit{{"PUT", "/items/x", map[string]any{"qty": 1}}}, "x=1 ", edit{"POST", "/items", map[string]any{"sku": "x", "qty": 1}}, edit{"POST", "/items", map[string]any{"sku": "x", "qty": 1}}, "x=3 ", "us-east", "eu-west"},
		{"3 remove vs add", "o3", []edit{{"PUT", "/items/x", map[string]any{"qty": 2}}}, "x=2 ", edit{"DELETE", "/items/x", nil}, edit{"POST", "/items", map[string]any{"sku": "x", "qty": 1}}, "x=1 ", "eu-west", "ap-south"},
		{"5 set vs set", "o5", []edit{{"POST", "/items", map[string]any{"sku": "x", "qty": 1}}}, "x=1 ", edit{"PUT", "/items/x", map[string]any{"qty": 2}}, edit{"PUT", "/items/x", map[string]any{"qty": 3}}, "x=3 ", "ap-south", "us-east"},
		{"6 set vs add", "o6", []edit{{"POST", "/items", map[string]any{"sku": "x", "qty": 1}}}, "x=1 ", edit{"PUT", "/items/x", map[string]any{"qty": 3}}, edit{"POST", "/items", map[string]any{"sku": "x", "qty": 1}}, "x=4 ", "us-east", "eu-west"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			base := "/v1/carts/" + tc.cart
			for _, e := range tc.setup {
				c.mustDo("us-east", e.method, base+e.path, e.body)
			}
			c.waitCart(tc.cart, tc.agreed)
			c.isolate(tc.aIn, true)
			c.mustDo(tc.aIn, tc.a.method, base+tc.a.path, tc.a.body)
			c.mustDo(tc.bIn, tc.b.method, base+tc.b.path, tc.b.body)
			c.isolate(tc.aIn, false)
			c.waitCart(tc.cart, tc.want)
		})
	}
}

// TestPartitionedRegionConverges cuts ap-south off, writes on both sides,
// heals, and checks the regions converge (and that a remove made on one
// side stays removed).
func TestPartitionedRegionConverges(t *testing.T) {
	c := newCluster(t, map[string]int{"us-east/eu-west": 10, "us-east/ap-south": 20, "eu-west/ap-south": 15})
	c.mustDo("us-east", "POST", "/v1/carts/p/items", map[string]any{"sku": "keep", "qty": 2})
	c.mustDo("us-east", "POST", "/v1/carts/p/items", map[string]any{"sku": "gone", "qty": 1})
	c.waitCart("p", "gone=1 keep=2 ")
	c.isolate("ap-south", true)
	for i := range 20 {
		c.mustDo("us-east", "POST", "/v1/carts/p/items", map[string]any{"sku": "keep", "qty": 1})
		c.mustDo("ap-south", "POST", fmt.Sprintf("/v1/carts/p%d/items", i), map[string]any{"sku": "south", "qty": i + 1})
		c.mustDo("eu-west", "POST", "/v1/inventory/widget/restock", map[string]any{"qty": 1})
		c.mustDo("ap-south", "POST", "/v1/inventory/widget/restock", map[string]any{"qty": 2})
	}
	c.mustDo("eu-west", "DELETE", "/v1/carts/p/items/gone", nil)
	if got := c.cart("ap-south", "p").String(); got != "gone=1 keep=2 " {
		t.Fatalf("an isolated region saw writes it cannot have received: %s", got)
	}
	c.isolate("ap-south", false)
	c.waitCart("p", "keep=22 ")
	for i := range 20 {
		c.waitCart(fmt.Sprintf("p%d", i), fmt.Sprintf("south=%d ", i+1))
	}
	waitFor(t, 20*time.Second, "stock 60 everywhere", func() bool {
		for _, r := range regions {
			var it struct {
				Stock int64 `json:"stock"`
			}
			c.do(r, "GET", "/v1/inventory/widget", nil, nil, &it)
			if it.Stock != 60 {
				return false
			}
		}
		return true
	})
}

// TestRelayThroughThirdRegion cuts only the us-east↔ap-south link: writes
// on either end still reach the other through eu-west.
func TestRelayThroughThirdRegion(t *testing.T) {
	c := newCluster(t, map[string]int{"us-east/eu-west": 5, "us-east/ap-south": 5, "eu-west/ap-south": 5})
	var ap string
	for _, p := range c.cfg.Regions {
		if p.Name == "ap-south" {
			ap = p.Peer
		}
	}
	c.mu.Lock()
	q := c.repl["us-east"]
	c.mu.Unlock()
	q.WAN().Partition(ap)
	c.mustDo("us-east", "POST", "/v1/carts/r/items", map[string]any{"sku": "east", "qty": 1})
	c.mustDo("ap-south", "POST", "/v1/carts/r/items", map[string]any{"sku": "south", "qty": 1})
	c.waitCart("r", "east=1 south=1 ")
}

// TestRestartedRegionCatchesUp stops a region, writes elsewhere, restarts
// it on the same data and checks it catches up.
func TestRestartedRegionCatchesUp(t *testing.T) {
	c := newCluster(t, map[string]int{"us-east/eu-west": 5, "us-east/ap-south": 5, "eu-west/ap-south": 5})
	c.mustDo("eu-west", "POST", "/v1/carts/rs/items", map[string]any{"sku": "a", "qty": 1})
	c.waitCart("rs", "a=1 ")
	c.stop("eu-west")
	for i := range 30 {
		c.mustDo("us-east", "POST", fmt.Sprintf("/v1/carts/rs%d/items", i), map[string]any{"sku": "b", "qty": 1})
	}
	c.mustDo("ap-south", "DELETE", "/v1/carts/rs/items/a", nil)
	c.start("eu-west")
	c.waitConnected("eu-west")
	c.waitCart("rs", "")
	for i := range 30 {
		c.waitCart(fmt.Sprintf("rs%d", i), "b=1 ")
	}
}

// TestTokenGivesReadYourWritesAcrossRegions writes at us-east and reads at
// ap-south (92 ms away) with the token at once: the read waits for the
// write. Cut off, the same read fails with causal_timeout.
func TestTokenGivesReadYourWritesAcrossRegions(t *testing.T) {
	c := newCluster(t, specLatency)
	for i := range 5 {
		var v cartView
		_, h := c.do("us-east", "POST", "/v1/carts/tok/items", map[string]any{"sku": "s", "qty": 1}, nil, &v)
		tok := h.Get("Lattice-Token")
		if tok == "" {
			t.Fatal("no Lattice-Token on a write")
		}
		var got cartView
		code, _ := c.do("ap-south", "GET", "/v1/carts/tok", nil, map[string]string{"Lattice-Token": tok}, &got)
		if code != 200 || got.String() != fmt.Sprintf("s=%d ", i+1) {
			t.Fatalf("read with token at ap-south: %d %s, want s=%d", code, got, i+1)
		}
	}
	c.isolate("ap-south", true)
	_, h := c.do("us-east", "POST", "/v1/carts/tok/items", map[string]any{"sku": "s", "qty": 1}, nil, nil)
	var prob map[string]any
	code, _ := c.do("ap-south", "GET", "/v1/carts/tok", nil, map[string]string{"Lattice-Token": h.Get("Lattice-Token"), "Lattice-Wait": "200"}, &prob)
	if code != 503 || prob["code"] != "causal_timeout" {
		t.Fatalf("cut-off read with a newer token: %d %v", code, prob)
	}
}

var bg = context.Background()

// TestPlainSocketsReplicate runs the regions on plain UDP sockets, as
// `lattice serve` does when the config emulates nothing (nil latencies:
// no emulated WAN under QUIC), and checks that writes converge and that
// there is no WAN to partition.
func TestPlainSocketsReplicate(t *testing.T) {
	c := newCluster(t, nil)
	c.mu.Lock()
	for name, q := range c.repl {
		if q.WAN() != nil {
			t.Errorf("%s runs on an emulated WAN without an emulate key", name)
		}
	}
	c.mu.Unlock()
	c.mustDo("us-east", "POST", "/v1/carts/plain/items", map[string]any{"sku": "a", "qty": 1})
	c.mustDo("ap-south", "POST", "/v1/carts/plain/items", map[string]any{"sku": "b", "qty": 2})
	c.waitCart("plain", "a=1 b=2 ")
}
