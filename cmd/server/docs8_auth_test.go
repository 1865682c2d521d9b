package server

import (
	"context"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/latticedb/lattice/region/config"
)

// d8AuthRegion starts us-east over plain HTTP with api_auth token files
// holding read and write (each written as given).
func d8AuthRegion(t *testing.T, read, write string) (*testRegion, error) {
	t.Helper()
	dir := t.TempDir()
	cfg := testConfig(dir, config.DurabilityAlways)
	cfg.APIAuth = config.APIAuth{ReadTokens: filepath.Join(dir, "read"), WriteTokens: filepath.Join(dir, "write")}
	writeAtomic(t, cfg.APIAuth.ReadTokens, []byte(read))
	writeAtomic(t, cfg.APIAuth.WriteTokens, []byte(write))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	srv, err := Start(ctx, cfg, "us-east", Options{Listener: ln, Logger: testLogger(t)})
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { srv.Close() })
	return &testRegion{client: newClient(t, srv.URL()), srv: srv, cfg: cfg}, nil
}

// TestDocsBearerTokens checks the Authentication section of docs/api.md
// and the token file format of docs/configuration.md on a real region.
func TestDocsBearerTokens(t *testing.T) {
	const rtok, wtok = "read-token-0123456789", "write-token-0123456789"
	r, err := d8AuthRegion(t, "# readers\n\n   "+rtok+"   \n", "\t"+wtok)
	if err != nil {
		t.Fatal(err)
	}
	realm := `Bearer realm="lattice"`
	for _, auth := range []string{"", "Basic " + wtok, "Bearer", "Bearer "} {
		var hdr []string
		if auth != "" {
			hdr = []string{"Authorization", auth}
		}
		res := r.do("GET", "/v1/carts/c1", "", hdr...)
		expectProblem(t, res, 401, "unauthorized", "")
		if got := res.header.Get("WWW-Authenticate"); got != realm {
			t.Errorf("Authorization %q: WWW-Authenticate %q, want %q", auth, got, realm)
		}
	}
	res := r.do("GET", "/v1/carts/c1", "", "Authorization", "Bearer unknown-token-0123456789")
	expectProblem(t, res, 401, "unauthorized", "")
	if got := res.header.Get("WWW-Authenticate"); got != realm+`, error="invalid_token"` {
		t.Errorf("unknown token: WWW-Authenticate %q", got)
	}
	// The OpenAPI document needs a token too; the probes do not.
	expectProblem(t, r.do("GET", "/v1/openapi.json", ""), 401, "unauthorized", "")
	for _, p := range []string{"/healthz", "/readyz", "/metrics"} {
		if res := r.do("GET", p, ""); res.status != 200 {
			t.Errorf("GET %s without a token: %v", p, res)
		}
	}
	// A read-only token reads (the scheme in any case), and may not write.
	for _, scheme := range []string{"Bearer", "bearer", "BEARER"} {
		r.ok(200, "GET", "/v1/carts/c1", "", "Authorization", scheme+" "+rtok)
	}
	if res := r.do("GET", "/v1/openapi.json", "", "Authorization", "Bearer "+rtok); res.status != 200 {
		t.Errorf("GET /v1/openapi.json with a read token: %v", res)
	}
	for _, m := range []string{"POST", "PUT", "PATCH", "DELETE"} {
		res := r.do(m, "/v1/carts/c1/items", `{"sku":"us-a","qty":1}`, "Authorization", "Bearer "+rtok)
		p := expectProblem(t, res, 403, "forbidden", "")
		if got := res.header.Get("WWW-Authenticate"); got != realm+`, error="insufficient_scope", scope="write"` {
			t.Errorf("%s with a read token: WWW-Authenticate %q", m, got)
		}
		if want := "the bearer token may only read; " + m + " needs a read-write token"; p["detail"] != want {
			t.Errorf("%s with a read token: detail %q, want %q", m, p["detail"], want)
		}
	}
	// Decided before the body is read: a body over the limit is not 413.
	big := `{"sku":"us-a","qty":1,"pad":"` + strings.Repeat("x", 70<<10) + `"}`
	expectProblem(t, r.do("POST", "/v1/carts/c1/items", big, "Authorization", "Bearer "+rtok), 403, "forbidden", "")
	expectProblem(t, r.do("POST", "/v1/carts/c1/items", big), 401, "unauthorized", "")
	// A read-write token writes, and nothing refused above was written.
	checkCart(t, r.ok(200, "GET", "/v1/carts/c1", "", "Authorization", "Bearer "+wtok), "c1")
	checkCart(t, r.ok(200, "POST", "/v1/carts/c1/items", `{"sku":"us-a","qty":1}`, "Authorization", "Bearer "+wtok), "c1", "us-a", 1)
}

// TestDocsTokenAlphabetLength: docs/configuration.md says "A token is
// 16–512 characters in all (any trailing = included) of [A-Za-z0-9._~+/-]
// followed by any =". A token of 511 such characters and one "=" is
// valid, one of 512 and "=" is not; one of 15 and "=" is, one of 14 and
// "=" is not.
func TestDocsTokenAlphabetLength(t *testing.T) {
	for _, c := range []struct {
		tok string
		ok  bool
	}{
		{strings.Repeat("a", 511) + "=", true},
		{strings.Repeat("a", 512) + "=", false},
		{strings.Repeat("b", 15) + "=", true},
		{strings.Repeat("b", 14) + "=", false},
	} {
		r, err := d8AuthRegion(t, "read-token-0123456789\n", c.tok+"\n")
		switch {
		case c.ok && err != nil:
			t.Errorf("a write token of %d characters in all stops the start: %v", len(c.tok), err)
		case c.ok:
			r.ok(200, "POST", "/v1/carts/c1/items", `{"sku":"us-a","qty":1}`, "Authorization", "Bearer "+c.tok)
		case err == nil:
			t.Errorf("a write token of %d characters in all was accepted, want a start error naming api_auth and line 1", len(c.tok))
		case !strings.Contains(err.Error(), "api_auth") || !strings.Contains(err.Error(), "line 1"):
			t.Errorf("start error %q, want it to name api_auth and line 1", err)
		}
	}
}
