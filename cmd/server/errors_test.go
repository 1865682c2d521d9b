package server

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/latticedb/lattice/region/config"
)

// snapshot is what a rejected request must leave unchanged: the bodies of
// a cart, an item and a reservation, and the region's causal token (every
// write anywhere in the region changes it).
type snapshot struct {
	token, cart, item, res string
}

func takeSnapshot(t *testing.T, c *client, cart, sku, resID string) snapshot {
	t.Helper()
	cr := c.do("GET", "/v1/carts/"+cart, "")
	ir := c.do("GET", "/v1/inventory/"+sku, "")
	rr := c.do("GET", "/v1/reservations/"+resID, "")
	for _, r := range []response{cr, ir, rr} {
		if r.status != http.StatusOK {
			t.Fatalf("snapshot: %v", r)
		}
	}
	return snapshot{token: cr.header.Get("Lattice-Token"), cart: string(cr.body), item: string(ir.body), res: string(rr.body)}
}

// TestBadRequestsWriteNothing sends malformed, unknown, mistyped and
// out-of-range requests, oversized bodies and bad headers; each must be
// refused with the status, code and field SPEC §6 names, and leave the
// region exactly as it was.
func TestBadRequestsWriteNothing(t *testing.T) {
	r := startRegion(t, testConfig(t.TempDir(), config.DurabilityAlways), "us-east", Options{})
	r.ok(200, "POST", "/v1/carts/bc/items", `{"sku":"us-a","qty":1}`)
	r.ok(200, "POST", "/v1/inventory/us-bi/restock", `{"qty":5}`)
	res := r.ok(201, "POST", "/v1/reservations", `{"sku":"us-bi","qty":2}`)
	resID := res["reservation_id"].(string)
	commit := "/v1/reservations/" + resID + "/commit"
	release := "/v1/reservations/" + resID + "/release"

	long := strings.Repeat("x", 129)
	big := `{"sku":"us-a","qty":1,"pad":"` + strings.Repeat("x", 64<<10) + `"}`
	add := "/v1/carts/bc/items"
	cases := []struct {
		name   string
		req    request
		status int
		code   string
		field  string
	}{
		{"malformed JSON", request{method: "POST", path: add, body: `{"sku":"us-a","qty":1`}, 400, "invalid_request", "body"},
		{"two JSON values", request{method: "POST", path: add, body: `{"sku":"us-a","qty":1}{}`}, 400, "invalid_request", "body"},
		{"array body", request{method: "POST", path: add, body: `[{"sku":"us-a","qty":1}]`}, 400, "invalid_request", "body"},
		{"no body", request{method: "POST", path: add}, 400, "invalid_request", "body"},
		{"unknown field", request{method: "POST", path: add, body: `{"sku":"us-a","qty":1,"color":"red"}`}, 400, "invalid_request", "color"},
		{"field name in another case", request{method: "POST", path: add, body: `{"SKU":"us-a","qty":1}`}, 400, "invalid_request", "SKU"},
		{"repeated member", request{method: "POST", path: add, body: `{"sku":"us-a","sku":"us-b","qty":1}`}, 400, "invalid_request", "sku"},
		{"qty is a string", request{method: "POST", path: add, body: `{"sku":"us-a","qty":"1"}`}, 400, "invalid_request", "qty"},
		{"qty is fractional", request{method: "POST", path: add, body: `{"sku":"us-a","qty":1.5}`}, 400, "invalid_request", "qty"},
		{"qty is 0", request{method: "POST", path: add, body: `{"sku":"us-a","qty":0}`}, 400, "invalid_request", "qty"},
		{"qty is 1000001", request{method: "POST", path: add, body: `{"sku":"us-a","qty":1000001}`}, 400, "invalid_request", "qty"},
		{"qty is huge", request{method: "POST", path: add, body: `{"sku":"us-a","qty":99999999999999999999}`}, 400, "invalid_request", "qty"},
		{"qty missing", request{method: "POST", path: add, body: `{"sku":"us-a"}`}, 400, "invalid_request", "qty"},
		{"sku null", request{method: "POST", path: add, body: `{"sku":null,"qty":1}`}, 400, "invalid_request", "sku"},
		{"sku with a space", request{method: "POST", path: add, body: `{"sku":"us a","qty":1}`}, 400, "invalid_request", "sku"},
		{"sku of 129 characters", request{method: "POST", path: add, body: `{"sku":"` + long + `","qty":1}`}, 400, "invalid_request", "sku"},
		{"sku is a number", request{method: "POST", path: add, body: `{"sku":7,"qty":1}`}, 400, "invalid_request", "sku"},
		{"cart id with a space", request{method: "POST", path: "/v1/carts/b%20c/items", body: `{"sku":"us-a","qty":1}`}, 400, "invalid_request", "cart_id"},
		{"cart id of 129 characters", request{method: "POST", path: "/v1/carts/" + long + "/items", body: `{"sku":"us-a","qty":1}`}, 400, "invalid_request", "cart_id"},
		{"unknown query parameter", request{method: "POST", path: add + "?dry_run=1", body: `{"sku":"us-a","qty":1}`}, 400, "invalid_request", "dry_run"},
		{"Idempotency-Key on an add", request{method: "POST", path: add, body: `{"sku":"us-a","qty":1}`, header: map[string]string{"Idempotency-Key": "k1"}}, 400, "invalid_request", "Idempotency-Key"},
		{"set qty -1", request{method: "PUT", path: "/v1/carts/bc/items/us-a", body: `{"qty":-1}`}, 400, "invalid_request", "qty"},
		{"set qty 1000001", request{method: "PUT", path: "/v1/carts/bc/items/us-a", body: `{"qty":1000001}`}, 400, "invalid_request", "qty"},
		{"set with a bad sku", request{method: "PUT", path: "/v1/carts/bc/items/us%21a", body: `{"qty":1}`}, 400, "invalid_request", "sku"},
		{"set with sku in the body", request{method: "PUT", path: "/v1/carts/bc/items/us-a", body: `{"sku":"us-a","qty":1}`}, 400, "invalid_request", "sku"},
		{"remove with a body", request{method: "DELETE", path: "/v1/carts/bc/items/us-a", body: `{"qty":1}`}, 400, "invalid_request", "qty"},
		{"clear with a body", request{method: "DELETE", path: "/v1/carts/bc", body: `{"all":true}`}, 400, "invalid_request", "all"},
		{"clear with malformed body", request{method: "DELETE", path: "/v1/carts/bc", body: `{`}, 400, "invalid_request", "body"},
		{"restock 0", request{method: "POST", path: "/v1/inventory/us-bi/restock", body: `{"qty":0}`}, 400, "invalid_request", "qty"},
		{"restock a boolean", request{method: "POST", path: "/v1/inventory/us-bi/restock", body: `{"qty":true}`}, 400, "invalid_request", "qty"},
		{"restock a bad sku", request{method: "POST", path: "/v1/inventory/us*bi/restock", body: `{"qty":1}`}, 400, "invalid_request", "sku"},
		{"adjust by 0", request{method: "POST", path: "/v1/inventory/us-bi/adjust", body: `{"delta":0}`}, 400, "invalid_request", "delta"},
		{"adjust by -1000001", request{method: "POST", path: "/v1/inventory/us-bi/adjust", body: `{"delta":-1000001}`}, 400, "invalid_request", "delta"},
		{"adjust reason too long", request{method: "POST", path: "/v1/inventory/us-bi/adjust", body: `{"delta":-1,"reason":"` + strings.Repeat("r", 257) + `"}`}, 400, "invalid_request", "reason"},
		{"adjust reason control character", request{method: "POST", path: "/v1/inventory/us-bi/adjust", body: `{"delta":1,"reason":"a\u0001b"}`}, 400, "invalid_request", "reason"},
		{"adjust reason a number", request{method: "POST", path: "/v1/inventory/us-bi/adjust", body: `{"delta":1,"reason":5}`}, 400, "invalid_request", "reason"},
		{"reserve ttl_ms 999", request{method: "POST", path: "/v1/reservations", body: `{"sku":"us-bi","qty":1,"ttl_ms":999}`}, 400, "invalid_request", "ttl_ms"},
		{"reserve ttl_ms 86400001", request{method: "POST", path: "/v1/reservations", body: `{"sku":"us-bi","qty":1,"ttl_ms":86400001}`}, 400, "invalid_request", "ttl_ms"},
		{"reserve qty 0", request{method: "POST", path: "/v1/reservations", body: `{"sku":"us-bi","qty":0}`}, 400, "invalid_request", "qty"},
		{"reserve without sku", request{method: "POST", path: "/v1/reservations", body: `{"qty":1}`}, 400, "invalid_request", "sku"},
		{"reserve with an unknown field", request{method: "POST", path: "/v1/reservations", body: `{"sku":"us-bi","qty":1,"home":"us-east"}`}, 400, "invalid_request", "home"},
		{"Idempotency-Key of 256 characters", request{method: "POST", path: "/v1/reservations", body: `{"sku":"us-bi","qty":1}`, header: map[string]string{"Idempotency-Key": strings.Repeat("k", 256)}}, 400, "invalid_request", "Idempotency-Key"},
		{"empty Idempotency-Key", request{method: "POST", path: "/v1/reservations", body: `{"sku":"us-bi","qty":1}`, header: map[string]string{"Idempotency-Key": ""}}, 400, "invalid_request", "Idempotency-Key"},
		{"non-ASCII Idempotency-Key", request{method: "POST", path: "/v1/reservations", body: `{"sku":"us-bi","qty":1}`, header: map[string]string{"Idempotency-Key": "clé"}}, 400, "invalid_request", "Idempotency-Key"},
		{"commit a malformed id", request{method: "POST", path: "/v1/reservations/us%20east:1/commit"}, 400, "invalid_request", "id"},
		{"commit with a body", request{method: "POST", path: commit, body: `{"force":true}`}, 400, "invalid_request", "force"},
		{"commit with a long Idempotency-Key", request{method: "POST", path: commit, header: map[string]string{"Idempotency-Key": strings.Repeat("k", 256)}}, 400, "invalid_request", "Idempotency-Key"},
		{"release with a query", request{method: "POST", path: release + "?now=1"}, 400, "invalid_request", "now"},
		{"checkout ttl_ms 0", request{method: "POST", path: "/v1/carts/bc/checkout", body: `{"ttl_ms":0}`}, 400, "invalid_request", "ttl_ms"},
		{"checkout unknown field", request{method: "POST", path: "/v1/carts/bc/checkout", body: `{"ttl":1000}`}, 400, "invalid_request", "ttl"},
		{"checkout ttl_ms a string", request{method: "POST", path: "/v1/carts/bc/checkout", body: `{"ttl_ms":"1s"}`}, 400, "invalid_request", "ttl_ms"},
		{"Lattice-Wait not a number", request{method: "POST", path: add, body: `{"sku":"us-a","qty":1}`, header: map[string]string{"Lattice-Wait": "soon"}}, 400, "invalid_request", "Lattice-Wait"},
		{"Lattice-Wait 10001", request{method: "POST", path: add, body: `{"sku":"us-a","qty":1}`, header: map[string]string{"Lattice-Wait": "10001"}}, 400, "invalid_request", "Lattice-Wait"},
		{"Lattice-Wait -1", request{method: "POST", path: add, body: `{"sku":"us-a","qty":1}`, header: map[string]string{"Lattice-Wait": "-1"}}, 400, "invalid_request", "Lattice-Wait"},
		{"Lattice-Wait on a reservation", request{method: "POST", path: "/v1/reservations", body: `{"sku":"us-bi","qty":1}`, header: map[string]string{"Lattice-Wait": "1.5"}}, 400, "invalid_request", "Lattice-Wait"},
		{"malformed Lattice-Token on an add", request{method: "POST", path: add, body: `{"sku":"us-a","qty":1}`, header: map[string]string{"Lattice-Token": "not a token!"}}, 400, "invalid_token", ""},
		{"malformed Lattice-Token on a reservation", request{method: "POST", path: "/v1/reservations", body: `{"sku":"us-bi","qty":1}`, header: map[string]string{"Lattice-Token": "AAAA"}}, 400, "invalid_token", ""},
		{"body over 64 KiB", request{method: "POST", path: add, body: big}, 413, "body_too_large", "body"},
		{"chunked body over 64 KiB", request{method: "POST", path: add, body: big, chunked: true}, 413, "body_too_large", "body"},
		{"reservation body over 64 KiB", request{method: "POST", path: "/v1/reservations", body: big}, 413, "body_too_large", "body"},
		{"checkout body over 64 KiB", request{method: "POST", path: "/v1/carts/bc/checkout", body: big, chunked: true}, 413, "body_too_large", "body"},
		{"PATCH a cart", request{method: "PATCH", path: "/v1/carts/bc", body: `{}`}, 405, "method_not_allowed", ""},
		{"unknown route", request{method: "POST", path: "/v1/carts/bc/items/us-a/extra", body: `{"qty":1}`}, 404, "not_found", ""},
	}
	before := takeSnapshot(t, r.client, "bc", "us-bi", resID)
	if !strings.Contains(before.res, `"state":"held"`) {
		t.Fatalf("reservation %s", before.res)
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			res := r.send(tc.req)
			expectProblem(t, res, tc.status, tc.code, tc.field)
			if after := takeSnapshot(t, r.client, "bc", "us-bi", resID); after != before {
				t.Errorf("the rejected request changed the region:\nbefore %+v\nafter  %+v", before, after)
			}
		})
	}
}

