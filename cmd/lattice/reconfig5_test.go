package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/latticedb/lattice/region/config"
)

// reconfCluster runs regions as `lattice serve` processes on real files
// with real QUIC between them, under a config file the test rewrites
// between restarts (the region list changes), as operations.md's
// procedures for changing the set of regions do. Every region keeps its
// addresses for the whole test.
type reconfCluster struct {
	t        *testing.T
	bin, dir string
	cfg      string
	apis     map[string]string
	peers    map[string]string
	regions  []string // the config file's regions
	children map[string]*child
	runs     map[string]int
}

// newReconfCluster builds lattice and writes certificates for all of
// names; no region runs yet.
func newReconfCluster(t *testing.T, names ...string) *reconfCluster {
	t.Helper()
	c := &reconfCluster{t: t, bin: buildLattice(t), dir: t.TempDir(), apis: map[string]string{}, peers: map[string]string{},
		children: map[string]*child{}, runs: map[string]int{}}
	c.cfg = filepath.Join(c.dir, "lattice.yaml")
	for _, r := range names {
		c.apis[r], c.peers[r] = freeAddr(t), freeUDPAddr(t)
	}
	if code, _, stderr := runCLI(t, append([]string{"certs", "--dir", filepath.Join(c.dir, "certs"), "--cluster", "reconf"}, names...)...); code != 0 {
		t.Fatalf("certs: %s", stderr)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for r, ch := range c.children {
				t.Logf("%s log:\n%s", r, ch.logTail())
			}
		}
	})
	return c
}

// configure writes the config file with regions (and homes rules, YAML
// lines or "").
func (c *reconfCluster) configure(homes string, regions ...string) {
	c.t.Helper()
	c.regions = regions
	var b strings.Builder
	b.WriteString("cluster: reconf\ndata_dir: ./data\ntls_dir: ./certs\ndurability: always\nregions:\n")
	for _, r := range regions {
		fmt.Fprintf(&b, "  - name: %s\n    api: %s\n    peer: %s\n", r, c.apis[r], c.peers[r])
	}
	b.WriteString(homes)
	if err := os.WriteFile(c.cfg, []byte(b.String()), 0o644); err != nil {
		c.t.Fatal(err)
	}
}

func (c *reconfCluster) start(r string) {
	c.t.Helper()
	c.runs[r]++
	c.children[r] = startRegion(c.t, c.bin, c.cfg, r, "http://"+c.apis[r], filepath.Join(c.dir, fmt.Sprintf("%s.%d.log", r, c.runs[r])))
}

// stop stops region r cleanly (SIGTERM) and waits for it to exit 0.
func (c *reconfCluster) stop(r string) {
	c.t.Helper()
	ch := c.children[r]
	if err := ch.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		c.t.Fatal(err)
	}
	select {
	case code := <-ch.exited:
		if code != 0 {
			c.t.Fatalf("%s: SIGTERM: exit status %d\n%s", r, code, ch.logTail())
		}
	case <-time.After(30 * time.Second):
		c.t.Fatalf("%s: SIGTERM did not stop it", r)
	}
}

func (c *reconfCluster) api(r string) *api { return newAPI("http://" + c.apis[r]) }

// caughtUp waits until region r is out of catch-up (a new store of a
// region of several starts in it).
func (c *reconfCluster) caughtUp(r string) {
	c.t.Helper()
	waitCaughtUp(c.t, "http://"+c.apis[r])
}

// waitConnected waits until region r is connected to every peer in want.
func (c *reconfCluster) waitConnected(r string, want ...string) {
	c.t.Helper()
	pollUntil(c.t, 30*time.Second, fmt.Sprintf("%s connected to %v", r, want), func() bool {
		peers, ok := clusterPeers(c.api(r))
		if !ok {
			return false
		}
		for _, w := range want {
			if !slices.ContainsFunc(peers, func(p clusterPeer) bool { return p.Region == w && p.Connected }) {
				return false
			}
		}
		return true
	})
}

