package api_test

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/latticedb/lattice/api"
)

// TestLoopbackOnlyRefusesOtherSitesPages: lattice dev serves 127.0.0.1
// without tokens, and a page of any site may send a form or a no-cors
// fetch there (a POST of a JSON body as text/plain, which the API
// reads). A request a browser sent for a page of another site, by its
// Origin or Sec-Fetch-Site, is refused; the console's own page, served
// from a loopback host, and clients that send neither header are served.
func TestLoopbackOnlyRefusesOtherSitesPages(t *testing.T) {
	served := 0
	h := api.LoopbackOnly(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { served++ }))
	for _, c := range []struct {
		name   string
		header map[string]string
		want   int
	}{
		{"no browser headers", nil, http.StatusOK},
		{"the console's own page", map[string]string{"Origin": "http://127.0.0.1:7101", "Sec-Fetch-Site": "same-origin"}, http.StatusOK},
		{"a page of localhost", map[string]string{"Origin": "http://localhost:7102"}, http.StatusOK},
		{"another site's page", map[string]string{"Origin": "https://evil.example"}, http.StatusForbidden},
		{"an opaque origin", map[string]string{"Origin": "null"}, http.StatusForbidden},
		{"a cross-site fetch without Origin", map[string]string{"Sec-Fetch-Site": "cross-site"}, http.StatusForbidden},
	} {
		t.Run(c.name, func(t *testing.T) {
			before := served
			req := httptest.NewRequest(http.MethodPost, "http://127.0.0.1:7101/v1/carts/c1/items", nil)
			for k, v := range c.header {
				req.Header.Set(k, v)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != c.want {
				t.Fatalf("answered %d, want %d: %s", rec.Code, c.want, rec.Body)
			}
			if got := served - before; (got == 1) != (c.want == http.StatusOK) {
				t.Fatalf("served %d times, answered %d", got, rec.Code)
			}
		})
	}
}
