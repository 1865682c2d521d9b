package server

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/latticedb/lattice/region/config"
	"github.com/latticedb/lattice/region/regiontest"
	"github.com/latticedb/lattice/sync/certs"
	"github.com/latticedb/lattice/sync/replication"
)

// d8Pair writes a two-region config file (us-east, eu-west on loopback,
// "us-" skus homed at us-east, "eu-" at eu-west) with extra appended
// as YAML at the top level, loads it as `lattice serve` does, and starts
// both regions replicating over QUIC.
func d8Pair(t *testing.T, extra string) (east, west *testRegion) {
	t.Helper()
	dir := t.TempDir()
	lns, peers := regiontest.Loopback(t, 2)
	yaml := fmt.Sprintf(`cluster: docs
regions:
  - name: us-east
    api: %s
    peer: %s
  - name: eu-west
    api: %s
    peer: %s
homes:
  - prefix: "us-"
    region: us-east
  - prefix: "eu-"
    region: eu-west
%s`, lns[0].Addr(), peers[0], lns[1].Addr(), peers[1], extra)
	path := filepath.Join(dir, "lattice.yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := certs.Generate(cfg.TLSDir, cfg.Cluster, cfg.RegionNames()); err != nil {
		t.Fatal(err)
	}
	east = startRegion(t, cfg, "us-east", Options{Listener: lns[0], Replication: QUIC(replication.AttachOptions{})})
	west = startRegion(t, cfg, "eu-west", Options{Listener: lns[1], Replication: QUIC(replication.AttachOptions{})})
	waitFor(t, 20*time.Second, "both regions connected", func() bool {
		for _, r := range []*testRegion{east, west} {
			c := clusterOf(t, r)
			if len(c.Peers) != 1 || !c.Peers[0].Connected {
				return false
			}
		}
		return true
	})
	return east, west
}

// TestDocsClusterDefaults checks what GET /v1/cluster shows of a config
// that leaves the defaults: durability always, an anti-entropy rate of 8
// MiB/s per peer, a replica NAME+K for a new store of a region of several,
// and the protocol lattice-repl/2 to a connected peer.
func TestDocsClusterDefaults(t *testing.T) {
	east, _ := d8Pair(t, "")
	m := east.ok(200, "GET", "/v1/cluster", "")
	if m["region"] != "us-east" {
		t.Errorf("region %v", m["region"])
	}
	if rep, _ := m["replica"].(string); !strings.HasPrefix(rep, "us-east+") {
		t.Errorf("replica %q, want us-east+K for a new store of a region of several", rep)
	}
	st, _ := m["store"].(map[string]any)
	if st["durability"] != "always" {
		t.Errorf("store.durability %v, want the default always", st["durability"])
	}
	for _, k := range []string{"file_bytes", "live_bytes", "corrupt_keys"} {
		if _, ok := st[k]; !ok {
			t.Errorf("store has no %s: %v", k, st)
		}
	}
	for _, k := range []string{"catching_up", "divergent_keys", "version_vector", "peers"} {
		if _, ok := m[k]; !ok {
			t.Errorf("cluster has no %s", k)
		}
	}
	peers, _ := m["peers"].([]any)
	if len(peers) != 1 {
		t.Fatalf("peers %v", m["peers"])
	}
	p := peers[0].(map[string]any)
	if p["anti_entropy_rate_bytes_per_sec"] != float64(8<<20) {
		t.Errorf("peer anti_entropy_rate_bytes_per_sec %v, want the default 8388608", p["anti_entropy_rate_bytes_per_sec"])
	}
	if p["protocol"] != "lattice-repl/2" {
		t.Errorf("peer protocol %v, want lattice-repl/2", p["protocol"])
	}
	for _, k := range []string{"region", "connected", "pending_deltas", "pending_bytes", "inflight_messages", "lag_ms",
		"peer_version_vector", "anti_entropy", "anti_entropy_rounds", "unrepaired_keys", "anti_entropy_keys_pushed",
		"anti_entropy_keys_pulled", "bytes_sent", "delta_messages_sent", "stream_bytes_sent"} {
		if _, ok := p[k]; !ok {
			t.Errorf("peer has no %s: %v", k, keysOf(p))
		}
	}
}

