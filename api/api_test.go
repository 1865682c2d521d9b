package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/latticedb/lattice/region"
)

func newTestAPI(t *testing.T) (*echo.Echo, *fakeService) {
	t.Helper()
	f := newFake()
	return New(f, Options{Logger: slog.New(slog.DiscardHandler)}), f
}

type req struct {
	method, path, body string
	header             map[string]string
}

func (r req) do(t testing.TB, h http.Handler) *httptest.ResponseRecorder {
	t.Helper()
	var body io.Reader
	if r.body != "" {
		body = strings.NewReader(r.body)
	}
	hr := httptest.NewRequest(r.method, r.path, body)
	for k, v := range r.header {
		hr.Header.Set(k, v)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, hr)
	return w
}

func decodeObject(t *testing.T, w *httptest.ResponseRecorder) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(w.Body.Bytes(), &m); err != nil {
		t.Fatalf("response body %q: %v", w.Body.String(), err)
	}
	return m
}

func keys(m map[string]any) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

func sorted(s ...string) []string { slices.Sort(s); return s }

var (
	cartKeys        = sorted("cart_id", "region", "items")
	itemKeys        = sorted("sku", "home", "stock", "reserved", "available")
	reservationKeys = sorted("reservation_id", "sku", "qty", "home", "state", "expires_at")
	orderKeys       = sorted("order_id", "cart_id", "lines")
)

func TestRoutesSuccess(t *testing.T) {
	cases := []struct {
		name   string
		req    req
		status int
		keys   []string
		call   string
		args   []any
		check  func(t *testing.T, m map[string]any, w *httptest.ResponseRecorder)
	}{
		{name: "get cart", req: req{method: "GET", path: "/v1/carts/c1"}, status: 200, keys: cartKeys,
			call: "GetCart", args: []any{"c1"},
			check: func(t *testing.T, m map[string]any, _ *httptest.ResponseRecorder) {
				if items, ok := m["items"].([]any); !ok || len(items) != 0 {
					t.Errorf("items = %#v, want []", m["items"])
				}
				if m["cart_id"] != "c1" || m["region"] != "us-east" {
					t.Errorf("cart %v", m)
				}
			}},
		{name: "add item", req: req{method: "POST", path: "/v1/carts/c1/items", body: `{"sku":"book","qty":2}`}, status: 200, keys: cartKeys,
			call: "AddItem", args: []any{"c1", "book", int64(2)},
			check: func(t *testing.T, m map[string]any, _ *httptest.ResponseRecorder) {
				want := []any{map[string]any{"sku": "book", "qty": float64(2)}}
				if !reflect.DeepEqual(m["items"], want) {
					t.Errorf("items = %#v", m["items"])
				}
			}},
		{name: "add max qty", req: req{method: "POST", path: "/v1/carts/c1/items", body: `{"qty":1000000,"sku":"A.b_c:d-9"}`}, status: 200, keys: cartKeys,
			call: "AddItem", args: []any{"c1", "A.b_c:d-9", int64(1000000)}},
		{name: "set item", req: req{method: "PUT", path: "/v1/carts/c1/items/book", body: `{"qty":3}`}, status: 200, keys: cartKeys,
			call: "SetItem", args: []any{"c1", "book", int64(3)}},
		{name: "set item to zero", req: req{method: "PUT", path: "/v1/carts/c1/items/book", body: `{"qty":0}`}, status: 200, keys: cartKeys,
			call: "SetItem", args: []any{"c1", "book", int64(0)}},
		{name: "remove item", req: req{method: "DELETE", path: "/v1/carts/c1/items/book"}, status: 200, keys: cartKeys,
			call: "RemoveItem", args: []any{"c1", "book"}},
		{name: "remove item with {} body", req: req{method: "DELETE", path: "/v1/carts/c1/items/book", body: " {} "}, status: 200, keys: cartKeys,
			call: "RemoveItem", args: []any{"c1", "book"}},
		{name: "clear cart", req: req{method: "DELETE", path: "/v1/carts/c1"}, status: 200, keys: cartKeys,
			call: "ClearCart", args: []any{"c1"}},
		{name: "checkout default ttl", req: req{method: "POST", path: "/v1/carts/c1/checkout"}, status: 201, keys: orderKeys,
			call: "Checkout", args: []any{"c1", 10 * time.Minute},
			check: func(t *testing.T, m map[string]any, _ *httptest.ResponseRecorder) {
				lines, _ := m["lines"].([]any)
				if len(lines) != 1 {
					t.Fatalf("lines = %#v", m["lines"])
				}
				if got := keys(lines[0].(map[string]any)); !slices.Equal(got, sorted("sku", "qty", "reservation_id", "home")) {
					t.Errorf("line keys %v", got)
				}
			}},
		{name: "checkout ttl", req: req{method: "POST", path: "/v1/carts/c1/checkout", body: `{"ttl_ms":1000}`, header: map[string]string{HeaderIdempotencyKey: "k1"}},
			status: 201, keys: orderKeys, call: "Checkout", args: []any{"c1", time.Second}},
		{name: "get item", req: req{method: "GET", path: "/v1/inventory/book"}, status: 200, keys: itemKeys,
			call: "GetItem", args: []any{"book", false},
			check: func(t *testing.T, m map[string]any, _ *httptest.ResponseRecorder) {
				if m["home"] != "eu-west" || m["stock"] != float64(10) || m["reserved"] != float64(3) || m["available"] != float64(7) {
					t.Errorf("item %v", m)
				}
			}},
		{name: "get item consistent", req: req{method: "GET", path: "/v1/inventory/book?consistent=true"}, status: 200, keys: itemKeys,
			call: "GetItem", args: []any{"book", true}},
		{name: "get item not consistent", req: req{method: "GET", path: "/v1/inventory/book?consistent=false"}, status: 200, keys: itemKeys,
			call: "GetItem", args: []any{"book", false}},
		{name: "restock", req: req{method: "POST", path: "/v1/inventory/book/restock", body: `{"qty":5}`}, status: 200, keys: itemKeys,
			call: "Restock", args: []any{"book", int64(5)}},
		{name: "adjust down", req: req{method: "POST", path: "/v1/inventory/book/adjust", body: `{"delta":-3,"reason":"damaged ✗"}`}, status: 200, keys: itemKeys,
			call: "Adjust", args: []any{"book", int64(-3), "damaged ✗"}},
		{name: "adjust up no reason", req: req{method: "POST", path: "/v1/inventory/book/adjust", body: `{"delta":1000000}`}, status: 200, keys: itemKeys,
			call: "Adjust", args: []any{"book", int64(1000000), ""}},
		{name: "reserve", req: req{method: "POST", path: "/v1/reservations", body: `{"sku":"book","qty":1}`}, status: 201, keys: reservationKeys,
			call: "Reserve", args: []any{"book", int64(1), 10 * time.Minute},
			check: func(t *testing.T, m map[string]any, w *httptest.ResponseRecorder) {
				if loc := w.Header().Get("Location"); loc != "/v1/reservations/eu-west.r7" {
					t.Errorf("Location = %q", loc)
				}
				if m["state"] != "held" || m["expires_at"] != "2030-01-02T03:04:05Z" {
					t.Errorf("reservation %v", m)
				}
			}},
		{name: "reserve max ttl", req: req{method: "POST", path: "/v1/reservations", body: `{"sku":"book","qty":1,"ttl_ms":86400000}`}, status: 201, keys: reservationKeys,
			call: "Reserve", args: []any{"book", int64(1), 24 * time.Hour}},
		{name: "get reservation", req: req{method: "GET", path: "/v1/reservations/eu-west.r7"}, status: 200, keys: reservationKeys,
			call: "GetReservation", args: []any{"eu-west.r7"}},
		{name: "commit", req: req{method: "POST", path: "/v1/reservations/eu-west.r7/commit"}, status: 200, keys: reservationKeys,
			call: "Commit", args: []any{"eu-west.r7"}},
		{name: "release", req: req{method: "POST", path: "/v1/reservations/eu-west.r7/release", body: "{}"}, status: 200, keys: reservationKeys,
			call: "Release", args: []any{"eu-west.r7"}},
		{name: "cluster", req: req{method: "GET", path: "/v1/cluster"}, status: 200, keys: sorted("region", "replica", "catching_up", "divergent_keys", "version_vector", "store", "peers")},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e, f := newTestAPI(t)
			w := tc.req.do(t, e)
			if w.Code != tc.status {
				t.Fatalf("status %d, want %d: %s", w.Code, tc.status, w.Body)
			}
			if ct := w.Header().Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type %q", ct)
			}
			if tok := w.Header().Get(HeaderToken); !strings.HasPrefix(tok, "vv.us-east.") {
				t.Errorf("%s = %q", HeaderToken, tok)
			}
			m := decodeObject(t, w)
			if got := keys(m); !slices.Equal(got, tc.keys) {
				t.Errorf("keys %v, want %v", got, tc.keys)
			}
			calls := f.Calls()
			if tc.call != "" {
				if len(calls) != 1 || calls[0].Method != tc.call || !reflect.DeepEqual(calls[0].Args, tc.args) {
					t.Errorf("calls %+v, want one %s%v", calls, tc.call, tc.args)
				}
			}
			if tc.check != nil {
				tc.check(t, m, w)
			}
		})
	}
}

