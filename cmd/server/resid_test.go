package server

import (
	"context"
	"net"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/latticedb/lattice/region"
	"github.com/latticedb/lattice/region/config"
	"github.com/latticedb/lattice/sync/certs"
)

// countingReplication stands in for the replication layer and counts the
// home requests the region forwards; each fails with home_unavailable.
type countingReplication struct{ forwarded atomic.Int64 }

func (f *countingReplication) Publish(region.Delta) {}

func (f *countingReplication) Forward(_ context.Context, home string, _ *region.HomeRequest) (*region.HomeResponse, error) {
	f.forwarded.Add(1)
	return nil, &region.Error{Code: region.CodeHomeUnavailable, Detail: "fake: " + home + " is away", RetryAfter: 1}
}

func (f *countingReplication) Peers() []region.PeerStatus { return nil }
func (f *countingReplication) Start(_ context.Context, n *region.Node) error {
	syncedWithEveryPeer(n)
	return nil
}
func (f *countingReplication) Close() error { return nil }

// expectNotFound checks that r is 404 not_found with no Retry-After: an
// answer no client retries.
func expectNotFound(t *testing.T, r response) {
	t.Helper()
	expectProblem(t, r, 404, "not_found", "")
	if ra := r.header.Get("Retry-After"); ra != "" {
		t.Errorf("%v: Retry-After %q on a not_found", r, ra)
	}
}

// TestUnnamableReservationIDs reads, commits and releases reservation ids
// that cannot name a reservation: malformed, homed at a region the
// cluster does not have, or numbered above what this region has issued.
// Each is 404 not_found without a Retry-After, and none is forwarded.
func TestUnnamableReservationIDs(t *testing.T) {
	cfg := testConfig(t.TempDir(), config.DurabilityAlways)
	if err := certs.Generate(cfg.TLSDir, cfg.Cluster, cfg.RegionNames()); err != nil {
		t.Fatal(err)
	}
	fake := &countingReplication{}
	r := startRegion(t, cfg, "us-east", Options{Replication: func(ReplicationEnv) (Replication, error) { return fake, nil }})
	r.ok(200, "POST", "/v1/inventory/us-rid/restock", `{"qty":10}`)
	held := r.ok(201, "POST", "/v1/reservations", `{"sku":"us-rid","qty":1}`)
	// A new store's numbers start past every earlier incarnation's.
	first, _ := held["reservation_id"].(string)
	n, err := strconv.ParseUint(strings.TrimPrefix(first, "us-east:"), 36, 64)
	if err != nil || !strings.HasPrefix(first, "us-east:") {
		t.Fatalf("first reservation of a new region is %v", held["reservation_id"])
	}
	second := "us-east:" + strconv.FormatUint(n+1, 36)

	for _, tc := range []struct{ name, id string }{
		{"unknown region", "nohome:1"},
		{"unknown region, larger number", "nohome:zz"},
		{"region name in another case", "EU-WEST:1"},
		{"region name with a trailing colon", "eu-west::1"},
		{"no colon", "no-home-in-this-id"},
		{"empty home", ":1"},
		{"empty number", "eu-west:"},
		{"number with a leading zero", "eu-west:01"},
		{"number zero", "eu-west:0"},
		{"number in upper case", "eu-west:A"},
		{"number with a sign", "eu-west:-1"},
		{"number not base 36", "eu-west:1.5"},
		{"number beyond 64 bits", "eu-west:3w5e11264sgsh"},
		{"number far beyond 64 bits", "eu-west:zzzzzzzzzzzzzzzzzzzz"},
		{"home's number with a leading zero", "us-east:01"},
		{"home's number never issued", second},
		{"home's larger number never issued", "us-east:zzzz"},
		{"home's largest number never issued", "us-east:3w5e11264sgsg"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, req := range []request{
				{method: "GET", path: "/v1/reservations/" + tc.id},
				{method: "POST", path: "/v1/reservations/" + tc.id + "/commit"},
				{method: "POST", path: "/v1/reservations/" + tc.id + "/release"},
				{method: "POST", path: "/v1/reservations/" + tc.id + "/commit", header: map[string]string{"Idempotency-Key": "rid-" + tc.name}},
			} {
				expectNotFound(t, r.send(req))
			}
		})
	}
	if n := fake.forwarded.Load(); n != 0 {
		t.Errorf("%d requests for unnamable ids were forwarded, want none", n)
	}

	// What can name a reservation still reaches its home: the one held
	// here, and one homed at eu-west (forwarded, and away).
	r.ok(200, "GET", "/v1/reservations/"+first, "")
	expectProblem(t, r.do("GET", "/v1/reservations/eu-west:1", ""), 503, "home_unavailable", "")
	if n := fake.forwarded.Load(); n != 1 {
		t.Errorf("%d requests forwarded, want the one for eu-west:1", n)
	}
	// The keyed commit of the second number above left nothing behind:
	// once the number is issued, the same request commits it.
	if id := r.ok(201, "POST", "/v1/reservations", `{"sku":"us-rid","qty":1}`)["reservation_id"]; id != second {
		t.Fatalf("second reservation is %v, want %s", id, second)
	}
	c := r.ok(200, "POST", "/v1/reservations/"+second+"/commit", "", "Idempotency-Key", "rid-home's number never issued")
	if c["state"] != "committed" {
		t.Errorf("commit of %s once issued: %v", second, c)
	}
}

// TestNeverIssuedAcrossRestart checks the "never issued" answer against a
// region that restarts: what it issued before is still found, numbers it
// skipped or has not reached are not_found, and what it issues after is
// found.
func TestNeverIssuedAcrossRestart(t *testing.T) {
	cfg := testConfig(t.TempDir(), config.DurabilityAlways)
	start := func(addr string) *testRegion {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		return startRegion(t, cfg, "us-east", Options{Listener: ln})
	}
	r := start("127.0.0.1:0")
	addr := r.srv.Addr().String()
	r.ok(200, "POST", "/v1/inventory/us-rs/restock", `{"qty":10}`)
	var before []string
	for range 3 {
		before = append(before, r.ok(201, "POST", "/v1/reservations", `{"sku":"us-rs","qty":1}`)["reservation_id"].(string))
	}
	expectNotFound(t, r.do("GET", "/v1/reservations/us-east:4", ""))
	if err := r.srv.Close(); err != nil {
		t.Fatal(err)
	}

	r = start(addr)
	for _, id := range before {
		r.ok(200, "GET", "/v1/reservations/"+id, "")
	}
	after := r.ok(201, "POST", "/v1/reservations", `{"sku":"us-rs","qty":1}`)["reservation_id"].(string)
	if after == before[len(before)-1] || after == "us-east:4" {
		t.Fatalf("reservation after the restart is %s, want a number past the ones reserved before it", after)
	}
	r.ok(200, "GET", "/v1/reservations/"+after, "")
	r.ok(200, "POST", "/v1/reservations/"+before[0]+"/commit", "")
	r.ok(200, "POST", "/v1/reservations/"+after+"/release", "")
	_, seq, _ := strings.Cut(after, ":")
	n, err := strconv.ParseUint(seq, 36, 64)
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"us-east:4", "us-east:" + strconv.FormatUint(n-1, 36), "us-east:" + strconv.FormatUint(n+1, 36), "us-east:zzzzz"} {
		expectNotFound(t, r.do("GET", "/v1/reservations/"+id, ""))
		expectNotFound(t, r.do("POST", "/v1/reservations/"+id+"/commit", ""))
		expectNotFound(t, r.do("POST", "/v1/reservations/"+id+"/release", "", "Idempotency-Key", "restart-"+id))
	}
}
