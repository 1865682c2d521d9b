package server

import (
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/latticedb/lattice/region/config"
)

// d8Region starts us-east of testConfig (eu-west, the home of eu-* skus,
// is not running).
func d8Region(t *testing.T, d config.Durability) *testRegion {
	t.Helper()
	return startRegion(t, testConfig(t.TempDir(), d), "us-east", Options{})
}

// TestDocsRoutesOptionsAndAllow checks the Routes section of docs/api.md:
// OPTIONS on a known /v1 path is 204 with Allow and a Lattice-Token, a
// method the path lacks is 405 method_not_allowed with the same Allow, HEAD
// is not served, and an unknown path is 404 not_found ("no such route").
func TestDocsRoutesOptionsAndAllow(t *testing.T) {
	r := d8Region(t, config.DurabilityAlways)
	paths := []struct {
		path  string
		allow string
	}{
		{"/v1/carts/c1", "OPTIONS, DELETE, GET"},
		{"/v1/carts/c1/items", "OPTIONS, POST"},
		{"/v1/carts/c1/items/us-a", "OPTIONS, DELETE, PUT"},
		{"/v1/carts/c1/checkout", "OPTIONS, GET, POST"},
		{"/v1/inventory/us-a", "OPTIONS, GET"},
		{"/v1/inventory/us-a/restock", "OPTIONS, POST"},
		{"/v1/inventory/us-a/adjust", "OPTIONS, POST"},
		{"/v1/reservations", "OPTIONS, POST"},
		{"/v1/reservations/us-east:1", "OPTIONS, GET"},
		{"/v1/reservations/us-east:1/commit", "OPTIONS, POST"},
		{"/v1/reservations/us-east:1/release", "OPTIONS, POST"},
		{"/v1/cluster", "OPTIONS, GET"},
	}
	allowSet := func(s string) string {
		parts := strings.Split(s, ",")
		for i := range parts {
			parts[i] = strings.TrimSpace(parts[i])
		}
		return strings.Join(sorted(parts...), ",")
	}
	for _, p := range paths {
		res := r.do("OPTIONS", p.path, "")
		if res.status != http.StatusNoContent {
			t.Errorf("OPTIONS %s: %v, want 204", p.path, res)
			continue
		}
		if got := res.header.Get("Allow"); allowSet(got) != allowSet(p.allow) {
			t.Errorf("OPTIONS %s: Allow %q, want the methods %q", p.path, got, p.allow)
		}
		if res.header.Get("Lattice-Token") == "" {
			t.Errorf("OPTIONS %s: no Lattice-Token (docs: every successful /v1 answer, OPTIONS included)", p.path)
		}
		res = r.do("PATCH", p.path, "{}")
		expectProblem(t, res, http.StatusMethodNotAllowed, "method_not_allowed", "")
		if got := res.header.Get("Allow"); allowSet(got) != allowSet(p.allow) {
			t.Errorf("PATCH %s: Allow %q, want the methods %q", p.path, got, p.allow)
		}
		if strings.Contains(p.allow, "GET") {
			res = r.do("HEAD", p.path, "")
			if res.status != http.StatusMethodNotAllowed {
				t.Errorf("HEAD %s: %d, want 405 (HEAD is not served)", p.path, res.status)
			}
		}
	}
	for _, path := range []string{"/v1/carts", "/v1/nothing", "/v2/carts/c1", "/v1/carts/c1/items/us-a/more", "/v1/cluster/x"} {
		p := expectProblem(t, r.do("GET", path, ""), http.StatusNotFound, "not_found", "")
		if p["detail"] != "no such route" {
			t.Errorf("GET %s: detail %q, want \"no such route\"", path, p["detail"])
		}
	}
}

