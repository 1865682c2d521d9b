package server

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/latticedb/lattice/region"
	"github.com/latticedb/lattice/region/config"
	"github.com/latticedb/lattice/sync/certs"
)

// TestIdempotentReplays retries reservations, commits and checkouts with
// their Idempotency-Key through HTTP: the same key and body return the
// original answer byte for byte and change nothing; another body is
// idempotency_mismatch.
func TestIdempotentReplays(t *testing.T) {
	r := startRegion(t, testConfig(t.TempDir(), config.DurabilityAlways), "us-east", Options{})
	r.ok(200, "POST", "/v1/inventory/us-idem/restock", `{"qty":100}`)

	t.Run("reservation", func(t *testing.T) {
		first := r.do("POST", "/v1/reservations", `{"sku":"us-idem","qty":3,"ttl_ms":600000}`, "Idempotency-Key", "res-1")
		expectOK(t, first, 201)
		for _, body := range []string{
			`{"sku":"us-idem","qty":3,"ttl_ms":600000}`,
			"{ \"ttl_ms\": 600000,\n \"qty\": 3, \"sku\": \"us-idem\" }", // same request, written differently
			`{"sku":"us-idem","qty":3}`,                                  // the default ttl is 10 min
		} {
			again := r.do("POST", "/v1/reservations", body, "Idempotency-Key", "res-1")
			expectOK(t, again, 201)
			if string(again.body) != string(first.body) {
				t.Errorf("replay of %s answered %s, first answer %s", body, again.body, first.body)
			}
			if again.header.Get("Location") != first.header.Get("Location") {
				t.Errorf("replay Location %q, first %q", again.header.Get("Location"), first.header.Get("Location"))
			}
		}
		checkItem(t, r.ok(200, "GET", "/v1/inventory/us-idem", ""), "us-idem", "us-east", 100, 3)
		expectProblem(t, r.do("POST", "/v1/reservations", `{"sku":"us-idem","qty":4,"ttl_ms":600000}`, "Idempotency-Key", "res-1"), 422, "idempotency_mismatch", "")
		expectProblem(t, r.do("POST", "/v1/reservations", `{"sku":"us-idem","qty":3,"ttl_ms":700000}`, "Idempotency-Key", "res-1"), 422, "idempotency_mismatch", "")
		checkItem(t, r.ok(200, "GET", "/v1/inventory/us-idem", ""), "us-idem", "us-east", 100, 3)

		id := decode(t, first)["reservation_id"].(string)
		commit := r.do("POST", "/v1/reservations/"+id+"/commit", "", "Idempotency-Key", "commit-1")
		expectOK(t, commit, 200)
		again := r.do("POST", "/v1/reservations/"+id+"/commit", "", "Idempotency-Key", "commit-1")
		expectOK(t, again, 200)
		if string(again.body) != string(commit.body) {
			t.Errorf("commit replay %s, first %s", again.body, commit.body)
		}
		checkItem(t, r.ok(200, "GET", "/v1/inventory/us-idem", ""), "us-idem", "us-east", 97, 0)
		// The same key on another route, or another reservation, is
		// another request.
		expectProblem(t, r.do("POST", "/v1/reservations/"+id+"/release", "", "Idempotency-Key", "commit-1"), 422, "idempotency_mismatch", "")
		expectProblem(t, r.do("POST", "/v1/reservations/us-east:zzzz/commit", "", "Idempotency-Key", "commit-1"), 422, "idempotency_mismatch", "")
		// A refusal is an outcome too: its replay is the same refusal.
		// Both carry one X-Request-Id, which each problem repeats.
		short := r.do("POST", "/v1/reservations", `{"sku":"us-idem","qty":1000}`, "Idempotency-Key", "res-2", "X-Request-Id", "res-2")
		expectProblem(t, short, 409, "insufficient_stock", "")
		r.ok(200, "POST", "/v1/inventory/us-idem/restock", `{"qty":1000}`)
		replay := r.do("POST", "/v1/reservations", `{"sku":"us-idem","qty":1000}`, "Idempotency-Key", "res-2", "X-Request-Id", "res-2")
		expectProblem(t, replay, 409, "insufficient_stock", "")
		if string(replay.body) != string(short.body) {
			t.Errorf("replayed refusal %s, first %s", replay.body, short.body)
		}
		checkItem(t, r.ok(200, "GET", "/v1/inventory/us-idem", ""), "us-idem", "us-east", 1097, 0)
	})

	t.Run("checkout", func(t *testing.T) {
		// A checkout with a key is decided at the cart's home region
		// (placed like a sku): us-* carts are homed here.
		r.ok(200, "POST", "/v1/carts/us-ci/items", `{"sku":"us-idem","qty":2}`)
		first := r.do("POST", "/v1/carts/us-ci/checkout", `{"ttl_ms":60000}`, "Idempotency-Key", "order-1")
		expectOK(t, first, 201)
		checkItem(t, r.ok(200, "GET", "/v1/inventory/us-idem", ""), "us-idem", "us-east", 1095, 0)
		// The cart changes after the checkout; the retry still returns the
		// original order and buys nothing more.
		r.ok(200, "POST", "/v1/carts/us-ci/items", `{"sku":"us-idem","qty":5}`)
		again := r.do("POST", "/v1/carts/us-ci/checkout", `{"ttl_ms":60000}`, "Idempotency-Key", "order-1")
		expectOK(t, again, 201)
		if string(again.body) != string(first.body) {
			t.Errorf("checkout replay %s, first %s", again.body, first.body)
		}
		checkItem(t, r.ok(200, "GET", "/v1/inventory/us-idem", ""), "us-idem", "us-east", 1095, 0)
		checkCart(t, r.ok(200, "GET", "/v1/carts/us-ci", ""), "us-ci", "us-idem", 5)
		expectProblem(t, r.do("POST", "/v1/carts/us-ci/checkout", `{"ttl_ms":70000}`, "Idempotency-Key", "order-1"), 422, "idempotency_mismatch", "")
		expectProblem(t, r.do("POST", "/v1/carts/us-other/checkout", `{"ttl_ms":60000}`, "Idempotency-Key", "order-1"), 422, "idempotency_mismatch", "")
		// The replay of a cart_empty is cart_empty even once the cart
		// holds something.
		expectProblem(t, r.do("POST", "/v1/carts/us-ce/checkout", "", "Idempotency-Key", "order-2"), 409, "cart_empty", "")
		r.ok(200, "POST", "/v1/carts/us-ce/items", `{"sku":"us-idem","qty":1}`)
		expectProblem(t, r.do("POST", "/v1/carts/us-ce/checkout", "", "Idempotency-Key", "order-2"), 409, "cart_empty", "")
		checkItem(t, r.ok(200, "GET", "/v1/inventory/us-idem", ""), "us-idem", "us-east", 1095, 0)
	})
}

