package server

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/latticedb/lattice/region"
	"github.com/latticedb/lattice/region/config"
	"github.com/latticedb/lattice/region/regiontest"
	"github.com/latticedb/lattice/sync/certs"
	"github.com/latticedb/lattice/sync/replication"
)

// startGateNode starts region name of cfg as a partitioned node over QUIC
// on a fresh API listener; the caller closes it.
func startGateNode(t *testing.T, cfg *config.Config, name string, hook func(string)) (*Server, *client) {
	return startGateNodeOf(t, cfg, name, "", hook)
}

// startGateNodeOf is startGateNode for node node of the region.
func startGateNodeOf(t *testing.T, cfg *config.Config, name, node string, hook func(string)) (*Server, *client) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	srv, err := Start(ctx, cfg, name, Options{Listener: ln, Logger: testLogger(t),
		PartitionedReplication: QUICPartitioned(replication.AttachOptions{}), openHook: hook, Node: node})
	if err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	return srv, newClient(t, srv.URL())
}

// gateSku returns a sku homed at us-east in partition part of 2.
func gateSku(part int) string {
	for i := 0; ; i++ {
		if s := fmt.Sprintf("us-gate%d", i); config.PartitionOf(s, 2) == part {
			return s
		}
	}
}

// TestPartitionStartGateCountsFromReplicationStart: docs/operations.md
// ("After any start"): a region's homes wait until every peer has taken
// or turned down a first connection, at most 3 s, so that "a region
// removed from its peers' configs and started again on its store must hear
// their refusal before it decides anything".
//
// us-east runs partitioned (2 partitions, one node) beside eu-west; a
// round records that eu-west runs its homes. Then eu-west is restarted on
// a config without us-east (us-east removed), and us-east is started again
// on its store and old config. Opening partition 1's store takes longer
// than the gate (3.5 s, as a large store does; the test holds it in the
// open hook), and the link to eu-west has 400 ms one-way latency, so
// eu-west's refusal arrives ~0.8 s after replication starts.
//
// Expected: a reservation of a sku of partition 0 made as soon as the API
// serves waits for eu-west's answer and is refused (503 unavailable), as
// one of partition 1 is. Partition 0's gate is armed when its node is
// made, before the other partitions' stores open and before any dial, so
// it has run out by the time replication starts and partition 0 decides
// at once on the stored record: the removed region sells.
func TestPartitionStartGateCountsFromReplicationStart(t *testing.T) {
	dir := t.TempDir()
	lns, peers := regiontest.Loopback(t, 2)
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
			{Name: "us-east", API: lns[0].Addr().String(), Peer: peers[0]},
			{Name: "eu-west", API: lns[1].Addr().String(), Peer: peers[1]},
		},
		Homes: []config.HomeRule{
			{Prefix: "us-", Region: "us-east"},
			{Prefix: "eu-", Region: "eu-west"},
		},
	}
	if err := certs.Generate(cfg.TLSDir, cfg.Cluster, cfg.RegionNames()); err != nil {
		t.Fatal(err)
	}
	s0, s1 := gateSku(0), gateSku(1)

	// The cluster runs; both partitions of us-east see eu-west run their
	// homes (a reservation is granted in each).
	east, ce := startGateNode(t, cfg, "us-east", nil)
	west, _ := startGateNode(t, cfg, "eu-west", nil)
	for _, s := range []string{s0, s1} {
		ce.ok(200, "POST", "/v1/inventory/"+s+"/restock", `{"qty":10}`)
		waitFor(t, 30*time.Second, "a reservation of "+s+" to be granted", func() bool {
			return ce.do("POST", "/v1/reservations", `{"sku":"`+s+`","qty":1}`).status == http.StatusCreated
		})
	}
	if err := east.Close(); err != nil {
		t.Fatal(err)
	}
	if err := west.Close(); err != nil {
		t.Fatal(err)
	}

	// eu-west removes us-east from its config.
	cfgW := *cfg
	cfgW.Regions = cfg.Regions[1:]
	cfgW.Homes = cfg.Homes[1:]
	west, _ = startGateNode(t, &cfgW, "eu-west", nil)
	defer west.Close()

	// us-east starts again on its store and its old config (with latency
	// on the link), its partition 1 store slow to open.
	cfgE := *cfg
	cfgE.Emulate = config.Emulate{LatencyMS: map[string]int{"us-east/eu-west": 400}}
	var stores atomic.Int32
	hook := func(stage string) {
		if stage == "store" && stores.Add(1) == 2 {
			time.Sleep(region.DefaultStartGate + 500*time.Millisecond)
		}
	}
	east, ce = startGateNode(t, &cfgE, "us-east", hook)
	defer east.Close()
	served := time.Now()
	r0 := ce.do("POST", "/v1/reservations", `{"sku":"`+s0+`","qty":1}`)
	took0 := time.Since(served)
	r1 := ce.do("POST", "/v1/reservations", `{"sku":"`+s1+`","qty":1}`)
	if r1.status != http.StatusServiceUnavailable {
		t.Fatalf("control: partition 1 (its store opened last): %v, want 503 unavailable once eu-west turned us-east down", r1)
	}
	// eu-west's refusal has arrived by now: partition 0 refuses too.
	if r := ce.do("POST", "/v1/reservations", `{"sku":"`+s0+`","qty":1}`); r.status != http.StatusServiceUnavailable {
		t.Fatalf("partition 0 after eu-west's refusal: %v, want 503", r)
	}
	if r0.status != http.StatusServiceUnavailable {
		t.Fatalf("a region its only peer turns down (config without it), started again on its store: partition 0 answered "+
			"%v %.0f ms after the API served, before eu-west's refusal arrived; want 503 unavailable (its homes wait for every "+
			"peer to take or turn down a first connection, up to 3 s from the start of replication; partition 0's gate ran out "+
			"while partition 1's store opened, before any dial)", r0, float64(took0.Microseconds())/1000)
	}
}