// TestTokenTakenAfterWrite checks that the token of a write's response
// covers the write: the fake's token changes with every write.
func TestTokenTakenAfterWrite(t *testing.T) {
	e, _ := newTestAPI(t)
	w := req{method: "POST", path: "/v1/inventory/book/restock", body: `{"qty":1}`}.do(t, e)
	if got := w.Header().Get(HeaderToken); got != "vv.us-east.1" {
		t.Errorf("token after first write = %q", got)
	}
	w = req{method: "GET", path: "/v1/inventory/book"}.do(t, e)
	if got := w.Header().Get(HeaderToken); got != "vv.us-east.1" {
		t.Errorf("token after read = %q", got)
	}
}

func TestHealthReadyOpenAPI(t *testing.T) {
	e, f := newTestAPI(t)
	w := req{method: "GET", path: "/healthz"}.do(t, e)
	if w.Code != 200 || decodeObject(t, w)["status"] != "ok" {
		t.Errorf("healthz %d %s", w.Code, w.Body)
	}
	w = req{method: "GET", path: "/readyz"}.do(t, e)
	if w.Code != 200 || decodeObject(t, w)["status"] != "ready" {
		t.Errorf("readyz %d %s", w.Code, w.Body)
	}
	f.mu.Lock()
	f.ready = false
	f.mu.Unlock()
	w = req{method: "GET", path: "/readyz"}.do(t, e)
	assertProblem(t, w, 503, region.CodeUnavailable, "")
	w = req{method: "GET", path: "/healthz"}.do(t, e)
	if w.Code != 200 {
		t.Errorf("healthz while not ready: %d", w.Code)
	}

	w = req{method: "GET", path: "/v1/openapi.json"}.do(t, e)
	if w.Code != 200 || w.Header().Get("Content-Type") != "application/json" {
		t.Fatalf("openapi %d %q", w.Code, w.Header().Get("Content-Type"))
	}
	var doc Document
	if err := json.Unmarshal(w.Body.Bytes(), &doc); err != nil {
		t.Fatal(err)
	}
	if doc.OpenAPI != "3.1.0" || len(doc.Paths) != len(OpenAPI().Paths) {
		t.Errorf("served document: openapi %q, %d paths", doc.OpenAPI, len(doc.Paths))
	}
	if len(f.Calls()) != 0 {
		t.Errorf("calls %+v", f.Calls())
	}
}

// assertProblem checks a problem response and returns its members.
func assertProblem(t *testing.T, w *httptest.ResponseRecorder, status int, code, field string) map[string]any {
	t.Helper()
	if w.Code != status {
		t.Fatalf("status %d, want %d: %s", w.Code, status, w.Body)
	}
	if ct := w.Header().Get("Content-Type"); ct != ProblemContentType {
		t.Errorf("Content-Type %q, want %q", ct, ProblemContentType)
	}
	if tok := w.Header().Get(HeaderToken); tok != "" {
		t.Errorf("error response carries %s %q", HeaderToken, tok)
	}
	m := decodeObject(t, w)
	if m["code"] != code {
		t.Errorf("code %v, want %s (%v)", m["code"], code, m)
	}
	if m["status"] != float64(status) {
		t.Errorf("status member %v", m["status"])
	}
	if m["type"] != ProblemTypePrefix+code {
		t.Errorf("type %v", m["type"])
	}
	if s, _ := m["title"].(string); s == "" {
		t.Errorf("no title: %v", m)
	}
	if got, _ := m["field"].(string); got != field {
		t.Errorf("field %q, want %q (%v)", got, field, m)
	}
	if field != "" {
		if d, _ := m["detail"].(string); !strings.Contains(d, field) {
			t.Errorf("detail %q does not name %q", d, field)
		}
	}
	return m
}