// TestDocsIdempotencyKeyColumn checks the Idempotency-Key column of the
// routes table: "refused" routes answer 400 invalid_request naming the
// header, "ignored" ones answer as without it.
func TestDocsIdempotencyKeyColumn(t *testing.T) {
	r := d8Region(t, config.DurabilityAlways)
	r.ok(200, "POST", "/v1/inventory/us-a/restock", `{"qty":5}`)
	res := r.ok(201, "POST", "/v1/reservations", `{"sku":"us-a","qty":1}`)
	id := res["reservation_id"].(string)
	refused := []request{
		{method: "GET", path: "/v1/carts/c1"},
		{method: "DELETE", path: "/v1/carts/c1"},
		{method: "POST", path: "/v1/carts/c1/items", body: `{"sku":"us-a","qty":1}`},
		{method: "PUT", path: "/v1/carts/c1/items/us-a", body: `{"qty":1}`},
		{method: "DELETE", path: "/v1/carts/c1/items/us-a"},
		{method: "GET", path: "/v1/inventory/us-a"},
		{method: "POST", path: "/v1/inventory/us-a/restock", body: `{"qty":1}`},
		{method: "POST", path: "/v1/inventory/us-a/adjust", body: `{"delta":1}`},
		{method: "GET", path: "/v1/reservations/" + id},
		{method: "GET", path: "/v1/cluster"},
	}
	for _, req := range refused {
		req.header = map[string]string{"Idempotency-Key": "k-1"}
		expectProblem(t, r.send(req), 400, "invalid_request", "Idempotency-Key")
	}
	for _, path := range []string{"/v1/openapi.json", "/healthz", "/readyz", "/metrics"} {
		res := r.send(request{method: "GET", path: path, header: map[string]string{"Idempotency-Key": "k-1"}})
		if res.status != 200 {
			t.Errorf("GET %s with Idempotency-Key: %d, want 200 (ignored)", path, res.status)
		}
	}
	// The checkout's status requires it.
	expectProblem(t, r.do("GET", "/v1/carts/c1/checkout", ""), 400, "invalid_request", "Idempotency-Key")
	expectProblem(t, r.do("GET", "/v1/carts/c1/checkout", "", "Idempotency-Key", "none-such"), 404, "not_found", "")
}

// TestDocsUnprotectedRoutesIgnoreCommonHeaders: /v1/openapi.json,
// /healthz, /readyz and /metrics take no causal token and check no query
// parameter.
func TestDocsUnprotectedRoutesIgnoreCommonHeaders(t *testing.T) {
	r := d8Region(t, config.DurabilityAlways)
	for _, path := range []string{"/v1/openapi.json", "/healthz", "/readyz", "/metrics"} {
		for _, hdr := range []map[string]string{
			{"Lattice-Token": "not a token!"},
			{"Lattice-Wait": "soon"},
			{},
		} {
			res := r.send(request{method: "GET", path: path + "?x=1&x=2", header: hdr})
			if res.status != 200 {
				t.Errorf("GET %s?x=1&x=2 with %v: %v, want 200", path, hdr, res)
			}
		}
	}
	res := r.do("GET", "/v1/openapi.json", "")
	if res.header.Get("Lattice-Token") != "" {
		t.Errorf("GET /v1/openapi.json carries a Lattice-Token")
	}
	res = r.do("OPTIONS", "/v1/openapi.json", "")
	if res.header.Get("Lattice-Token") != "" {
		t.Errorf("OPTIONS /v1/openapi.json carries a Lattice-Token: %v", res)
	}
}

// TestDocsQueryParameters checks the Query parameters section on every
// /v1 route.
func TestDocsQueryParameters(t *testing.T) {
	r := d8Region(t, config.DurabilityAlways)
	r.ok(200, "POST", "/v1/inventory/us-a/restock", `{"qty":5}`)
	res := r.ok(201, "POST", "/v1/reservations", `{"sku":"us-a","qty":1}`)
	id := res["reservation_id"].(string)
	routes := []request{
		{method: "GET", path: "/v1/carts/c1"},
		{method: "DELETE", path: "/v1/carts/c1"},
		{method: "POST", path: "/v1/carts/c1/items", body: `{"sku":"us-a","qty":1}`},
		{method: "PUT", path: "/v1/carts/c1/items/us-a", body: `{"qty":1}`},
		{method: "DELETE", path: "/v1/carts/c1/items/us-a"},
		{method: "POST", path: "/v1/carts/c1/checkout"},
		{method: "GET", path: "/v1/carts/c1/checkout", header: map[string]string{"Idempotency-Key": "x"}},
		{method: "GET", path: "/v1/inventory/us-a"},
		{method: "POST", path: "/v1/inventory/us-a/restock", body: `{"qty":1}`},
		{method: "POST", path: "/v1/inventory/us-a/adjust", body: `{"delta":1}`},
		{method: "POST", path: "/v1/reservations", body: `{"sku":"us-a","qty":1}`},
		{method: "GET", path: "/v1/reservations/" + id},
		{method: "POST", path: "/v1/reservations/" + id + "/commit"},
		{method: "POST", path: "/v1/reservations/" + id + "/release"},
		{method: "GET", path: "/v1/cluster"},
	}
	for _, base := range routes {
		for _, q := range []struct{ query, field string }{
			{"bogus=1", "bogus"},
			{"a;b=1", ""},
			{"x=%zz", ""},
		} {
			req := base
			req.path += "?" + q.query
			expectProblem(t, r.send(req), 400, "invalid_request", q.field)
		}
	}
	// quorum and consistent where they are taken.
	for _, tc := range []struct {
		path   string
		status int
		field  string
	}{
		{"/v1/inventory/us-a?consistent=true", 200, ""},
		{"/v1/inventory/us-a?consistent=false", 200, ""},
		{"/v1/inventory/us-a?consistent=TRUE", 400, "consistent"},
		{"/v1/inventory/us-a?consistent=1", 400, "consistent"},
		{"/v1/inventory/us-a?consistent=", 400, "consistent"},
		{"/v1/inventory/us-a?consistent=true&consistent=true", 400, "consistent"},
		{"/v1/inventory/us-a?&&consistent=true&", 200, ""},
		{"/v1/inventory/us-a?quorum=1", 200, ""},
		{"/v1/carts/c1?quorum=1", 200, ""},
		{"/v1/carts/c1?quorum=0", 400, "quorum"},
		{"/v1/carts/c1?quorum=3", 400, "quorum"},
		{"/v1/carts/c1?quorum=majority", 200, ""},
		{"/v1/carts/c1?quorum=all", 200, ""},
		{"/v1/carts/c1?quorum=any", 400, "quorum"},
		{"/v1/carts/c1?quorum=1&quorum=1", 400, "quorum"},
		{"/v1/inventory/us-a?quorum=-1", 400, "quorum"},
		{"/v1/carts/c1/checkout?quorum=1", 400, "quorum"},
		{"/v1/reservations/" + id + "?quorum=1", 400, "quorum"},
		{"/v1/cluster?quorum=1", 400, "quorum"},
	} {
		hdr := map[string]string{}
		if strings.Contains(tc.path, "/checkout") {
			hdr["Idempotency-Key"] = "x"
		}
		res := r.send(request{method: "GET", path: tc.path, header: hdr})
		if tc.status == 200 {
			expectOK(t, res, 200)
		} else {
			expectProblem(t, res, tc.status, "invalid_request", tc.field)
		}
	}
}