// post sends a write and fails the test unless it is answered with one of
// the 2xx statuses; it returns the body.
func (c *reconfCluster) post(r, path, body string) []byte {
	c.t.Helper()
	status, _, b, err := c.api(r).call("POST", path, body)
	if err != nil || status/100 != 2 {
		c.t.Fatalf("POST %s at %s: %d %s %v", path, r, status, b, err)
	}
	return b
}

// sell reserves qty of sku at region r and commits the reservation,
// failing the test unless both are acknowledged.
func (c *reconfCluster) sell(r, sku string, qty int) {
	c.t.Helper()
	var res struct {
		ID string `json:"reservation_id"`
	}
	if err := json.Unmarshal(c.post(r, "/v1/reservations", fmt.Sprintf(`{"sku":%q,"qty":%d}`, sku, qty)), &res); err != nil {
		c.t.Fatal(err)
	}
	c.post(r, "/v1/reservations/"+res.ID+"/commit", "")
}

// stock returns sku's stock as region r shows it.
func (c *reconfCluster) stock(r, sku string) int64 {
	c.t.Helper()
	var it struct {
		Stock int64 `json:"stock"`
	}
	c.api(r).get(c.t, "/v1/inventory/"+sku, &it)
	return it.Stock
}

// cart returns cart's items at region r as sku → qty.
func (c *reconfCluster) cart(r, id string) map[string]int {
	c.t.Helper()
	var body struct {
		Items []struct {
			SKU string `json:"sku"`
			Qty int    `json:"qty"`
		} `json:"items"`
	}
	c.api(r).get(c.t, "/v1/carts/"+id, &body)
	out := map[string]int{}
	for _, it := range body.Items {
		out[it.SKU] = it.Qty
	}
	return out
}

// divergent returns the divergent_keys region r lists.
func (c *reconfCluster) divergent(r string) []string {
	c.t.Helper()
	var st struct {
		DivergentKeys []string `json:"divergent_keys"`
	}
	c.api(r).get(c.t, "/v1/cluster", &st)
	return st.DivergentKeys
}