func TestBadInputs(t *testing.T) {
	long := strings.Repeat("x", 129)
	items := "/v1/carts/c1/items"
	cases := []struct {
		name  string
		req   req
		field string
	}{
		// Path parameters.
		{"cart_id with space", req{method: "GET", path: "/v1/carts/bad%20id"}, "cart_id"},
		{"cart_id with slash", req{method: "GET", path: "/v1/carts/a%2Fb"}, "cart_id"},
		{"cart_id too long", req{method: "DELETE", path: "/v1/carts/" + long}, "cart_id"},
		{"cart_id unicode", req{method: "POST", path: "/v1/carts/%C3%A9/items", body: `{"sku":"a","qty":1}`}, "cart_id"},
		{"sku path invalid", req{method: "PUT", path: "/v1/carts/c1/items/bad*sku", body: `{"qty":1}`}, "sku"},
		{"sku path too long", req{method: "DELETE", path: "/v1/carts/c1/items/" + long}, "sku"},
		{"inventory sku invalid", req{method: "GET", path: "/v1/inventory/a%20b"}, "sku"},
		{"restock sku invalid", req{method: "POST", path: "/v1/inventory/a%25b/restock", body: `{"qty":1}`}, "sku"},
		{"reservation id invalid", req{method: "GET", path: "/v1/reservations/r%21"}, "id"},
		{"commit id invalid", req{method: "POST", path: "/v1/reservations/" + long + "/commit"}, "id"},

		// Malformed bodies.
		{"empty body", req{method: "POST", path: items}, "body"},
		{"blank body", req{method: "POST", path: items, body: "  \n"}, "body"},
		{"truncated JSON", req{method: "POST", path: items, body: `{"sku":"a",`}, "body"},
		{"syntax error", req{method: "POST", path: items, body: `{"sku":"a" "qty":1}`}, "body"},
		{"array body", req{method: "POST", path: items, body: `[{"sku":"a","qty":1}]`}, "body"},
		{"null body", req{method: "POST", path: items, body: `null`}, "body"},
		{"string body", req{method: "POST", path: items, body: `"x"`}, "body"},
		{"two values", req{method: "POST", path: items, body: `{"sku":"a","qty":1}{"sku":"a","qty":1}`}, "body"},
		{"trailing garbage", req{method: "POST", path: items, body: `{"sku":"a","qty":1} x`}, "body"},
		{"unknown field", req{method: "POST", path: items, body: `{"sku":"a","qty":1,"colour":"red"}`}, "colour"},
		{"field case differs", req{method: "POST", path: items, body: `{"SKU":"a","qty":1}`}, "SKU"},
		{"repeated key", req{method: "POST", path: items, body: `{"sku":"a","qty":1,"qty":2}`}, "qty"},

		// Add.
		{"sku missing", req{method: "POST", path: items, body: `{"qty":1}`}, "sku"},
		{"sku null", req{method: "POST", path: items, body: `{"sku":null,"qty":1}`}, "sku"},
		{"sku number", req{method: "POST", path: items, body: `{"sku":7,"qty":1}`}, "sku"},
		{"sku empty", req{method: "POST", path: items, body: `{"sku":"","qty":1}`}, "sku"},
		{"sku invalid", req{method: "POST", path: items, body: `{"sku":"a b","qty":1}`}, "sku"},
		{"sku too long", req{method: "POST", path: items, body: `{"sku":"` + long + `","qty":1}`}, "sku"},
		{"qty missing", req{method: "POST", path: items, body: `{"sku":"a"}`}, "qty"},
		{"qty string", req{method: "POST", path: items, body: `{"sku":"a","qty":"1"}`}, "qty"},
		{"qty fraction", req{method: "POST", path: items, body: `{"sku":"a","qty":1.5}`}, "qty"},
		{"qty exponent", req{method: "POST", path: items, body: `{"sku":"a","qty":1e3}`}, "qty"},
		{"qty huge", req{method: "POST", path: items, body: `{"sku":"a","qty":100000000000000000000}`}, "qty"},
		{"qty bool", req{method: "POST", path: items, body: `{"sku":"a","qty":true}`}, "qty"},
		{"add qty zero", req{method: "POST", path: items, body: `{"sku":"a","qty":0}`}, "qty"},
		{"add qty negative", req{method: "POST", path: items, body: `{"sku":"a","qty":-1}`}, "qty"},
		{"add qty over", req{method: "POST", path: items, body: `{"sku":"a","qty":1000001}`}, "qty"},

		// Set.
		{"set qty missing", req{method: "PUT", path: "/v1/carts/c1/items/a", body: `{}`}, "qty"},
		{"set qty negative", req{method: "PUT", path: "/v1/carts/c1/items/a", body: `{"qty":-1}`}, "qty"},
		{"set qty over", req{method: "PUT", path: "/v1/carts/c1/items/a", body: `{"qty":1000001}`}, "qty"},
		{"set sku in body", req{method: "PUT", path: "/v1/carts/c1/items/a", body: `{"sku":"a","qty":1}`}, "sku"},

		// Routes without a body.
		{"remove with body", req{method: "DELETE", path: "/v1/carts/c1/items/a", body: `{"qty":1}`}, "qty"},
		{"clear with body", req{method: "DELETE", path: "/v1/carts/c1", body: `5`}, "body"},
		{"commit with body", req{method: "POST", path: "/v1/reservations/r1/commit", body: `{"force":true}`}, "force"},
		{"release with body", req{method: "POST", path: "/v1/reservations/r1/release", body: `[]`}, "body"},

		// Checkout.
		{"checkout ttl low", req{method: "POST", path: "/v1/carts/c1/checkout", body: `{"ttl_ms":999}`}, "ttl_ms"},
		{"checkout ttl high", req{method: "POST", path: "/v1/carts/c1/checkout", body: `{"ttl_ms":86400001}`}, "ttl_ms"},
		{"checkout ttl string", req{method: "POST", path: "/v1/carts/c1/checkout", body: `{"ttl_ms":"1s"}`}, "ttl_ms"},
		{"checkout unknown", req{method: "POST", path: "/v1/carts/c1/checkout", body: `{"ttl":1000}`}, "ttl"},

		// Inventory.
		{"restock missing", req{method: "POST", path: "/v1/inventory/a/restock", body: `{}`}, "qty"},
		{"restock zero", req{method: "POST", path: "/v1/inventory/a/restock", body: `{"qty":0}`}, "qty"},
		{"restock over", req{method: "POST", path: "/v1/inventory/a/restock", body: `{"qty":1000001}`}, "qty"},
		{"restock negative", req{method: "POST", path: "/v1/inventory/a/restock", body: `{"qty":-5}`}, "qty"},
		{"adjust missing", req{method: "POST", path: "/v1/inventory/a/adjust", body: `{"reason":"x"}`}, "delta"},
		{"adjust zero", req{method: "POST", path: "/v1/inventory/a/adjust", body: `{"delta":0}`}, "delta"},
		{"adjust over", req{method: "POST", path: "/v1/inventory/a/adjust", body: `{"delta":1000001}`}, "delta"},
		{"adjust under", req{method: "POST", path: "/v1/inventory/a/adjust", body: `{"delta":-1000001}`}, "delta"},
		{"adjust string", req{method: "POST", path: "/v1/inventory/a/adjust", body: `{"delta":"-1"}`}, "delta"},
		{"reason long", req{method: "POST", path: "/v1/inventory/a/adjust", body: `{"delta":1,"reason":"` + strings.Repeat("é", 257) + `"}`}, "reason"},
		{"reason control", req{method: "POST", path: "/v1/inventory/a/adjust", body: `{"delta":1,"reason":"a\nb"}`}, "reason"},
		{"reason number", req{method: "POST", path: "/v1/inventory/a/adjust", body: `{"delta":1,"reason":5}`}, "reason"},
		{"consistent yes", req{method: "GET", path: "/v1/inventory/a?consistent=yes"}, "consistent"},
		{"consistent empty", req{method: "GET", path: "/v1/inventory/a?consistent="}, "consistent"},
		{"consistent True", req{method: "GET", path: "/v1/inventory/a?consistent=True"}, "consistent"},
		{"consistent twice", req{method: "GET", path: "/v1/inventory/a?consistent=true&consistent=false"}, "consistent"},
		{"unknown query", req{method: "GET", path: "/v1/inventory/a?consistant=true"}, "consistant"},
		{"query on cart", req{method: "GET", path: "/v1/carts/c1?pretty"}, "pretty"},

		// Reservations.
		{"reserve sku missing", req{method: "POST", path: "/v1/reservations", body: `{"qty":1}`}, "sku"},
		{"reserve sku invalid", req{method: "POST", path: "/v1/reservations", body: `{"sku":"a/b","qty":1}`}, "sku"},
		{"reserve qty missing", req{method: "POST", path: "/v1/reservations", body: `{"sku":"a"}`}, "qty"},
		{"reserve qty zero", req{method: "POST", path: "/v1/reservations", body: `{"sku":"a","qty":0}`}, "qty"},
		{"reserve qty over", req{method: "POST", path: "/v1/reservations", body: `{"sku":"a","qty":1000001}`}, "qty"},
		{"reserve ttl low", req{method: "POST", path: "/v1/reservations", body: `{"sku":"a","qty":1,"ttl_ms":0}`}, "ttl_ms"},
		{"reserve ttl high", req{method: "POST", path: "/v1/reservations", body: `{"sku":"a","qty":1,"ttl_ms":86400001}`}, "ttl_ms"},
		{"reserve ttl fraction", req{method: "POST", path: "/v1/reservations", body: `{"sku":"a","qty":1,"ttl_ms":1.0}`}, "ttl_ms"},
		{"reserve unknown", req{method: "POST", path: "/v1/reservations", body: `{"sku":"a","qty":1,"home":"eu-west"}`}, "home"},

		// Headers.
		{"idempotency key empty", req{method: "POST", path: "/v1/reservations", body: `{"sku":"a","qty":1}`, header: map[string]string{HeaderIdempotencyKey: ""}}, HeaderIdempotencyKey},
		{"idempotency key long", req{method: "POST", path: "/v1/reservations/r1/commit", header: map[string]string{HeaderIdempotencyKey: strings.Repeat("k", 256)}}, HeaderIdempotencyKey},
		{"idempotency key non-ASCII", req{method: "POST", path: "/v1/reservations/r1/release", header: map[string]string{HeaderIdempotencyKey: "clé"}}, HeaderIdempotencyKey},
		{"idempotency key control", req{method: "POST", path: "/v1/carts/c1/checkout", header: map[string]string{HeaderIdempotencyKey: "a\tb"}}, HeaderIdempotencyKey},
		{"idempotency key on add", req{method: "POST", path: items, body: `{"sku":"a","qty":1}`, header: map[string]string{HeaderIdempotencyKey: "k"}}, HeaderIdempotencyKey},
		{"idempotency key on restock", req{method: "POST", path: "/v1/inventory/a/restock", body: `{"qty":1}`, header: map[string]string{HeaderIdempotencyKey: "k"}}, HeaderIdempotencyKey},
		{"wait not a number", req{method: "GET", path: "/v1/carts/c1", header: map[string]string{HeaderWait: "abc"}}, HeaderWait},
		{"wait negative", req{method: "GET", path: "/v1/carts/c1", header: map[string]string{HeaderWait: "-1"}}, HeaderWait},
		{"wait fraction", req{method: "GET", path: "/v1/carts/c1", header: map[string]string{HeaderWait: "1.5"}}, HeaderWait},
		{"wait over max", req{method: "GET", path: "/v1/carts/c1", header: map[string]string{HeaderWait: "10001"}}, HeaderWait},
		{"wait huge", req{method: "POST", path: items, body: `{"sku":"a","qty":1}`, header: map[string]string{HeaderWait: "99999999999999999999"}}, HeaderWait},
		{"wait empty", req{method: "GET", path: "/v1/carts/c1", header: map[string]string{HeaderWait: ""}}, HeaderWait},
		{"wait plus sign", req{method: "GET", path: "/v1/carts/c1", header: map[string]string{HeaderWait: "+5"}}, HeaderWait},
		{"wait with token", req{method: "GET", path: "/v1/carts/c1", header: map[string]string{HeaderWait: "x", HeaderToken: "vv.us-east.0"}}, HeaderWait},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e, f := newTestAPI(t)
			w := tc.req.do(t, e)
			assertProblem(t, w, http.StatusBadRequest, region.CodeInvalidRequest, tc.field)
			if calls := f.Calls(); len(calls) != 0 {
				t.Errorf("a rejected request reached the service: %+v", calls)
			}
		})
	}
}

