package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/latticedb/lattice/api/console"
	"github.com/latticedb/lattice/cmd/server"
	"github.com/latticedb/lattice/region/config"
)

// TestConsoleShowsEveryNodeOfAPartitionedRegion: the console shows each
// region's write rate, local writes and store health. In a dev cluster of
// two partitions and two nodes a region, us-east takes writes to carts of
// both partitions; the snapshot's view of us-east must cover both
// partitions (their writes, stores and links), not only those of the
// node the console asks, which owns one of them.
func TestConsoleShowsEveryNodeOfAPartitionedRegion(t *testing.T) {
	if testing.Short() {
		t.Skip("starts six nodes; skipped under -short")
	}
	const partitions = 2
	cfg, _, cerr := devConfig(t.TempDir(), "none", 0, freeRunN(t, "tcp", 6), freeRunN(t, "udp", 6),
		devLayout{partitions: partitions, nodes: 2})
	if cerr != nil {
		t.Fatal(cerr)
	}
	servers, _, err := startDevCluster(context.Background(), cfg, server.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, s := range servers {
			s.Close()
		}
	})
	us := newAPI(servers[0].URL()) // us-east/n0, which owns partition 0
	written := map[int]int{}
	for i := 0; written[0] < 2 || written[1] < 3; i++ {
		id := fmt.Sprintf("cart-%d", i)
		p := config.PartitionOf(id, partitions)
		if written[p] >= map[int]int{0: 2, 1: 3}[p] {
			continue
		}
		if st, _, b, err := us.call("POST", "/v1/carts/"+id+"/items", `{"sku":"book","qty":1}`); err != nil || st != 200 {
			t.Fatalf("add to %s: %d %s %v", id, st, b, err)
		}
		written[p]++
	}

	type part struct {
		Partition     int               `json:"partition"`
		Replica       string            `json:"replica"`
		VersionVector map[string]uint64 `json:"version_vector"`
	}
	var seen map[int]uint64
	covered := func() bool {
		st, _, b, err := us.call("GET", "/console/api/snapshot", "")
		if err != nil || st != 200 {
			return false
		}
		var snap console.Snapshot
		if json.Unmarshal(b, &snap) != nil {
			return false
		}
		seen = map[int]uint64{}
		for _, v := range snap.Regions {
			if v.Name != "us-east" || v.Local == nil {
				continue
			}
			var cl struct {
				Partitions []part `json:"partitions"`
			}
			if json.Unmarshal(v.Local.Cluster.Body, &cl) != nil {
				return false
			}
			for _, p := range cl.Partitions {
				seen[p.Partition] = p.VersionVector[p.Replica]
			}
		}
		return seen[0] >= 2 && seen[1] >= 3
	}
	for deadline := time.Now().Add(10 * time.Second); !covered(); time.Sleep(200 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("us-east's view in the console's snapshot, partition -> its local writes: %v; want partition 0 with 2 writes and partition 1 with 3", seen)
		}
	}
}
