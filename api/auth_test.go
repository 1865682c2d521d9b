package api

import (
	"bytes"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const (
	readTok  = "read-token-0123456789"
	writeTok = "write-token-0123456789"
)

func newAuthAPI(t *testing.T, protectProbes bool) (http.Handler, *fakeService, *Tokens) {
	t.Helper()
	toks := NewTokens()
	if err := toks.Set([]string{readTok}, []string{writeTok}); err != nil {
		t.Fatal(err)
	}
	f := newFake()
	return New(f, Options{Logger: slog.New(slog.DiscardHandler), Tokens: toks, ProtectProbes: protectProbes}), f, toks
}

func bearer(tok string) map[string]string { return map[string]string{"Authorization": "Bearer " + tok} }

func TestAuthScopes(t *testing.T) {
	h, f, _ := newAuthAPI(t, false)
	write := req{method: "POST", path: "/v1/carts/c1/items", body: `{"sku":"book","qty":1}`}
	read := req{method: "GET", path: "/v1/carts/c1"}

	for _, tc := range []struct {
		name   string
		r      req
		header map[string]string
		status int
		code   string
		chall  string
	}{
		{"read without token", read, nil, 401, CodeUnauthorized, `Bearer realm="lattice"`},
		{"write without token", write, nil, 401, CodeUnauthorized, `Bearer realm="lattice"`},
		{"unknown token", write, bearer("not-a-known-token-at-all"), 401, CodeUnauthorized, `error="invalid_token"`},
		{"basic scheme", read, map[string]string{"Authorization": "Basic " + readTok}, 401, CodeUnauthorized, `Bearer realm="lattice"`},
		{"write with read token", write, bearer(readTok), 403, CodeForbidden, `error="insufficient_scope"`},
		{"delete with read token", req{method: "DELETE", path: "/v1/carts/c1"}, bearer(readTok), 403, CodeForbidden, `error="insufficient_scope"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := tc.r
			r.header = tc.header
			w := r.do(t, h)
			m := assertProblem(t, w, tc.status, tc.code, "")
			if got := w.Header().Get("WWW-Authenticate"); !strings.Contains(got, tc.chall) {
				t.Errorf("WWW-Authenticate %q, want it to hold %q", got, tc.chall)
			}
			if id := w.Header().Get(HeaderRequestID); id == "" || m["request_id"] != id {
				t.Errorf("request_id %v, header %q", m["request_id"], id)
			}
		})
	}
	if n := len(f.Calls()); n != 0 {
		t.Fatalf("refused requests reached the service: %d calls %v", n, f.Calls())
	}

	for _, tc := range []struct {
		r   req
		tok string
	}{{read, readTok}, {read, writeTok}, {write, writeTok}} {
		r := tc.r
		r.header = bearer(tc.tok)
		if w := r.do(t, h); w.Code != 200 {
			t.Errorf("%s %s with %s: %d %s", r.method, r.path, tc.tok, w.Code, w.Body)
		}
	}
	// The scheme is case-insensitive.
	r := read
	r.header = map[string]string{"Authorization": "bearer " + readTok}
	if w := r.do(t, h); w.Code != 200 {
		t.Errorf("lower-case scheme: %d %s", w.Code, w.Body)
	}
}

func TestAuthProbes(t *testing.T) {
	for _, protect := range []bool{false, true} {
		h, _, _ := newAuthAPI(t, protect)
		for _, p := range []string{"/healthz", "/readyz", "/metrics"} {
			w := req{method: "GET", path: p}.do(t, h)
			want := 200
			if protect {
				want = 401
			}
			if w.Code != want {
				t.Errorf("protect=%v GET %s without token: %d, want %d", protect, p, w.Code, want)
			}
			if w := (req{method: "GET", path: p, header: bearer(readTok)}).do(t, h); w.Code != 200 {
				t.Errorf("protect=%v GET %s with a read token: %d", protect, p, w.Code)
			}
		}
		// The OpenAPI document is a read like any other.
		if w := (req{method: "GET", path: "/v1/openapi.json"}).do(t, h); w.Code != 401 {
			t.Errorf("openapi.json without token: %d", w.Code)
		}
	}
}

func TestTokensRotate(t *testing.T) {
	h, _, toks := newAuthAPI(t, false)
	const next = "next-write-token-0123456789"
	r := req{method: "POST", path: "/v1/inventory/book/restock", body: `{"qty":1}`, header: bearer(next)}
	if w := r.do(t, h); w.Code != 401 {
		t.Fatalf("before rotation: %d", w.Code)
	}
	if err := toks.Set(nil, []string{next}); err != nil {
		t.Fatal(err)
	}
	if w := r.do(t, h); w.Code != 200 {
		t.Fatalf("after rotation: %d %s", w.Code, w.Body)
	}
	r.header = bearer(writeTok)
	if w := r.do(t, h); w.Code != 401 {
		t.Fatalf("retired token: %d", w.Code)
	}
	// A bad set changes nothing.
	if err := toks.Set([]string{"short"}, nil); err == nil {
		t.Fatal("a short token was accepted")
	}
	if toks.Scope(next) != ScopeWrite {
		t.Fatal("a refused Set changed the tokens")
	}
}

func TestTokenFiles(t *testing.T) {
	dir := t.TempDir()
	write := func(name, data string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	read := write("read", "# readers\n\n  "+readTok+"  \nsecond-read-token-abcdef==\n")
	wr := write("write", writeTok) // a Secret key: no final newline
	toks := NewTokens()
	if err := toks.Load(read, wr); err != nil {
		t.Fatal(err)
	}
	for tok, want := range map[string]Scope{readTok: ScopeRead, "second-read-token-abcdef==": ScopeRead,
		writeTok: ScopeWrite, "unknown-token-0123456789": ScopeNone, "": ScopeNone} {
		if got := toks.Scope(tok); got != want {
			t.Errorf("Scope(%q) = %v, want %v", tok, got, want)
		}
	}
	secret := "bad token with spaces inside"
	for name, data := range map[string]string{
		"empty":   "# nothing\n\n",
		"short":   "abc\n",
		"spaces":  secret + "\n",
		"control": "token-0123456789\x01abc\n",
		"long":    strings.Repeat("a", MaxTokenLen+1),
	} {
		err := toks.Load(write("bad-"+name, data), "")
		if err == nil {
			t.Errorf("%s: no error", name)
			continue
		}
		if !strings.HasPrefix(err.Error(), "api: ") || strings.Contains(err.Error(), secret) {
			t.Errorf("%s: error %q", name, err)
		}
	}
	if err := toks.Load(filepath.Join(dir, "missing"), ""); err == nil {
		t.Error("a missing file loaded")
	}
	if toks.Scope(writeTok) != ScopeWrite {
		t.Fatal("a failed Load changed the tokens")
	}
}

func TestRequestID(t *testing.T) {
	h, _ := newTestAPI(t)
	w := req{method: "GET", path: "/v1/carts/c1", header: map[string]string{HeaderRequestID: "abc-123.x:y/z"}}.do(t, h)
	if got := w.Header().Get(HeaderRequestID); got != "abc-123.x:y/z" {
		t.Errorf("echoed %q", got)
	}
	for _, bad := range []string{"has space", "a\"b", strings.Repeat("x", MaxRequestIDLen+1), "é"} {
		w := req{method: "GET", path: "/v1/nope", header: map[string]string{HeaderRequestID: bad}}.do(t, h)
		got := w.Header().Get(HeaderRequestID)
		if got == bad || !ValidRequestID(got) || len(got) != 32 {
			t.Errorf("invalid id %q answered with %q", bad, got)
		}
		if m := decodeObject(t, w); m["request_id"] != got {
			t.Errorf("problem request_id %v, header %q", m["request_id"], got)
		}
	}
	a := req{method: "GET", path: "/healthz"}.do(t, h).Header().Get(HeaderRequestID)
	b := req{method: "GET", path: "/healthz"}.do(t, h).Header().Get(HeaderRequestID)
	if a == "" || a == b {
		t.Errorf("generated ids %q and %q", a, b)
	}
}

func TestAccessLog(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo})).With("region", "us-east")
	toks := NewTokens()
	if err := toks.Set(nil, []string{writeTok}); err != nil {
		t.Fatal(err)
	}
	h := New(newFake(), Options{Logger: log, AccessLog: true, Tokens: toks})
	req{method: "POST", path: "/v1/carts/c1/items", body: `{"sku":"b","qty":1}`,
		header: map[string]string{HeaderRequestID: "req-1", "Authorization": "Bearer " + writeTok}}.do(t, h)
	line := buf.String()
	for _, want := range []string{"level=INFO", "method=POST", "path=/v1/carts/c1/items", "status=200",
		"duration=", "request_id=req-1", "region=us-east"} {
		if !strings.Contains(line, want) {
			t.Errorf("access log %q lacks %q", line, want)
		}
	}
	if strings.Contains(line, writeTok) {
		t.Errorf("access log holds the token: %q", line)
	}
	buf.Reset()
	req{method: "GET", path: "/healthz"}.do(t, New(newFake(), Options{Logger: log}))
	if buf.Len() != 0 {
		t.Errorf("without AccessLog, INFO got %q", buf.String())
	}
}

func TestOpenAPIDeclaresBearer(t *testing.T) {
	doc := OpenAPI()
	if s := doc.Components.SecuritySchemes["bearer"]; s["type"] != "http" || s["scheme"] != "bearer" {
		t.Fatalf("bearer scheme %v", s)
	}
	if len(doc.Security) != 1 || doc.Security[0]["bearer"] == nil {
		t.Fatalf("document security %v", doc.Security)
	}
	for path, item := range doc.Paths {
		for method, o := range item {
			if o.Responses["401"] == nil {
				t.Errorf("%s %s: no 401", method, path)
			}
			if (method != "get") != (o.Responses["403"] != nil) {
				t.Errorf("%s %s: 403 %v", method, path, o.Responses["403"])
			}
			if probePaths[path] && (len(o.Security) != 2 || len(o.Security[0]) != 0) {
				t.Errorf("%s %s: a probe's security %v does not allow no token", method, path, o.Security)
			}
		}
	}
}