func TestRepeatedHeaders(t *testing.T) {
	e, f := newTestAPI(t)
	for _, name := range []string{HeaderIdempotencyKey, HeaderWait} {
		hr := httptest.NewRequest("POST", "/v1/reservations/r1/commit", nil)
		hr.Header.Add(name, "1")
		hr.Header.Add(name, "2")
		w := httptest.NewRecorder()
		e.ServeHTTP(w, hr)
		assertProblem(t, w, 400, region.CodeInvalidRequest, name)
	}
	hr := httptest.NewRequest("GET", "/v1/carts/c1", nil)
	hr.Header.Add(HeaderToken, "a")
	hr.Header.Add(HeaderToken, "b")
	w := httptest.NewRecorder()
	e.ServeHTTP(w, hr)
	assertProblem(t, w, 400, region.CodeInvalidToken, "")
	if calls := f.Calls(); len(calls) != 0 {
		t.Errorf("calls %+v", calls)
	}
}

func TestBodyLimit(t *testing.T) {
	big := `{"sku":"a","qty":1}` + strings.Repeat(" ", 65*1024)
	for _, chunked := range []bool{false, true} {
		t.Run(fmt.Sprintf("chunked=%v", chunked), func(t *testing.T) {
			e, f := newTestAPI(t)
			hr := httptest.NewRequest("POST", "/v1/carts/c1/items", strings.NewReader(big))
			if chunked {
				hr.ContentLength = -1 // the limit must hold without a Content-Length
			}
			w := httptest.NewRecorder()
			e.ServeHTTP(w, hr)
			assertProblem(t, w, http.StatusRequestEntityTooLarge, CodeBodyTooLarge, "body")
			if calls := f.Calls(); len(calls) != 0 {
				t.Errorf("calls %+v", calls)
			}
		})
	}
	// A body of exactly MaxBodyBytes is accepted.
	e, f := newTestAPI(t)
	body := `{"sku":"a","qty":1}`
	body += strings.Repeat(" ", MaxBodyBytes-len(body))
	w := req{method: "POST", path: "/v1/carts/c1/items", body: body}.do(t, e)
	if w.Code != 200 || len(f.Calls()) != 1 {
		t.Fatalf("64 KiB body: %d %s", w.Code, w.Body)
	}
}

