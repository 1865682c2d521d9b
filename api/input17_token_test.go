package api_test

import (
	"encoding/base64"
	"net/http"
	"testing"

	"github.com/latticedb/lattice/crdt"
	"github.com/latticedb/lattice/region"
)

// TestPartitionedTokenVersionVectorCostBounded: docs/api.md, Causal
// tokens: "reading the largest token a region honours allocates at most
// about 200 KiB" (the tests of the other token forms hold it to 256
// KiB). A compressed partitioned token's document may inflate to 64 KiB
// (region.MaxPartitionTokenDoc), and its version-vector and cloud entries
// are (name index, counter) pairs of one byte each on the wire, which
// must not decode into slices of 8 bytes an element: a token of a few
// hundred characters whose partitions repeat the pair (0, 1) thousands of
// times would make the region allocate eight times the inflated
// document. A version vector naming a replica more than once is refused
// (400 invalid_token); a cloud of many dots is read as its ceiling.
// Either way the request costs the region no more than the bound the
// document states.
func TestPartitionedTokenVersionVectorCostBounded(t *testing.T) {
	_, h, cart := t7API(t)
	pairs := func(n int) []uint64 {
		vv := make([]uint64, 0, 2*n)
		for range n {
			vv = append(vv, 0, 1)
		}
		return vv
	}
	for _, form := range []string{"version vector", "cloud"} {
		doc := t7Doc{Names: []string{"us-east"}}
		for p := range 4 {
			n := 8190
			if p == 3 {
				n = 8000
			}
			part := t7Part{P: p, VV: pairs(n)}
			if form == "cloud" {
				part = t7Part{P: p, VV: pairs(1), Cloud: pairs(n)}
			}
			doc.Parts = append(doc.Parts, part)
		}
		b, err := crdt.Marshal(doc)
		if err != nil {
			t.Fatal(err)
		}
		if len(b) > region.MaxPartitionTokenDoc {
			t.Fatalf("test setup: document of %d bytes, past the %d a token may inflate to", len(b), region.MaxPartitionTokenDoc)
		}
		tok := "p.z." + base64.RawURLEncoding.EncodeToString(crdt.Deflate(b))
		if len(tok) > region.MaxPartitionTokenChars {
			t.Fatalf("test setup: token of %d characters (inflated %d bytes) too long", len(tok), len(b))
		}
		if accepted := region.IsPartitionToken(tok); accepted != (form == "cloud") {
			t.Errorf("%s form: token accepted %v, want %v", form, accepted, form == "cloud")
		}
		path := "/v1/carts/" + cart
		base, code := t7ServeCost(h, path, nil)
		if code != http.StatusOK {
			t.Fatalf("test setup: GET %s answered %d", path, code)
		}
		cost, code := t7ServeCost(h, path, map[string]string{"Lattice-Token": tok, "Lattice-Wait": "0"})
		if code != http.StatusOK && code != http.StatusServiceUnavailable && code != http.StatusBadRequest {
			t.Fatalf("%s form: GET %s with the token answered %d, want 200, 503 causal_timeout or 400 invalid_token", form, path, code)
		}
		extra := int64(cost) - int64(base)
		if limit := int64(256 << 10); extra > limit {
			t.Errorf("%s form: a request with a %d-character compressed partitioned Lattice-Token (%d bytes inflated) allocates %d bytes more than one without (%.0f× the token); want at most %d",
				form, len(tok), len(b), extra, float64(extra)/float64(len(tok)), limit)
		}
	}
}