// TestDocsClusterUnboundedRate: anti_entropy_rate_bytes_per_sec -1
// removes the bound, which GET /v1/cluster shows as 0 ("0: no bound").
func TestDocsClusterUnboundedRate(t *testing.T) {
	east, _ := d8Pair(t, "anti_entropy_rate_bytes_per_sec: -1\n")
	c := east.ok(200, "GET", "/v1/cluster", "")
	p := c["peers"].([]any)[0].(map[string]any)
	if p["anti_entropy_rate_bytes_per_sec"] != 0.0 {
		t.Errorf("anti_entropy_rate_bytes_per_sec %v with -1 in the config, want 0 (no bound)", p["anti_entropy_rate_bytes_per_sec"])
	}
}

// TestDocsConcerns checks Write and read concerns between two running
// regions, then with one of them stopped.
func TestDocsConcerns(t *testing.T) {
	east, west := d8Pair(t, "")
	// Out of range: R is 2.
	for _, v := range []string{"0", "3", "x"} {
		expectProblem(t, east.do("POST", "/v1/carts/w1/items", `{"sku":"us-a","qty":1}`, "Lattice-Replicas", v), 400, "invalid_request", "Lattice-Replicas")
		expectProblem(t, east.do("GET", "/v1/carts/w1?quorum="+v, ""), 400, "invalid_request", "quorum")
	}
	// Met: the write is at eu-west when answered.
	for i, v := range []string{"2", "all", "majority"} {
		res := east.do("POST", "/v1/carts/w1/items", `{"sku":"us-a","qty":1}`, "Lattice-Replicas", v)
		expectOK(t, res, 200)
		q := west.ok(200, "GET", "/v1/carts/w1?quorum=1", "")
		checkCartAt(t, q, "w1", "eu-west", "us-a", i+1)
	}
	// Every write route takes it.
	east.ok(200, "PUT", "/v1/carts/w1/items/us-a", `{"qty":5}`, "Lattice-Replicas", "2")
	east.ok(200, "DELETE", "/v1/carts/w1/items/us-b", "", "Lattice-Replicas", "2")
	east.ok(200, "POST", "/v1/inventory/us-a/restock", `{"qty":5}`, "Lattice-Replicas", "2")
	east.ok(200, "POST", "/v1/inventory/us-a/adjust", `{"delta":-1}`, "Lattice-Replicas", "2")
	waitFor(t, 20*time.Second, "us-east out of catch-up", func() bool {
		return east.do("POST", "/v1/reservations", `{"sku":"us-a","qty":1}`, "Lattice-Replicas", "2").status == 201
	})
	q := east.ok(200, "GET", "/v1/carts/w1?quorum=2", "")
	checkCartAt(t, q, "w1", "us-east", "us-a", 5)
	q = east.ok(200, "GET", "/v1/inventory/us-a?quorum=all", "")
	if q["stock"] != 4.0 {
		t.Errorf("item read with quorum=all: %v", q)
	}

	// eu-west stops: a write concern of 2 cannot be met by the regions
	// connected: replication_timeout at once, the write applied.
	if err := west.srv.Close(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "eu-west disconnected", func() bool {
		c := clusterOf(t, east)
		return len(c.Peers) == 1 && !c.Peers[0].Connected
	})
	start := time.Now()
	res := east.do("POST", "/v1/carts/w2/items", `{"sku":"us-a","qty":3}`, "Lattice-Replicas", "2")
	p := expectProblem(t, res, 503, "replication_timeout", "")
	if d := time.Since(start); d > time.Second {
		t.Errorf("replication_timeout after %v, want at once: the connected regions are too few", d)
	}
	_ = p
	checkCartAt(t, east.ok(200, "GET", "/v1/carts/w2", ""), "w2", "us-east", "us-a", 3)
	expectProblem(t, east.do("GET", "/v1/carts/w2?quorum=2", ""), 503, "quorum_unavailable", "")
	expectProblem(t, east.do("GET", "/v1/inventory/us-a?quorum=majority", ""), 503, "quorum_unavailable", "")
	checkCartAt(t, east.ok(200, "GET", "/v1/carts/w2?quorum=1", ""), "w2", "us-east", "us-a", 3)
}

// checkCartAt checks a cart of one line as answered by region at.
func checkCartAt(t *testing.T, m map[string]any, id, at, sku string, qty int) {
	t.Helper()
	items, _ := m["items"].([]any)
	if m["cart_id"] != id || m["region"] != at || len(items) != 1 {
		t.Errorf("cart %v, want %s at %s with %s × %d", m, id, at, sku, qty)
		return
	}
	it := items[0].(map[string]any)
	if it["sku"] != sku || it["qty"] != float64(qty) {
		t.Errorf("cart %v, want %s at %s with %s × %d", m, id, at, sku, qty)
	}
}

