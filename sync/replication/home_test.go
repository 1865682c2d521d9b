package replication_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/latticedb/lattice/region"
	"github.com/latticedb/lattice/region/config"
)

// Tests of the decisions made at a sku's home region (SPEC §3, §6, §6.1)
// on a three-region cluster over real QUIC: retries through every region,
// an isolated home, checkout across homes, and no oversell while one
// region is cut off and another restarts.

// requestDeadline is the API's default request deadline (SPEC §3).
const requestDeadline = 2 * time.Second

// failFastMargin is what a request that needs an unreachable home may take
// beyond the request deadline (scheduling, the race detector, loopback).
const failFastMargin = time.Second

// reply is one HTTP exchange with a region as a client saw it; err is set
// when no answer came.
type reply struct {
	status int
	hdr    http.Header
	body   []byte
	took   time.Duration
	err    error
}

func (r reply) String() string {
	if r.err != nil {
		return "no answer: " + r.err.Error()
	}
	return fmt.Sprintf("%d %s", r.status, bytes.TrimSpace(r.body))
}

// problem is the part of a problem details body the tests read.
func (r reply) problem() problemJSON {
	var p problemJSON
	_ = json.Unmarshal(r.body, &p)
	return p
}

// is reports whether the answer is status with problem code (code "" for
// a success).
func (r reply) is(status int, code string) bool {
	return r.err == nil && r.status == status && (code == "" || r.problem().Code == code)
}

type problemJSON struct {
	Code      string `json:"code"`
	Available *int64 `json:"available"`
	Lines     []struct {
		SKU       string `json:"sku"`
		Available int64  `json:"available"`
		Home      string `json:"home"`
	} `json:"lines"`
}

type reservationJSON struct {
	ID    string `json:"reservation_id"`
	SKU   string `json:"sku"`
	Qty   int64  `json:"qty"`
	Home  string `json:"home"`
	State string `json:"state"`
}

type itemJSON struct {
	SKU       string `json:"sku"`
	Home      string `json:"home"`
	Stock     int64  `json:"stock"`
	Reserved  int64  `json:"reserved"`
	Available int64  `json:"available"`
}

type orderLineJSON struct {
	SKU           string `json:"sku"`
	Qty           int64  `json:"qty"`
	ReservationID string `json:"reservation_id"`
	Home          string `json:"home"`
}

type orderJSON struct {
	OrderID string          `json:"order_id"`
	CartID  string          `json:"cart_id"`
	Lines   []orderLineJSON `json:"lines"`
}

// clients sends requests to the cluster's regions from any goroutine. It
// keeps its own copy of the regions' URLs (a restarted region listens on a
// new port), updated by the test goroutine with refresh; a region that is
// down has no URL and a request to it fails without being sent.
type clients struct {
	hc  *http.Client
	mu  sync.Mutex
	url map[string]string
}

func newClients(c *cluster) *clients {
	cl := &clients{hc: &http.Client{Timeout: 15 * time.Second,
		Transport: &http.Transport{MaxIdleConnsPerHost: 64}}, url: map[string]string{}}
	cl.refresh(c)
	return cl
}

// refresh copies the URLs of the regions now running. Call it from the
// test goroutine only.
func (cl *clients) refresh(c *cluster) {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	for _, r := range regions {
		cl.url[r] = ""
		if s, ok := c.servers[r]; ok {
			cl.url[r] = s.URL()
		}
	}
}

// down marks region as not running, before it is stopped.
func (cl *clients) down(region string) {
	cl.mu.Lock()
	cl.url[region] = ""
	cl.mu.Unlock()
}

var errRegionDown = fmt.Errorf("region is down")

// send makes one request; hdr lists header names and values.
func (cl *clients) send(region, method, path string, body any, hdr ...string) reply {
	cl.mu.Lock()
	base := cl.url[region]
	cl.mu.Unlock()
	if base == "" {
		return reply{err: errRegionDown}
	}
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return reply{err: err}
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, base+path, rd)
	if err != nil {
		return reply{err: err}
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	start := time.Now()
	res, err := cl.hc.Do(req)
	if err != nil {
		return reply{err: err, took: time.Since(start)}
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		return reply{err: err, took: time.Since(start)}
	}
	return reply{status: res.StatusCode, hdr: res.Header, body: b, took: time.Since(start)}
}

// must sends a request that must answer status, and decodes its body into
// out (when out is not nil).
func (cl *clients) must(t testing.TB, status int, region, method, path string, body, out any, hdr ...string) reply {
	t.Helper()
	r := cl.send(region, method, path, body, hdr...)
	if r.err != nil || r.status != status {
		t.Fatalf("%s %s at %s: %s, want %d", method, path, region, r, status)
	}
	if out != nil {
		if err := json.Unmarshal(r.body, out); err != nil {
			t.Fatalf("%s %s at %s: %v in %s", method, path, region, err, r.body)
		}
	}
	return r
}

// item reads sku at region, from the home when consistent is set.
func (cl *clients) item(t testing.TB, region, sku string, consistent bool) itemJSON {
	t.Helper()
	var it itemJSON
	path := "/v1/inventory/" + sku
	if consistent {
		path += "?consistent=true"
	}
	cl.must(t, 200, region, "GET", path, nil, &it)
	return it
}

// reserve makes a reservation that must succeed.
func (cl *clients) reserve(t testing.TB, region, sku string, qty int64, hdr ...string) reservationJSON {
	t.Helper()
	var r reservationJSON
	cl.must(t, 201, region, "POST", "/v1/reservations", map[string]any{"sku": sku, "qty": qty, "ttl_ms": 600_000}, &r, hdr...)
	return r
}