// TestDocsHeaderRules checks the Headers table: Lattice-Wait,
// Lattice-Replicas, Idempotency-Key and X-Request-Id.
func TestDocsHeaderRules(t *testing.T) {
	r := d8Region(t, config.DurabilityAlways)
	add := func(hdr ...string) response {
		return r.do("POST", "/v1/carts/h1/items", `{"sku":"us-a","qty":1}`, hdr...)
	}
	for _, w := range []string{"0", "10000", "00000", "00001", "999"} {
		expectOK(t, add("Lattice-Wait", w), 200)
	}
	for _, w := range []string{"10001", "000000", "100000", "-1", "+1", "1.5", " ", "1e3", "0x10"} {
		expectProblem(t, add("Lattice-Wait", w), 400, "invalid_request", "Lattice-Wait")
	}
	// Lattice-Wait on every /v1 route, checked without a token.
	expectProblem(t, r.do("GET", "/v1/cluster", "", "Lattice-Wait", "x"), 400, "invalid_request", "Lattice-Wait")
	expectProblem(t, r.do("GET", "/v1/carts/h1", "", "Lattice-Wait", "x"), 400, "invalid_request", "Lattice-Wait")

	for _, v := range []string{"1", "majority", "all"} {
		expectOK(t, add("Lattice-Replicas", v), 200)
	}
	for _, v := range []string{"0", "-1", "two", "1.0", ""} {
		expectProblem(t, add("Lattice-Replicas", v), 400, "invalid_request", "Lattice-Replicas")
	}
	for _, path := range []string{"/v1/carts/h1", "/v1/inventory/us-a", "/v1/cluster"} {
		expectProblem(t, r.do("GET", path, "", "Lattice-Replicas", "1"), 400, "invalid_request", "Lattice-Replicas")
	}

	// Idempotency-Key: 1–255 printable ASCII characters.
	r.ok(200, "POST", "/v1/inventory/us-k/restock", `{"qty":100}`)
	for _, k := range []string{"a", strings.Repeat("k", 255), "a b~!", "x\x7e"} {
		r.ok(201, "POST", "/v1/reservations", `{"sku":"us-k","qty":1}`, "Idempotency-Key", k)
	}
	for _, k := range []string{strings.Repeat("k", 256)} {
		expectProblem(t, r.do("POST", "/v1/reservations", `{"sku":"us-k","qty":1}`, "Idempotency-Key", k), 400, "invalid_request", "Idempotency-Key")
	}

	// X-Request-Id.
	hex32 := regexp.MustCompile(`^[0-9a-f]{32}$`)
	good := "Req.1_2:3/4+5=6@7-" + strings.Repeat("z", 110)
	res := r.do("GET", "/v1/carts/h1", "", "X-Request-Id", good)
	if got := res.header.Get("X-Request-Id"); got != good {
		t.Errorf("X-Request-Id %q echoed as %q", good, got)
	}
	for _, bad := range []string{strings.Repeat("z", 129), "a b", "a,b", "é"} {
		res := r.do("GET", "/v1/cluster?bad=1", "", "X-Request-Id", bad)
		got := res.header.Get("X-Request-Id")
		if !hex32.MatchString(got) {
			t.Errorf("X-Request-Id %q answered with %q, want a new one of 32 hex digits", bad, got)
		}
		p := decode(t, res)
		if p["request_id"] != got {
			t.Errorf("problem request_id %v, header %q", p["request_id"], got)
		}
	}
	res = r.do("GET", "/v1/nothing", "", "X-Request-Id", "abc")
	if p := decode(t, res); p["request_id"] != "abc" || res.header.Get("X-Request-Id") != "abc" {
		t.Errorf("404: request_id %v, header %q, want abc", p["request_id"], res.header.Get("X-Request-Id"))
	}
}