func TestNotFoundAndMethodNotAllowed(t *testing.T) {
	e, f := newTestAPI(t)
	for _, path := range []string{"/", "/v1", "/v1/carts", "/v1/carts/c1/items/a/b", "/v2/carts/c1", "/v1/carts/c1/"} {
		w := req{method: "GET", path: path}.do(t, e)
		assertProblem(t, w, 404, region.CodeNotFound, "")
	}
	for _, tc := range []struct{ method, path, allow string }{
		{"PUT", "/v1/carts/c1", "DELETE"},
		{"PATCH", "/v1/carts/c1/items/a", "PUT"},
		{"GET", "/v1/reservations", "POST"},
		{"DELETE", "/v1/inventory/a", "GET"},
		{"POST", "/healthz", "GET"},
	} {
		w := req{method: tc.method, path: tc.path}.do(t, e)
		assertProblem(t, w, 405, CodeMethodNotAllowed, "")
		if allow := w.Header().Get("Allow"); !strings.Contains(allow, tc.allow) {
			t.Errorf("%s %s: Allow %q lacks %s", tc.method, tc.path, allow, tc.allow)
		}
	}
	if calls := f.Calls(); len(calls) != 0 {
		t.Errorf("calls %+v", calls)
	}
}

func TestErrorMapping(t *testing.T) {
	avail := int64(4)
	cases := []struct {
		err        error
		status     int
		code       string
		retryAfter string
		check      func(t *testing.T, m map[string]any)
	}{
		{region.InvalidField("qty", "qty is odd"), 400, region.CodeInvalidRequest, "", nil},
		{region.Errorf(region.CodeInvalidToken, "bad token"), 400, region.CodeInvalidToken, "", nil},
		{region.Errorf(region.CodeNotFound, "no such reservation"), 404, region.CodeNotFound, "", nil},
		{&region.Error{Code: region.CodeInsufficientStock, Detail: "only 4", Available: &avail}, 409, region.CodeInsufficientStock, "",
			func(t *testing.T, m map[string]any) {
				if m["available"] != float64(4) {
					t.Errorf("available %v", m["available"])
				}
				if _, ok := m["lines"]; ok {
					t.Error("lines present")
				}
			}},
		{&region.Error{Code: region.CodeInsufficientStock, Available: new(int64)}, 409, region.CodeInsufficientStock, "",
			func(t *testing.T, m map[string]any) {
				if v, ok := m["available"]; !ok || v != float64(0) {
					t.Errorf("available 0 must be sent: %v", m)
				}
			}},
		{&region.Error{Code: region.CodeInsufficientStock, Lines: []region.SkuAvailable{{SKU: "a", Available: 1, Home: "eu-west"}, {SKU: "b"}}}, 409, region.CodeInsufficientStock, "",
			func(t *testing.T, m map[string]any) {
				want := []any{
					map[string]any{"sku": "a", "available": float64(1), "home": "eu-west"},
					map[string]any{"sku": "b", "available": float64(0)},
				}
				if !reflect.DeepEqual(m["lines"], want) {
					t.Errorf("lines %#v", m["lines"])
				}
			}},
		{region.Errorf(region.CodeCartEmpty, "empty"), 409, region.CodeCartEmpty, "", nil},
		{region.Errorf(region.CodeReservationExpired, "x"), 409, region.CodeReservationExpired, "", nil},
		{region.Errorf(region.CodeReservationReleased, "x"), 409, region.CodeReservationReleased, "", nil},
		{region.Errorf(region.CodeReservationCommit, "x"), 409, region.CodeReservationCommit, "", nil},
		{region.Errorf("reservation_superseded", "x"), 409, "reservation_superseded", "", nil},
		{region.Errorf(region.CodeRequestInProgress, "x"), 409, region.CodeRequestInProgress, "", nil},
		{region.Errorf(region.CodeCartFull, "x"), 422, region.CodeCartFull, "", nil},
		{region.Errorf(region.CodeIdempotencyMismatch, "x"), 422, region.CodeIdempotencyMismatch, "", nil},
		{&region.Error{Code: region.CodeHomeUnavailable, Detail: "eu-west unreachable", RetryAfter: 7}, 503, region.CodeHomeUnavailable, "7", nil},
		{region.Errorf(region.CodeHomeUnavailable, "eu-west unreachable"), 503, region.CodeHomeUnavailable, "1", nil},
		{region.Errorf(region.CodeCausalTimeout, "x"), 503, region.CodeCausalTimeout, "1", nil},
		{region.Errorf(region.CodeUnavailable, "x"), 503, region.CodeUnavailable, "1", nil},
		{fmt.Errorf("wrapped: %w", region.Errorf(region.CodeNotFound, "x")), 404, region.CodeNotFound, "", nil},
		{context.DeadlineExceeded, 503, region.CodeUnavailable, "1", nil},
		{fmt.Errorf("forwarding: %w", context.DeadlineExceeded), 503, region.CodeUnavailable, "1", nil},
	}
	for _, tc := range cases {
		t.Run(tc.code+"/"+tc.err.Error(), func(t *testing.T) {
			e, f := newTestAPI(t)
			f.err = tc.err
			w := req{method: "POST", path: "/v1/reservations", body: `{"sku":"a","qty":1}`}.do(t, e)
			field := ""
			if tc.code == region.CodeInvalidRequest {
				field = "qty"
			}
			m := assertProblem(t, w, tc.status, tc.code, field)
			if got := w.Header().Get("Retry-After"); got != tc.retryAfter {
				t.Errorf("Retry-After %q, want %q", got, tc.retryAfter)
			}
			if tc.check != nil {
				tc.check(t, m)
			}
		})
	}
}

