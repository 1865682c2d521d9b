package region

import (
	"fmt"
	"testing"

	"github.com/latticedb/lattice/crdt"
	"github.com/latticedb/lattice/region/store"
)

// BenchmarkAntiEntropyRead measures Node.Read, what a region does for
// every key it ships to a peer in an anti-entropy repair: the read of
// 256 carts of 3 lines a call (as the protocol reads a reply), out of
// 4,096 stored. ns/key and allocs/key are per cart read.
func BenchmarkAntiEntropyRead(b *testing.B) {
	const carts, batch = 4096, 256
	n := benchNode(b, store.Options{Durability: "everysec"})
	keys := make([]string, carts)
	for i := range carts {
		id := fmt.Sprintf("ae-%06d", i)
		keys[i] = prefixCart + id
		for l := range 3 {
			if _, err := n.AddItem(bg, id, fmt.Sprintf("sku-%02d", l), 1); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	read := 0
	for i := 0; i < b.N; i++ {
		from := (i * batch) % carts
		g, _, err := n.Read(keys[from : from+batch])
		if err != nil {
			b.Fatal(err)
		}
		if g.Len() != batch {
			b.Fatalf("read %d of %d carts", g.Len(), batch)
		}
		read += batch
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(read), "ns/key")
	b.ReportMetric(0, "ns/op")
	_ = crdt.MaxGroupKeys
}
