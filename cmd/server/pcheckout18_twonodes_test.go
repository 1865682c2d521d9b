package server

import (
	"context"
	"net"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/latticedb/lattice/region/config"
	"github.com/latticedb/lattice/region/regiontest"
	"github.com/latticedb/lattice/sync/certs"
	"github.com/latticedb/lattice/sync/replication"
)

// pc18Cluster is us-east run on two nodes over QUIC (n1 owns partition 0,
// n2 partition 1) beside eu-west (one node, both partitions).
type pc18Cluster struct {
	t   *testing.T
	cfg *config.Config
	srv map[string]*Server
	c   map[string]*client
}

func newPC18Cluster(t *testing.T) *pc18Cluster {
	t.Helper()
	dir := t.TempDir()
	lns, peers := regiontest.Loopback(t, 3)
	for _, ln := range lns {
		ln.Close()
	}
	cfg := &config.Config{
		Cluster:    "test",
		DataDir:    filepath.Join(dir, "data"),
		TLSDir:     filepath.Join(dir, "certs"),
		Durability: config.DurabilityAlways,
		Partitions: 2,
		Regions: []config.RegionConfig{
			{Name: "us-east", Nodes: []config.NodeConfig{
				{Name: "n1", API: lns[0].Addr().String(), Peer: peers[0], Partitions: config.PartitionSet{"0"}},
				{Name: "n2", API: lns[1].Addr().String(), Peer: peers[1], Partitions: config.PartitionSet{"1"}},
			}},
			{Name: "eu-west", API: lns[2].Addr().String(), Peer: peers[2]},
		},
		Homes: []config.HomeRule{
			{Prefix: "us-", Region: "us-east"},
			{Prefix: "eu-", Region: "eu-west"},
		},
	}
	if err := certs.Generate(cfg.TLSDir, cfg.Cluster, cfg.RegionNames()); err != nil {
		t.Fatal(err)
	}
	c := &pc18Cluster{t: t, cfg: cfg, srv: map[string]*Server{}, c: map[string]*client{}}
	c.start("us-east", "n1")
	c.start("us-east", "n2")
	c.start("eu-west", "")
	return c
}