// TestErrorCodes provokes every other error a single region can answer.
func TestErrorCodes(t *testing.T) {
	r := startRegion(t, testConfig(t.TempDir(), config.DurabilityAlways), "us-east", Options{})

	t.Run("not_found", func(t *testing.T) {
		expectProblem(t, r.do("GET", "/v1/reservations/us-east:zzzz", ""), 404, "not_found", "")
		expectProblem(t, r.do("GET", "/v1/reservations/no-home-in-this-id", ""), 404, "not_found", "")
		expectProblem(t, r.do("POST", "/v1/reservations/us-east:zzzz/commit", ""), 404, "not_found", "")
		expectProblem(t, r.do("POST", "/v1/reservations/us-east:zzzz/release", ""), 404, "not_found", "")
		expectProblem(t, r.do("GET", "/v1/nothing-here", ""), 404, "not_found", "")
	})

	t.Run("insufficient_stock", func(t *testing.T) {
		r.ok(200, "POST", "/v1/inventory/us-s/restock", `{"qty":3}`)
		p := expectProblem(t, r.do("POST", "/v1/reservations", `{"sku":"us-s","qty":4}`), 409, "insufficient_stock", "")
		if p["available"] != 3.0 {
			t.Errorf("available %v, want 3", p["available"])
		}
		r.ok(201, "POST", "/v1/reservations", `{"sku":"us-s","qty":1}`)
		p = expectProblem(t, r.do("POST", "/v1/inventory/us-s/adjust", `{"delta":-3}`), 409, "insufficient_stock", "")
		if p["available"] != 2.0 {
			t.Errorf("available %v, want 2", p["available"])
		}
		checkItem(t, r.ok(200, "GET", "/v1/inventory/us-s", ""), "us-s", "us-east", 3, 1)

		// A checkout that cannot reserve a line releases what it reserved
		// and lists each failing sku.
		r.ok(200, "POST", "/v1/inventory/us-t/restock", `{"qty":10}`)
		r.ok(200, "POST", "/v1/carts/us-cs/items", `{"sku":"us-s","qty":5}`)
		r.ok(200, "POST", "/v1/carts/us-cs/items", `{"sku":"us-t","qty":4}`)
		p = expectProblem(t, r.do("POST", "/v1/carts/us-cs/checkout", `{}`), 409, "insufficient_stock", "")
		lines, _ := p["lines"].([]any)
		if len(lines) != 1 {
			t.Fatalf("lines %v, want the one failing sku", p["lines"])
		}
		if l := lines[0].(map[string]any); l["sku"] != "us-s" || l["available"] != 2.0 {
			t.Errorf("failing line %v, want us-s with 2 available", l)
		}
		checkItem(t, r.ok(200, "GET", "/v1/inventory/us-t", ""), "us-t", "us-east", 10, 0)
		checkCart(t, r.ok(200, "GET", "/v1/carts/us-cs", ""), "us-cs", "us-s", 5, "us-t", 4)
	})

	t.Run("cart_empty", func(t *testing.T) {
		expectProblem(t, r.do("POST", "/v1/carts/never-touched/checkout", ""), 409, "cart_empty", "")
		r.ok(200, "POST", "/v1/carts/emptied/items", `{"sku":"us-a","qty":1}`)
		r.ok(200, "DELETE", "/v1/carts/emptied", "")
		expectProblem(t, r.do("POST", "/v1/carts/emptied/checkout", `{"ttl_ms":5000}`), 409, "cart_empty", "")
	})

	t.Run("causal tokens", func(t *testing.T) {
		res := r.do("POST", "/v1/carts/causal/items", `{"sku":"us-a","qty":1}`)
		tok := res.header.Get("Lattice-Token")
		expectOK(t, res, 200)
		// Read your writes: the region has applied its own token.
		checkCart(t, r.ok(200, "GET", "/v1/carts/causal", "", "Lattice-Token", tok, "Lattice-Wait", "0"), "causal", "us-a", 1)

		// A token covering writes of eu-west that never arrive.
		ahead := aheadToken()
		start := time.Now()
		expectProblem(t, r.do("GET", "/v1/carts/causal", "", "Lattice-Token", ahead, "Lattice-Wait", "150"), 503, "causal_timeout", "")
		if d := time.Since(start); d < 150*time.Millisecond || d > 10*time.Second {
			t.Errorf("causal_timeout after %v, want after the 150 ms wait", d)
		}
		before := takeCartToken(t, r.client, "causal")
		expectProblem(t, r.do("POST", "/v1/carts/causal/items", `{"sku":"us-b","qty":1}`, "Lattice-Token", ahead, "Lattice-Wait", "0"), 503, "causal_timeout", "")
		if after := takeCartToken(t, r.client, "causal"); after != before {
			t.Errorf("a write refused with causal_timeout changed the region")
		}
		checkCart(t, r.ok(200, "GET", "/v1/carts/causal", ""), "causal", "us-a", 1)

		expectProblem(t, r.do("GET", "/v1/carts/causal", "", "Lattice-Token", "%%%"), 400, "invalid_token", "")
		req, _ := http.NewRequest("GET", r.base+"/v1/carts/causal", nil)
		req.Header.Add("Lattice-Token", tok)
		req.Header.Add("Lattice-Token", tok)
		hres, err := r.hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		hres.Body.Close()
		if hres.StatusCode != 400 {
			t.Errorf("two Lattice-Token headers: %d, want 400", hres.StatusCode)
		}
	})

	t.Run("home_unavailable", func(t *testing.T) {
		// eu-west is the home of eu-* skus and is not running.
		checkItem(t, r.ok(200, "POST", "/v1/inventory/eu-x/restock", `{"qty":5}`), "eu-x", "eu-west", 5, 0)
		checkItem(t, r.ok(200, "POST", "/v1/inventory/eu-x/adjust", `{"delta":2}`), "eu-x", "eu-west", 7, 0)
		checkItem(t, r.ok(200, "GET", "/v1/inventory/eu-x", ""), "eu-x", "eu-west", 7, 0)
		checkCart(t, r.ok(200, "POST", "/v1/carts/us-ce/items", `{"sku":"eu-x","qty":1}`), "us-ce", "eu-x", 1)
		before := takeCartToken(t, r.client, "us-ce")
		for _, req := range []request{
			{method: "GET", path: "/v1/inventory/eu-x?consistent=true"},
			{method: "POST", path: "/v1/inventory/eu-x/adjust", body: `{"delta":-1}`},
			{method: "POST", path: "/v1/reservations", body: `{"sku":"eu-x","qty":1}`},
			{method: "POST", path: "/v1/reservations", body: `{"sku":"eu-x","qty":1}`, header: map[string]string{"Idempotency-Key": "eu-1"}},
			{method: "GET", path: "/v1/reservations/eu-west:1"},
			{method: "POST", path: "/v1/reservations/eu-west:1/commit"},
			{method: "POST", path: "/v1/reservations/eu-west:1/release"},
			{method: "POST", path: "/v1/carts/us-ce/checkout"},
			{method: "POST", path: "/v1/carts/us-ce/checkout", header: map[string]string{"Idempotency-Key": "eu-2"}},
		} {
			start := time.Now()
			expectProblem(t, r.send(req), 503, "home_unavailable", "")
			if d := time.Since(start); d > 2*time.Second {
				t.Errorf("%s %s failed after %v, not fast", req.method, req.path, d)
			}
		}
		if after := takeCartToken(t, r.client, "us-ce"); after != before {
			t.Errorf("requests refused with home_unavailable changed the region")
		}
		checkCart(t, r.ok(200, "GET", "/v1/carts/us-ce", ""), "us-ce", "eu-x", 1)
		checkItem(t, r.ok(200, "GET", "/v1/inventory/eu-x", ""), "eu-x", "eu-west", 7, 0)
		// The checkout with a key failed transiently: a retry may run
		// again (and fails the same way while eu-west is away).
		expectProblem(t, r.do("POST", "/v1/carts/us-ce/checkout", "", "Idempotency-Key", "eu-2"), 503, "home_unavailable", "")
	})
}