func TestInternalErrorsDoNotLeak(t *testing.T) {
	for _, err := range []error{
		errors.New("buntdb: disk /var/secret/db is full"),
		region.Errorf(region.CodeInternal, "buntdb: disk /var/secret/db is full"),
		region.Errorf("some_new_code", "buntdb: disk /var/secret/db is full"),
	} {
		var logs bytes.Buffer
		f := newFake()
		f.err = err
		e := New(f, Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
		w := req{method: "GET", path: "/v1/carts/c1"}.do(t, e)
		m := assertProblem(t, w, 500, region.CodeInternal, "")
		if strings.Contains(w.Body.String(), "secret") {
			t.Errorf("internal detail leaked: %v", m)
		}
		if !strings.Contains(logs.String(), "secret") {
			t.Errorf("internal error not logged: %q", logs.String())
		}
	}
}

func TestPanicRecovered(t *testing.T) {
	var logs bytes.Buffer
	f := newFake()
	f.panicky = true
	e := New(f, Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	w := req{method: "POST", path: "/v1/inventory/a/restock", body: `{"qty":1}`}.do(t, e)
	assertProblem(t, w, 500, region.CodeInternal, "")
	if !strings.Contains(logs.String(), "fake: boom") || !strings.Contains(logs.String(), "stack") {
		t.Errorf("panic not logged with its stack: %q", logs.String())
	}
	// The handler keeps serving.
	f.mu.Lock()
	f.panicky = false
	f.mu.Unlock()
	if w := (req{method: "GET", path: "/v1/carts/c1"}).do(t, e); w.Code != 200 {
		t.Errorf("after a panic: %d", w.Code)
	}
}

func TestCausalToken(t *testing.T) {
	t.Run("waits with the default bound", func(t *testing.T) {
		e, f := newTestAPI(t)
		w := req{method: "GET", path: "/v1/carts/c1", header: map[string]string{HeaderToken: "vv.eu-west.9"}}.do(t, e)
		if w.Code != 200 {
			t.Fatalf("%d %s", w.Code, w.Body)
		}
		calls := f.Calls()
		if len(calls) != 2 || calls[0].Method != "WaitToken" || calls[0].Args[0] != "vv.eu-west.9" || calls[1].Method != "GetCart" {
			t.Fatalf("calls %+v", calls)
		}
		if d := calls[0].Deadline; d <= 0 || d > DefaultWait {
			t.Errorf("wait deadline %v, want within %v", d, DefaultWait)
		}
		if d := calls[1].Deadline; d <= 0 || d > DefaultRequestTimeout {
			t.Errorf("operation deadline %v, want within %v", d, DefaultRequestTimeout)
		}
	})
	t.Run("Lattice-Wait bounds the wait", func(t *testing.T) {
		for _, tc := range []struct {
			wait string
			max  time.Duration
		}{{"0", 0}, {"250", 250 * time.Millisecond}, {"10000", MaxWait}, {"00042", 42 * time.Millisecond}} {
			e, f := newTestAPI(t)
			w := req{method: "POST", path: "/v1/inventory/a/restock", body: `{"qty":1}`,
				header: map[string]string{HeaderToken: "t", HeaderWait: tc.wait}}.do(t, e)
			calls := f.Calls()
			if tc.max == 0 {
				// A zero wait gives a context that has already ended: the
				// fake proceeds anyway, a real region would time out.
				if len(calls) == 0 || calls[0].Method != "WaitToken" || calls[0].Deadline > 0 {
					t.Errorf("wait 0: %+v", calls)
				}
				continue
			}
			if w.Code != 200 || len(calls) != 2 {
				t.Fatalf("wait %s: %d %+v", tc.wait, w.Code, calls)
			}
			if d := calls[0].Deadline; d <= 0 || d > tc.max {
				t.Errorf("wait %s: deadline %v", tc.wait, d)
			}
		}
	})
	t.Run("timeout is causal_timeout", func(t *testing.T) {
		e, f := newTestAPI(t)
		f.waitFn = func(ctx context.Context, _ string) error {
			<-ctx.Done()
			return ctx.Err()
		}
		w := req{method: "POST", path: "/v1/carts/c1/items", body: `{"sku":"a","qty":1}`,
			header: map[string]string{HeaderToken: "t", HeaderWait: "1"}}.do(t, e)
		assertProblem(t, w, 503, region.CodeCausalTimeout, "")
		if w.Header().Get("Retry-After") == "" {
			t.Error("no Retry-After")
		}
		for _, c := range f.Calls() {
			if c.Method != "WaitToken" {
				t.Errorf("the operation ran after a failed wait: %+v", c)
			}
		}
	})
	t.Run("service errors pass through", func(t *testing.T) {
		e, f := newTestAPI(t)
		f.waitFn = func(context.Context, string) error {
			return region.Errorf(region.CodeInvalidToken, "not a token")
		}
		w := req{method: "GET", path: "/v1/inventory/a", header: map[string]string{HeaderToken: "%%%"}}.do(t, e)
		assertProblem(t, w, 400, region.CodeInvalidToken, "")
	})
	t.Run("empty token", func(t *testing.T) {
		e, f := newTestAPI(t)
		w := req{method: "GET", path: "/v1/inventory/a", header: map[string]string{HeaderToken: ""}}.do(t, e)
		assertProblem(t, w, 400, region.CodeInvalidToken, "")
		if len(f.Calls()) != 0 {
			t.Errorf("calls %+v", f.Calls())
		}
	})
}

func TestRequestTimeoutOption(t *testing.T) {
	f := newFake()
	e := New(f, Options{Logger: slog.New(slog.DiscardHandler), RequestTimeout: 300 * time.Millisecond})
	req{method: "GET", path: "/v1/inventory/a"}.do(t, e)
	calls := f.Calls()
	if len(calls) != 1 || calls[0].Deadline <= 0 || calls[0].Deadline > 300*time.Millisecond {
		t.Fatalf("calls %+v", calls)
	}
}

func idemOf(t *testing.T, r req) region.Idem {
	t.Helper()
	e, f := newTestAPI(t)
	w := r.do(t, e)
	if w.Code/100 != 2 {
		t.Fatalf("%s %s: %d %s", r.method, r.path, w.Code, w.Body)
	}
	calls := f.Calls()
	if len(calls) != 1 {
		t.Fatalf("calls %+v", calls)
	}
	return calls[0].Idem
}

func TestIdempotencyFingerprint(t *testing.T) {
	key := map[string]string{HeaderIdempotencyKey: "order-42 retry"}
	reserve := func(body string) req {
		return req{method: "POST", path: "/v1/reservations", body: body, header: key}
	}
	base := idemOf(t, reserve(`{"sku":"book","qty":2,"ttl_ms":5000}`))
	if base.Key != "order-42 retry" {
		t.Errorf("key %q", base.Key)
	}
	if base.Fingerprint == ([32]byte{}) {
		t.Fatal("no fingerprint")
	}
	for _, body := range []string{
		`{"ttl_ms":5000,"qty":2,"sku":"book"}`,
		"\n{ \"qty\" : 2,\t\"sku\":\"book\" ,\"ttl_ms\":5000 }\n",
	} {
		if got := idemOf(t, reserve(body)); got != base {
			t.Errorf("body %q: fingerprint differs for the same request", body)
		}
	}
	for _, body := range []string{
		`{"sku":"book","qty":3,"ttl_ms":5000}`,
		`{"sku":"pen","qty":2,"ttl_ms":5000}`,
		`{"sku":"book","qty":2,"ttl_ms":6000}`,
		`{"sku":"book","qty":2}`,
	} {
		if got := idemOf(t, reserve(body)); got.Fingerprint == base.Fingerprint {
			t.Errorf("body %q: same fingerprint as a different request", body)
		}
	}
	// Left-out defaults mean the same as explicit ones.
	a := idemOf(t, reserve(`{"sku":"book","qty":2}`))
	b := idemOf(t, reserve(`{"sku":"book","qty":2,"ttl_ms":600000}`))
	if a != b {
		t.Error("ttl_ms left out and ttl_ms 600000 fingerprint differently")
	}
	// The key is not part of the fingerprint; no key still fingerprints.
	other := idemOf(t, req{method: "POST", path: "/v1/reservations", body: `{"sku":"book","qty":2,"ttl_ms":5000}`,
		header: map[string]string{HeaderIdempotencyKey: "other"}})
	if other.Key != "other" || other.Fingerprint != base.Fingerprint {
		t.Errorf("other key: %+v", other)
	}
	none := idemOf(t, req{method: "POST", path: "/v1/reservations", body: `{"sku":"book","qty":2,"ttl_ms":5000}`})
	if none.Key != "" || none.Fingerprint != base.Fingerprint {
		t.Errorf("no key: %+v", none)
	}

	// Route and path parameters are part of it.
	commit := idemOf(t, req{method: "POST", path: "/v1/reservations/r1/commit", header: key})
	commitEmptyObject := idemOf(t, req{method: "POST", path: "/v1/reservations/r1/commit", body: "{}", header: key})
	release := idemOf(t, req{method: "POST", path: "/v1/reservations/r1/release", header: key})
	commit2 := idemOf(t, req{method: "POST", path: "/v1/reservations/r2/commit", header: key})
	if commit != commitEmptyObject {
		t.Error("commit with no body and with {} fingerprint differently")
	}
	if commit.Fingerprint == release.Fingerprint || commit.Fingerprint == commit2.Fingerprint {
		t.Error("commit, release and another reservation's commit share a fingerprint")
	}
	c1 := idemOf(t, req{method: "POST", path: "/v1/carts/c1/checkout", header: key})
	c1b := idemOf(t, req{method: "POST", path: "/v1/carts/c1/checkout", body: `{"ttl_ms": 600000}`, header: key})
	c2 := idemOf(t, req{method: "POST", path: "/v1/carts/c2/checkout", header: key})
	if c1 != c1b || c1.Fingerprint == c2.Fingerprint {
		t.Error("checkout fingerprints")
	}
}

func TestFingerprintUnambiguous(t *testing.T) {
	// Length prefixes keep parts from running into each other.
	a := fingerprint("POST", "/x", []string{"id", "ab"}, nil)
	b := fingerprint("POST", "/x", []string{"ida", "b"}, nil)
	if a == b {
		t.Error("parameter boundaries are ambiguous")
	}
}

// TestDecodeStrict checks the strict decoder's refusals and the field
// each names: repeated names at any depth (the path through arrays
// includes the index), unknown and miscased names, values of the wrong
// type, anything but exactly one object.
func TestDecodeStrict(t *testing.T) {
	type dst struct {
		A any     `json:"a"`
		B any     `json:"b"`
		C *string `json:"c"`
	}
	for _, tc := range []struct {
		in, field, msg string // field "" for none; msg a part of the error
	}{
		{`{"a":1,"b":2}`, "", ""},
		{`{}`, "", ""},
		{`{"a":1,"a":2}`, "a", "a is given more than once"},
		{`{"a":{"b":1,"b":2}}`, "a.b", "a.b is given more than once"},
		{`{"a":[{"b":1},{"b":2}],"c":"a"}`, "", ""},
		{`{"a":[{"b":1,"b":2}]}`, "a.0.b", "is given more than once"},
		{`{"a":"b","b":"a"}`, "", ""},
		{`{"a":{},"a":[]}`, "a", "is given more than once"},
		{`{"a":{"x":1},"b":{"x":1}}`, "", ""},
		{`{"d":1}`, "d", `unknown field "d"`},
		{`{"A":1}`, "A", `unknown field "A"`},
		{`{"c":1}`, "c", "c must be a string, not number"},
		{`{"c":["x"]}`, "c", "c must be a string, not array"},
		{"{\"c\":\"\xff\"}", "body", "malformed JSON"},
		{`[]`, "body", "must be a JSON object"},
		{`null`, "body", "must be a JSON object"},
		{`{"a":1}[]`, "body", "exactly one JSON value"},
		{`{"a":1} {"a":1}`, "body", "exactly one JSON value"},
		{`{"a":1`, "body", "ends early"},
		{`{"a" 1}`, "body", "malformed JSON in the request body at byte"},
	} {
		var d dst
		err := decodeStrict([]byte(tc.in), &d)
		field := ""
		var re *region.Error
		if errors.As(err, &re) {
			field = re.Field
		} else if err != nil {
			t.Errorf("decodeStrict(%s): %T %v", tc.in, err, err)
		}
		if field != tc.field || (tc.msg != "" && !strings.Contains(err.Error(), tc.msg)) {
			t.Errorf("decodeStrict(%s) = %v, field %q; want field %q, %q", tc.in, err, field, tc.field, tc.msg)
		}
	}
}

func TestMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	f := newFake()
	e := New(f, Options{Logger: slog.New(slog.DiscardHandler), Registerer: reg})
	req{method: "GET", path: "/v1/carts/c1"}.do(t, e)
	req{method: "GET", path: "/v1/carts/c2"}.do(t, e)
	req{method: "GET", path: "/v1/carts/bad%20id"}.do(t, e)
	req{method: "GET", path: "/no/such/route"}.do(t, e)
	w := req{method: "GET", path: "/metrics"}.do(t, e)
	if w.Code != 200 || !strings.HasPrefix(w.Header().Get("Content-Type"), "text/plain") {
		t.Fatalf("metrics %d %q", w.Code, w.Header().Get("Content-Type"))
	}
	text := w.Body.String()
	for _, want := range []string{
		`lattice_http_requests_total{method="GET",region="us-east",route="/v1/carts/{cart_id}",status="200"} 2`,
		`lattice_http_requests_total{method="GET",region="us-east",route="/v1/carts/{cart_id}",status="400"} 1`,
		`lattice_http_requests_total{method="GET",region="us-east",route="unmatched",status="404"} 1`,
		`lattice_http_request_duration_seconds_bucket{method="GET",region="us-east",route="/v1/carts/{cart_id}",le="+Inf"} 3`,
		`lattice_http_request_duration_seconds_count{method="GET",region="us-east",route="/v1/carts/{cart_id}"} 3`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("metrics lack %s", want)
		}
	}

	// A second region on the same registry gets its own series.
	f2 := &otherRegion{fakeService: newFake()}
	e2 := New(f2, Options{Logger: slog.New(slog.DiscardHandler), Registerer: reg})
	req{method: "GET", path: "/healthz"}.do(t, e2)
	text = req{method: "GET", path: "/metrics"}.do(t, e).Body.String()
	if !strings.Contains(text, `lattice_http_requests_total{method="GET",region="eu-west",route="/healthz",status="200"} 1`) {
		t.Error("second region's series missing")
	}
	// A second handler for the same region shares the first's metrics.
	New(newFake(), Options{Logger: slog.New(slog.DiscardHandler), Registerer: reg})

	// The default registry of a handler has the Go collectors.
	e3, _ := newTestAPI(t)
	if text := (req{method: "GET", path: "/metrics"}).do(t, e3).Body.String(); !strings.Contains(text, "go_goroutines") {
		t.Error("default registry lacks the Go collector")
	}
}