// start starts node of region on its configured API address (retrying
// the listen while a stopped node's port is released).
func (c *pc18Cluster) start(region, node string) {
	c.t.Helper()
	addr := c.cfg.Regions[1].API
	if node != "" {
		nc, _ := c.cfg.Node(region, node)
		addr = nc.API
	}
	var ln net.Listener
	var err error
	for range 50 {
		if ln, err = net.Listen("tcp", addr); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		c.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	srv, err := Start(ctx, c.cfg, region, Options{Listener: ln, Logger: testLogger(c.t),
		PartitionedReplication: QUICPartitioned(replication.AttachOptions{}), Node: node})
	if err != nil {
		c.t.Fatalf("start %s/%s: %v", region, node, err)
	}
	name := node
	if name == "" {
		name = region
	}
	c.srv[name] = srv
	c.c[name] = newClient(c.t, srv.URL())
	c.t.Cleanup(func() { c.stop(name) })
}

func (c *pc18Cluster) stop(name string) {
	if srv := c.srv[name]; srv != nil {
		c.srv[name] = nil
		if err := srv.Close(); err != nil {
			c.t.Errorf("close %s: %v", name, err)
		}
	}
}

// pc18Key returns a key with prefix in partition p of 2.
func pc18Key(prefix string, p int) string {
	for i := 0; ; i++ {
		k := prefix + string(rune('a'+i%26)) + string(rune('a'+i/26%26))
		if config.PartitionOf(k, 2) == p {
			return k
		}
	}
}

func pc18Item(t *testing.T, c *client, sku string, header ...string) (stock, reserved float64) {
	t.Helper()
	m := c.ok(200, "GET", "/v1/inventory/"+sku, "", header...)
	return m["stock"].(float64), m["reserved"].(float64)
}

// TestPCheckout18AcrossNodesOfARegion covers a checkout whose saga
// crosses the nodes of a partitioned region over the real transport
// (QUIC between nodes, HTTP forwarding of the request): the cart (us-east
// partition 0, node n1) holds a (partition 0, n1) and b (partition 1,
// n2); the checkout is sent to n2, which forwards it to the coordinator
// n1. While n2 is stopped the keyed checkout is 503 home_unavailable and
// holds nothing at a; with n2 back, the retry with the key (through n2)
// is the order, both lines committed once, the cart empty; the key
// replays the order through n1, n2 and eu-west, and the answer's token
// makes eu-west show both commits (the token covers the partition of
// the other node's home).
func TestPCheckout18AcrossNodesOfARegion(t *testing.T) {
	cl := newPC18Cluster(t)
	n1, west := cl.c["n1"], cl.c["eu-west"]
	a, b, cart := pc18Key("us-a", 0), pc18Key("us-b", 1), pc18Key("us-c", 0)
	n1.ok(200, "POST", "/v1/inventory/"+a+"/restock", `{"qty":5}`)
	n1.ok(200, "POST", "/v1/inventory/"+b+"/restock", `{"qty":5}`)
	// Both partitions' homes decide once the regions have seen each other.
	for _, s := range []string{a, b} {
		waitFor(t, 30*time.Second, "a reservation of "+s+" to be granted", func() bool {
			r := n1.do("POST", "/v1/reservations", `{"sku":"`+s+`","qty":1}`)
			if r.status != http.StatusCreated {
				return false
			}
			id, _ := decode(t, r)["reservation_id"].(string)
			n1.ok(200, "POST", "/v1/reservations/"+id+"/release", "")
			return true
		})
	}
	n1.ok(200, "POST", "/v1/carts/"+cart+"/items", `{"sku":"`+a+`","qty":1}`)
	n1.ok(200, "POST", "/v1/carts/"+cart+"/items", `{"sku":"`+b+`","qty":2}`)

	cl.stop("n2")
	key := []string{"Idempotency-Key", "pc18-order"}
	expectProblem(t, n1.do("POST", "/v1/carts/"+cart+"/checkout", "", key...), 503, "home_unavailable", "")
	if st, held := pc18Item(t, n1, a); st != 5 || held != 0 {
		t.Fatalf("a after the checkout that could not reach b's home: stock %v reserved %v, want 5 and 0", st, held)
	}
	if m := n1.ok(200, "GET", "/v1/carts/"+cart+"/checkout", "", key...); m["phase"] != "failed-transiently" {
		t.Fatalf("status after the failed attempt: %v", m)
	}

	cl.start("us-east", "n2")
	n2 := cl.c["n2"]
	var res response
	waitFor(t, 30*time.Second, "the retry through n2 to settle", func() bool {
		res = n2.do("POST", "/v1/carts/"+cart+"/checkout", "", key...)
		return res.status != http.StatusServiceUnavailable
	})
	order := expectOK(t, res, http.StatusCreated)
	lines, _ := order["lines"].([]any)
	if len(lines) != 2 {
		t.Fatalf("order %v, want a and b", order)
	}
	if got := res.header.Get("Lattice-Partition"); got != "0" {
		t.Errorf("checkout through n2 answered with Lattice-Partition %q, want 0 (n1 coordinates)", got)
	}
	for s, want := range map[string]float64{a: 4, b: 3} {
		if st, held := pc18Item(t, n2, s); st != want || held != 0 {
			t.Errorf("%s at its home after the order: stock %v reserved %v, want %v and 0", s, st, held, want)
		}
	}
	checkCart(t, n2.ok(200, "GET", "/v1/carts/"+cart, ""), cart)
	if m := n2.ok(200, "GET", "/v1/carts/"+cart+"/checkout", "", key...); m["phase"] != "settled" {
		t.Errorf("status after the order: %v", m)
	}
	for name, c := range map[string]*client{"n1": n1, "n2": n2, "eu-west": west} {
		again := c.do("POST", "/v1/carts/"+cart+"/checkout", "", key...)
		if m := expectOK(t, again, http.StatusCreated); m["order_id"] != order["order_id"] {
			t.Errorf("replay through %s: %v, want order %v", name, m, order["order_id"])
		}
	}
	tok := res.header.Get("Lattice-Token")
	for s, want := range map[string]float64{a: 4, b: 3} {
		if st, _ := pc18Item(t, west, s, "Lattice-Token", tok, "Lattice-Wait", "5000"); st != want {
			t.Errorf("%s at eu-west with the order's token: stock %v, want %v", s, st, want)
		}
	}
}
