package api_test

import (
	"context"
	"encoding/base64"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/latticedb/lattice/api"
	"github.com/latticedb/lattice/api/client"
	"github.com/latticedb/lattice/crdt"
	"github.com/latticedb/lattice/region"
	"github.com/latticedb/lattice/region/config"
	"github.com/latticedb/lattice/region/store"
)

// t7Doc and t7Part are the document of a partitioned causal token, as
// docs/api.md describes it: the replica ids once, then per partition its
// number, version vector and out-of-order dots as (replica index,
// counter) pairs.
type t7Doc struct {
	_     struct{} `cbor:",toarray"`
	Names []string
	Parts []t7Part
}

type t7Part struct {
	_     struct{} `cbor:",toarray"`
	P     int
	VV    []uint64
	Cloud []uint64
}

// t7Token returns the compressed ("p.z.") token of the given partitions,
// each holding dots out of order of replica us-east: 2, 4, … 2·dots (as
// a region's own token may, up to crdt.MaxTokenCloudDots of them).
func t7Token(t *testing.T, parts []int, dots int) string {
	t.Helper()
	doc := t7Doc{Names: []string{"us-east"}}
	for _, p := range parts {
		e := t7Part{P: p}
		for d := 1; d <= dots; d++ {
			e.Cloud = append(e.Cloud, 0, uint64(2*d))
		}
		doc.Parts = append(doc.Parts, e)
	}
	b, err := crdt.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	return "p.z." + base64.RawURLEncoding.EncodeToString(crdt.Deflate(b))
}

func t7Range(from, to int) []int {
	var out []int
	for p := from; p < to; p++ {
		out = append(out, p)
	}
	return out
}

