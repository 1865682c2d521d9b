package api

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// checkProblemType checks the problem body of w against docs/api.md
// (Problems): type is present always, "urn:lattice:problem:" + code.
func checkProblemType(t *testing.T, what string, w *httptest.ResponseRecorder, code string) {
	t.Helper()
	var p map[string]any
	if err := json.Unmarshal(w.Body.Bytes(), &p); err != nil {
		t.Fatalf("%s: %d %q: %v", what, w.Code, w.Body, err)
	}
	if p["code"] != code {
		t.Fatalf("%s: %d %s, want the problem %s", what, w.Code, w.Body, code)
	}
	if want := ProblemTypePrefix + code; p["type"] != want {
		t.Errorf("%s: problem type %q, want %q (docs/api.md: type is always urn:lattice:problem: + code): %s", what, p["type"], want, w.Body)
	}
}

// TestLoopbackRefusalProblemType checks the 403 forbidden that lattice
// dev answers a request addressed to a name other than a loopback one
// (docs/api.md, Problem codes: forbidden) is a problem like every other:
// its type is urn:lattice:problem:forbidden, not empty.
func TestLoopbackRefusalProblemType(t *testing.T) {
	h := LoopbackOnly(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {
		t.Error("a request addressed to another host reached the API")
	}))
	req := httptest.NewRequest(http.MethodGet, "/v1/carts/c1", nil)
	req.Host = "attacker.example:7101"
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	if w.Code != http.StatusForbidden {
		t.Fatalf("Host attacker.example: %d %s, want 403", w.Code, w.Body)
	}
	checkProblemType(t, "GET /v1/carts/c1 with Host attacker.example", w, CodeForbidden)
}

// TestStartingHealthzMethodProblemType checks the 405 a starting region
// answers to a method /healthz lacks: docs/api.md (Problem codes:
// starting) says it answers "other methods 405, as once it serves", and
// the serving region's 405 is a problem whose type is
// urn:lattice:problem:method_not_allowed; the starting region's has an
// empty type.
func TestStartingHealthzMethodProblemType(t *testing.T) {
	starting := Starting("us-east", func() string { return "opening its store" }, nil, false)
	serving, _ := newTestAPI(t)
	for name, h := range map[string]http.Handler{"serving": serving, "starting": starting} {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest(http.MethodPost, "/healthz", strings.NewReader("")))
		if w.Code != http.StatusMethodNotAllowed {
			t.Fatalf("%s region, POST /healthz: %d %s, want 405", name, w.Code, w.Body)
		}
		checkProblemType(t, name+" region, POST /healthz", w, CodeMethodNotAllowed)
	}
}
