package api

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/latticedb/lattice/crdt"
	"github.com/latticedb/lattice/region"
	"github.com/latticedb/lattice/region/config"
	"github.com/latticedb/lattice/region/store"
)

// TestPartitionRoutesEscapedIDs: path parameters may be percent-encoded,
// and a node forwards a request to the owner of its key's partition: the
// partition of /v1/carts/%63%31 is cart "c1"'s, not that of the string
// "%63%31", and an escaped reservation id names its partition too.
func TestPartitionRoutesEscapedIDs(t *testing.T) {
	const parts = 64
	cases := []struct {
		name, path, key string
		keyPart         func(string) int
	}{
		{"cart id", "/v1/carts/%63%31", "c1", func(k string) int { return config.PartitionOf(k, parts) }},
		{"sku", "/v1/inventory/%63%31", "c1", func(k string) int { return config.PartitionOf(k, parts) }},
		{"reservation id", "/v1/reservations/us-east%3A3%3A5", "us-east:3:5", func(k string) int {
			p, _ := region.ReservationPartition(k)
			return p
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			owned := tc.keyPart(tc.key)
			var hits atomic.Int32
			owner := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				hits.Add(1)
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusOK)
				_, _ = w.Write([]byte(`{}`))
			}))
			defer owner.Close()
			f := newFake()
			e := New(f, Options{Logger: slog.New(slog.DiscardHandler), Partitioning: &Partitioning{
				Partitions: parts, Self: "us-east/n1", Client: owner.Client(),
				Owner: func(p int) string {
					if p == owned {
						return owner.URL // another node owns the key's partition
					}
					return "" // this node owns every other partition
				},
			}})
			w := req{method: "GET", path: tc.path}.do(t, e)
			if hits.Load() != 1 || len(f.Calls()) != 0 {
				t.Fatalf("GET %s (key %q, partition %d, owned by another node): forwarded %d times, served here with calls %+v (status %d %s); want it forwarded to the owner",
					tc.path, tc.key, owned, hits.Load(), f.Calls(), w.Code, w.Body)
			}
		})
	}
}

// TestMalformedQueryRefused: a query url.ParseQuery would not parse whole
// (a bad escape, a semicolon) is refused with 400, not served with the
// pairs it could parse: ?consistent=true;x=1 must not become a local read.
func TestMalformedQueryRefused(t *testing.T) {
	for _, tc := range []struct{ name, path string }{
		{"bad escape in consistent's value", "/v1/inventory/a?consistent=%zz"},
		{"semicolon after consistent", "/v1/inventory/a?consistent=true;x=1"},
		{"semicolon in unknown parameter", "/v1/inventory/a?x;y"},
		{"bad escape in quorum's value", "/v1/carts/c1?quorum=%zz"},
		{"bad escape in an unknown name", "/v1/carts/c1?%zz=1"},
		{"over 10,000 parameters", "/v1/inventory/a?consistent=bogus&quorum=bogus&pretty=1" + strings.Repeat("&", 10000)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, f := newTestAPI(t)
			w := req{method: "GET", path: tc.path}.do(t, e)
			if w.Code != http.StatusBadRequest {
				t.Fatalf("GET %.80s: status %d, want 400 invalid_request; service calls %+v", tc.path, w.Code, f.Calls())
			}
			if calls := f.Calls(); len(calls) != 0 {
				t.Errorf("a refused request reached the service: %+v", calls)
			}
		})
	}
}

