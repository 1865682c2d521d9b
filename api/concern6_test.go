package api_test

import (
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"

	"github.com/latticedb/lattice/api"
	"github.com/latticedb/lattice/region"
	"github.com/latticedb/lattice/region/store"
)

// con6PartitionedAPI serves the API of the one node of us-east, a region
// of 2 partitions that this node owns both of.
func con6PartitionedAPI(t *testing.T) *httptest.Server {
	t.Helper()
	var nodes []*region.Node
	for p := range 2 {
		st, err := region.OpenStore(filepath.Join(t.TempDir(), fmt.Sprintf("p%d.db", p)), store.Options{})
		if err != nil {
			t.Fatal(err)
		}
		n, err := region.NewNode(region.Options{Name: "us-east", Store: st, Partition: p, Partitions: 2})
		if err != nil {
			st.Close()
			t.Fatal(err)
		}
		t.Cleanup(func() { n.Close(); st.Close() })
		nodes = append(nodes, n)
	}
	parts, err := region.NewPartitions("us-east", "a", 2, nodes)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(api.New(parts, api.Options{Logger: slog.New(slog.DiscardHandler), Partitioning: &api.Partitioning{
		Partitions: 2, Self: "us-east/a", Owner: func(int) string { return "" },
	}}))
	t.Cleanup(srv.Close)
	return srv
}

// TestPartitionedAnswersCarryToken: docs/api.md, Headers: Lattice-Token is
// on "every successful /v1 response but the OpenAPI document (OPTIONS
// answers included)". On a node of a partitioned region, GET /v1/cluster
// (sent with the client's token) and OPTIONS on a cart path must carry
// one too.
func TestPartitionedAnswersCarryToken(t *testing.T) {
	srv := con6PartitionedAPI(t)
	w := edgeSend(t, http.MethodPost, srv.URL+"/v1/carts/c1/items", `{"sku":"book","qty":1}`, nil)
	tok := w.header.Get("Lattice-Token")
	if w.status != http.StatusOK || tok == "" {
		t.Fatalf("test setup: add answered %d %s, token %q", w.status, w.body, tok)
	}
	for _, tc := range []struct {
		method, path string
		hdr          map[string]string
		status       int
	}{
		{http.MethodGet, "/v1/cluster", map[string]string{"Lattice-Token": tok}, http.StatusOK},
		{http.MethodGet, "/v1/cluster", nil, http.StatusOK},
		{http.MethodOptions, "/v1/carts/c1", nil, http.StatusNoContent},
	} {
		a := edgeSend(t, tc.method, srv.URL+tc.path, "", tc.hdr)
		if a.status != tc.status {
			t.Errorf("%s %s: %d %s, want %d", tc.method, tc.path, a.status, a.body, tc.status)
			continue
		}
		if a.header.Get("Lattice-Token") == "" {
			t.Errorf("%s %s (token sent: %v): %d without Lattice-Token", tc.method, tc.path, tc.hdr["Lattice-Token"] != "", a.status)
		}
	}
}