// skuHomedAt returns the first sku prefix-N (N = 0, 1, …) whose home
// under cfg is home.
func skuHomedAt(cfg *config.Config, home, prefix string) string {
	for i := 0; ; i++ {
		sku := fmt.Sprintf("%s-%d", prefix, i)
		if cfg.Home(sku) == home {
			return sku
		}
	}
}

// waitItemEverywhere waits until every running region's local view of sku
// has the given stock and reserved.
func waitItemEverywhere(t testing.TB, c *cluster, cl *clients, sku string, stock, reserved int64) {
	t.Helper()
	var last []itemJSON
	defer func() {
		if t.Failed() {
			t.Logf("last views of %s: %+v", sku, last)
		}
	}()
	waitFor(t, 20*time.Second, fmt.Sprintf("%s at stock %d, reserved %d everywhere", sku, stock, reserved), func() bool {
		last = last[:0]
		ok := true
		for r := range c.servers {
			it := cl.item(t, r, sku, false)
			last = append(last, it)
			ok = ok && it.Stock == stock && it.Reserved == reserved && it.Available == stock-reserved
		}
		return ok
	})
}

// retryAfter returns the Retry-After header as seconds, or 0.
func retryAfter(r reply) int {
	if r.hdr == nil {
		return 0
	}
	n, _ := strconv.Atoi(r.hdr.Get("Retry-After"))
	return n
}