// TestConcernRefusedBeforeCausalWait: a malformed Lattice-Replicas or
// ?quorum= is refused with 400 at once, before the wait for a causal token
// the region has not applied (which would end in 503 causal_timeout and
// tell the client to retry a request that can never succeed), and the
// request reaches no service method.
func TestConcernRefusedBeforeCausalWait(t *testing.T) {
	for _, tc := range []struct {
		name, field string
		r           req
	}{
		{"Lattice-Replicas out of range on a write", HeaderReplicas,
			req{method: "POST", path: "/v1/inventory/a/restock", body: `{"qty":1}`, header: map[string]string{HeaderReplicas: "99"}}},
		{"Lattice-Replicas on a read", HeaderReplicas,
			req{method: "GET", path: "/v1/carts/c1", header: map[string]string{HeaderReplicas: "2"}}},
		{"quorum malformed", QueryQuorum,
			req{method: "GET", path: "/v1/carts/c1?quorum=zero"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, f := newTestAPI(t)
			f.waitFn = func(ctx context.Context, _ string) error {
				<-ctx.Done() // the region has not applied the token yet
				return region.Errorf(region.CodeCausalTimeout, "not yet")
			}
			tc.r.header = mapWith(tc.r.header, HeaderToken, "vv.eu-west.9", HeaderWait, "20")
			w := tc.r.do(t, e)
			if w.Code != http.StatusBadRequest {
				t.Fatalf("status %d (%s), want 400 invalid_request field %s", w.Code, w.Body, tc.field)
			}
			assertProblem(t, w, http.StatusBadRequest, region.CodeInvalidRequest, tc.field)
			if calls := f.Calls(); len(calls) != 0 {
				t.Errorf("a refused request reached the service: %+v", calls)
			}
		})
	}
}

func mapWith(m map[string]string, kv ...string) map[string]string {
	out := map[string]string{}
	for k, v := range m {
		out[k] = v
	}
	for i := 0; i+1 < len(kv); i += 2 {
		out[kv[i]] = kv[i+1]
	}
	return out
}

// TestQueryParamsMemory: a query of one parameter repeated ("a&a&…") is
// refused without first building url.Values of every pair (~650 KB for a
// 20 KB query): serving it stays within the API's bound for what it
// reads, 8× its size plus a fixed 32 KiB.
func TestQueryParamsMemory(t *testing.T) {
	e, f := newTestAPI(t)
	q := strings.Repeat("a&", 9999) // 9,999 parameters, within net/url's 10,000
	r := req{method: "GET", path: "/v1/carts/c1?" + q}
	baseline, _, _ := servingCost(t, e, req{method: "GET", path: "/v1/carts/c1?a"}, false)
	bytes, _, w := servingCost(t, e, r, false)
	if w.Code != http.StatusBadRequest {
		t.Fatalf("status %d", w.Code)
	}
	if len(f.Calls()) != 0 {
		t.Fatalf("calls %+v", f.Calls())
	}
	if limit := uint64(8*len(q)) + 32<<10 + baseline; bytes > limit {
		t.Errorf("serving a %d-byte query allocates %d bytes (%.0f× its size), over 8× + 32 KiB", len(q), bytes, float64(bytes)/float64(len(q)))
	}
}

// TestAdjustOverStockCapNamesDelta: a positive adjustment is a restock,
// refused past the stock's bound (2^55); the refusal names the request's
// member, delta, not the restock body's qty.
func TestAdjustOverStockCapNamesDelta(t *testing.T) {
	st, err := region.OpenStore(filepath.Join(t.TempDir(), "data.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	n, err := region.NewNode(region.Options{Name: "us-east", Store: st})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.Close)
	// Another region's restocks brought the sku's stock near the cap.
	var g crdt.Group
	g.AddItem("book", (&crdt.Item{}).Restock("eu-west", crdt.MaxCount-10))
	var dots crdt.Context
	dots.Insert(crdt.Dot{Replica: "eu-west", Counter: 1})
	if err := n.ApplyRemote(&dots, &g); err != nil {
		t.Fatal(err)
	}
	e := New(n, Options{Logger: slog.New(slog.DiscardHandler)})
	w := req{method: "POST", path: "/v1/inventory/book/adjust", body: `{"delta":100,"reason":"found"}`}.do(t, e)
	assertProblem(t, w, http.StatusBadRequest, region.CodeInvalidRequest, "delta")
}
