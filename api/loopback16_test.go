package api

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestLoopbackOnly: requests addressed to a loopback host reach the
// handler; one addressed to any other name (a DNS name a web page pointed
// at 127.0.0.1) is 403 forbidden, as a problem, and reaches nothing.
func TestLoopbackOnly(t *testing.T) {
	reached := 0
	h := LoopbackOnly(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { reached++ }))
	for _, host := range []string{"127.0.0.1:7101", "localhost:7101", "LOCALHOST", "[::1]:7101", "127.1.2.3", "::1"} {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest("POST", "/v1/carts/c1/items", strings.NewReader(`{}`))
		req.Host = host
		n := reached
		h.ServeHTTP(rec, req)
		if reached != n+1 || rec.Code != 200 {
			t.Errorf("Host %q: %d, reached %v; want served", host, rec.Code, reached == n+1)
		}
	}
	for _, host := range []string{"attacker.example:7101", "attacker.example", "10.0.0.1:7101", "localhost.attacker.example", ""} {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest("DELETE", "/v1/carts/c1", nil)
		req.Host = host
		n := reached
		h.ServeHTTP(rec, req)
		if reached != n || rec.Code != http.StatusForbidden || !strings.Contains(rec.Body.String(), `"code":"forbidden"`) ||
			rec.Header().Get("Content-Type") != ProblemContentType {
			t.Errorf("Host %q: %d %q %s, reached %v; want 403 forbidden as a problem, not served", host, rec.Code, rec.Header().Get("Content-Type"), rec.Body, reached != n)
		}
	}
}