// TestRetryStormMakesOneReservationPerKey retries each of several
// reservations many times, concurrently and then sequentially, through all
// three regions with one Idempotency-Key and body: every answer is the one
// reservation (or request_in_progress while the first runs), stock is
// reserved once, and the key with another body is idempotency_mismatch.
// Then the same for commits.
func TestRetryStormMakesOneReservationPerKey(t *testing.T) {
	c := newCluster(t, specLatency)
	cl := newClients(c)
	skus := []string{skuHomedAt(c.cfg, "us-east", "storm"), skuHomedAt(c.cfg, "ap-south", "storm")}
	const stock = 100
	for _, sku := range skus {
		cl.must(t, 200, c.cfg.Home(sku), "POST", "/v1/inventory/"+sku+"/restock", map[string]any{"qty": stock}, nil)
	}
	const (
		keys       = 6
		concurrent = 3 // attempts per region at once
		sequential = 2 // rounds through every region, one attempt at a time
	)
	skuOf := func(k int) string { return skus[k%len(skus)] }
	qtyOf := func(k int) int64 { return int64(k%3 + 1) }
	resBody := func(k int) map[string]any {
		return map[string]any{"sku": skuOf(k), "qty": qtyOf(k), "ttl_ms": 600_000}
	}
	// storm sends attempt to every region, concurrent at a time, then
	// sequential rounds; each answer must be 2xx carrying the one id or
	// 409 request_in_progress. It returns the id.
	storm := func(what string, attempt func(region string) reply, status int) string {
		var mu sync.Mutex
		ids := map[string]int{}
		inProgress := 0
		note := func(r reply, region string) {
			mu.Lock()
			defer mu.Unlock()
			var res reservationJSON
			switch {
			case r.is(status, "") && json.Unmarshal(r.body, &res) == nil && res.ID != "":
				ids[res.ID]++
			case r.is(409, "request_in_progress"):
				inProgress++
			default:
				t.Errorf("%s at %s: %s", what, region, r)
			}
		}
		var wg sync.WaitGroup
		for _, r := range regions {
			for range concurrent {
				wg.Go(func() { note(attempt(r), r) })
			}
		}
		wg.Wait()
		for range sequential {
			for _, r := range regions {
				res := attempt(r)
				if !res.is(status, "") {
					t.Errorf("%s at %s after the storm: %s", what, r, res)
				}
				note(res, r)
			}
		}
		mu.Lock()
		defer mu.Unlock()
		if len(ids) != 1 {
			t.Errorf("%s: answers named %d reservations, want 1: %v", what, len(ids), ids)
		}
		t.Logf("%s: %v, %d request_in_progress", what, ids, inProgress)
		for id := range ids {
			return id
		}
		return ""
	}

	ids := make([]string, keys)
	var wg sync.WaitGroup
	for k := range keys {
		wg.Go(func() {
			key := fmt.Sprintf("storm-reserve-%d", k)
			ids[k] = storm(key, func(r string) reply {
				return cl.send(r, "POST", "/v1/reservations", resBody(k), "Idempotency-Key", key)
			}, 201)
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	held := map[string]int64{}
	for k, id := range ids {
		held[skuOf(k)] += qtyOf(k)
		if home, _ := region.ReservationHome(id); home != c.cfg.Home(skuOf(k)) {
			t.Errorf("reservation %s of %s: home %s, want %s", id, skuOf(k), home, c.cfg.Home(skuOf(k)))
		}
		key := fmt.Sprintf("storm-reserve-%d", k)
		other := resBody(k)
		other["qty"] = qtyOf(k) + 1
		longer := resBody(k)
		longer["ttl_ms"] = 700_000
		for _, r := range regions {
			wg.Go(func() {
				var got reservationJSON
				res := cl.send(r, "GET", "/v1/reservations/"+id, nil)
				if !res.is(200, "") || json.Unmarshal(res.body, &got) != nil || got.SKU != skuOf(k) || got.Qty != qtyOf(k) || got.State != "held" {
					t.Errorf("reservation %s read at %s: %s, want %d of %s held", id, r, res, qtyOf(k), skuOf(k))
				}
				// The key with another body.
				for _, body := range []map[string]any{other, longer} {
					if res := cl.send(r, "POST", "/v1/reservations", body, "Idempotency-Key", key); !res.is(422, "idempotency_mismatch") {
						t.Errorf("key %s with body %v at %s: %s, want 422 idempotency_mismatch", key, body, r, res)
					}
				}
			})
		}
	}
	wg.Wait()
	for _, sku := range skus {
		if it := cl.item(t, c.cfg.Home(sku), sku, true); it.Stock != stock || it.Reserved != held[sku] {
			t.Errorf("%s at home after the storm: %+v, want stock %d, reserved %d", sku, it, stock, held[sku])
		}
		waitItemEverywhere(t, c, cl, sku, stock, held[sku])
	}

	// Commits: one per key, whichever region each retry goes through.
	for k := range keys {
		wg.Go(func() {
			key := fmt.Sprintf("storm-commit-%d", k)
			id := storm(key, func(r string) reply {
				return cl.send(r, "POST", "/v1/reservations/"+ids[k]+"/commit", nil, "Idempotency-Key", key)
			}, 200)
			if id != ids[k] {
				t.Errorf("commit %s answered reservation %s, want %s", key, id, ids[k])
			}
		})
	}
	wg.Wait()
	for k, id := range ids {
		// A commit key reused for another reservation of the same home,
		// or for a release, is another request. The regions are asked
		// one after the other: two requests of one key at once are
		// request_in_progress for one of them, whatever they ask.
		key := fmt.Sprintf("storm-commit-%d", k)
		sameHome := ids[(k+len(skus))%keys]
		wg.Go(func() {
			for _, r := range regions {
				var got reservationJSON
				res := cl.send(r, "GET", "/v1/reservations/"+id, nil)
				if !res.is(200, "") || json.Unmarshal(res.body, &got) != nil || got.State != "committed" {
					t.Errorf("reservation %s read at %s after the commit storm: %s", id, r, res)
				}
				if res := cl.send(r, "POST", "/v1/reservations/"+sameHome+"/commit", nil, "Idempotency-Key", key); !res.is(422, "idempotency_mismatch") {
					t.Errorf("key %s to commit %s at %s: %s, want 422 idempotency_mismatch", key, sameHome, r, res)
				}
				if res := cl.send(r, "POST", "/v1/reservations/"+id+"/release", nil, "Idempotency-Key", key); !res.is(422, "idempotency_mismatch") {
					t.Errorf("key %s to release %s at %s: %s, want 422 idempotency_mismatch", key, id, r, res)
				}
			}
		})
	}
	wg.Wait()
	for _, sku := range skus {
		want := stock - held[sku]
		if it := cl.item(t, c.cfg.Home(sku), sku, true); it.Stock != want || it.Reserved != 0 {
			t.Errorf("%s at home after the commits: %+v, want stock %d, reserved 0", sku, it, want)
		}
		waitItemEverywhere(t, c, cl, sku, want, 0)
	}
}

// homeOp is one request that only a sku's home may decide.
type homeOp struct {
	name, method, path string
	body               any
}

// TestIsolatedHomeFailsFastThenHeals cuts off the home region of a sku:
// from the other regions, every request that needs that home fails with
// 503 home_unavailable and a Retry-After within the request deadline, both
// before the partition is detected and after; cart writes and restocks go
// on everywhere, the isolated home still decides its own skus, and skus
// homed elsewhere can still be reserved. Once healed, the same requests
// succeed with nothing done by hand, and the restocks made meanwhile count
// at the home.
func TestIsolatedHomeFailsFastThenHeals(t *testing.T) {
	c := newCluster(t, specLatency)
	cl := newClients(c)
	const iso = "eu-west"
	others := []string{"us-east", "ap-south"}
	skuIso := skuHomedAt(c.cfg, iso, "iso")
	skuEast := skuHomedAt(c.cfg, "us-east", "east")
	const stock = 10
	cl.must(t, 200, iso, "POST", "/v1/inventory/"+skuIso+"/restock", map[string]any{"qty": stock}, nil)
	cl.must(t, 200, "us-east", "POST", "/v1/inventory/"+skuEast+"/restock", map[string]any{"qty": stock}, nil)
	r1 := cl.reserve(t, "us-east", skuIso, 1)
	// Carts to check out in each phase: a line homed at the isolated
	// region and one homed at us-east.
	for _, phase := range []string{"cut", "detected"} {
		for _, r := range others {
			cart := "/v1/carts/iso-" + phase + "-" + r
			cl.must(t, 200, r, "POST", cart+"/items", map[string]any{"sku": skuIso, "qty": 1}, nil)
			cl.must(t, 200, r, "POST", cart+"/items", map[string]any{"sku": skuEast, "qty": 1}, nil)
		}
	}
	waitItemEverywhere(t, c, cl, skuIso, stock, 1)
	waitItemEverywhere(t, c, cl, skuEast, stock, 0)

	ops := func(phase, from string) []homeOp {
		return []homeOp{
			{"reserve", "POST", "/v1/reservations", map[string]any{"sku": skuIso, "qty": 1}},
			{"commit", "POST", "/v1/reservations/" + r1.ID + "/commit", nil},
			{"get reservation", "GET", "/v1/reservations/" + r1.ID, nil},
			{"consistent read", "GET", "/v1/inventory/" + skuIso + "?consistent=true", nil},
			{"negative adjust", "POST", "/v1/inventory/" + skuIso + "/adjust", map[string]any{"delta": -1}},
			{"checkout", "POST", "/v1/carts/iso-" + phase + "-" + from + "/checkout", nil},
		}
	}
	// failFast runs every op of the phase from both other regions at once
	// and checks each fails fast with home_unavailable.
	failFast := func(phase string) {
		t.Helper()
		var wg sync.WaitGroup
		var slowest atomic.Int64
		for _, from := range others {
			for _, op := range ops(phase, from) {
				wg.Go(func() {
					r := cl.send(from, op.method, op.path, op.body)
					slowest.Store(max(slowest.Load(), int64(r.took)))
					if !r.is(503, "home_unavailable") || retryAfter(r) < 1 {
						t.Errorf("%s: %s from %s: %s (Retry-After %q), want 503 home_unavailable with a Retry-After",
							phase, op.name, from, r, r.hdr.Get("Retry-After"))
					}
					if r.took > requestDeadline+failFastMargin {
						t.Errorf("%s: %s from %s took %v, more than the %v deadline plus %v", phase, op.name, from, r.took, requestDeadline, failFastMargin)
					}
				})
			}
		}
		wg.Wait()
		t.Logf("%s: slowest home_unavailable answer took %v", phase, time.Duration(slowest.Load()))
	}

	c.isolate(iso, true)
	// Not yet detected: each request waits for its deadline.
	failFast("cut")

	// Meanwhile everything local goes on, in every region.
	restocked := int64(0)
	for i, r := range regions {
		cl.must(t, 200, r, "POST", "/v1/carts/iso-shared/items", map[string]any{"sku": "from-" + r, "qty": i + 1}, nil)
		for range 2 {
			cl.must(t, 200, r, "POST", "/v1/inventory/"+skuIso+"/restock", map[string]any{"qty": 1}, nil)
			restocked++
		}
	}
	// The isolated home decides its own skus; the others reach us-east.
	local := cl.reserve(t, iso, skuIso, 1)
	for _, r := range others {
		res := cl.reserve(t, r, skuEast, 1)
		cl.must(t, 200, r, "POST", "/v1/reservations/"+res.ID+"/release", nil, nil)
	}
	if r := cl.send(iso, "POST", "/v1/reservations", map[string]any{"sku": skuEast, "qty": 1}); !r.is(503, "home_unavailable") || retryAfter(r) < 1 || r.took > requestDeadline+failFastMargin {
		t.Errorf("reserving %s from the isolated region: %s in %v", skuEast, r, r.took)
	}

	// Detected: the others see the home disconnected and fail at once.
	for _, r := range others {
		waitFor(t, 20*time.Second, r+" to see "+iso+" disconnected", func() bool {
			var st struct{ Peers []peerStatus }
			c.do(r, "GET", "/v1/cluster", nil, nil, &st)
			for _, p := range st.Peers {
				if p.Region == iso {
					return !p.Connected
				}
			}
			return false
		})
	}
	failFast("detected")

	// No failed checkout keeps a hold on the line it could reserve.
	if it := cl.item(t, "us-east", skuEast, true); it.Reserved != 0 || it.Stock != stock {
		t.Errorf("%s after the failed checkouts: %+v, want stock %d and nothing reserved", skuEast, it, stock)
	}

	c.isolate(iso, false)
	for _, r := range others {
		waitFor(t, 30*time.Second, r+" to reach "+iso+" again", func() bool {
			return cl.send(r, "GET", "/v1/inventory/"+skuIso+"?consistent=true", nil).is(200, "")
		})
	}
	// The restocks made during the partition count at the home.
	total := stock + restocked
	waitFor(t, 20*time.Second, "the partition's restocks at the home", func() bool {
		return cl.item(t, iso, skuIso, true).Stock == total
	})
	// The same requests now succeed.
	for _, from := range others {
		for _, op := range ops("cut", from) {
			r := cl.send(from, op.method, op.path, op.body)
			if r.err != nil || r.status/100 != 2 {
				t.Errorf("after healing: %s from %s: %s", op.name, from, r)
			}
		}
	}
	// r1 committed (once), two adjustments of -1, two checkouts of one
	// unit each; held: the reservation made at the isolated home and one
	// per other region after healing.
	wantStock, wantHeld := total-1-2-2, int64(1+2)
	it := cl.item(t, iso, skuIso, true)
	if it.Stock != wantStock || it.Reserved != wantHeld {
		t.Errorf("%s at home after healing: %+v, want stock %d, reserved %d", skuIso, it, wantStock, wantHeld)
	}
	var got reservationJSON
	cl.must(t, 200, "ap-south", "GET", "/v1/reservations/"+local.ID, nil, &got)
	if got.State != "held" {
		t.Errorf("reservation made at the isolated home: %+v", got)
	}
	waitItemEverywhere(t, c, cl, skuIso, wantStock, wantHeld)
	waitItemEverywhere(t, c, cl, skuEast, stock-2, 0)
	c.waitCart("iso-shared", "from-ap-south=3 from-eu-west=2 from-us-east=1 ")
}

// TestCheckoutAcrossHomes checks out a cart whose skus are homed in
// different regions, retries it through the other regions, and checks out
// a cart one of whose lines lacks stock (SPEC §6.1).
func TestCheckoutAcrossHomes(t *testing.T) {
	c := newCluster(t, specLatency)
	cl := newClients(c)
	skuE := skuHomedAt(c.cfg, "us-east", "co")
	skuW := skuHomedAt(c.cfg, "eu-west", "co")
	skuS := skuHomedAt(c.cfg, "ap-south", "co")
	stock := map[string]int64{skuE: 5, skuW: 5, skuS: 1}
	for sku, n := range stock {
		cl.must(t, 200, c.cfg.Home(sku), "POST", "/v1/inventory/"+sku+"/restock", map[string]any{"qty": n}, nil)
	}

	// A cart with lines homed at us-east and eu-west, checked out at
	// ap-south.
	cl.must(t, 200, "ap-south", "POST", "/v1/carts/co-ok/items", map[string]any{"sku": skuE, "qty": 2}, nil)
	cl.must(t, 200, "ap-south", "POST", "/v1/carts/co-ok/items", map[string]any{"sku": skuW, "qty": 1}, nil)
	want := map[string]int64{skuE: 2, skuW: 1}
	var order orderJSON
	key := []string{"Idempotency-Key", "co-ok-1"}
	cl.must(t, 201, "ap-south", "POST", "/v1/carts/co-ok/checkout", nil, &order, key...)
	homes := map[string]bool{}
	for _, l := range order.Lines {
		home, _ := region.ReservationHome(l.ReservationID)
		if l.Qty != want[l.SKU] || l.Home != c.cfg.Home(l.SKU) || home != l.Home {
			t.Errorf("order line %+v: want qty %d, home %s named by its reservation id", l, want[l.SKU], c.cfg.Home(l.SKU))
		}
		homes[home] = true
		var res reservationJSON
		cl.must(t, 200, "eu-west", "GET", "/v1/reservations/"+l.ReservationID, nil, &res)
		if res.State != "committed" || res.Qty != l.Qty || res.SKU != l.SKU {
			t.Errorf("reservation of line %+v: %+v", l, res)
		}
	}
	if len(order.Lines) != 2 || len(homes) != 2 || order.CartID != "co-ok" || order.OrderID == "" {
		t.Fatalf("order %+v: want two lines at two homes", order)
	}
	for sku, n := range want {
		if it := cl.item(t, c.cfg.Home(sku), sku, true); it.Stock != stock[sku]-n || it.Reserved != 0 {
			t.Errorf("%s at home after the checkout: %+v, want stock %d", sku, it, stock[sku]-n)
		}
		waitItemEverywhere(t, c, cl, sku, stock[sku]-n, 0)
	}
	c.waitCart("co-ok", "")

	// A retry with the key through any region is the same order, bought
	// once.
	for _, r := range regions {
		var again orderJSON
		res := cl.send(r, "POST", "/v1/carts/co-ok/checkout", nil, key...)
		if !res.is(201, "") || json.Unmarshal(res.body, &again) != nil || !sameOrder(order, again) {
			t.Errorf("checkout retried at %s: %s, want 201 and the order %+v", r, res, order)
		}
	}
	for sku, n := range want {
		if it := cl.item(t, c.cfg.Home(sku), sku, true); it.Stock != stock[sku]-n || it.Reserved != 0 {
			t.Errorf("%s at home after the retries: %+v, want stock %d", sku, it, stock[sku]-n)
		}
	}

	// A cart one of whose lines lacks stock: insufficient_stock naming
	// that sku, and the other lines' reservations released at their homes.
	cl.must(t, 200, "us-east", "POST", "/v1/carts/co-short/items", map[string]any{"sku": skuE, "qty": 1}, nil)
	cl.must(t, 200, "us-east", "POST", "/v1/carts/co-short/items", map[string]any{"sku": skuW, "qty": 1}, nil)
	cl.must(t, 200, "us-east", "POST", "/v1/carts/co-short/items", map[string]any{"sku": skuS, "qty": 2}, nil)
	before := map[string]itemJSON{}
	for _, sku := range []string{skuE, skuW, skuS} {
		before[sku] = cl.item(t, c.cfg.Home(sku), sku, true)
	}
	short := []string{"Idempotency-Key", "co-short-1"}
	for i, r := range []string{"us-east", "eu-west"} {
		res := cl.send(r, "POST", "/v1/carts/co-short/checkout", nil, short...)
		p := res.problem()
		if !res.is(409, "insufficient_stock") || len(p.Lines) != 1 || p.Lines[0].SKU != skuS || p.Lines[0].Available != 1 {
			t.Errorf("checkout %d of a cart short of %s at %s: %s, want 409 insufficient_stock listing %s with available 1", i, skuS, r, res, skuS)
		}
		for _, sku := range []string{skuE, skuW, skuS} {
			if it := cl.item(t, c.cfg.Home(sku), sku, true); it != before[sku] {
				t.Errorf("%s at home after the failed checkout %d: %+v, want %+v as before", sku, i, it, before[sku])
			}
		}
	}
	wantCart := map[string]string{skuE: skuE + "=1 ", skuW: skuW + "=1 ", skuS: skuS + "=2 "}
	var lines []string
	for _, sku := range slices.Sorted(maps.Keys(wantCart)) {
		lines = append(lines, wantCart[sku])
	}
	if got := c.cart("us-east", "co-short").String(); got != strings.Join(lines, "") {
		t.Errorf("the cart of a failed checkout changed: %s, want %s", got, strings.Join(lines, ""))
	}
}

// TestCheckoutRetriedAfterHomeUnavailable checks out a cart while the home
// of one of its lines is cut off (503 home_unavailable, the other line's
// reservation released), then retries it with the same Idempotency-Key
// once the home is back: the retry finishes the checkout, buying each line
// once.
func TestCheckoutRetriedAfterHomeUnavailable(t *testing.T) {
	c := newCluster(t, map[string]int{"us-east/eu-west": 5, "us-east/ap-south": 5, "eu-west/ap-south": 5})
	cl := newClients(c)
	const cut = "eu-west"
	skuE := skuHomedAt(c.cfg, "us-east", "retry")
	skuW := skuHomedAt(c.cfg, cut, "retry")
	const stock = 5
	for _, sku := range []string{skuE, skuW} {
		cl.must(t, 200, c.cfg.Home(sku), "POST", "/v1/inventory/"+sku+"/restock", map[string]any{"qty": stock}, nil)
		cl.must(t, 200, "us-east", "POST", "/v1/carts/retry/items", map[string]any{"sku": sku, "qty": 1}, nil)
	}
	key := []string{"Idempotency-Key", "retry-1"}
	c.isolate(cut, true)
	if r := cl.send("us-east", "POST", "/v1/carts/retry/checkout", nil, key...); !r.is(503, "home_unavailable") {
		t.Fatalf("checkout with %s cut off: %s, want 503 home_unavailable", cut, r)
	}
	if it := cl.item(t, "us-east", skuE, true); it.Reserved != 0 {
		t.Errorf("%s after the failed checkout: %+v, want nothing reserved", skuE, it)
	}
	c.isolate(cut, false)
	waitFor(t, 30*time.Second, "us-east to reach "+cut+" again", func() bool {
		return cl.send("us-east", "GET", "/v1/inventory/"+skuW+"?consistent=true", nil).is(200, "")
	})
	var order orderJSON
	if r := cl.send("us-east", "POST", "/v1/carts/retry/checkout", nil, key...); !r.is(201, "") || json.Unmarshal(r.body, &order) != nil || len(order.Lines) != 2 {
		t.Errorf("checkout retried with its key once %s is back: %s, want 201 with two lines", cut, r)
	}
	for _, sku := range []string{skuE, skuW} {
		if it := cl.item(t, "us-east", sku, true); it.Stock != stock-1 || it.Reserved != 0 {
			t.Errorf("%s after the retried checkout: %+v, want stock %d (bought once), nothing reserved", sku, it, stock-1)
		}
	}
	if got := c.cart("us-east", "retry").String(); got != "" {
		t.Errorf("cart after the retried checkout: %s, want it empty", got)
	}
}

func sameOrder(a, b orderJSON) bool {
	key := func(l orderLineJSON) string { return l.SKU }
	sa, sb := slices.Clone(a.Lines), slices.Clone(b.Lines)
	slices.SortFunc(sa, func(x, y orderLineJSON) int { return strings.Compare(key(x), key(y)) })
	slices.SortFunc(sb, func(x, y orderLineJSON) int { return strings.Compare(key(x), key(y)) })
	return a.OrderID == b.OrderID && a.CartID == b.CartID && slices.Equal(sa, sb)
}

// faultSeed fixes the workload of TestNoOversellUnderPartitionAndRestart.
const faultSeed = 20260317

// stateAfter is the state a reservation is in after a transition.
var stateAfter = map[string]string{"commit": "committed", "release": "released"}

// attempt is a reservation a client asked for, and what it knows of it.
type attempt struct {
	key, sku string
	qty      int64
	region   string
	// id is set once a 201 named the reservation; refused once a 409
	// insufficient_stock answered. Neither: no answer (unknown).
	id      string
	refused bool
	// commit or release: "" not asked; else the transition asked and
	// whether it was acknowledged.
	op    string
	opKey string
	acked bool
}

// TestNoOversellUnderPartitionAndRestart has clients in every region
// reserve and commit the last units of three skus (one homed in each
// region, topped up by a trickle of restocks) while one region is cut off
// for a while and another is stopped and restarted on its data. Every
// request carries an Idempotency-Key, so each one that got no answer is
// settled afterwards by retrying it. Then: nothing oversold, every
// acknowledged reservation is at its home in the state its client was
// told, the homes' held and committed units account for all stock, and
// every region's view of each sku converges to its home's.
func TestNoOversellUnderPartitionAndRestart(t *testing.T) {
	t.Logf("seed %d", faultSeed)
	c := newCluster(t, map[string]int{"us-east/eu-west": 10, "us-east/ap-south": 25, "eu-west/ap-south": 15})
	cl := newClients(c)
	const stable, isolated, restarted = "us-east", "ap-south", "eu-west"
	var skus []string
	for _, r := range regions {
		skus = append(skus, skuHomedAt(c.cfg, r, "last"))
	}
	const initial = 6
	restocked := map[string]int64{}
	for _, sku := range skus {
		cl.must(t, 200, c.cfg.Home(sku), "POST", "/v1/inventory/"+sku+"/restock", map[string]any{"qty": initial}, nil)
		restocked[sku] = initial
	}

	clientsPerRegion := 3
	if testing.Short() {
		clientsPerRegion = 2
	}
	var (
		mu       sync.Mutex
		attempts []*attempt
		answers  atomic.Int64 // HTTP answers of any kind, to pace the faults
		stop     = make(chan struct{})
		wg       sync.WaitGroup
	)
	stopped := func() bool {
		select {
		case <-stop:
			return true
		default:
			return false
		}
	}
	unknown := func(r reply) bool { return r.err != nil || r.status == 503 }
	for ci := range clientsPerRegion * len(regions) {
		home := regions[ci%len(regions)]
		rng := rand.New(rand.NewPCG(faultSeed, uint64(ci)))
		wg.Go(func() {
			tick := time.NewTicker(15 * time.Millisecond)
			defer tick.Stop()
			for n := 0; !stopped(); n++ {
				<-tick.C
				a := &attempt{key: fmt.Sprintf("fault-%d-%d", ci, n), sku: skus[rng.IntN(len(skus))], qty: 1 + rng.Int64N(2), region: home}
				r := cl.send(home, "POST", "/v1/reservations", map[string]any{"sku": a.sku, "qty": a.qty, "ttl_ms": 600_000}, "Idempotency-Key", a.key)
				if r.err == errRegionDown {
					continue // not sent
				}
				mu.Lock()
				attempts = append(attempts, a)
				mu.Unlock()
				answers.Add(1)
				var res reservationJSON
				switch {
				case unknown(r):
					continue
				case r.is(409, "insufficient_stock"):
					mu.Lock()
					a.refused = true
					mu.Unlock()
					continue
				case r.is(201, "") && json.Unmarshal(r.body, &res) == nil:
				default:
					t.Errorf("reserve %s at %s: %s", a.key, home, r)
					continue
				}
				op := "commit"
				if rng.IntN(5) == 0 {
					op = "release"
				}
				mu.Lock()
				a.id, a.op, a.opKey = res.ID, op, a.key+"/"+op
				mu.Unlock()
				r = cl.send(home, "POST", "/v1/reservations/"+res.ID+"/"+op, nil, "Idempotency-Key", a.opKey)
				answers.Add(1)
				switch {
				case unknown(r):
				case r.is(200, "") && json.Unmarshal(r.body, &res) == nil && res.State == stateAfter[op]:
					mu.Lock()
					a.acked = true
					mu.Unlock()
				default:
					t.Errorf("%s %s at %s: %s", op, a.id, home, r)
				}
			}
		})
	}
	// A trickle of restocks at the region that stays up and connected.
	restocker := make(chan struct{})
	go func() {
		defer close(restocker)
		rng := rand.New(rand.NewPCG(faultSeed, 99))
		tick := time.NewTicker(60 * time.Millisecond)
		defer tick.Stop()
		for !stopped() {
			<-tick.C
			sku := skus[rng.IntN(len(skus))]
			if r := cl.send(stable, "POST", "/v1/inventory/"+sku+"/restock", map[string]any{"qty": 1}); !r.is(200, "") {
				t.Errorf("restock at %s: %s", stable, r)
				continue
			}
			mu.Lock()
			restocked[sku]++
			mu.Unlock()
		}
	}()
	// progress waits for n more answers, so every phase sees traffic.
	progress := func(n int64, what string) {
		t.Helper()
		target := answers.Load() + n
		waitFor(t, 30*time.Second, what, func() bool { return answers.Load() >= target })
	}
	progress(60, "traffic before the faults")
	c.isolate(isolated, true)
	progress(60, "traffic with "+isolated+" cut off")
	cl.down(restarted)
	c.stop(restarted)
	progress(40, "traffic with "+restarted+" stopped")
	c.start(restarted)
	cl.refresh(c)
	progress(60, "traffic after "+restarted+" restarted")
	c.isolate(isolated, false)
	progress(60, "traffic after healing")
	close(stop)
	wg.Wait()
	<-restocker
	if t.Failed() {
		t.FailNow()
	}
	for _, r := range regions {
		c.waitConnected(r)
	}

	// Settle every request that got no answer by retrying it with its key,
	// and retry every acknowledged reservation: it names the same one.
	forEach := func(fn func(a *attempt)) {
		ch := make(chan *attempt)
		var wg sync.WaitGroup
		for range 8 {
			wg.Go(func() {
				for a := range ch {
					fn(a)
				}
			})
		}
		for _, a := range attempts {
			ch <- a
		}
		close(ch)
		wg.Wait()
	}
	settle := func(method, path string, body any, key string) reply {
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		deadline := time.Now().Add(30 * time.Second)
		for {
			r := cl.send(stable, method, path, body, "Idempotency-Key", key)
			if !unknown(r) && !r.is(409, "request_in_progress") || time.Now().After(deadline) {
				return r
			}
			<-tick.C
		}
	}
	var retried, ackedRes atomic.Int64
	forEach(func(a *attempt) {
		body := map[string]any{"sku": a.sku, "qty": a.qty, "ttl_ms": 600_000}
		var res reservationJSON
		switch {
		case a.refused:
		case a.id == "":
			retried.Add(1)
			r := settle("POST", "/v1/reservations", body, a.key)
			switch {
			case r.is(201, "") && json.Unmarshal(r.body, &res) == nil:
				a.id = res.ID
			case r.is(409, "insufficient_stock"):
			default:
				t.Errorf("settling reservation %s: %s", a.key, r)
			}
		default:
			ackedRes.Add(1)
			r := cl.send(stable, "POST", "/v1/reservations", body, "Idempotency-Key", a.key)
			if !r.is(201, "") || json.Unmarshal(r.body, &res) != nil || res.ID != a.id {
				t.Errorf("retrying acknowledged reservation %s (%s): %s", a.key, a.id, r)
			}
			if a.op != "" && !a.acked {
				if r := settle("POST", "/v1/reservations/"+a.id+"/"+a.op, nil, a.opKey); !r.is(200, "") {
					t.Errorf("settling %s of %s: %s", a.op, a.id, r)
				}
			}
		}
	})
	t.Logf("%d reservations acknowledged, %d settled after the faults, %d refused", ackedRes.Load(), retried.Load(), int64(len(attempts))-ackedRes.Load()-retried.Load())
	acked := map[string]int64{} // committed units acknowledged to clients
	for _, a := range attempts {
		if a.op == "commit" && a.acked {
			acked[a.sku] += a.qty
		}
	}

	// Every reservation is at its home, in the state its client knows.
	var hmu sync.Mutex
	held, committed := map[string]int64{}, map[string]int64{}
	forEach(func(a *attempt) {
		if a.id == "" {
			return
		}
		var res reservationJSON
		from := regions[len(a.key)%3]
		r := cl.send(from, "GET", "/v1/reservations/"+a.id, nil)
		want := "held"
		if a.op != "" {
			want = stateAfter[a.op]
		}
		if !r.is(200, "") || json.Unmarshal(r.body, &res) != nil || res.SKU != a.sku || res.Qty != a.qty || res.State != want || res.Home != c.cfg.Home(a.sku) {
			t.Errorf("reservation %s (%s) read at %s: %s, want %d of %s %s at %s", a.id, a.key, from, r, a.qty, a.sku, want, c.cfg.Home(a.sku))
		}
		hmu.Lock()
		defer hmu.Unlock()
		switch res.State {
		case "held":
			held[a.sku] += res.Qty
		case "committed":
			committed[a.sku] += res.Qty
		}
	})
	for _, sku := range skus {
		if acked[sku] > restocked[sku] {
			t.Errorf("%s: %d units oversold (%d committed and acknowledged, %d restocked)", sku, acked[sku]-restocked[sku], acked[sku], restocked[sku])
		}
		home := c.cfg.Home(sku)
		var it itemJSON
		waitFor(t, 20*time.Second, sku+" restocks counted at its home", func() bool {
			it = cl.item(t, home, sku, true)
			return it.Stock+committed[sku] == restocked[sku]
		})
		if it.Reserved != held[sku] || it.Reserved > it.Stock {
			t.Errorf("%s at home %s: %+v; %d units held, %d committed of %d restocked", sku, home, it, held[sku], committed[sku], restocked[sku])
		}
		t.Logf("%s: restocked %d, committed %d (%d acknowledged), held %d", sku, restocked[sku], committed[sku], acked[sku], held[sku])
		waitItemEverywhere(t, c, cl, sku, it.Stock, it.Reserved)
	}
}

// TestManyOpenReservationsOfOneSku holds more reservations of one sku at
// once than a small map bound would allow (300, at its home) and checks
// the sku stays usable: a consistent read, one more reservation and a
// release all succeed.
func TestManyOpenReservationsOfOneSku(t *testing.T) {
	c := newCluster(t, map[string]int{"us-east/eu-west": 5, "us-east/ap-south": 5, "eu-west/ap-south": 5})
	cl := newClients(c)
	sku := skuHomedAt(c.cfg, "us-east", "popular")
	const holds = 300
	cl.must(t, 200, "us-east", "POST", "/v1/inventory/"+sku+"/restock", map[string]any{"qty": 10 * holds}, nil)
	var ids []string
	for range holds {
		r := cl.send("us-east", "POST", "/v1/reservations", map[string]any{"sku": sku, "qty": 1, "ttl_ms": 600_000})
		var res reservationJSON
		if !r.is(201, "") || json.Unmarshal(r.body, &res) != nil {
			t.Fatalf("reservation %d of %s: %s", len(ids)+1, sku, r)
		}
		ids = append(ids, res.ID)
	}
	if r := cl.send("us-east", "GET", "/v1/inventory/"+sku+"?consistent=true", nil); !r.is(200, "") {
		t.Errorf("consistent read of %s with %d holds: %s", sku, holds, r)
	}
	if r := cl.send("eu-west", "POST", "/v1/reservations/"+ids[0]+"/release", nil); !r.is(200, "") {
		t.Errorf("release of %s with %d holds: %s", ids[0], holds, r)
	}
}

// TestUnnamableReservationIDsAreNotForwarded reads, commits and releases,
// from a region cut off from both peers, reservation ids that cannot name
// a reservation: homed at a region the cluster does not have, malformed
// (homed at a real peer), or homed here and never issued. Each is 404
// not_found without a Retry-After, decided without forwarding (a forward
// from the cut-off region would answer 503 home_unavailable, as the
// control request does). Connected, a number the home never issued is
// not_found at the home.
func TestUnnamableReservationIDsAreNotForwarded(t *testing.T) {
	c := newCluster(t, map[string]int{"us-east/eu-west": 5, "us-east/ap-south": 5, "eu-west/ap-south": 5})
	cl := newClients(c)
	const from = "eu-west"
	sku := skuHomedAt(c.cfg, "us-east", "unnamable")
	cl.must(t, 200, "us-east", "POST", "/v1/inventory/"+sku+"/restock", map[string]any{"qty": 5}, nil)
	held := cl.reserve(t, "us-east", sku, 1)
	cl.must(t, 200, from, "GET", "/v1/reservations/"+held.ID, nil, nil)

	notFound := func(phase, id string) {
		t.Helper()
		for _, op := range []homeOp{
			{"get", "GET", "/v1/reservations/" + id, nil},
			{"commit", "POST", "/v1/reservations/" + id + "/commit", nil},
			{"release", "POST", "/v1/reservations/" + id + "/release", nil},
		} {
			for _, hdr := range [][]string{nil, {"Idempotency-Key", "unnamable-" + op.name + "-" + id}} {
				if op.method == "GET" && hdr != nil {
					continue
				}
				r := cl.send(from, op.method, op.path, op.body, hdr...)
				if !r.is(404, "not_found") || r.hdr.Get("Retry-After") != "" {
					t.Errorf("%s: %s %s from %s (key %v): %s (Retry-After %q), want 404 not_found without Retry-After",
						phase, op.name, id, from, hdr != nil, r, r.hdr.Get("Retry-After"))
				}
			}
		}
	}
	// Connected: the home answers for a number it never issued.
	notFound("connected", "us-east:zz")

	c.isolate(from, true)
	for _, id := range []string{
		"nohome:1",
		"nohome:zz",
		"US-EAST:1",
		"no-colon",
		":1",
		"us-east:",
		"us-east:01",
		"ap-south:0",
		"us-east:A",
		"ap-south:-1",
		"us-east:3w5e11264sgsh", // one past the largest 64-bit number
		from + ":1",             // nothing issued here yet
		from + ":01",
	} {
		notFound("cut off", id)
	}
	// Control: an id that names a reservation is forwarded, and fails.
	if r := cl.send(from, "GET", "/v1/reservations/"+held.ID, nil); !r.is(503, "home_unavailable") {
		t.Errorf("cut off: get %s from %s: %s, want 503 home_unavailable", held.ID, from, r)
	}
}
