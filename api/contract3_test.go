package api

import (
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/latticedb/lattice/crdt"
	"github.com/latticedb/lattice/region"
	"github.com/latticedb/lattice/region/store"
)

// c3Node serves the API of one real region node (us-east, home of every
// sku) over HTTP and returns its base URL.
func c3Node(t *testing.T) string {
	t.Helper()
	st, err := region.OpenStore(filepath.Join(t.TempDir(), "data.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	n, err := region.NewNode(region.Options{Name: "us-east", Store: st})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.Close)
	srv := httptest.NewServer(New(n, Options{Logger: slog.New(slog.DiscardHandler)}))
	t.Cleanup(srv.Close)
	return srv.URL
}

type c3Answer struct {
	status int
	header http.Header
	body   string
}

func c3Send(t *testing.T, method, url, body string, hdr map[string]string) c3Answer {
	t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, r)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	res, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return c3Answer{res.StatusCode, res.Header, string(b)}
}

// TestOptionsOnV1CarriesToken checks the 204 that OPTIONS answers on a
// /v1 path against SPEC §5 ("Every successful response carries a
// Lattice-Token header") and docs/api.md, Headers ("Lattice-Token |
// every successful /v1 response but the OpenAPI document"): the answer
// carries no token.
func TestOptionsOnV1CarriesToken(t *testing.T) {
	base := c3Node(t)
	for _, path := range []string{"/v1/carts/c1", "/v1/inventory/book", "/v1/cluster"} {
		a := c3Send(t, http.MethodOptions, base+path, "", nil)
		if a.status != http.StatusNoContent {
			t.Fatalf("OPTIONS %s: %d %s; want 204", path, a.status, a.body)
		}
		if a.header.Get("Lattice-Token") == "" {
			t.Errorf("OPTIONS %s answered %d without Lattice-Token; want every successful /v1 answer but the OpenAPI document to carry one", path, a.status)
		}
	}
}

// TestPartitionedNodeRefusesMalformedReservationSkuAtOnce checks a node
// of a partitioned region whose other node (owning every partition) is
// down: a new reservation whose body's sku is not 1–128 characters of
// [A-Za-z0-9._:-] names no partition (partitionOf: "a request whose key
// is malformed names none; it is served here, and refused as
// malformed"), as a malformed cart id or sku in a path does; so does a
// body whose only sku-like member is "SKU" (names are case-sensitive).
// Each must be 400 invalid_request naming the member, not forwarded and
// answered 503 partition_unavailable, a retryable answer to a request
// that can never succeed.
func TestPartitionedNodeRefusesMalformedReservationSkuAtOnce(t *testing.T) {
	st, err := region.OpenStore(filepath.Join(t.TempDir(), "data.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	n, err := region.NewNode(region.Options{Name: "us-east", Store: st})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.Close)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := "http://" + ln.Addr().String()
	ln.Close() // nothing listens there any more
	srv := httptest.NewServer(New(n, Options{Logger: slog.New(slog.DiscardHandler), Partitioning: &Partitioning{
		Partitions: 4, Self: "us-east/a", Owner: func(int) string { return down },
	}}))
	t.Cleanup(srv.Close)
	for _, tc := range []struct{ body, field string }{
		{`{"sku":"no such sku!","qty":1}`, "sku"},
		{`{"sku":"","qty":1}`, "sku"},
		{`{"sku":"` + strings.Repeat("s", 129) + `","qty":1}`, "sku"},
		// Names are case-sensitive: "SKU" is an unknown member, not sku.
		{`{"SKU":"book","qty":1}`, "SKU"},
	} {
		a := c3Send(t, http.MethodPost, srv.URL+"/v1/reservations", tc.body, nil)
		if a.status != http.StatusBadRequest || !strings.Contains(a.body, `"field":"`+tc.field+`"`) {
			t.Errorf("POST /v1/reservations %.40s…: %d %.200s; want 400 invalid_request, field %s", tc.body, a.status, a.body, tc.field)
		}
	}
}

// c3ServeCost returns the bytes one GET /v1/carts/c1 with the given
// headers allocates when served by h, the least over a few runs, and the
// last answer.
func c3ServeCost(h http.Handler, hdr map[string]string) (uint64, *httptest.ResponseRecorder) {
	const runs = 10
	var w *httptest.ResponseRecorder
	serve := func() {
		r := httptest.NewRequest(http.MethodGet, "/v1/carts/c1", nil)
		for k, v := range hdr {
			r.Header.Set(k, v)
		}
		w = httptest.NewRecorder()
		h.ServeHTTP(w, r)
	}
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	serve()
	// The least of the runs: what reused buffers (sync.Pool, which the
	// race detector makes drop items at random) leave a request to
	// allocate.
	least := uint64(math.MaxUint64)
	for range runs {
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		serve()
		runtime.ReadMemStats(&after)
		least = min(least, after.TotalAlloc-before.TotalAlloc)
	}
	return least, w
}

// TestCausalTokenCostBounded checks what a causal token costs the region
// that reads it from a request's Lattice-Token. A token stands for at
// most 64 KiB of context (docs/api.md, Causal tokens): reading one costs
// a bounded amount whatever it holds — at most 8× its size plus 32 KiB
// for a token refused at once (a 5-byte compressed "z.AwA": once the
// inflater's 40 KB state each), and at most 256 KiB for the largest
// tokens a region honours (a 1.4 KB compressed token of 256 replicas of
// 63-character names, and a 3.9 KB plain token of MaxTokenCloudDots dots
// out of order, each a causal_timeout with Lattice-Wait: 0).
func TestCausalTokenCostBounded(t *testing.T) {
	st, err := region.OpenStore(filepath.Join(t.TempDir(), "data.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	n, err := region.NewNode(region.Options{Name: "us-east", Store: st})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.Close)
	e := New(n, Options{Logger: slog.New(slog.DiscardHandler)})
	// 256 replicas of 63-character names: compressed, as FormatToken
	// sends a context of more than 8 KiB.
	c := crdt.Context{VV: map[crdt.ReplicaID]uint64{}}
	for i := range 256 {
		c.VV[crdt.ReplicaID(fmt.Sprintf("%063d", i))] = uint64(i + 1)
	}
	big := crdt.FormatToken(&c)
	if !strings.HasPrefix(big, "z.") || !crdt.TokenFits(big) {
		t.Fatalf("token of %d bytes, prefix %.2q: want a compressed token that fits", len(big), big)
	}
	// The most dots out of order a token is read with rather than as its
	// ceiling.
	cl := crdt.Context{VV: map[crdt.ReplicaID]uint64{"a": 1}, Cloud: map[crdt.Dot]struct{}{}}
	for i := range crdt.MaxTokenCloudDots {
		cl.Cloud[crdt.Dot{Replica: "a", Counter: uint64(3 + 2*i)}] = struct{}{}
	}
	cloud := crdt.FormatToken(&cl)
	base, _ := c3ServeCost(e, nil)
	for _, tok := range []string{"z.AwA", big, cloud} {
		cost, w := c3ServeCost(e, map[string]string{"Lattice-Token": tok, "Lattice-Wait": "0"})
		if w.Code != http.StatusBadRequest && w.Code != http.StatusServiceUnavailable {
			t.Fatalf("token of %d bytes: %d %s; want 400 invalid_token or 503 causal_timeout", len(tok), w.Code, w.Body)
		}
		extra := int64(cost) - int64(base)
		limit := int64(256 << 10)
		if w.Code == http.StatusBadRequest {
			limit = int64(8*len(tok) + 32<<10)
		}
		if extra > limit {
			t.Errorf("a request with a %d-byte Lattice-Token (answered %d) allocates %d bytes more than one without (%.0f× the token); want at most %d", len(tok), w.Code, extra, float64(extra)/float64(len(tok)), limit)
		}
	}
}
