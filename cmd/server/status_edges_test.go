package server

import (
	"encoding/json"
	"path/filepath"
	"testing"

	"github.com/latticedb/lattice/region"
	"github.com/latticedb/lattice/region/config"
	"github.com/latticedb/lattice/region/regiontest"
	"github.com/latticedb/lattice/sync/certs"
	"github.com/latticedb/lattice/sync/replication"
)

// clusterBody is the part of GET /v1/cluster the tests read.
type clusterBody struct {
	Peers []region.PeerStatus `json:"peers"`
}

func clusterOf(t *testing.T, r *testRegion) clusterBody {
	t.Helper()
	res := r.do("GET", "/v1/cluster", "")
	if res.status != 200 {
		t.Fatalf("%v", res)
	}
	var b clusterBody
	if err := json.Unmarshal(res.body, &b); err != nil {
		t.Fatal(err)
	}
	return b
}

// TestClusterListsPeersFromStart: GET /v1/cluster of a region of a
// two-region cluster lists its one peer from the moment the region serves
// (not connected yet), never an empty peers list, which means a
// single-region cluster.
func TestClusterListsPeersFromStart(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(dir, config.DurabilityAlways)
	lns, peers := regiontest.Loopback(t, len(cfg.Regions))
	for i := range cfg.Regions {
		cfg.Regions[i].API, cfg.Regions[i].Peer = lns[i].Addr().String(), peers[i]
	}
	if err := certs.Generate(filepath.Join(dir, "certs"), cfg.Cluster, cfg.RegionNames()); err != nil {
		t.Fatal(err)
	}
	var atStart []region.PeerStatus
	attach := QUIC(replication.AttachOptions{Started: func(q *replication.QUICReplication) {
		// Replication runs; the API serves right after this returns.
		atStart = q.Peers()
	}})
	east := startRegion(t, cfg, "us-east", Options{Listener: lns[0], Replication: attach})
	if len(atStart) != 1 || atStart[0].Region != "eu-west" {
		t.Fatalf("peers of us-east as it starts to serve: %+v, want eu-west listed", atStart)
	}
	c := clusterOf(t, east)
	if len(c.Peers) != 1 {
		t.Fatalf("GET /v1/cluster of us-east: peers %+v, want eu-west listed", c.Peers)
	}
}