// TestDocsBodyLimitsExact checks the body limits table at its edges.
func TestDocsBodyLimitsExact(t *testing.T) {
	r := d8Region(t, config.DurabilityAlways)
	base := `{"sku":"us-a","qty":1}`
	pad := func(n int) string { return base[:len(base)-1] + strings.Repeat(" ", n-len(base)) + "}" }
	for _, chunked := range []bool{false, true} {
		res := r.send(request{method: "POST", path: "/v1/carts/b1/items", body: pad(65536), chunked: chunked})
		expectOK(t, res, 200)
		res = r.send(request{method: "POST", path: "/v1/carts/b1/items", body: pad(65537), chunked: chunked})
		expectProblem(t, res, 413, "body_too_large", "body")
	}
	nest := func(depth int) string {
		return `{"sku":"us-a","qty":1,"x":` + strings.Repeat("[", depth-1) + strings.Repeat("]", depth-1) + "}"
	}
	// 32 levels: over no limit, refused for its unknown member x.
	expectProblem(t, r.do("POST", "/v1/carts/b1/items", nest(32)), 400, "invalid_request", "x")
	expectProblem(t, r.do("POST", "/v1/carts/b1/items", nest(33)), 400, "invalid_request", "body")
	// 128 names and values: an object of 4 tokens plus an array.
	arr := func(n int) string { // n tokens in all
		vals := make([]string, n-6) // {, "sku", "us-a", "qty", 1, "x", [ ... ] : 7 besides the values
		for i := range vals {
			vals[i] = "0"
		}
		return `{"sku":"us-a","qty":1,"x":[` + strings.Join(vals[:len(vals)-1], ",") + "]}"
	}
	expectProblem(t, r.do("POST", "/v1/carts/b1/items", arr(128)), 400, "invalid_request", "x")
	expectProblem(t, r.do("POST", "/v1/carts/b1/items", arr(129)), 400, "invalid_request", "body")
	long := func(n int) string { return `{"sku":"us-a","qty":1,"x":"` + strings.Repeat("y", n) + `"}` }
	expectProblem(t, r.do("POST", "/v1/carts/b1/items", long(4096)), 400, "invalid_request", "x")
	p := expectProblem(t, r.do("POST", "/v1/carts/b1/items", long(4097)), 400, "invalid_request", "body")
	_ = p
	// A refusing problem repeats at most 64 bytes of the body.
	name := strings.Repeat("n", 200)
	p = expectProblem(t, r.do("POST", "/v1/carts/b1/items", `{"`+name+`":1}`), 400, "invalid_request", "")
	if f, _ := p["field"].(string); strings.Contains(f, strings.Repeat("n", 65)) {
		t.Errorf("field repeats more than 64 bytes of the body: %q", f)
	}
	if d, _ := p["detail"].(string); strings.Contains(d, strings.Repeat("n", 65)) {
		t.Errorf("detail repeats more than 64 bytes of the body: %q", d)
	}
	// null counts as absent; integers without fraction or exponent.
	expectProblem(t, r.do("POST", "/v1/carts/b1/items", `{"sku":"us-a","qty":null}`), 400, "invalid_request", "qty")
	for _, q := range []string{"1.0", "1e3", `"1"`, "1E0", "-0"} {
		res := r.do("POST", "/v1/carts/b1/items", `{"sku":"us-a","qty":`+q+`}`)
		expectProblem(t, res, 400, "invalid_request", "qty")
	}
	// Invalid UTF-8, raw or escaped.
	expectProblem(t, r.do("POST", "/v1/carts/b1/items", "{\"sku\":\"us-\xff\",\"qty\":1}"), 400, "invalid_request", "")
	expectProblem(t, r.do("POST", "/v1/inventory/us-a/adjust", `{"delta":1,"reason":"\ud800"}`), 400, "invalid_request", "")
	// Routes marked none take an empty body or {}.
	r.ok(200, "DELETE", "/v1/carts/b1/items/us-a", "{}")
	r.ok(200, "DELETE", "/v1/carts/b1", " {} ")
	// The checkout takes an empty body, which is the same as {}.
	expectProblem(t, r.do("POST", "/v1/carts/b1/checkout", ""), 409, "cart_empty", "")
	expectProblem(t, r.do("POST", "/v1/carts/b1/checkout", "{}"), 409, "cart_empty", "")
	expectProblem(t, r.do("POST", "/v1/carts/b1/checkout", "null"), 400, "invalid_request", "body")
}

