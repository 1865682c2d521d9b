package region

import (
	"encoding/base64"
	"fmt"
	"runtime"
	"testing"

	"github.com/latticedb/lattice/crdt"
)

// TestPtoken19ParsedTokenWithinHeaderSize: a partitioned cluster's
// causal token (Lattice-Token, "p.z." and deflate) names up to 64
// partitions, each with a version vector of up to as many entries as the
// token names replicas. A token whose partitions all repeat one version
// vector of 255 replicas deflates to about a kilobyte, and parses to a
// map of 255 entries per partition, which the request keeps in its
// Answer (a.incoming) and waits with (waitCovers keeps the maps) for up
// to Lattice-Wait. The cloud dots of such a token are bounded
// (crdt.MaxTokenCloudDots, a ceiling past it); its version vectors are
// not. What a request's header costs parsed must stay a small multiple
// of its size (30 times here; api.MaxHeaderFields counts 11).
func TestPtoken19ParsedTokenWithinHeaderSize(t *testing.T) {
	for _, partitions := range []int{8, 64} {
		t.Run(fmt.Sprintf("%d partitions", partitions), func(t *testing.T) {
			var doc tokenDoc
			for i := range 255 {
				doc.Names = append(doc.Names, fmt.Sprintf("r%d", i))
			}
			var vv []uint64
			for i := range doc.Names {
				vv = append(vv, uint64(i), 1)
			}
			for p := range partitions {
				doc.Parts = append(doc.Parts, tokenPart{P: p, VV: vv})
			}
			b, err := crdt.Marshal(doc)
			if err != nil {
				t.Fatal(err)
			}
			tok := compressedPartitionTokenPrefix + base64.RawURLEncoding.EncodeToString(crdt.Deflate(b))
			if len(tok) > MaxPartitionTokenChars {
				t.Fatalf("test setup: token of %d characters", len(tok))
			}
			const n = 200
			kept := make([]partToken, n)
			base := mem19LiveHeap()
			for i := range kept {
				if kept[i], err = parsePartitionToken(tok, partitions); err != nil {
					t.Fatalf("parse: %v", err)
				}
			}
			held := (mem19LiveHeap() - base) / n
			t.Logf("a token of %d characters (%d bytes inflated) holds %d bytes parsed: %.0f times",
				len(tok), len(b), held, float64(held)/float64(len(tok)))
			if held > 30*uint64(len(tok)) {
				t.Errorf("a causal token of %d characters (a header) holds %d bytes once parsed, %.0f times its size: "+
					"%d version vectors of %d replicas each, unbounded but by the token's names", len(tok), held,
					float64(held)/float64(len(tok)), partitions, len(doc.Names))
			}
			runtime.KeepAlive(kept)
		})
	}
}