// fakeReplication stands in for the replication layer: it records what
// the Server hands it and blocks forwarded requests until told.
type fakeReplication struct {
	env       ReplicationEnv
	node      *region.Node
	published atomic.Int64
	closed    atomic.Bool

	forwarding chan string   // receives the op of each forwarded request
	unblock    chan struct{} // closed to let forwarded requests fail
}

func (f *fakeReplication) Publish(region.Delta) { f.published.Add(1) }

func (f *fakeReplication) Forward(ctx context.Context, home string, req *region.HomeRequest) (*region.HomeResponse, error) {
	f.forwarding <- req.Op
	select {
	case <-f.unblock:
	case <-ctx.Done():
	}
	return nil, &region.Error{Code: region.CodeHomeUnavailable, Detail: "fake: " + home + " is away", RetryAfter: 2}
}

func (f *fakeReplication) Peers() []region.PeerStatus {
	return []region.PeerStatus{{Region: "eu-west", Connected: true, PendingDeltas: 7}}
}

func (f *fakeReplication) Start(_ context.Context, n *region.Node) error {
	f.node = n
	syncedWithEveryPeer(n)
	return nil
}

// syncedWithEveryPeer tells n that anti-entropy with each region of the
// test config completed, as a connected replication would soon after
// start (a new store catches up before it decides reservations).
func syncedWithEveryPeer(n *region.Node) {
	n.PeerReached("eu-west")                                  // it took a connection
	n.SyncedWith("eu-west", n.HomesID(), []string{"eu-west"}) // the peer runs the same homes
}

