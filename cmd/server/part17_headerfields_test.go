package server

import (
	"fmt"
	"net/http"
	"testing"

	"github.com/latticedb/lattice/api"
)

// TestForwardedRequestKeepsTheHeaderFieldLimit: docs/api.md says a
// request with more than 100 header fields is 400 invalid_request, and
// that in a partitioned region nothing changes for a client: any node
// answers any request. A request of exactly 100 header fields is served
// by the node that owns its partition; sent to another node of the
// region, it must be served the same, not refused by the owner because
// the forward added its own Lattice-Forwarded and X-Request-Id fields.
func TestForwardedRequestKeepsTheHeaderFieldLimit(t *testing.T) {
	n1, n2 := d8TwoNodes(t)
	cart1 := d8KeyOf(t, "us-c", 1) // owned by n2

	send := func(c *testRegion) response {
		t.Helper()
		req, err := http.NewRequest(http.MethodGet, c.base+"/v1/carts/"+cart1, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("User-Agent", "test")
		req.Header.Set("Accept-Encoding", "identity")
		for i := len(req.Header); i < api.MaxHeaderFields; i++ {
			req.Header.Set(fmt.Sprintf("X-Field-%d", i), "v")
		}
		if n := len(req.Header); n != api.MaxHeaderFields {
			t.Fatalf("%d header fields, want %d", n, api.MaxHeaderFields)
		}
		return doRaw(c.client, req)
	}

	// Control: at the owner, 100 fields are within the limit.
	expectOK(t, send(n2), http.StatusOK)
	// Through the other node, the same request.
	res := send(n1)
	if res.status != http.StatusOK {
		t.Errorf("a request of %d header fields sent to n1 for a cart of n2's partition: %v; want 200 as n2 answers it", api.MaxHeaderFields, res)
	}
}