// TestDocsResponseShapes checks the Bodies of docs/api.md's Responses on
// a real region.
func TestDocsResponseShapes(t *testing.T) {
	r := d8Region(t, config.DurabilityAlways)
	cart := r.ok(200, "POST", "/v1/carts/us-s1/items", `{"sku":"us-b","qty":2}`)
	r.ok(200, "POST", "/v1/carts/us-s1/items", `{"sku":"us-a","qty":1}`)
	cart = r.ok(200, "POST", "/v1/carts/us-s1/items", `{"sku":"us-c","qty":1}`)
	checkCart(t, cart, "us-s1", "us-a", 1, "us-b", 2, "us-c", 1)
	checkCart(t, r.ok(200, "GET", "/v1/carts/unknown-cart", ""), "unknown-cart")
	checkItem(t, r.ok(200, "GET", "/v1/inventory/us-never", ""), "us-never", "us-east", 0, 0)
	checkItem(t, r.ok(200, "GET", "/v1/inventory/eu-never", ""), "eu-never", "eu-west", 0, 0)
	r.ok(200, "POST", "/v1/inventory/us-a/restock", `{"qty":10}`)
	r.ok(200, "POST", "/v1/inventory/us-b/restock", `{"qty":10}`)
	r.ok(200, "POST", "/v1/inventory/us-c/restock", `{"qty":10}`)
	res := r.do("POST", "/v1/reservations", `{"sku":"us-a","qty":2}`)
	rv := expectOK(t, res, 201)
	checkKeys(t, "reservation", rv, reservationKeys)
	id, _ := rv["reservation_id"].(string)
	if !regexp.MustCompile(`^us-east:[1-9a-z][0-9a-z]*$`).MatchString(id) {
		t.Errorf("reservation id %q, want us-east:N, N lower-case base 36 without leading zeros", id)
	}
	if loc := res.header.Get("Location"); loc != "/v1/reservations/"+id {
		t.Errorf("Location %q, want /v1/reservations/%s", loc, id)
	}
	if rv["state"] != "held" || rv["home"] != "us-east" || rv["qty"] != 2.0 || rv["sku"] != "us-a" {
		t.Errorf("reservation %v", rv)
	}
	exp, err := time.Parse(time.RFC3339Nano, rv["expires_at"].(string))
	if err != nil || !strings.HasSuffix(rv["expires_at"].(string), "Z") {
		t.Errorf("expires_at %v: not RFC 3339 UTC (%v)", rv["expires_at"], err)
	} else if d := time.Until(exp); d < 9*time.Minute || d > 11*time.Minute {
		t.Errorf("expires_at %v is %v away, want the default 10 minutes", exp, d)
	}
	// The reservation read by its id, percent-encoded or not.
	got := r.ok(200, "GET", "/v1/reservations/"+strings.Replace(id, ":", "%3A", 1), "")
	if got["reservation_id"] != id {
		t.Errorf("GET with an escaped id: %v", got)
	}
	// Order.
	res = r.do("POST", "/v1/carts/us-s1/checkout", `{"ttl_ms":60000}`, "Idempotency-Key", "co-s1")
	order := expectOK(t, res, 201)
	checkKeys(t, "order", order, orderKeys)
	if order["cart_id"] != "us-s1" {
		t.Errorf("order %v", order)
	}
	lines, _ := order["lines"].([]any)
	if len(lines) != 3 {
		t.Fatalf("order lines %v", order["lines"])
	}
	for _, l := range lines {
		checkKeys(t, "order line", l, orderLineKeys)
	}
	checkCart(t, r.ok(200, "GET", "/v1/carts/us-s1", ""), "us-s1")
	st := r.ok(200, "GET", "/v1/carts/us-s1/checkout", "", "Idempotency-Key", "co-s1")
	if len(st) == 0 {
		t.Errorf("checkout status %v", st)
	}
	// /healthz and /readyz.
	for _, tc := range []struct{ path, want string }{
		{"/healthz", `{"region":"us-east","status":"ok"}`},
		{"/readyz", `{"region":"us-east","status":"ready"}`},
	} {
		res := r.do("GET", tc.path, "")
		if res.status != 200 {
			t.Errorf("%v", res)
			continue
		}
		m := decode(t, res)
		if fmt.Sprint(keysOf(m)) != "[region status]" && fmt.Sprint(keysOf(m)) != "[region status warnings]" {
			t.Errorf("%s: %s", tc.path, res.body)
		}
		if m["region"] != "us-east" || (m["status"] != "ok" && m["status"] != "ready") {
			t.Errorf("%s: %s, want %s", tc.path, res.body, tc.want)
		}
	}
}

