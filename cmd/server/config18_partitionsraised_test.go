package server

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/latticedb/lattice/region/config"
)

// TestConfig18PartitionsRaisedRefusedOnNodeWithoutItsOldPartitions:
// docs/configuration.md (partitions) promises that "a region refuses to
// start on a data directory written with another count … so a count
// raised or lowered … is refused by name", and that partitions is fixed
// when the cluster is created.
//
// A region of two nodes (n0 owns partition 0, n1 partition 1, each on its
// own volume as on Kubernetes) has partitions raised from 2 to 4 with the
// nodes rebalanced the way `lattice dev --nodes` lays them out (n0 0-1, n1
// 2-3). Node n1 owns none of the partitions its volume holds (p0001), so
// it never opens a store that records the old count: it starts on new,
// empty stores p0002 and p0003 (written with partitions 4), answers a cart
// written before as empty, and, once the config is put back, refuses to
// start on the stores it created.
func TestConfig18PartitionsRaisedRefusedOnNodeWithoutItsOldPartitions(t *testing.T) {
	dir := t.TempDir()
	mk := func(p int, n0, n1 config.PartitionSet) *config.Config {
		return config18Region(dir, "n1-volume", p, n0, n1) // n1's own volume
	}
	before := mk(2, config.PartitionSet{"0"}, config.PartitionSet{"1"})
	after := mk(4, config.PartitionSet{"0-1"}, config.PartitionSet{"2-3"})
	for _, c := range []*config.Config{before, after} {
		if err := c.Validate(); err != nil {
			t.Fatal(err)
		}
	}

	// A cart in partition 1 of 2, and in partition 3 of 4 (n1's in both).
	cart := ""
	for i := 0; cart == ""; i++ {
		if id := fmt.Sprintf("cart-%d", i); config.PartitionOf(id, 4) == 3 {
			cart = id
		}
	}

	r := startRegion(t, before, "us-east", Options{Node: "n1"})
	checkCart(t, r.ok(200, "POST", "/v1/carts/"+cart+"/items", `{"sku":"us-a","qty":2}`), cart, "us-a", 2)
	if err := r.srv.Close(); err != nil {
		t.Fatal(err)
	}

	// The config with partitions raised to 4: n1 must refuse its volume.
	srv, err := tryStart(t, after, "n1")
	if err == nil {
		res := newClient(t, srv.URL()).do("GET", "/v1/carts/"+cart, "")
		srv.Close()
		t.Errorf("node n1 started with partitions: 4 on a volume written with partitions: 2; GET of a cart written before answers %v", res)
	} else {
		t.Logf("refused: %v", err)
	}

	// Put back: the node must start on its data again.
	srv, err = tryStart(t, before, "n1")
	if err != nil {
		t.Fatalf("node n1 refuses the config its data was written with, after the refused change: %v", err)
	}
	defer srv.Close()
	checkCart(t, newClient(t, srv.URL()).ok(200, "GET", "/v1/carts/"+cart, ""), cart, "us-a", 2)
}

func tryStart(t *testing.T, cfg *config.Config, node string) (*Server, error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return Start(ctx, cfg, "us-east", Options{Listener: ln, Logger: testLogger(t), Node: node})
}

// TestConfig18PartitionsRaisedRefusedBeforeAnyStoreIsCreated: the same
// change (partitions 2 → 4, n0 going from partition 1 to partitions 0-1
// on its own volume) is refused, but only once n0 has created and written
// a new store for partition 0 under the refused count: the refusal of the
// store of partition 1 comes after. A refused config must write nothing
// (docs/configuration.md: a count raised or lowered is refused); the
// store left behind records partitions 4, and is refused by name once
// partition 0 is later moved to n0 under the cluster's real count.
func TestConfig18PartitionsRaisedRefusedBeforeAnyStoreIsCreated(t *testing.T) {
	dir := t.TempDir()
	mk := func(p int, n0, n1 config.PartitionSet) *config.Config {
		return config18Region(dir, "n0-volume", p, n0, n1) // n0's own volume
	}
	before := mk(2, config.PartitionSet{"1"}, config.PartitionSet{"0"})
	after := mk(4, config.PartitionSet{"0-1"}, config.PartitionSet{"2-3"})

	srv, err := tryStart(t, before, "n0")
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	p0 := filepath.Join(before.RegionDir("us-east"), PartitionDir(0), DataFile)
	if _, err := os.Stat(p0); err == nil {
		t.Fatalf("%s exists before the change", p0)
	}

	srv, err = tryStart(t, after, "n0")
	if err == nil {
		srv.Close()
		t.Fatal("node n0 started with partitions: 4 on a volume written with partitions: 2")
	}
	t.Logf("refused: %v", err)
	if _, err := os.Stat(p0); err == nil {
		t.Errorf("the refused start created %s (a store of partition 0 under partitions: 4) before it refused the store of partition 1", p0)
	}
}

// config18Region is a cluster of one region, us-east, on nodes n0 and n1
// owning the partitions n0 and n1 of p, its data in dir/volume (one
// node's own volume).
func config18Region(dir, volume string, p int, n0, n1 config.PartitionSet) *config.Config {
	return &config.Config{
		Cluster:    "test",
		DataDir:    filepath.Join(dir, volume),
		TLSDir:     filepath.Join(dir, "certs"),
		Durability: config.DurabilityAlways,
		Partitions: p,
		Regions: []config.RegionConfig{{Name: "us-east", Nodes: []config.NodeConfig{
			{Name: "n0", API: "127.0.0.1:7101", Peer: "127.0.0.1:7201", Partitions: n0},
			{Name: "n1", API: "127.0.0.1:7102", Peer: "127.0.0.1:7202", Partitions: n1},
		}}},
	}
}
