package server

import (
	"net"
	"regexp"
	"strings"
	"testing"

	"github.com/latticedb/lattice/region/config"
)

// d8TwoNodes runs us-east of testConfig on two nodes over plain HTTP in a
// cluster of 2 partitions: n1 owns partition 0, n2 partition 1.
func d8TwoNodes(t *testing.T) (n1, n2 *testRegion) {
	t.Helper()
	cfg := testConfig(t.TempDir(), config.DurabilityAlways)
	cfg.Partitions = 2
	ln1, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln2, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Regions[0] = config.RegionConfig{Name: "us-east", Nodes: []config.NodeConfig{
		{Name: "n1", API: ln1.Addr().String(), Peer: "127.0.0.1:7201", Partitions: config.PartitionSet{"0"}},
		{Name: "n2", API: ln2.Addr().String(), Peer: "127.0.0.1:7203", Partitions: config.PartitionSet{"1"}},
	}}
	n1 = startRegion(t, cfg, "us-east", Options{Listener: ln1, Node: "n1"})
	n2 = startRegion(t, cfg, "us-east", Options{Listener: ln2, Node: "n2"})
	return n1, n2
}

// d8KeyOf returns a key with prefix in partition p of 2.
func d8KeyOf(t *testing.T, prefix string, p int) string {
	t.Helper()
	for i := 0; i < 1000; i++ {
		k := prefix + strings.Repeat("x", i%7) + string(rune('a'+i%26)) + string(rune('a'+i/26%26))
		if config.PartitionOf(k, 2) == p {
			return k
		}
	}
	t.Fatalf("no key of partition %d", p)
	return ""
}

// TestDocsPartitionedNodes checks the Partitioned regions sections of
// docs/api.md on two nodes of one region.
func TestDocsPartitionedNodes(t *testing.T) {
	n1, n2 := d8TwoNodes(t)
	sku1 := d8KeyOf(t, "us-s", 1)  // owned by n2
	cart1 := d8KeyOf(t, "us-c", 1) // owned by n2
	cart0 := d8KeyOf(t, "us-c", 0) // owned by n1

	// Any node answers; an answer of the other node names its partition.
	res := n1.do("POST", "/v1/inventory/"+sku1+"/restock", `{"qty":5}`)
	expectOK(t, res, 200)
	if got := res.header.Get("Lattice-Partition"); got != "1" {
		t.Errorf("restock of a sku of partition 1 at n1: Lattice-Partition %q, want 1", got)
	}
	res = n1.do("POST", "/v1/carts/"+cart0+"/items", `{"sku":"`+sku1+`","qty":1}`)
	expectOK(t, res, 200)
	if got := res.header.Get("Lattice-Partition"); got != "" {
		t.Errorf("a request n1 served itself carries Lattice-Partition %q", got)
	}
	if tok := res.header.Get("Lattice-Token"); !strings.HasPrefix(tok, "p.") {
		t.Errorf("token of a partitioned cluster %q, want p. prefix", tok)
	}
	// An unpartitioned token is invalid_token here.
	expectProblem(t, n1.do("GET", "/v1/carts/"+cart0, "", "Lattice-Token", aheadToken()), 400, "invalid_token", "")

	// Reservation ids are HOME:PARTITION:SEQ.
	res = n1.do("POST", "/v1/reservations", `{"sku":"`+sku1+`","qty":2}`)
	rv := expectOK(t, res, 201)
	id, _ := rv["reservation_id"].(string)
	if !regexp.MustCompile(`^us-east:1:[1-9a-z][0-9a-z]*$`).MatchString(id) {
		t.Errorf("reservation id %q, want us-east:1:N", id)
	}
	if loc := res.header.Get("Location"); loc != "/v1/reservations/"+id {
		t.Errorf("Location %q, want /v1/reservations/%s", loc, id)
	}
	if m := n2.ok(200, "GET", "/v1/reservations/"+id, ""); m["state"] != "held" {
		t.Errorf("reservation at n2: %v", m)
	}
	n2.ok(200, "PUT", "/v1/carts/"+cart1+"/items/"+sku1, `{"qty":2}`)

	// GET /v1/cluster on a node.
	c := n1.ok(200, "GET", "/v1/cluster", "")
	if c["node"] != "n1" || c["partition_count"] != 2.0 || c["region"] != "us-east" {
		t.Errorf("cluster of n1: node %v, partition_count %v, region %v", c["node"], c["partition_count"], c["region"])
	}
	if vv, ok := c["version_vector"].(map[string]any); !ok || len(vv) != 0 {
		t.Errorf("top-level version_vector of a node %v, want empty", c["version_vector"])
	}
	parts, _ := c["partitions"].([]any)
	if len(parts) != 1 {
		t.Fatalf("partitions of n1: %v", c["partitions"])
	}
	p0 := parts[0].(map[string]any)
	if p0["partition"] != 0.0 {
		t.Errorf("n1's partition %v, want 0", p0["partition"])
	}
	for _, k := range []string{"region", "replica", "catching_up", "divergent_keys", "version_vector", "store", "peers"} {
		if _, ok := p0[k]; !ok {
			t.Errorf("n1's partition lacks %s: %v", k, keysOf(p0))
		}
	}

	// OPTIONS and 405 are answered by the node asked.
	res = n1.do("OPTIONS", "/v1/carts/"+cart1, "")
	if res.status != 204 || res.header.Get("Allow") == "" || res.header.Get("Lattice-Partition") != "" {
		t.Errorf("OPTIONS of n2's cart at n1: %v (Allow %q)", res, res.header.Get("Allow"))
	}

	// The owner stops: its partitions are partition_unavailable at n1,
	// the others still serve.
	if err := n2.srv.Close(); err != nil {
		t.Fatal(err)
	}
	expectProblem(t, n1.do("GET", "/v1/carts/"+cart1, ""), 503, "partition_unavailable", "")
	expectProblem(t, n1.do("POST", "/v1/reservations", `{"sku":"`+sku1+`","qty":1}`), 503, "partition_unavailable", "")
	n1.ok(200, "GET", "/v1/carts/"+cart0, "")
}
