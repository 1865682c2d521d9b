package server

import (
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/latticedb/lattice/region/config"
)

// d8Clock is the wall clock moved ahead by what Advance adds.
type d8Clock struct {
	mu     sync.Mutex
	offset time.Duration
}

func (c *d8Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.offset)
}

func (c *d8Clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.offset += d
	c.mu.Unlock()
}

// d8ClockRegion starts us-east of testConfig on clock, expiring holds
// (and sweeping records every 120 rounds) every 5 ms.
func d8ClockRegion(t *testing.T, clock *d8Clock) *testRegion {
	t.Helper()
	return startRegion(t, testConfig(t.TempDir(), config.DurabilityAlways), "us-east",
		Options{Clock: clock, ExpiryInterval: 5 * time.Millisecond})
}

// TestDocsLifetimes checks the lifetimes docs/api.md gives: a held
// reservation past expires_at reads expired at once, and its units are
// free at the home at once; a reservation's record is kept 7 days past
// its expires_at, then answers 404 to a read, a commit and a release; an
// idempotency record is used for 24 hours, then ignored; a checkout's
// status is 404 once its record is over 24 hours old.
func TestDocsLifetimes(t *testing.T) {
	clock := &d8Clock{}
	r := d8ClockRegion(t, clock)
	r.ok(200, "POST", "/v1/inventory/us-a/restock", `{"qty":100}`)

	// Expired at once, by the home's clock.
	held := r.ok(201, "POST", "/v1/reservations", `{"sku":"us-a","qty":3,"ttl_ms":60000}`)
	hid := "/v1/reservations/" + held["reservation_id"].(string)
	committed := r.ok(201, "POST", "/v1/reservations", `{"sku":"us-a","qty":2,"ttl_ms":60000}`, "Idempotency-Key", "keep-1")
	cid := "/v1/reservations/" + committed["reservation_id"].(string)
	r.ok(200, "POST", cid+"/commit", "")
	r.ok(200, "POST", "/v1/carts/us-c1/items", `{"sku":"us-a","qty":1}`)
	order := r.ok(201, "POST", "/v1/carts/us-c1/checkout", "", "Idempotency-Key", "co-1")
	oid := "/v1/reservations/" + order["lines"].([]any)[0].(map[string]any)["reservation_id"].(string)

	clock.Advance(61 * time.Second)
	if m := r.ok(200, "GET", hid, ""); m["state"] != "expired" {
		t.Errorf("reservation 1 s past expires_at: %v, want expired at once", m)
	}
	checkItem(t, r.ok(200, "GET", "/v1/inventory/us-a", ""), "us-a", "us-east", 97, 0)

	// 24 hours less a minute after: the key still answers its
	// reservation; the checkout's status is still there.
	clock.Advance(24*time.Hour - 2*time.Minute)
	again := r.ok(201, "POST", "/v1/reservations", `{"sku":"us-a","qty":2,"ttl_ms":60000}`, "Idempotency-Key", "keep-1")
	if again["reservation_id"] != committed["reservation_id"] {
		t.Errorf("replay within 24 h: %v, want %v", again, committed["reservation_id"])
	}
	r.ok(200, "GET", "/v1/carts/us-c1/checkout", "", "Idempotency-Key", "co-1")

	// Past 24 hours: the key is forgotten, the status is gone.
	clock.Advance(2 * time.Minute)
	fresh := r.ok(201, "POST", "/v1/reservations", `{"sku":"us-a","qty":5,"ttl_ms":1000}`, "Idempotency-Key", "keep-1")
	if fresh["reservation_id"] == committed["reservation_id"] {
		t.Errorf("the key answered its old record past 24 hours: %v", fresh)
	}
	expectProblem(t, r.do("GET", "/v1/carts/us-c1/checkout", "", "Idempotency-Key", "co-1"), 404, "not_found", "")

	// 7 days past expires_at, less a minute: still there.
	clock.Advance(6*24*time.Hour - 2*time.Minute)
	if m := r.ok(200, "GET", hid, ""); m["state"] != "expired" {
		t.Errorf("reservation within 7 days of its expiry: %v", m)
	}
	// Past 7 days: 404 to a read, a commit and a release, once the
	// sweep (every 120 rounds of 5 ms) has run.
	clock.Advance(3 * time.Minute)
	waitFor(t, 20*time.Second, "the settled reservations' records to go", func() bool {
		return r.do("GET", hid, "").status == 404 && r.do("GET", cid, "").status == 404
	})
	for _, p := range []string{hid, cid} {
		expectProblem(t, r.do("GET", p, ""), 404, "not_found", "")
		expectProblem(t, r.do("POST", p+"/commit", ""), 404, "not_found", "")
		expectProblem(t, r.do("POST", p+"/release", ""), 404, "not_found", "")
	}
	if !strings.HasPrefix(hid, "/v1/reservations/us-east:") {
		t.Errorf("id %s", hid)
	}
	// The reservation a checkout made and committed is kept for good.
	if m := r.ok(200, "GET", oid, ""); m["state"] != "committed" {
		t.Errorf("checkout's reservation after 7 days: %v, want committed", m)
	}
}

// TestDocsReplayOfCommittedReservation: docs/api.md, States: expired
// follows only held ("held → expired"); committed is final. Idempotency:
// "A replay answers the recorded response", and "a reservation replayed
// after its expiry reads expired" — a hold that lapsed. A reservation
// that was committed before its expires_at never expired: the replay of
// the request that made it must not read expired (a client retrying its
// reservation after a lost answer would take its committed units for
// lapsed, and buy them again).
func TestDocsReplayOfCommittedReservation(t *testing.T) {
	clock := &d8Clock{}
	r := d8ClockRegion(t, clock)
	r.ok(200, "POST", "/v1/inventory/us-a/restock", `{"qty":10}`)
	body := `{"sku":"us-a","qty":2,"ttl_ms":60000}`
	first := r.ok(201, "POST", "/v1/reservations", body, "Idempotency-Key", "order-7")
	id := first["reservation_id"].(string)
	r.ok(200, "POST", "/v1/reservations/"+id+"/commit", "")

	clock.Advance(2 * time.Minute) // past expires_at, well within 24 h
	if m := r.ok(200, "GET", "/v1/reservations/"+id, ""); m["state"] != "committed" {
		t.Fatalf("the committed reservation reads %v", m)
	}
	replay := r.ok(201, "POST", "/v1/reservations", body, "Idempotency-Key", "order-7")
	if replay["reservation_id"] != id {
		t.Fatalf("replay answered %v, want %s", replay, id)
	}
	if replay["state"] == "expired" {
		t.Errorf("replay of the request that made committed reservation %s reads state expired (want held, as recorded, or committed, as it is): %v", id, replay)
	}
}
