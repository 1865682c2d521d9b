package api

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/latticedb/lattice/region"
)

// declared reports whether the operation method (lower case) of path in
// the served OpenAPI document declares an answer of status.
func declared(t *testing.T, path, method, status string) bool {
	t.Helper()
	o := OpenAPI().Paths[path][method]
	if o == nil {
		t.Fatalf("the document has no %s %s", method, path)
	}
	return o.Responses[status] != nil
}

// TestCheckoutStatusNotFoundDeclared checks GET
// /v1/carts/{cart_id}/checkout against the OpenAPI document, "the
// machine-readable form" of docs/api.md: docs/api.md (Checkout) lists its
// answers as "200, 400 without a key, 404 not_found if the coordinator
// holds no checkout of that cart with that key …, 503 home_unavailable",
// and the route answers that 404, but the document's operation declares
// no 404.
func TestCheckoutStatusNotFoundDeclared(t *testing.T) {
	e, _ := newTestAPI(t)
	w := req{method: http.MethodGet, path: "/v1/carts/c1/checkout", header: map[string]string{HeaderIdempotencyKey: "co-1"}}.do(t, e)
	assertProblem(t, w, http.StatusNotFound, region.CodeNotFound, "")
	if !declared(t, "/v1/carts/{cart_id}/checkout", "get", "404") {
		t.Errorf("GET /v1/carts/{cart_id}/checkout answers 404 not_found for a key naming no checkout (docs/api.md, Checkout), but its OpenAPI operation declares only %v",
			keysOf(OpenAPI().Paths["/v1/carts/{cart_id}/checkout"]["get"].Responses))
	}
}

// TestCheckoutStatusKeyDeclaredRequired checks the Idempotency-Key of GET
// /v1/carts/{cart_id}/checkout: docs/api.md (Routes) marks it
// "**required** (names the checkout)" and the route answers 400 without
// it, but the OpenAPI operation takes the shared IdempotencyKey
// parameter, which is declared "required": false.
func TestCheckoutStatusKeyDeclaredRequired(t *testing.T) {
	e, _ := newTestAPI(t)
	w := req{method: http.MethodGet, path: "/v1/carts/c1/checkout"}.do(t, e)
	assertProblem(t, w, http.StatusBadRequest, region.CodeInvalidRequest, HeaderIdempotencyKey)
	doc := OpenAPI()
	found := false
	for _, p := range doc.Paths["/v1/carts/{cart_id}/checkout"]["get"].Parameters {
		if r, ok := p["$ref"].(string); ok {
			p = doc.Components.Parameters[strings.TrimPrefix(r, "#/components/parameters/")]
		}
		if p["name"] != HeaderIdempotencyKey {
			continue
		}
		found = true
		if p["required"] != true {
			t.Errorf("GET /v1/carts/{cart_id}/checkout answers 400 without %s (docs/api.md: required), but its OpenAPI parameter is %v", HeaderIdempotencyKey, p)
		}
	}
	if !found {
		t.Errorf("GET /v1/carts/{cart_id}/checkout: no %s parameter in the document", HeaderIdempotencyKey)
	}
}

// TestBodylessWritesDeclareTooLarge checks the writes that take no body
// (docs/api.md, Routes: body "none", "an empty body or {}"): they read
// whatever body is sent, and one over 64 KiB is 413 body_too_large; the
// OpenAPI document declares 413 only on operations with a requestBody
// ("every one with a body 413"), so these four declare no 413.
func TestBodylessWritesDeclareTooLarge(t *testing.T) {
	big := strings.Repeat(" ", MaxBodyBytes+1)
	for _, tc := range []struct{ method, path, docPath string }{
		{http.MethodDelete, "/v1/carts/c1", "/v1/carts/{cart_id}"},
		{http.MethodDelete, "/v1/carts/c1/items/book", "/v1/carts/{cart_id}/items/{sku}"},
		{http.MethodPost, "/v1/reservations/us-east:1/commit", "/v1/reservations/{id}/commit"},
		{http.MethodPost, "/v1/reservations/us-east:1/release", "/v1/reservations/{id}/release"},
	} {
		e, f := newTestAPI(t)
		w := req{method: tc.method, path: tc.path, body: big}.do(t, e)
		assertProblem(t, w, http.StatusRequestEntityTooLarge, CodeBodyTooLarge, "body")
		if len(f.Calls()) != 0 {
			t.Errorf("%s %s: calls %+v", tc.method, tc.path, f.Calls())
		}
		if !declared(t, tc.docPath, strings.ToLower(tc.method), "413") {
			t.Errorf("%s %s answers 413 body_too_large to a body over %d bytes, but its OpenAPI operation declares only %v",
				tc.method, tc.docPath, MaxBodyBytes, keysOf(OpenAPI().Paths[tc.docPath][strings.ToLower(tc.method)].Responses))
		}
	}
}

// TestStartingAnswersDeclared checks the routes a starting region
// answers 503 starting (docs/api.md, Problem codes: "every route but GET
// /healthz answers this until the region serves"; the document's own
// Unavailable response says "starting (every route but /healthz while
// the region opens its store)") against the OpenAPI document:
// GET /v1/openapi.json and GET /metrics declare no 503.
func TestStartingAnswersDeclared(t *testing.T) {
	starting := Starting("us-east", func() string { return "opening its store" }, nil, false)
	for _, path := range []string{"/v1/openapi.json", "/metrics", "/readyz", "/v1/cluster"} {
		w := httptest.NewRecorder()
		starting.ServeHTTP(w, httptest.NewRequest(http.MethodGet, path, nil))
		assertProblem(t, w, http.StatusServiceUnavailable, CodeStarting, "")
		if !declared(t, path, "get", "503") {
			t.Errorf("GET %s answers 503 starting while the region opens its store, but its OpenAPI operation declares only %v",
				path, keysOf(OpenAPI().Paths[path]["get"].Responses))
		}
	}
}

// TestStartingHealthzOtherMethodsAsServing: GET /healthz is the one
// route a starting region serves, and every other request is 503
// starting (docs/api.md); other methods on /healthz are answered as the
// serving region answers them (HEAD 405), so that a probe does not pass
// while the region starts and fail once it is up. OPTIONS on a known path
// answers 204 with Allow (docs/api.md, Routes), and the Allow of a 405
// lists the path's methods as the serving region sends them ("OPTIONS,
// GET"); the starting region answers OPTIONS /healthz 405, and both 405s
// with Allow "GET".
func TestStartingHealthzOtherMethodsAsServing(t *testing.T) {
	serving, _ := newTestAPI(t)
	starting := Starting("us-east", func() string { return "opening its store" }, nil, false)
	for _, method := range []string{http.MethodOptions, http.MethodHead} {
		up, early := httptest.NewRecorder(), httptest.NewRecorder()
		serving.ServeHTTP(up, httptest.NewRequest(method, "/healthz", nil))
		starting.ServeHTTP(early, httptest.NewRequest(method, "/healthz", nil))
		if early.Code != up.Code || early.Header().Get("Allow") != up.Header().Get("Allow") {
			t.Errorf("%s /healthz: %d, Allow %q while the region starts; %d, Allow %q once it serves; want the same answer",
				method, early.Code, early.Header().Get("Allow"), up.Code, up.Header().Get("Allow"))
		}
	}
}

func keysOf[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	return sorted(ks...)
}
