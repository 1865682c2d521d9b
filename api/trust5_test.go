package api

import (
	"bytes"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// requestsCounted returns lattice_http_requests_total of region us-east
// for method, route and status in reg (0 when the series does not exist).
func requestsCounted(t *testing.T, reg *prometheus.Registry, method, route string, status int) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "lattice_http_requests_total" {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			want := map[string]string{"region": "us-east", "method": method, "route": route, "status": fmt.Sprint(status)}
			for _, l := range m.GetLabel() {
				if v, ok := want[l.GetName()]; ok && v != l.GetValue() {
					continue next
				}
			}
			return m.GetCounter().GetValue()
		}
	}
	return 0
}

// TestClientSentForwardedHeaderIsCounted: Lattice-Forwarded is the header
// a node of a partitioned region sets when it forwards a request to the
// partition's owner ("Clients do not send it", docs/api.md), and such a
// request is counted once, at the node the client sent it to
// (docs/operations.md, lattice_http_requests_total). A region of one node,
// which forwards nothing, serves requests whose client sent that header
// itself: a write, and, with bearer tokens, requests refused 401 for a
// wrong token. Each was sent to this node by a client and must be counted
// in lattice_http_requests_total here, as the same requests without the
// header are: a client must not be able to take its writes or its token
// guesses out of the region's request and 401 rates by adding a header.
func TestClientSentForwardedHeaderIsCounted(t *testing.T) {
	reg := prometheus.NewRegistry()
	toks := NewTokens()
	if err := toks.Set([]string{readTok}, []string{writeTok}); err != nil {
		t.Fatal(err)
	}
	f := newFake()
	h := New(f, Options{Logger: slog.New(slog.DiscardHandler), Registerer: reg, Tokens: toks})

	// The same request without the header is counted.
	if w := (req{method: "GET", path: "/v1/carts/c1", header: bearer(readTok)}).do(t, h); w.Code != 200 {
		t.Fatalf("read: %d %s", w.Code, w.Body)
	}
	if n := requestsCounted(t, reg, "GET", "/v1/carts/{cart_id}", 200); n != 1 {
		t.Fatalf("a read without %s counted %v times, want 1", HeaderForwarded, n)
	}

	const route = "/v1/carts/{cart_id}/items"
	forged := map[string]string{HeaderForwarded: "us-east/other", "Authorization": "Bearer " + writeTok}
	if w := (req{method: "POST", path: "/v1/carts/c1/items", body: `{"sku":"book","qty":1}`, header: forged}).do(t, h); w.Code != 200 {
		t.Fatalf("add with a client-sent %s: %d %s", HeaderForwarded, w.Code, w.Body)
	}
	if f.writes != 1 {
		t.Fatalf("the add was applied %d times, want once", f.writes)
	}
	const guesses = 5
	for i := range guesses {
		hdr := map[string]string{HeaderForwarded: "us-east/other", "Authorization": fmt.Sprintf("Bearer guess-%016d", i)}
		if w := (req{method: "GET", path: "/v1/carts/c1", header: hdr}).do(t, h); w.Code != 401 {
			t.Fatalf("a wrong token: %d %s", w.Code, w.Body)
		}
	}

	writes := requestsCounted(t, reg, "POST", route, 200)
	refused := requestsCounted(t, reg, "GET", "/v1/carts/{cart_id}", 401)
	if writes != 1 || refused != guesses {
		t.Errorf("lattice_http_requests_total after one add and %d wrong tokens sent by a client with %s: "+
			"POST %s 200 = %v, GET /v1/carts/{cart_id} 401 = %v; want 1 and %d (this node forwards nothing: the client sent them here)",
			guesses, HeaderForwarded, route, writes, refused, guesses)
	}
}