// TestRegionAddedUnderARemovedNameKeepsItsWrites follows operations.md:
// region eu-west of a two-region cluster writes (a restock of 5 units of
// s1, an item in cart c1, and, as the home of h-1 by a homes rule, a sale
// of 5 of the 10 units us-east restocked), and once us-east holds it all,
// eu-west is removed (stopped cleanly, dropped from the config, us-east
// restarted on the new file) and its machine and data are gone. Later a
// region is added under the same name, eu-west, following "Adding a
// region": its certificate, the new file (h-1 homed at eu-west again),
// started on an empty data_dir, then us-east restarted. Clients use the
// new eu-west as soon as it runs: they restock 3 more units of s1, add
// items to carts c1 and c2, and restock and sell 2 units of h-1. Every
// one of those acknowledged writes must reach us-east and stay at both
// regions: s1's stock is 8, h-1's 10 − 5 + 2 − 2 = 5, c1 holds both
// items, c2 its item, and no key is divergent.
func TestRegionAddedUnderARemovedNameKeepsItsWrites(t *testing.T) {
	const homes = "homes:\n  - prefix: h-\n    region: eu-west\n"
	c := newReconfCluster(t, "us-east", "eu-west")
	c.configure(homes, "us-east", "eu-west")
	c.start("us-east")
	c.start("eu-west")
	c.waitConnected("eu-west", "us-east")
	c.caughtUp("us-east")
	c.caughtUp("eu-west")
	c.post("eu-west", "/v1/inventory/s1/restock", `{"qty":5}`)
	c.post("eu-west", "/v1/carts/c1/items", `{"sku":"old","qty":1}`)
	c.post("us-east", "/v1/inventory/h-1/restock", `{"qty":10}`)
	pollUntil(t, 20*time.Second, "eu-west holds us-east's restock", func() bool { return c.stock("eu-west", "h-1") == 10 })
	c.sell("eu-west", "h-1", 5)
	pollUntil(t, 20*time.Second, "us-east holds eu-west's writes", func() bool {
		return c.stock("us-east", "s1") == 5 && c.cart("us-east", "c1")["old"] == 1 && c.stock("us-east", "h-1") == 5
	})

	// Removing eu-west.
	c.stop("eu-west")
	c.configure("", "us-east")
	c.stop("us-east")
	c.start("us-east")
	if err := os.RemoveAll(filepath.Join(c.dir, "data", "eu-west")); err != nil {
		t.Fatal(err)
	}

	// Adding a region named eu-west: new file, the new region first.
	c.configure(homes, "us-east", "eu-west")
	c.start("eu-west")
	c.post("eu-west", "/v1/inventory/s1/restock", `{"qty":3}`)
	c.post("eu-west", "/v1/carts/c1/items", `{"sku":"new","qty":1}`)
	c.post("eu-west", "/v1/carts/c2/items", `{"sku":"fresh","qty":1}`)
	c.post("eu-west", "/v1/inventory/h-1/restock", `{"qty":2}`)
	// As home of h-1 it decides only once it has caught up with us-east,
	// which holds the old eu-west's sale.
	status, _, b, err := c.api("eu-west").call("POST", "/v1/reservations", `{"sku":"h-1","qty":1}`)
	if err != nil || status != 503 {
		t.Fatalf("a reservation at the new eu-west before it caught up with us-east: %d %s %v; want 503", status, b, err)
	}
	c.stop("us-east")
	c.start("us-east")
	c.waitConnected("us-east", "eu-west")
	c.caughtUp("eu-west")
	c.sell("eu-west", "h-1", 2)

	want := map[string]map[string]int{"c1": {"old": 1, "new": 1}, "c2": {"fresh": 1}}
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		var why []string
		for _, r := range []string{"us-east", "eu-west"} {
			if s := c.stock(r, "s1"); s != 8 {
				why = append(why, fmt.Sprintf("%s: stock of s1 %d, want 5 + 3 = 8", r, s))
			}
			if s := c.stock(r, "h-1"); s != 5 {
				why = append(why, fmt.Sprintf("%s: stock of h-1 %d, want 10 - 5 + 2 - 2 = 5", r, s))
			}
			for id, w := range want {
				if got := c.cart(r, id); !reflect.DeepEqual(got, w) {
					why = append(why, fmt.Sprintf("%s: cart %s holds %v, want %v", r, id, got, w))
				}
			}
			if d := c.divergent(r); len(d) > 0 {
				why = append(why, fmt.Sprintf("%s: divergent keys %v", r, d))
			}
		}
		if len(why) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("10 s after the re-added eu-west connected, acknowledged writes are missing:\n%s", strings.Join(why, "\n"))
		}
		<-tick.C
	}
}

// movingSKU returns a sku that rendezvous hashing homes at eu-west among
// us-east and eu-west, and at ap-south once ap-south is added.
func movingSKU(t *testing.T) string {
	for i := range 1000 {
		sku := fmt.Sprintf("m-%d", i)
		if config.RendezvousHome([]string{"us-east", "eu-west"}, sku) == "eu-west" &&
			config.RendezvousHome([]string{"us-east", "eu-west", "ap-south"}, sku) == "ap-south" {
			return sku
		}
	}
	t.Fatal("no sku moves from eu-west to ap-south")
	return ""
}