// TestRefusalByOneNodeClosesEveryPartition: docs/operations.md ("After any
// start"; "Removing a region"): a region removed from its peers' configs
// and started again on its store hears their refusal, which stops its
// homes; only a region that cannot reach its peers decides as they last
// agreed. The refusal is the peer region's (its config no longer names
// this region; the TLS handshake checks the region's certificate).
//
// eu-west runs on two nodes, n1 owning partition 0 and n2 partition 1;
// us-east on one node owning both. After a round in each partition, every
// region stops; n1 starts on a config without us-east (us-east removed),
// n2 stays down for now (a rolling restart), and us-east starts again on
// its store and old config. n1 turns us-east down.
//
// Expected: no reservation at us-east is granted, in either partition:
// eu-west has turned it down. Partition 1 hears only n2 (the mux passes a
// refusal only to the partitions the refusing node owns), so once its 3 s
// gate runs out it decides on the stored record as if eu-west were
// unreachable, and grants.
func TestRefusalByOneNodeClosesEveryPartition(t *testing.T) {
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
			{Name: "us-east", API: lns[0].Addr().String(), Peer: peers[0]},
			{Name: "eu-west", Nodes: []config.NodeConfig{
				{Name: "n1", API: lns[1].Addr().String(), Peer: peers[1], Partitions: config.PartitionSet{"0"}},
				{Name: "n2", API: lns[2].Addr().String(), Peer: peers[2], Partitions: config.PartitionSet{"1"}},
			}},
		},
		Homes: []config.HomeRule{
			{Prefix: "us-", Region: "us-east"},
			{Prefix: "eu-", Region: "eu-west"},
		},
	}
	if err := certs.Generate(cfg.TLSDir, cfg.Cluster, cfg.RegionNames()); err != nil {
		t.Fatal(err)
	}
	s0, s1 := gateSku(0), gateSku(1)

	east, ce := startGateNode(t, cfg, "us-east", nil)
	w1, _ := startGateNodeOf(t, cfg, "eu-west", "n1", nil)
	w2, _ := startGateNodeOf(t, cfg, "eu-west", "n2", nil)
	for _, s := range []string{s0, s1} {
		ce.ok(200, "POST", "/v1/inventory/"+s+"/restock", `{"qty":10}`)
		waitFor(t, 30*time.Second, "a reservation of "+s+" to be granted", func() bool {
			return ce.do("POST", "/v1/reservations", `{"sku":"`+s+`","qty":1}`).status == http.StatusCreated
		})
	}
	for _, s := range []*Server{east, w1, w2} {
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}

	cfgW := *cfg
	cfgW.Regions = cfg.Regions[1:]
	cfgW.Homes = cfg.Homes[1:]
	w1, _ = startGateNodeOf(t, &cfgW, "eu-west", "n1", nil)
	defer w1.Close()
	east, ce = startGateNode(t, cfg, "us-east", nil)
	defer east.Close()
	started := time.Now()

	// Partition 0 hears n1's refusal.
	r0 := ce.do("POST", "/v1/reservations", `{"sku":"`+s0+`","qty":1}`)
	if r0.status != http.StatusServiceUnavailable {
		t.Fatalf("control: partition 0, whose eu-west node turns us-east down: %v, want 503", r0)
	}
	// Partition 1, past its gate.
	for time.Since(started) < region.DefaultStartGate+3*time.Second {
		r1 := ce.do("POST", "/v1/reservations", `{"sku":"`+s1+`","qty":1}`)
		if r1.status == http.StatusCreated {
			t.Fatalf("%.1f s after us-east started, eu-west (node n1, its config without us-east) having turned it down "+
				"(partition 0: %d), partition 1 granted %v; want 503 unavailable: the peer region refused this region",
				time.Since(started).Seconds(), r0.status, r1)
		}
	}
}