// TestDocsReservationStateTable checks the commit/release table of
// docs/api.md on a real region.
func TestDocsReservationStateTable(t *testing.T) {
	r := d8Region(t, config.DurabilityAlways)
	r.ok(200, "POST", "/v1/inventory/us-r/restock", `{"qty":100}`)
	reserve := func(ttl int) string {
		m := r.ok(201, "POST", "/v1/reservations", fmt.Sprintf(`{"sku":"us-r","qty":1,"ttl_ms":%d}`, ttl))
		return "/v1/reservations/" + m["reservation_id"].(string)
	}
	state := func(m map[string]any, want string) {
		t.Helper()
		if m["state"] != want {
			t.Errorf("state %v, want %s", m["state"], want)
		}
	}
	held := reserve(60000)
	state(r.ok(200, "POST", held+"/commit", ""), "committed")
	state(r.ok(200, "POST", held+"/commit", ""), "committed")
	expectProblem(t, r.do("POST", held+"/release", ""), 409, "reservation_committed", "")

	held = reserve(60000)
	state(r.ok(200, "POST", held+"/release", ""), "released")
	state(r.ok(200, "POST", held+"/release", ""), "released")
	expectProblem(t, r.do("POST", held+"/commit", ""), 409, "reservation_released", "")

	short := reserve(1000)
	waitFor(t, 10*time.Second, "the reservation to expire", func() bool {
		return strings.Contains(string(r.do("GET", short, "").body), `"state":"expired"`)
	})
	expectProblem(t, r.do("POST", short+"/commit", ""), 409, "reservation_expired", "")
	state(r.ok(200, "POST", short+"/release", ""), "expired")
	checkItem(t, r.ok(200, "GET", "/v1/inventory/us-r", ""), "us-r", "us-east", 99, 0)

	// A replay of a reservation after its expiry reads expired, with the
	// route's success status.
	m := r.ok(201, "POST", "/v1/reservations", `{"sku":"us-r","qty":1,"ttl_ms":1000}`, "Idempotency-Key", "exp-1")
	path := "/v1/reservations/" + m["reservation_id"].(string)
	waitFor(t, 10*time.Second, "the keyed reservation to expire", func() bool {
		return strings.Contains(string(r.do("GET", path, "").body), `"state":"expired"`)
	})
	state(r.ok(201, "POST", "/v1/reservations", `{"sku":"us-r","qty":1,"ttl_ms":1000}`, "Idempotency-Key", "exp-1"), "expired")
	// Same key, other request: 422.
	expectProblem(t, r.do("POST", "/v1/reservations", `{"sku":"us-r","qty":2,"ttl_ms":1000}`, "Idempotency-Key", "exp-1"), 422, "idempotency_mismatch", "")
	// {} defaults are the same request: ttl_ms 600000 left out.
	a := r.ok(201, "POST", "/v1/reservations", `{"sku":"us-r","qty":1}`, "Idempotency-Key", "def-1")
	b := r.ok(201, "POST", "/v1/reservations", `{"ttl_ms":600000,  "qty":1,"sku":"us-r"}`, "Idempotency-Key", "def-1")
	if a["reservation_id"] != b["reservation_id"] {
		t.Errorf("same request with the default spelled out made two reservations: %v %v", a, b)
	}
}

