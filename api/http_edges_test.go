package api_test

import (
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/latticedb/lattice/api"
	"github.com/latticedb/lattice/region"
	"github.com/latticedb/lattice/region/store"
)

// edgeSend sends one request with the given headers and reads the whole
// answer.
func edgeSend(t *testing.T, method, url, body string, hdr map[string]string) answer {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
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
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return answer{res.StatusCode, res.Header, b}
}

// edgeCode returns the code member of a problem answer.
func edgeCode(a answer) string {
	var p struct {
		Code  string `json:"code"`
		Field string `json:"field"`
	}
	_ = json.Unmarshal(a.body, &p)
	return p.Code
}

// partitionedNodeAPI serves the API of a node of us-east, a region of 4
// partitions, on a real region node, where another node owns every
// partition: that node is down (its address refuses connections).
func partitionedNodeAPI(t *testing.T) *httptest.Server {
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
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := "http://" + ln.Addr().String()
	ln.Close() // nothing listens there any more
	srv := httptest.NewServer(api.New(n, api.Options{Logger: slog.New(slog.DiscardHandler), Partitioning: &api.Partitioning{
		Partitions: 4, Self: "us-east/a", Owner: func(int) string { return down },
	}}))
	t.Cleanup(srv.Close)
	return srv
}

// TestPartitionedNodeRefusesMalformedIDAtOnce: a cart id or sku that is
// not 1–128 characters of [A-Za-z0-9._:-] is 400 invalid_request naming
// the path parameter, on any node of a partitioned region: such a key
// names no partition, so the node refuses it itself, as it does a
// malformed reservation id, rather than forwarding it and answering 503
// partition_unavailable (a retryable answer to a request that can never
// succeed) while the node it forwards to is down.
func TestPartitionedNodeRefusesMalformedIDAtOnce(t *testing.T) {
	srv := partitionedNodeAPI(t)
	for _, tc := range []struct{ path, field string }{
		{"/v1/carts/" + strings.Repeat("c", 129), "cart_id"},
		{"/v1/carts/a%2Fb", "cart_id"},
		{"/v1/inventory/%00", "sku"},
		{"/v1/inventory/" + strings.Repeat("s", 129), "sku"},
	} {
		a := edgeSend(t, http.MethodGet, srv.URL+tc.path, "", nil)
		if a.status != http.StatusBadRequest || edgeCode(a) != region.CodeInvalidRequest {
			t.Errorf("GET %.40s…: %d %s; want 400 invalid_request, field %s", tc.path, a.status, a.body, tc.field)
		}
	}
	// A malformed reservation id is refused at once already.
	if a := edgeSend(t, http.MethodGet, srv.URL+"/v1/reservations/nope", "", nil); a.status != http.StatusNotFound {
		t.Errorf("GET /v1/reservations/nope: %d %s; want 404", a.status, a.body)
	}
}

// TestPartitionedNodeAnswersMethodNotAllowed: a known path with another
// method is 405 method_not_allowed with Allow, and OPTIONS on it 204 with
// Allow (docs/api.md, Routes), on any node of a partitioned region:
// neither depends on which node owns the path's partition, nor on that
// node being up.
func TestPartitionedNodeAnswersMethodNotAllowed(t *testing.T) {
	srv := partitionedNodeAPI(t)
	a := edgeSend(t, http.MethodPatch, srv.URL+"/v1/carts/c1", "", nil)
	if a.status != http.StatusMethodNotAllowed || a.header.Get("Allow") == "" {
		t.Errorf("PATCH /v1/carts/c1: %d, Allow %q, %s; want 405 method_not_allowed with Allow", a.status, a.header.Get("Allow"), a.body)
	}
	a = edgeSend(t, http.MethodOptions, srv.URL+"/v1/inventory/book", "", nil)
	if a.status != http.StatusNoContent || a.header.Get("Allow") == "" {
		t.Errorf("OPTIONS /v1/inventory/book: %d, Allow %q, %s; want 204 with Allow", a.status, a.header.Get("Allow"), a.body)
	}
}

// TestHeadHealthzAnswersAlikeWhileStarting: HEAD is not served (405,
// docs/api.md, Routes), and GET /healthz is the one route a starting
// region serves; a HEAD /healthz is answered alike while the region
// starts and once it serves, so that a probe does not pass while the
// region starts and fail once it is up.
func TestHeadHealthzAnswersAlikeWhileStarting(t *testing.T) {
	st, err := region.OpenStore(filepath.Join(t.TempDir(), "data.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	n, err := region.NewNode(region.Options{Name: "us-east", Store: st})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.Close)
	serving := httptest.NewServer(api.New(n, api.Options{Logger: slog.New(slog.DiscardHandler)}))
	defer serving.Close()
	starting := httptest.NewServer(api.Starting("us-east", func() string { return "opening its store" }, nil, false))
	defer starting.Close()

	up := edgeSend(t, http.MethodHead, serving.URL+"/healthz", "", nil)
	early := edgeSend(t, http.MethodHead, starting.URL+"/healthz", "", nil)
	if up.status != early.status {
		t.Errorf("HEAD /healthz: %d while the region starts, %d once it serves; want the same answer", early.status, up.status)
	}
}