// TestCartFull fills a cart with the most distinct skus SPEC §6 allows.
// It runs with durability everysec only to make the thousand writes quick.
func TestCartFull(t *testing.T) {
	r := startRegion(t, testConfig(t.TempDir(), config.DurabilityEverySec), "us-east", Options{})
	for i := range 1000 {
		res := r.do("POST", "/v1/carts/full/items", fmt.Sprintf(`{"sku":"us-%04d","qty":1}`, i))
		if res.status != 200 {
			t.Fatalf("add %d: %v", i, res)
		}
	}
	before := takeCartToken(t, r.client, "full")
	expectProblem(t, r.do("POST", "/v1/carts/full/items", `{"sku":"us-new","qty":1}`), 422, "cart_full", "")
	expectProblem(t, r.do("PUT", "/v1/carts/full/items/us-new", `{"qty":2}`), 422, "cart_full", "")
	if after := takeCartToken(t, r.client, "full"); after != before {
		t.Errorf("a refused cart_full changed the region")
	}
	// Lines already in the cart still change, and a freed slot is usable.
	r.ok(200, "POST", "/v1/carts/full/items", `{"sku":"us-0000","qty":1}`)
	r.ok(200, "DELETE", "/v1/carts/full/items/us-0001", "")
	m := r.ok(200, "POST", "/v1/carts/full/items", `{"sku":"us-new","qty":1}`)
	if n := len(m["items"].([]any)); n != 1000 {
		t.Errorf("cart holds %d skus, want 1000", n)
	}
}

func takeCartToken(t *testing.T, c *client, cart string) string {
	t.Helper()
	res := c.do("GET", "/v1/carts/"+cart, "")
	if res.status != 200 {
		t.Fatalf("%v", res)
	}
	return res.header.Get("Lattice-Token") + "|" + string(res.body)
}