// TestDocsInventoryRules checks the Inventory table: adjust and restock
// ranges, a negative adjustment's insufficient_stock with available, and
// a reason of 256 characters.
func TestDocsInventoryRules(t *testing.T) {
	r := d8Region(t, config.DurabilityAlways)
	checkItem(t, r.ok(200, "POST", "/v1/inventory/us-i/restock", `{"qty":1000000}`), "us-i", "us-east", 1000000, 0)
	checkItem(t, r.ok(200, "POST", "/v1/inventory/us-i/adjust", `{"delta":-1000000,"reason":"`+strings.Repeat("é", 256)+`"}`), "us-i", "us-east", 0, 0)
	checkItem(t, r.ok(200, "POST", "/v1/inventory/us-i/adjust", `{"delta":1000000}`), "us-i", "us-east", 1000000, 0)
	expectProblem(t, r.do("POST", "/v1/inventory/us-i/adjust", `{"delta":1000001}`), 400, "invalid_request", "delta")
	expectProblem(t, r.do("POST", "/v1/inventory/us-i/restock", `{"qty":1000001}`), 400, "invalid_request", "qty")
	expectProblem(t, r.do("POST", "/v1/inventory/us-i/adjust", `{"delta":-1,"reason":"a\u007fb"}`), 400, "invalid_request", "reason")
	expectProblem(t, r.do("POST", "/v1/inventory/us-i/adjust", `{"delta":-1,"reason":"`+strings.Repeat("é", 257)+`"}`), 400, "invalid_request", "reason")
	r.ok(201, "POST", "/v1/reservations", `{"sku":"us-i","qty":999998}`)
	p := expectProblem(t, r.do("POST", "/v1/inventory/us-i/adjust", `{"delta":-3}`), 409, "insufficient_stock", "")
	if p["available"] != 2.0 {
		t.Errorf("available %v, want 2", p["available"])
	}
	p = expectProblem(t, r.do("POST", "/v1/reservations", `{"sku":"us-i","qty":3}`), 409, "insufficient_stock", "")
	if p["available"] != 2.0 {
		t.Errorf("available %v, want 2", p["available"])
	}
	// The reserve qty bounds.
	expectProblem(t, r.do("POST", "/v1/reservations", `{"sku":"us-i","qty":1000001}`), 400, "invalid_request", "qty")
	// A cart add or set of 1,000,000; a sku's quantity may exceed it
	// through several adds.
	r.ok(200, "POST", "/v1/carts/big/items", `{"sku":"us-i","qty":1000000}`)
	checkCart(t, r.ok(200, "POST", "/v1/carts/big/items", `{"sku":"us-i","qty":1000000}`), "big", "us-i", 2000000)
	checkCart(t, r.ok(200, "PUT", "/v1/carts/big/items/us-i", `{"qty":1000000}`), "big", "us-i", 1000000)
	checkCart(t, r.ok(200, "PUT", "/v1/carts/big/items/us-i", `{"qty":0}`), "big")
	checkCart(t, r.ok(200, "DELETE", "/v1/carts/big/items/us-gone", ""), "big")
}