// t7API serves the API of one node of us-east in a cluster of 64
// partitions, owning partition 0 only; it returns the server and a cart
// id of partition 0.
func t7API(t *testing.T) (*httptest.Server, http.Handler, string) {
	t.Helper()
	const count = 64
	st, err := region.OpenStore(filepath.Join(t.TempDir(), "p0.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	n, err := region.NewNode(region.Options{Name: "us-east", Store: st, Partition: 0, Partitions: count})
	if err != nil {
		st.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close(); st.Close() })
	parts, err := region.NewPartitions("us-east", "a", count, []*region.Node{n})
	if err != nil {
		t.Fatal(err)
	}
	h := api.New(parts, api.Options{Logger: slog.New(slog.DiscardHandler), Partitioning: &api.Partitioning{
		Partitions: count, Self: "us-east/a", Owner: func(p int) string {
			if p == 0 {
				return ""
			}
			return "http://127.0.0.1:1" // never asked: every request here is for partition 0
		},
	}})
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	cart := ""
	for i := 0; cart == ""; i++ {
		if id := fmt.Sprintf("cart-%d", i); config.PartitionOf(id, count) == 0 {
			cart = id
		}
	}
	return srv, h, cart
}

// TestClientJoinOfPartitionTokensParses: a Go client of a cluster of 64
// partitions gets two answers' tokens, each a well-formed compressed
// partitioned token (10 partitions, each with 1,000 dots out of order,
// under the 1,024 a context keeps). docs/api.md: a token "keeps at most
// 64 partitions and 6 KiB: past that, the array is first compressed ...,
// then entries are reduced to their version vectors ..., then the
// partitions touched longest ago are dropped". The join must be a token
// the cluster takes, and the client's next request must be served.
// Instead the join compresses to under 6 KiB but inflates past the 64
// KiB a token may stand for: JoinPartitionTokens answers ok with a token
// parsePartitionToken refuses, the client keeps it, and its next request
// is 400 invalid_token.
func TestClientJoinOfPartitionTokensParses(t *testing.T) {
	a, b := t7Token(t, t7Range(1, 11), 150), t7Token(t, t7Range(11, 21), 150)
	for _, tok := range []string{a, b} {
		if !region.IsPartitionToken(tok) {
			t.Fatalf("test setup: a token of %d characters is refused", len(tok))
		}
	}
	j, ok := region.JoinPartitionTokens(a, b)
	if ok && !region.IsPartitionToken(j) {
		t.Errorf("JoinPartitionTokens of two well-formed tokens (%d and %d characters) answered ok with a token of %d characters (%.4s…) that does not parse",
			len(a), len(b), len(j), j)
	}

	srv, _, cart := t7API(t)
	c, err := client.New([]string{srv.URL}, client.Options{MaxAttempts: 1})
	if err != nil {
		t.Fatal(err)
	}
	c.SetToken(a)
	c.SetToken(b)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.Cart(ctx, cart); err != nil {
		t.Errorf("the client's request after joining two answers' tokens (its token now %d characters, well-formed: %v): %v",
			len(c.Token()), region.IsPartitionToken(c.Token()), err)
	}
}

// t7ServeCost returns the bytes one GET of the cart with the given
// headers allocates when served by h, the least over a few runs, and the
// last answer's status.
func t7ServeCost(h http.Handler, path string, hdr map[string]string) (uint64, int) {
	var code int
	serve := func() {
		r := httptest.NewRequest(http.MethodGet, path, nil)
		for k, v := range hdr {
			r.Header.Set(k, v)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		code = w.Code
	}
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	serve()
	least := uint64(math.MaxUint64)
	for range 5 {
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		serve()
		runtime.ReadMemStats(&after)
		least = min(least, after.TotalAlloc-before.TotalAlloc)
	}
	return least, code
}

// TestPartitionedTokenCostBounded: docs/api.md, Causal tokens: "a request
// waiting with a token holds a bounded amount of memory (reading the
// largest token a region honours allocates at most about 200 KiB; a
// compressed token is inflated with a reused inflater)"; the unpartitioned
// tokens are held to 256 KiB (TestCausalTokenCostBounded). In a cluster
// of 64 partitions, a compressed partitioned token of under 4 KB (16
// partitions of 1,000 dots out of order each, within every stated
// bound), sent with Lattice-Wait: 0 for a cart whose partition it names a
// dot of that was never applied (503 causal_timeout), must cost the
// region no more. (Read dot by dot, a token of 16 partitions of 1,000
// dots cost 2.9 MB; its document now inflates to at most
// region.MaxPartitionTokenDoc, and past crdt.MaxTokenCloudDots dots in all
// the entries are read as their ceilings.)
func TestPartitionedTokenCostBounded(t *testing.T) {
	_, h, cart := t7API(t)
	doc := t7Doc{Names: []string{"us-east"}, Parts: []t7Part{{P: 0, Cloud: []uint64{0, 5}}}}
	for _, p := range t7Range(1, 17) {
		e := t7Part{P: p}
		for d := 1; d <= 240; d++ { // inflated within region.MaxPartitionTokenDoc
			e.Cloud = append(e.Cloud, 0, uint64(2*d))
		}
		doc.Parts = append(doc.Parts, e)
	}
	b, err := crdt.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	tok := "p.z." + base64.RawURLEncoding.EncodeToString(crdt.Deflate(b))
	if !region.IsPartitionToken(tok) || len(tok) > region.MaxPartitionTokenChars {
		t.Fatalf("test setup: token of %d characters (inflated %d bytes) refused", len(tok), len(b))
	}
	path := "/v1/carts/" + cart
	base, code := t7ServeCost(h, path, nil)
	if code != http.StatusOK {
		t.Fatalf("test setup: GET %s answered %d", path, code)
	}
	cost, code := t7ServeCost(h, path, map[string]string{"Lattice-Token": tok, "Lattice-Wait": "0"})
	if code != http.StatusServiceUnavailable {
		t.Fatalf("test setup: GET %s with the token answered %d, want 503 causal_timeout", path, code)
	}
	extra := int64(cost) - int64(base)
	if limit := int64(256 << 10); extra > limit {
		t.Errorf("a request with a %d-character compressed partitioned Lattice-Token (%d bytes inflated) allocates %d bytes more than one without (%.0f× the token); want at most %d",
			len(tok), len(b), extra, float64(extra)/float64(len(tok)), limit)
	}
}