func (f *fakeReplication) Close() error {
	f.closed.Store(true)
	return nil
}

// TestReplicationSeamAndRequestInProgress attaches a stand-in replication
// through Options.Replication, checks what it is given, and holds a
// forwarded checkout line at the "home" so that a retry with the same
// Idempotency-Key meets request_in_progress.
func TestReplicationSeamAndRequestInProgress(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(dir, config.DurabilityAlways)
	if err := certs.Generate(cfg.TLSDir, cfg.Cluster, cfg.RegionNames()); err != nil {
		t.Fatal(err)
	}
	fake := &fakeReplication{forwarding: make(chan string, 16), unblock: make(chan struct{})}
	r := startRegion(t, cfg, "us-east", Options{Replication: func(env ReplicationEnv) (Replication, error) {
		fake.env = env
		return fake, nil
	}})

	env := fake.env
	if env.Region != "us-east" || env.PeerAddr != "127.0.0.1:7201" || env.Config != cfg || env.Logger == nil || env.Registerer == nil {
		t.Errorf("replication env %+v", env)
	}
	if env.TLS == nil || env.TLS.Region != "us-east" {
		t.Fatalf("replication TLS bundle %+v", env.TLS)
	}
	if fake.node != r.srv.Node() {
		t.Errorf("replication started with another node")
	}
	r.ok(200, "POST", "/v1/carts/us-cp/items", `{"sku":"eu-x","qty":1}`)
	if fake.published.Load() == 0 {
		t.Errorf("a durable write was not published")
	}
	peers := r.ok(200, "GET", "/v1/cluster", "")["peers"].([]any)
	if len(peers) != 1 || peers[0].(map[string]any)["pending_deltas"] != 7.0 {
		t.Errorf("cluster peers %v, want the replication's", peers)
	}

	// A checkout whose line is homed at eu-west waits at the forwarder.
	done := make(chan response, 1)
	first := newClient(t, r.srv.URL())
	go func() {
		// Off the test goroutine: a transport error becomes a response
		// with status 0.
		req, _ := newRequest("POST", first.base+"/v1/carts/us-cp/checkout", "", map[string]string{"Idempotency-Key": "slow-1"})
		done <- doRaw(first, req)
	}()
	select {
	case op := <-fake.forwarding:
		if op != region.OpReserve {
			t.Errorf("forwarded %s, want %s", op, region.OpReserve)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the checkout never reached the forwarder")
	}
	expectProblem(t, r.do("POST", "/v1/carts/us-cp/checkout", "", "Idempotency-Key", "slow-1"), 409, "request_in_progress", "")
	close(fake.unblock)
	var res response
	select {
	case res = <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the checkout did not finish once the forwarder answered")
	}
	expectProblem(t, res, 503, "home_unavailable", "")
	if res.header.Get("Retry-After") != "2" {
		t.Errorf("Retry-After %q, want the forwarder's 2", res.header.Get("Retry-After"))
	}
	checkCart(t, r.ok(200, "GET", "/v1/carts/us-cp", ""), "us-cp", "eu-x", 1)

	if err := r.srv.Close(); err != nil {
		t.Fatal(err)
	}
	if !fake.closed.Load() {
		t.Errorf("Close did not close the replication")
	}
}

// TestReservationExpiresEndToEnd reserves with ttl_ms 1000 and waits, on
// the condition and with a deadline, for the hold to expire and its
// units to come back.
func TestReservationExpiresEndToEnd(t *testing.T) {
	r := startRegion(t, testConfig(t.TempDir(), config.DurabilityAlways), "us-east", Options{ExpiryInterval: 50 * time.Millisecond})
	r.ok(200, "POST", "/v1/inventory/us-ttl/restock", `{"qty":10}`)
	m := r.ok(201, "POST", "/v1/reservations", `{"sku":"us-ttl","qty":4,"ttl_ms":1000}`)
	id := m["reservation_id"].(string)
	exp, err := time.Parse(time.RFC3339Nano, m["expires_at"].(string))
	if err != nil || time.Until(exp) > 1100*time.Millisecond {
		t.Fatalf("expires_at %v (%v), want within a second", m["expires_at"], err)
	}
	checkItem(t, r.ok(200, "GET", "/v1/inventory/us-ttl", ""), "us-ttl", "us-east", 10, 4)

	waitFor(t, 10*time.Second, "the reservation to expire", func() bool {
		return r.ok(200, "GET", "/v1/reservations/"+id, "")["state"] == "expired"
	})
	if time.Now().Before(exp) {
		t.Errorf("expired before its expires_at %v", exp)
	}
	checkItem(t, r.ok(200, "GET", "/v1/inventory/us-ttl", ""), "us-ttl", "us-east", 10, 0)
	// The background expiry writes the transition to the ledger.
	waitFor(t, 10*time.Second, "the background expiry", func() bool {
		return strings.Contains(string(r.do("GET", "/metrics", "").body), `lattice_reservations_expired_total{region="us-east"} 1`)
	})
	expectProblem(t, r.do("POST", "/v1/reservations/"+id+"/commit", ""), 409, "reservation_expired", "")
	if rel := r.ok(200, "POST", "/v1/reservations/"+id+"/release", ""); rel["state"] != "expired" {
		t.Errorf("release of an expired hold: %v", rel)
	}
	// Its units are available again.
	r.ok(201, "POST", "/v1/reservations", `{"sku":"us-ttl","qty":10}`)

	// A checkout's reservations expire the same way if it never commits;
	// a committed one does not.
	r.ok(200, "POST", "/v1/inventory/us-ttl2/restock", `{"qty":1}`)
	r.ok(200, "POST", "/v1/carts/us-ct/items", `{"sku":"us-ttl2","qty":1}`)
	o := r.ok(201, "POST", "/v1/carts/us-ct/checkout", `{"ttl_ms":1000}`)
	lid := o["lines"].([]any)[0].(map[string]any)["reservation_id"].(string)
	waitFor(t, 10*time.Second, "the checkout's ttl to pass", func() bool { return time.Now().After(exp.Add(2 * time.Second)) })
	if st := r.ok(200, "GET", "/v1/reservations/"+lid, "")["state"]; st != "committed" {
		t.Errorf("committed checkout line is %v after its ttl", st)
	}
	checkItem(t, r.ok(200, "GET", "/v1/inventory/us-ttl2", ""), "us-ttl2", "us-east", 0, 0)
}

// TestRestartKeepsState closes a region and starts it again on the same
// files and address: everything acknowledged is there.
func TestRestartKeepsState(t *testing.T) {
	cfg := testConfig(t.TempDir(), config.DurabilityAlways)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	srv, err := Start(context.Background(), cfg, "us-east", Options{Listener: ln, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	c := newClient(t, srv.URL())
	c.ok(200, "POST", "/v1/carts/keep/items", `{"sku":"us-a","qty":2}`)
	c.ok(200, "POST", "/v1/inventory/us-k/restock", `{"qty":9}`)
	res := c.ok(201, "POST", "/v1/reservations", `{"sku":"us-k","qty":4}`, "Idempotency-Key", "keep-1")
	token := c.do("GET", "/v1/carts/keep", "").header.Get("Lattice-Token")
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	if err := srv.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	select {
	case <-srv.Done():
	default:
		t.Error("Done is open after Close")
	}
	if srv.Err() != nil {
		t.Errorf("Err after a clean Close: %v", srv.Err())
	}

	ln, err = net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	srv, err = Start(context.Background(), cfg, "us-east", Options{Listener: ln, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	c = newClient(t, srv.URL())
	checkCart(t, c.ok(200, "GET", "/v1/carts/keep", "", "Lattice-Token", token, "Lattice-Wait", "0"), "keep", "us-a", 2)
	checkItem(t, c.ok(200, "GET", "/v1/inventory/us-k", ""), "us-k", "us-east", 9, 4)
	again := c.ok(201, "POST", "/v1/reservations", `{"sku":"us-k","qty":4}`, "Idempotency-Key", "keep-1")
	if again["reservation_id"] != res["reservation_id"] {
		t.Errorf("idempotent retry after a restart made %v, first %v", again["reservation_id"], res["reservation_id"])
	}
	// Reservation ids are not reused after a restart.
	next := c.ok(201, "POST", "/v1/reservations", `{"sku":"us-k","qty":1}`)
	if next["reservation_id"] == res["reservation_id"] {
		t.Errorf("reservation id %v reused", next["reservation_id"])
	}
}

// TestRegionsInOneProcess runs two regions in one process, as `lattice
// dev` will, first each with its own registry, then sharing one, and
// restarts one of them on the shared registry.
func TestRegionsInOneProcess(t *testing.T) {
	cfg := testConfig(t.TempDir(), config.DurabilityAlways)
	us := startRegion(t, cfg, "us-east", Options{})
	eu := startRegion(t, cfg, "eu-west", Options{})
	us.ok(200, "POST", "/v1/carts/a/items", `{"sku":"us-a","qty":1}`)
	eu.ok(200, "POST", "/v1/carts/a/items", `{"sku":"eu-a","qty":1}`)
	if m := eu.ok(200, "GET", "/v1/carts/a", ""); m["region"] != "eu-west" || m["items"].([]any)[0].(map[string]any)["sku"] != "eu-a" {
		t.Errorf("eu-west cart %v", m)
	}
	// Each region's store is its own file; with no replication they do
	// not see each other.
	checkCart(t, us.ok(200, "GET", "/v1/carts/a", ""), "a", "us-a", 1)
	if body := string(us.do("GET", "/metrics", "").body); strings.Contains(body, `region="eu-west"`) {
		t.Errorf("us-east's registry holds eu-west's metrics")
	}
	if us.srv.Registry() == eu.srv.Registry() {
		t.Errorf("two regions share a registry they were not given")
	}

	shared := prometheus.NewRegistry()
	dir := t.TempDir()
	cfg2 := testConfig(dir, config.DurabilityAlways)
	a := startRegion(t, cfg2, "us-east", Options{Registry: shared})
	b := startRegion(t, cfg2, "eu-west", Options{Registry: shared})
	a.ok(200, "POST", "/v1/carts/x/items", `{"sku":"us-a","qty":1}`)
	b.ok(200, "POST", "/v1/carts/x/items", `{"sku":"us-a","qty":1}`)
	body := string(a.do("GET", "/metrics", "").body)
	for _, want := range []string{`lattice_store_fsync_batch_size_count{region="us-east"}`, `lattice_store_fsync_batch_size_count{region="eu-west"}`} {
		if !strings.Contains(body, want) {
			t.Errorf("shared registry lacks %s", want)
		}
	}
	if err := a.srv.Close(); err != nil {
		t.Fatal(err)
	}
	a2 := startRegion(t, cfg2, "us-east", Options{Registry: shared})
	checkCart(t, a2.ok(200, "GET", "/v1/carts/x", ""), "x", "us-a", 1)
}

// TestStartErrors checks that Start refuses what it cannot run and leaves
// nothing open behind.
func TestStartErrors(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(dir, config.DurabilityAlways)
	if _, err := Start(context.Background(), cfg, "ap-south", Options{Logger: testLogger(t)}); err == nil || !strings.Contains(err.Error(), `"ap-south"`) {
		t.Errorf("unknown region: %v", err)
	}
	early := mustListen(t)
	if _, err := Start(context.Background(), cfg, "ap-south", Options{Listener: early}); err == nil {
		t.Errorf("unknown region started")
	}
	if c, err := net.Dial("tcp", early.Addr().String()); err == nil {
		c.Close()
		t.Errorf("Start refused the config and left the listener it was given open")
	}
	if _, err := Start(context.Background(), cfg, "us-east", Options{Listener: mustListen(t), ExpiryInterval: -time.Second}); err == nil {
		t.Errorf("a negative expiry interval was accepted")
	}
	bad := testConfig(dir, "sometimes")
	if _, err := Start(context.Background(), bad, "us-east", Options{Logger: testLogger(t)}); err == nil || !strings.Contains(err.Error(), "durability") {
		t.Errorf("invalid config: %v", err)
	}
	// Replication without certificates cannot start.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_, err = Start(context.Background(), cfg, "us-east", Options{Listener: ln, Logger: testLogger(t),
		Replication: func(ReplicationEnv) (Replication, error) { return nil, errors.New("unreachable") }})
	if err == nil || !strings.Contains(err.Error(), "certs") {
		t.Errorf("replication without certificates: %v", err)
	}
	// The failed Start closed the store and the listener it was given:
	// the region starts again on the same files.
	if c, err := net.Dial("tcp", ln.Addr().String()); err == nil {
		c.Close()
		t.Errorf("the listener of a failed Start is still open")
	}
	if err := certs.Generate(cfg.TLSDir, cfg.Cluster, []string{"us-east"}); err != nil {
		t.Fatal(err)
	}
	_, err = Start(context.Background(), cfg, "us-east", Options{Logger: testLogger(t),
		Listener:    mustListen(t),
		Replication: func(ReplicationEnv) (Replication, error) { return nil, errors.New("no transport") }})
	if err == nil || !strings.Contains(err.Error(), "no transport") {
		t.Errorf("failing replication: %v", err)
	}
	r := startRegion(t, cfg, "us-east", Options{})
	r.ok(200, "GET", "/v1/carts/x", "")
	// The api address is taken: Start on it fails.
	busy := mustListen(t)
	defer busy.Close()
	cfg3 := testConfig(t.TempDir(), config.DurabilityAlways)
	cfg3.Regions[0].API = busy.Addr().String()
	if _, err := Start(context.Background(), cfg3, "us-east", Options{Logger: testLogger(t)}); err == nil {
		t.Errorf("Start on a busy address succeeded")
	}
}

func mustListen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

// TestCloseLetsRequestsFinish closes a region while a request waits on a
// causal token: the request gets its answer, then the region stops.
func TestCloseLetsRequestsFinish(t *testing.T) {
	cfg := testConfig(t.TempDir(), config.DurabilityAlways)
	ln := mustListen(t)
	srv, err := Start(context.Background(), cfg, "us-east", Options{Listener: ln, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	c := newClient(t, srv.URL())
	got := make(chan response, 1)
	var wg sync.WaitGroup
	wg.Go(func() {
		req, _ := newRequest("GET", c.base+"/v1/carts/w", "", map[string]string{"Lattice-Token": aheadToken(), "Lattice-Wait": "500"})
		got <- doRaw(c, req)
	})
	// Close once the request is being served.
	waitFor(t, 10*time.Second, "the request to arrive", func() bool { return srv.inflight.Load() > 0 })
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	expectProblem(t, <-got, 503, "causal_timeout", "")
}
