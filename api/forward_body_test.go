package api

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// counterValue returns the value of the counter name of region us-east in
// reg (0 when absent).
func counterValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) > 0 {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	return 0
}

// truncatedBody yields a first part of a body, then fails as a client
// that hangs up in the middle of its body does.
type truncatedBody struct{ r io.Reader }

func (b *truncatedBody) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if err == io.EOF {
		return n, io.ErrUnexpectedEOF
	}
	return n, err
}

func (b *truncatedBody) Close() error { return nil }

// TestForwardOfBrokenBodyIsTheClients: a client that declares a body and
// sends only part of it is refused 400 invalid_request (field body) by a
// region of one node. Sent to a node of a partitioned region that
// forwards it, the owner being up and reachable, it must not be answered
// 503 partition_unavailable, which docs/api.md defines as "the node of
// this region that owns the request's partition cannot be reached", nor
// be counted in lattice_http_forward_failures_total, which
// docs/operations.md defines as the forwards "whose owner could not be
// reached or did not answer": an operator's alert on that counter would
// page for clients that hang up, and the client is told to retry a
// request it never sent whole.
func TestForwardOfBrokenBodyIsTheClients(t *testing.T) {
	var ownerCalls atomic.Int32
	owner := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ownerCalls.Add(1)
		_, _ = io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusBadRequest)
	}))
	t.Cleanup(owner.Close)
	reg := prometheus.NewRegistry()
	h := New(newFake(), Options{Logger: slog.New(slog.DiscardHandler), Registerer: reg, Partitioning: &Partitioning{
		Partitions: 4, Self: "us-east/a", Owner: func(int) string { return owner.URL }, Client: owner.Client(),
	}})

	// Reachable: a whole request is forwarded and answered.
	if w := (req{method: "POST", path: "/v1/carts/c1/items", body: `{"sku":"b","qty":1}`}).do(t, h); w.Code != http.StatusBadRequest {
		t.Fatalf("a whole request forwarded to the owner: %d %s", w.Code, w.Body)
	}

	const body = `{"sku":"b","qty":1}`
	hr := httptest.NewRequest("POST", "/v1/carts/c1/items", nil)
	hr.Header.Set("Content-Type", "application/json")
	hr.Body = &truncatedBody{r: strings.NewReader(body[:8])}
	hr.ContentLength = int64(len(body))
	w := httptest.NewRecorder()
	h.ServeHTTP(w, hr)

	failures := counterValue(t, reg, "lattice_http_forward_failures_total")
	if w.Code == http.StatusServiceUnavailable || failures != 0 {
		t.Errorf("a request whose client sent %d of the %d body bytes it declared, for a partition whose owner is up: "+
			"answered %d %s; lattice_http_forward_failures_total = %v; want the client's error (400 invalid_request, as a region of one node answers) and no forward failure",
			8, len(body), w.Code, strings.TrimSpace(w.Body.String()), failures)
	}
}
