package api

import (
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"github.com/latticedb/lattice/region"
)

// TestOptionalBodyRefusesNonJSONSpace checks the routes that take no body
// or an optional one (docs/api.md, Bodies: "routes marked "none" above
// take an empty body or {}; the checkout route takes an empty body, which
// is the same as {}") against bodies that are neither: a form feed, a
// no-break space and U+2028 are not JSON white space (RFC 8259 §2: space,
// tab, line feed, carriage return), so each body is one that is not a
// JSON object, and must be 400 invalid_request (field body) without
// reaching the service.
func TestOptionalBodyRefusesNonJSONSpace(t *testing.T) {
	routes := []req{
		{method: http.MethodDelete, path: "/v1/carts/c1"},
		{method: http.MethodDelete, path: "/v1/carts/c1/items/book"},
		{method: http.MethodPost, path: "/v1/carts/c1/checkout"},
		{method: http.MethodPost, path: "/v1/reservations/us-east:1/commit"},
		{method: http.MethodPost, path: "/v1/reservations/us-east:1/release"},
	}
	for _, body := range []string{"\f", "\u00a0", "\u2028"} {
		for _, r := range routes {
			r.body = body
			t.Run(r.method+" "+r.path+" "+strconv.QuoteToASCII(body), func(t *testing.T) {
				e, f := newTestAPI(t)
				w := r.do(t, e)
				if w.Code != http.StatusBadRequest {
					t.Fatalf("%s %s with the body %q: %d %s (%d service calls); want 400 invalid_request: the body is not empty, nor a JSON object",
						r.method, r.path, body, w.Code, w.Body, len(f.Calls()))
				}
				assertProblem(t, w, http.StatusBadRequest, region.CodeInvalidRequest, "body")
				if calls := f.Calls(); len(calls) != 0 {
					t.Errorf("a refused request reached the service: %+v", calls)
				}
			})
		}
	}
}

// TestEmptyMemberNameNamedInField checks the problem refusing a body with
// a member whose name is the empty string: docs/api.md (Problems) has
// field "on invalid_request" naming "the offending body member", and the
// problem codes table says of invalid_request "field names it". The
// problem for {"":1} names no field at all (the query's empty parameter
// name is named "(empty)").
func TestEmptyMemberNameNamedInField(t *testing.T) {
	for _, r := range []req{
		{method: http.MethodPost, path: "/v1/carts/c1/items", body: `{"sku":"a","qty":1,"":1}`},
		{method: http.MethodDelete, path: "/v1/carts/c1", body: `{"":1}`},
		{method: http.MethodPost, path: "/v1/reservations", body: `{"":{"a":1},"sku":"a","qty":1}`},
	} {
		e, f := newTestAPI(t)
		w := r.do(t, e)
		if w.Code != http.StatusBadRequest {
			t.Fatalf("%s %s %s: %d %s; want 400", r.method, r.path, r.body, w.Code, w.Body)
		}
		m := decodeObject(t, w)
		if m["code"] != region.CodeInvalidRequest {
			t.Errorf("%s %s %s: code %v; want invalid_request", r.method, r.path, r.body, m["code"])
		}
		if field, _ := m["field"].(string); field == "" {
			t.Errorf("%s %s %s: the invalid_request problem names no field (%s); want field to name the unknown member", r.method, r.path, r.body, w.Body)
		}
		if calls := f.Calls(); len(calls) != 0 {
			t.Errorf("a refused request reached the service: %+v", calls)
		}
	}
}

// TestPartitionedReserveRefusesOutOfRangeBodyAtOnce checks a node of a
// partitioned region whose other node, owning every partition, is down.
// partitionOf promises for POST /v1/reservations that "a body the handler
// would refuse, or one whose sku is malformed, names no partition and is
// served here, where it is refused at once (400), not forwarded to an
// owner that may be down (503, which says "retry")". A body whose sku is
// well formed but whose qty or ttl_ms is out of range is one the handler
// refuses (qty 1..1,000,000, ttl_ms 1,000..86,400,000): it must be 400
// invalid_request naming the member, not 503 partition_unavailable, a
// retryable answer to a request that can never succeed.
func TestPartitionedReserveRefusesOutOfRangeBodyAtOnce(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := "http://" + ln.Addr().String()
	ln.Close() // nothing listens there any more
	for _, tc := range []struct{ body, field string }{
		{`{"sku":"book","qty":0}`, "qty"},
		{`{"sku":"book","qty":1000001}`, "qty"},
		{`{"sku":"book","qty":1,"ttl_ms":5}`, "ttl_ms"},
	} {
		f := newFake()
		e := New(f, Options{Logger: slog.New(slog.DiscardHandler), Partitioning: &Partitioning{
			Partitions: 4, Self: "us-east/a", Owner: func(int) string { return down },
		}})
		w := httptest.NewRecorder()
		e.ServeHTTP(w, httptest.NewRequest(http.MethodPost, "/v1/reservations", strings.NewReader(tc.body)))
		if w.Code != http.StatusBadRequest {
			t.Errorf("POST /v1/reservations %s: %d %s; want 400 invalid_request, field %s, at once", tc.body, w.Code, w.Body, tc.field)
			continue
		}
		assertProblem(t, w, http.StatusBadRequest, region.CodeInvalidRequest, tc.field)
	}
}

// TestPreferMinimalOnlyWhenPreferred checks Prefer (docs/api.md, Headers:
// "return=minimal (RFC 7240; … parameters and other preferences beside it
// are allowed)"; other preferences leave the answer as it is) against two
// headers that do not ask for return=minimal under RFC 7240: a
// preference whose quoted value holds a comma (the comma is part of the
// value, not a separator), and return given twice ("If any preference is
// specified more than once, only the first instance is to be
// considered", RFC 7240 §2), here first as representation. Each add must
// be answered 200 with the cart, not 204 without it.
func TestPreferMinimalOnlyWhenPreferred(t *testing.T) {
	for _, prefer := range []string{
		`foo="bar,return=minimal"`,
		`return=representation, return=minimal`,
	} {
		e, f := newTestAPI(t)
		w := req{method: http.MethodPost, path: "/v1/carts/c1/items", body: `{"sku":"a","qty":1}`,
			header: map[string]string{HeaderPrefer: prefer}}.do(t, e)
		if w.Code != http.StatusOK || w.Header().Get("Preference-Applied") != "" || !strings.Contains(w.Body.String(), `"items":[`) {
			t.Errorf("POST with Prefer: %s: %d, Preference-Applied %q, body %q; want 200 with the cart",
				prefer, w.Code, w.Header().Get("Preference-Applied"), w.Body)
		}
		if len(f.Calls()) != 1 {
			t.Errorf("calls %+v", f.Calls())
		}
	}
}