// TestDocsAcrossRegions checks what docs/api.md says of requests that
// another region decides: a checkout answered away from its coordinator
// removes the bought lines from the answering region's copy, its status
// is answered by any region, a reservation is read at its home, and one
// Idempotency-Key decided at two regions makes two records.
func TestDocsAcrossRegions(t *testing.T) {
	east, west := d8Pair(t, "")
	east.ok(200, "POST", "/v1/inventory/us-a/restock", `{"qty":10}`)
	west.ok(200, "POST", "/v1/inventory/eu-b/restock", `{"qty":10}`)
	waitFor(t, 20*time.Second, "both homes deciding", func() bool {
		return east.do("POST", "/v1/reservations", `{"sku":"us-a","qty":1,"ttl_ms":1000}`).status == 201 &&
			west.do("POST", "/v1/reservations", `{"sku":"eu-b","qty":1,"ttl_ms":1000}`).status == 201
	})

	// One key, two deciding regions: two records, not a 422.
	a := west.ok(201, "POST", "/v1/reservations", `{"sku":"us-a","qty":1}`, "Idempotency-Key", "shared-key")
	b := east.ok(201, "POST", "/v1/reservations", `{"sku":"eu-b","qty":2}`, "Idempotency-Key", "shared-key")
	if a["home"] != "us-east" || b["home"] != "eu-west" {
		t.Errorf("reservations %v %v", a, b)
	}
	// A retry through the other region answers the same reservation.
	a2 := east.ok(201, "POST", "/v1/reservations", `{"sku":"us-a","qty":1}`, "Idempotency-Key", "shared-key")
	if a2["reservation_id"] != a["reservation_id"] {
		t.Errorf("retry through us-east: %v, want %v", a2["reservation_id"], a["reservation_id"])
	}
	// Read at its home from either region: committed at once.
	id := a["reservation_id"].(string)
	east.ok(200, "POST", "/v1/reservations/"+id+"/commit", "")
	for _, r := range []*testRegion{east, west} {
		if m := r.ok(200, "GET", "/v1/reservations/"+id, ""); m["state"] != "committed" {
			t.Errorf("reservation read at %s: %v, want committed", r.srv.Region(), m)
		}
	}

	// A checkout at eu-west of a cart coordinated by us-east.
	var res response
	for _, sku := range []string{"us-a", "eu-b"} {
		res = west.do("POST", "/v1/carts/us-cart/items", `{"sku":"`+sku+`","qty":1}`)
		expectOK(t, res, 200)
	}
	res = west.do("POST", "/v1/carts/us-cart/checkout", "", "Idempotency-Key", "co-1", "Lattice-Token", res.header.Get("Lattice-Token"))
	order := expectOK(t, res, 201)
	tok := res.header.Get("Lattice-Token")
	if m := west.ok(200, "GET", "/v1/carts/us-cart", ""); len(m["items"].([]any)) != 0 {
		t.Errorf("cart at eu-west right after its checkout there: %v, want no items", m)
	}
	checkCart(t, east.ok(200, "GET", "/v1/carts/us-cart", "", "Lattice-Token", tok), "us-cart")
	for _, r := range []*testRegion{east, west} {
		st := r.ok(200, "GET", "/v1/carts/us-cart/checkout", "", "Idempotency-Key", "co-1")
		if st["phase"] != "settled" || st["order_id"] != order["order_id"] {
			t.Errorf("checkout status at %s: %v", r.srv.Region(), st)
		}
	}
	// The replay through the other region answers the same order.
	again := east.ok(201, "POST", "/v1/carts/us-cart/checkout", "", "Idempotency-Key", "co-1")
	if again["order_id"] != order["order_id"] {
		t.Errorf("replay through us-east: %v, want %v", again, order)
	}
}

// TestDocsEscrowItem checks the Item of an escrow sku: granted always,
// rights away from the home and never at the home.
func TestDocsEscrowItem(t *testing.T) {
	east, west := d8Pair(t, "  - prefix: \"esc-\"\n    region: us-east\n    escrow: true\n")
	east.ok(200, "POST", "/v1/inventory/esc-a/restock", `{"qty":10}`)
	home := east.ok(200, "GET", "/v1/inventory/esc-a", "")
	checkKeys(t, "escrow item at its home", home, sorted("sku", "home", "stock", "reserved", "available", "granted"))
	m := west.ok(200, "GET", "/v1/inventory/esc-a", "")
	checkKeys(t, "escrow item away from its home", m, sorted("sku", "home", "stock", "reserved", "available", "granted", "rights"))
	n := west.ok(200, "GET", "/v1/inventory/us-plain", "")
	checkKeys(t, "item of a sku that is not escrow", n, itemKeys)
}