// TestPathTricksDoNotSkipAuth: with bearer tokens, a request without one
// (or with a read-only one, for a write) reaches nothing whatever its
// path looks like: doubled or trailing slashes, percent-encoded letters
// and slashes, dot segments, a probe path with something after it, and
// method-override headers. The service sees no call, and no answer holds
// the presented token.
func TestPathTricksDoNotSkipAuth(t *testing.T) {
	h, f, _ := newAuthAPI(t, false)
	for _, p := range []string{
		"//v1/carts/c1", "/v1/carts/c1/", "/v1//carts/c1", "/%761/carts/c1", "/v1/carts/c1%2F..%2Fc2",
		"/v1/carts/../carts/c1", "/healthz/../v1/carts/c1", "/metrics/../v1/carts/c1", "/metrics/",
		"/v1/carts/c1?x=/metrics", "/v1/inventory/book", "/v1/reservations/us-east:1",
	} {
		for _, m := range []string{"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS"} {
			w := req{method: m, path: p}.do(t, h)
			if w.Code != 401 && w.Code != 404 && w.Code != 405 {
				t.Errorf("%s %s without a token: %d %s", m, p, w.Code, w.Body)
			}
		}
	}
	// A read-only token cannot write through an override header.
	for _, hdr := range []string{"X-HTTP-Method-Override", "X-HTTP-Method", "X-Method-Override"} {
		w := req{method: "POST", path: "/v1/inventory/book/restock", body: `{"qty":1}`,
			header: map[string]string{"Authorization": "Bearer " + readTok, hdr: "GET"}}.do(t, h)
		if w.Code != 403 {
			t.Errorf("POST restock with a read token and %s: GET: %d %s", hdr, w.Code, w.Body)
		}
	}
	if calls := f.Calls(); len(calls) != 0 {
		t.Fatalf("the service was called without a valid token: %+v", calls)
	}
	const wrong = "wrong-token-abcdefghijklmnop"
	w := req{method: "GET", path: "/v1/carts/c1", header: bearer(wrong)}.do(t, h)
	if w.Code != 401 || strings.Contains(w.Body.String(), wrong) || strings.Contains(fmt.Sprint(w.Header()), wrong) {
		t.Fatalf("a wrong token: %d %v %s", w.Code, w.Header(), w.Body)
	}
}

// TestTokensNeverLogged: with the access log on, neither a valid token
// nor a wrong one appears in any record, whatever the answer, a panic's
// record included.
func TestTokensNeverLogged(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	toks := NewTokens()
	if err := toks.Set([]string{readTok}, []string{writeTok}); err != nil {
		t.Fatal(err)
	}
	f := newFake()
	h := New(f, Options{Logger: log, AccessLog: true, Tokens: toks})
	const wrong = "wrong-token-abcdefghijklmnop"
	for _, tok := range []string{writeTok, readTok, wrong} {
		req{method: "POST", path: "/v1/carts/c1/items", body: `{"sku":"b","qty":1}`, header: bearer(tok)}.do(t, h)
		req{method: "GET", path: "/v1/carts/c1", header: bearer(tok)}.do(t, h)
	}
	f.panicky = true
	req{method: "GET", path: "/v1/carts/c1", header: bearer(writeTok)}.do(t, h)
	for _, tok := range []string{writeTok, readTok, wrong} {
		if strings.Contains(buf.String(), tok) {
			t.Errorf("the log holds a token: %s", buf.String())
		}
	}
}

// TestForgedForwardNotServedByNonOwner: a client that sends
// Lattice-Forwarded to a node that does not own the partition gets 503
// partition_unavailable; the node does not apply the write as if it owned
// the partition.
func TestForgedForwardNotServedByNonOwner(t *testing.T) {
	f := newFake()
	var ownerCalls int
	owner := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ownerCalls++
		w.WriteHeader(http.StatusTeapot)
	}))
	t.Cleanup(owner.Close)
	h := New(f, Options{Logger: slog.New(slog.DiscardHandler), Partitioning: &Partitioning{
		Partitions: 4, Self: "us-east/a", Owner: func(int) string { return owner.URL },
	}})
	w := req{method: "POST", path: "/v1/carts/c1/items", body: `{"sku":"b","qty":1}`,
		header: map[string]string{HeaderForwarded: "us-east/b"}}.do(t, h)
	if w.Code != 503 || !strings.Contains(w.Body.String(), "partition_unavailable") {
		t.Fatalf("a forged forward to a node that does not own the partition: %d %s", w.Code, w.Body)
	}
	if f.writes != 0 || ownerCalls != 0 {
		t.Fatalf("a forged forward was applied here (%d) or forwarded again (%d)", f.writes, ownerCalls)
	}
}
