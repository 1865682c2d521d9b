package server_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/latticedb/lattice/crdt"
	"github.com/latticedb/lattice/region"
	"github.com/latticedb/lattice/region/config"
	"github.com/latticedb/lattice/region/store"
	"github.com/latticedb/lattice/sync/protocol"
)

// deltaCatcher keeps the last delta a node published.
type deltaCatcher struct {
	mu   sync.Mutex
	last region.Delta
}

func (c *deltaCatcher) Publish(d region.Delta) {
	c.mu.Lock()
	c.last = d
	c.mu.Unlock()
}

// BenchmarkCartAdd measures one add to a cart of 3 and of 1,000 lines at
// the origin region (region.Node.AddItem; here, not in region, because it
// encodes the replication message), answered with the cart
// (answer=cart) or without (answer=minimal, region.WithoutCartItems, what
// Prefer: return=minimal asks): CPU per add (ns/op, durability everysec so that no fsync is
// waited for), the bytes the add appends to the store's file
// (file-B/add) and the bytes of the replication message carrying its
// delta (wire-B/add, protocol.Encode of a delta message).
//
// Each cart is built in one remote apply (1 entry per line, from another
// replica) and then takes addsPerCart adds, each to one of its lines, so
// the carts measured hold from lines to lines+addsPerCart entries.
func BenchmarkCartAdd(b *testing.B) {
	for _, lines := range []int{3, 1000} {
		for _, answer := range []string{"cart", "minimal"} {
			b.Run(fmt.Sprintf("lines=%d/answer=%s", lines, answer), func(b *testing.B) { benchCartAdd(b, lines, answer == "minimal") })
		}
	}
}

const addsPerCart = 16

func benchCartAdd(b *testing.B, lines int, minimal bool) {
	path := filepath.Join(b.TempDir(), "data.db")
	st, err := region.OpenStore(path, store.Options{Durability: config.DurabilityEverySec, ShrinkMinBytes: 1 << 40})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	pub := &deltaCatcher{}
	n, err := region.NewNode(region.Options{Name: "us-east", Store: st, Publisher: pub, ExpiryInterval: time.Hour})
	if err != nil {
		b.Fatal(err)
	}
	defer n.Close()
	seed := crdt.ReplicaID("eu-west")
	build := func(id string) {
		c := &crdt.Cart{Entries: make(map[crdt.Dot]crdt.Line, lines)}
		for i := range lines {
			d := crdt.Dot{Replica: seed, Counter: uint64(i + 1)}
			c.Entries[d] = crdt.Line{SKU: fmt.Sprintf("sku-%04d", i), Kind: crdt.KindAdd, N: 1}
			c.Ctx.Insert(d)
		}
		g := &crdt.Group{}
		g.AddCart(id, c)
		if err := n.ApplyRemote(&crdt.Context{}, g); err != nil {
			b.Fatal(err)
		}
	}
	size := func() int64 {
		fi, err := os.Stat(path)
		if err != nil {
			b.Fatal(err)
		}
		return fi.Size()
	}
	ctx := context.Background()
	if minimal {
		ctx = region.WithoutCartItems(ctx)
	}
	var fileBytes, wireBytes int64
	b.ResetTimer()
	b.StopTimer()
	for i := 0; i < b.N; {
		id := fmt.Sprintf("cart-%d", i)
		build(id)
		before := size()
		k := min(addsPerCart, b.N-i)
		b.StartTimer()
		for j := range k {
			if _, err := n.AddItem(ctx, id, fmt.Sprintf("sku-%04d", j%lines), 1); err != nil {
				b.Fatal(err)
			}
		}
		b.StopTimer()
		fileBytes += size() - before
		pub.mu.Lock()
		d := pub.last
		pub.mu.Unlock()
		msg, err := protocol.Encode(&protocol.Message{Kind: protocol.KindDelta, Tag: d.Seq,
			Dots: []protocol.DotRange{{From: d.Seq, To: d.Seq, AtUs: d.At.UnixMicro()}}, Group: d.Group})
		if err != nil {
			b.Fatal(err)
		}
		wireBytes += int64(len(msg)) * int64(k)
		i += k
	}
	b.ReportMetric(float64(fileBytes)/float64(b.N), "file-B/add")
	b.ReportMetric(float64(wireBytes)/float64(b.N), "wire-B/add")
}