type otherRegion struct{ *fakeService }

func (otherRegion) Region() string { return "eu-west" }

func TestDebugLog(t *testing.T) {
	var logs bytes.Buffer
	e := New(newFake(), Options{Logger: slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	req{method: "GET", path: "/v1/carts/c1"}.do(t, e)
	var rec map[string]any
	if err := json.Unmarshal(logs.Bytes(), &rec); err != nil {
		t.Fatalf("log %q: %v", logs.String(), err)
	}
	if rec["level"] != "DEBUG" || rec["route"] != "/v1/carts/{cart_id}" || rec["status"] != float64(200) || rec["method"] != "GET" {
		t.Errorf("log record %v", rec)
	}
}

func TestNewServer(t *testing.T) {
	s := NewServer("127.0.0.1:0", http.NotFoundHandler())
	if s.Addr != "127.0.0.1:0" || s.Handler == nil {
		t.Errorf("server %+v", s)
	}
	if s.ReadHeaderTimeout <= 0 || s.ReadTimeout <= 0 || s.IdleTimeout <= 0 || s.MaxHeaderBytes <= 0 {
		t.Errorf("unbounded server: %+v", s)
	}
	if s.WriteTimeout <= MaxWait+DefaultRequestTimeout {
		t.Errorf("WriteTimeout %v cuts off a full causal wait", s.WriteTimeout)
	}
}

// TestOverHTTP runs the handler behind a real server: the body limit and
// problem responses survive a real connection.
func TestOverHTTP(t *testing.T) {
	e, _ := newTestAPI(t)
	srv := httptest.NewUnstartedServer(e)
	srv.Config = NewServer("", e)
	srv.Start()
	defer srv.Close()

	resp, err := srv.Client().Post(srv.URL+"/v1/carts/c1/items", "application/json", strings.NewReader(`{"sku":"book","qty":1}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get(HeaderToken) == "" {
		t.Errorf("add: %d, token %q", resp.StatusCode, resp.Header.Get(HeaderToken))
	}

	pr, pw := io.Pipe()
	go func() {
		chunk := bytes.Repeat([]byte(" "), 4096)
		pw.Write([]byte(`{"sku":"a","qty":1}`))
		for range 20 {
			if _, err := pw.Write(chunk); err != nil {
				return
			}
		}
		pw.Close()
	}()
	hr, _ := http.NewRequest("POST", srv.URL+"/v1/carts/c1/items", pr)
	resp, err = srv.Client().Do(hr)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	pr.Close()
	if resp.StatusCode != 413 || resp.Header.Get("Content-Type") != ProblemContentType {
		t.Errorf("chunked 80 KiB body: %d %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
}

// TestClusterHonoursCommonHeaders checks that GET /v1/cluster refuses an
// Idempotency-Key and waits on a causal token like every other route.
func TestClusterHonoursCommonHeaders(t *testing.T) {
	h, f := newTestAPI(t)
	w := req{method: "GET", path: "/v1/cluster", header: map[string]string{"Idempotency-Key": "k"}}.do(t, h)
	if p := decodeObject(t, w); w.Code != 400 || p["code"] != "invalid_request" {
		t.Fatalf("cluster with an Idempotency-Key: %d %v", w.Code, p)
	}
	f.waitFn = func(context.Context, string) error {
		return region.Errorf(region.CodeCausalTimeout, "not yet")
	}
	w = req{method: "GET", path: "/v1/cluster", header: map[string]string{"Lattice-Token": "t"}}.do(t, h)
	if p := decodeObject(t, w); w.Code != 503 || p["code"] != "causal_timeout" {
		t.Fatalf("cluster with an unmet token: %d %v", w.Code, p)
	}
	f.waitFn = nil
	w = req{method: "GET", path: "/v1/cluster", header: map[string]string{"Lattice-Token": "t"}}.do(t, h)
	if w.Code != 200 || w.Header().Get("Lattice-Token") == "" {
		t.Fatalf("cluster with a met token: %d %s", w.Code, w.Body.String())
	}
}