// TestDocsCheckoutStatusAndRecords checks what docs/checkout.md and the
// Idempotency section say a checkout records and its status shows: a
// settled order, a recorded cart_empty, a transient failure that frees
// the cart for another checkout.
func TestDocsCheckoutStatusAndRecords(t *testing.T) {
	r := d8Region(t, config.DurabilityAlways)
	r.ok(200, "POST", "/v1/inventory/us-a/restock", `{"qty":10}`)

	// A settled order.
	r.ok(200, "POST", "/v1/carts/us-c1/items", `{"sku":"us-a","qty":2}`)
	order := r.ok(201, "POST", "/v1/carts/us-c1/checkout", "", "Idempotency-Key", "k-order")
	st := r.ok(200, "GET", "/v1/carts/us-c1/checkout", "", "Idempotency-Key", "k-order")
	if st["phase"] != "settled" || st["cart_id"] != "us-c1" || st["order_id"] != order["order_id"] || st["attempt"] != 0.0 {
		t.Errorf("status of a bought cart: %v, want phase settled, its order id %v, attempt 0", st, order["order_id"])
	}
	if o, _ := st["order"].(map[string]any); o == nil || o["order_id"] != order["order_id"] {
		t.Errorf("status order %v, want %v", st["order"], order)
	}
	steps, _ := st["steps"].([]any)
	var kinds []string
	for _, s := range steps {
		m := s.(map[string]any)
		kinds = append(kinds, fmt.Sprint(m["step"], "/", m["sku"], "/", m["result"]))
	}
	if strings.Join(kinds, " ") != "reserve/us-a/ok commit/us-a/ok" {
		t.Errorf("steps %v, want a reserve and a commit of us-a, both ok", kinds)
	}
	// The status of another cart under that key: none.
	expectProblem(t, r.do("GET", "/v1/carts/us-c2/checkout", "", "Idempotency-Key", "k-order"), 404, "not_found", "")
	// A key used for a reservation names no checkout.
	r.ok(201, "POST", "/v1/reservations", `{"sku":"us-a","qty":1}`, "Idempotency-Key", "k-res")
	expectProblem(t, r.do("GET", "/v1/carts/us-c1/checkout", "", "Idempotency-Key", "k-res"), 404, "not_found", "")
	// The same key on another route at the same region: 422.
	expectProblem(t, r.do("POST", "/v1/carts/us-c1/checkout", "", "Idempotency-Key", "k-res"), 422, "idempotency_mismatch", "")

	// cart_empty is recorded: the key answers it after lines arrive.
	expectProblem(t, r.do("POST", "/v1/carts/us-c3/checkout", "", "Idempotency-Key", "k-empty"), 409, "cart_empty", "")
	r.ok(200, "POST", "/v1/carts/us-c3/items", `{"sku":"us-a","qty":1}`)
	expectProblem(t, r.do("POST", "/v1/carts/us-c3/checkout", "", "Idempotency-Key", "k-empty"), 409, "cart_empty", "")
	st = r.ok(200, "GET", "/v1/carts/us-c3/checkout", "", "Idempotency-Key", "k-empty")
	if f, _ := st["failure"].(map[string]any); st["phase"] != "settled" || f == nil || f["code"] != "cart_empty" {
		t.Errorf("status of an empty cart's checkout: %v, want settled with failure cart_empty", st)
	}

	// insufficient_stock is recorded, with lines naming the home.
	r.ok(200, "POST", "/v1/carts/us-c4/items", `{"sku":"us-a","qty":100}`)
	p := expectProblem(t, r.do("POST", "/v1/carts/us-c4/checkout", "", "Idempotency-Key", "k-short"), 409, "insufficient_stock", "")
	lines, _ := p["lines"].([]any)
	if len(lines) != 1 {
		t.Fatalf("lines %v", p["lines"])
	}
	checkKeys(t, "insufficient_stock line", lines[0], sorted("sku", "available", "home"))
	if l := lines[0].(map[string]any); l["sku"] != "us-a" || l["available"] != 7.0 || l["home"] != "us-east" {
		t.Errorf("line %v, want us-a, 7 available, home us-east", l)
	}
	r.ok(200, "POST", "/v1/inventory/us-a/restock", `{"qty":1000}`)
	expectProblem(t, r.do("POST", "/v1/carts/us-c4/checkout", "", "Idempotency-Key", "k-short"), 409, "insufficient_stock", "")

	// A transient failure (eu-west, a line's home, is down) ends the
	// attempt: its status reads failed-transiently and the cart is free
	// for another checkout, with another key or none.
	r.ok(200, "POST", "/v1/carts/us-c5/items", `{"sku":"eu-x","qty":1}`)
	expectProblem(t, r.do("POST", "/v1/carts/us-c5/checkout", "", "Idempotency-Key", "k-t1"), 503, "home_unavailable", "")
	st = r.ok(200, "GET", "/v1/carts/us-c5/checkout", "", "Idempotency-Key", "k-t1")
	if st["phase"] != "failed-transiently" {
		t.Errorf("status after home_unavailable: %v, want phase failed-transiently", st)
	}
	expectProblem(t, r.do("POST", "/v1/carts/us-c5/checkout", "", "Idempotency-Key", "k-t2"), 503, "home_unavailable", "")
	expectProblem(t, r.do("POST", "/v1/carts/us-c5/checkout", ""), 503, "home_unavailable", "")
	expectProblem(t, r.do("POST", "/v1/carts/us-c5/checkout", "", "Idempotency-Key", "k-t1"), 503, "home_unavailable", "")
}

// TestDocsWaitDefaultsAndHeaderCount: Lattice-Wait defaults to 1,000 ms
// and 0 does not wait; a request of more than 100 header fields is 400
// invalid_request, one of 100 is served.
func TestDocsWaitDefaultsAndHeaderCount(t *testing.T) {
	r := d8Region(t, config.DurabilityAlways)
	ahead := aheadToken()
	start := time.Now()
	expectProblem(t, r.do("GET", "/v1/carts/w1", "", "Lattice-Token", ahead), 503, "causal_timeout", "")
	if d := time.Since(start); d < 900*time.Millisecond || d > 3*time.Second {
		t.Errorf("causal_timeout without Lattice-Wait after %v, want after the default 1,000 ms", d)
	}
	start = time.Now()
	expectProblem(t, r.do("GET", "/v1/carts/w1", "", "Lattice-Token", ahead, "Lattice-Wait", "0"), 503, "causal_timeout", "")
	if d := time.Since(start); d > 500*time.Millisecond {
		t.Errorf("causal_timeout with Lattice-Wait 0 after %v, want at once", d)
	}
	// Go's client sends User-Agent and Accept-Encoding besides these.
	fields := func(n int) map[string]string {
		h := map[string]string{}
		for i := range n - 2 {
			h[fmt.Sprintf("X-Field-%03d", i)] = "v"
		}
		return h
	}
	expectOK(t, r.send(request{method: "GET", path: "/v1/carts/w1", header: fields(100)}), 200)
	expectProblem(t, r.send(request{method: "GET", path: "/v1/carts/w1", header: fields(101)}), 400, "invalid_request", "")
}