// TestAddedRegionNeverSellsWhatItsPredecessorSold follows operations.md's
// "Adding a region" to a cluster of us-east and eu-west, with a sku that
// the new region, ap-south, becomes home of (rendezvous hashing moves it
// from eu-west). Before the change, us-east restocked 10 units and, while
// us-east was stopped, eu-west (the sku's home) sold 8 of them (reserved
// and committed: no reservation is open). During the rolling restart
// eu-west is stopped; ap-south starts on an empty data_dir and us-east
// restarts on the new file, and ap-south pulls the sku from us-east by
// anti-entropy. The docs say an added region may refuse reservations for
// stock it has not received yet; it must never sell the 8 units eu-west
// already sold: a reservation of 10 must be refused (or wait for
// eu-west), so that held + committed <= stock.
func TestAddedRegionNeverSellsWhatItsPredecessorSold(t *testing.T) {
	sku := movingSKU(t)
	c := newReconfCluster(t, "us-east", "eu-west", "ap-south")
	c.configure("", "us-east", "eu-west")
	c.start("us-east")
	c.start("eu-west")
	c.waitConnected("eu-west", "us-east")
	c.caughtUp("eu-west")
	c.post("us-east", "/v1/inventory/"+sku+"/restock", `{"qty":10}`)
	pollUntil(t, 20*time.Second, "eu-west holds the restock", func() bool { return c.stock("eu-west", sku) == 10 })

	c.stop("us-east")
	c.sell("eu-west", sku, 8)
	if s := c.stock("eu-west", sku); s != 2 {
		t.Fatalf("eu-west shows stock %d after selling 8 of 10", s)
	}
	c.stop("eu-west")

	// The rolling restart that adds ap-south.
	c.configure("", "us-east", "eu-west", "ap-south")
	c.start("ap-south")
	c.start("us-east")
	c.waitConnected("ap-south", "us-east")
	pollUntil(t, 20*time.Second, "ap-south holds us-east's stock", func() bool { return c.stock("ap-south", sku) == 10 })

	status, _, b, err := c.api("ap-south").call("POST", "/v1/reservations", fmt.Sprintf(`{"sku":%q,"qty":10}`, sku))
	if err != nil {
		t.Fatal(err)
	}
	if status != 201 {
		t.Logf("ap-south refused: %d %s", status, b)
		return
	}
	var res struct {
		ID string `json:"reservation_id"`
	}
	if err := json.Unmarshal(b, &res); err != nil {
		t.Fatal(err)
	}
	c.post("ap-south", "/v1/reservations/"+res.ID+"/commit", "")
	c.start("eu-west")
	c.waitConnected("eu-west", "us-east", "ap-south")
	pollUntil(t, 20*time.Second, "the regions agree on the stock", func() bool {
		return c.stock("eu-west", sku) == c.stock("ap-south", sku) && c.stock("us-east", sku) == c.stock("ap-south", sku)
	})
	t.Fatalf("ap-south, %s's new home, sold 10 units after eu-west had sold 8 of the 10 restocked: 18 committed, stock now %d", sku, c.stock("ap-south", sku))
}

// TestConfigRefusesAnAddressNobodyCanDial: configuration.md requires a
// host in `regions[].peer` unless `advertise_peer` is set, because the
// other regions dial it ("a host is required (other regions dial it)"),
// and in a node's `api` when the region has several nodes and no
// `advertise_api`, because the other nodes forward to it. An unspecified
// address (0.0.0.0 or ::) names no host anyone can dial: the region would
// listen, and every other region would dial its own machine instead. The
// config must be refused naming the key, as a missing host is.
func TestConfigRefusesAnAddressNobodyCanDial(t *testing.T) {
	for _, tc := range []struct{ key, doc string }{
		{"regions[0].peer", `cluster: x
regions:
  - name: us-east
    api: 10.0.1.10:7101
    peer: 0.0.0.0:7201
  - name: eu-west
    api: 10.0.2.10:7101
    peer: 10.0.2.10:7201
`},
		{"regions[1].peer", `cluster: x
regions:
  - name: us-east
    api: 10.0.1.10:7101
    peer: 10.0.1.10:7201
  - name: eu-west
    api: 10.0.2.10:7101
    peer: "[::]:7201"
`},
		{"regions[0].nodes[1].api", `cluster: x
partitions: 2
regions:
  - name: us-east
    nodes:
      - name: n0
        api: 10.0.1.10:7101
        peer: 10.0.1.10:7201
        partitions: 0
      - name: n1
        api: 0.0.0.0:7102
        peer: 10.0.1.11:7201
        partitions: 1
`},
	} {
		_, err := config.Parse([]byte(tc.doc))
		if err == nil || !strings.Contains(err.Error(), tc.key) {
			t.Errorf("%s set to an unspecified address: Parse answered %v, want an error naming %s", tc.key, err, tc.key)
		}
	}
}
