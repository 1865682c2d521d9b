package region

import (
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/latticedb/lattice/region/store"

	dto "github.com/prometheus/client_model/go"
	"github.com/tidwall/buntdb"
)

// concurrently runs b.N calls of op spread over clients goroutines.
func concurrently(b *testing.B, clients int, op func(client, i int) error) {
	var next atomic.Int64
	var wg sync.WaitGroup
	b.ResetTimer()
	for c := range clients {
		wg.Go(func() {
			for {
				i := int(next.Add(1))
				if i > b.N {
					return
				}
				if err := op(c, i); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "writes/s")
}

// BenchmarkDurableWrites compares, in one run, raw BuntDB with SyncPolicy
// Always (one fsync per transaction, writers serialised behind it) with a
// region's durable cart adds (group commit), at 1, 16 and 64 concurrent
// writers. Both fsync before returning.
func BenchmarkDurableWrites(b *testing.B) {
	for _, clients := range []int{1, 16, 64} {
		b.Run(fmt.Sprintf("buntdb-always/clients=%d", clients), func(b *testing.B) {
			db, err := buntdb.Open(filepath.Join(b.TempDir(), "raw.db"))
			if err != nil {
				b.Fatal(err)
			}
			defer db.Close()
			if err := db.SetConfig(buntdb.Config{SyncPolicy: buntdb.Always, AutoShrinkDisabled: true}); err != nil {
				b.Fatal(err)
			}
			val := string(make([]byte, 64))
			concurrently(b, clients, func(c, i int) error {
				return db.Update(func(tx *buntdb.Tx) error {
					_, _, err := tx.Set(fmt.Sprintf("c/%d/%d", c, i%100), val, nil)
					return err
				})
			})
		})
		b.Run(fmt.Sprintf("lattice-cart-add/clients=%d", clients), func(b *testing.B) {
			benchCartAdds(b, clients, store.Options{})
		})
	}
}

// BenchmarkGroupCommitSlowDisk shows what group commit is for, on a disk
// slower than this machine's (whose fsync takes about 0.1 ms): every fsync
// is made 2 ms longer, and the region's durable cart adds run with group
// commit and, side by side in the same run, with one fsync per write taken
// under a lock (what BuntDB's SyncPolicy Always does). The added delay is
// a stand-in for a slower device, not a measurement of one.
func BenchmarkGroupCommitSlowDisk(b *testing.B) {
	for _, clients := range []int{1, 16, 64} {
		for _, serial := range []bool{true, false} {
			name := "group-commit"
			if serial {
				name = "fsync-per-write"
			}
			b.Run(fmt.Sprintf("%s/clients=%d", name, clients), func(b *testing.B) {
				benchCartAdds(b, clients, store.Options{FsyncDelay: 2 * time.Millisecond, SerialFsync: serial})
			})
		}
	}
}

// benchCartAdds runs durable cart adds from clients concurrent writers on
// a region whose store has the given options, and reports writes/fsync:
// how many writes one fsync made durable (group commit).
func benchCartAdds(b *testing.B, clients int, opts store.Options) {
	m := NewMetrics(nil)
	opts.Metrics = m.Store()
	n := benchNode(b, opts)
	writes0, fsyncs0 := fsyncBatches(b, m)
	concurrently(b, clients, func(c, i int) error {
		_, err := n.AddItem(bg, fmt.Sprintf("cart-%d-%d", c, i%100), "sku", 1)
		return err
	})
	writes1, fsyncs1 := fsyncBatches(b, m)
	if fsyncs1 > fsyncs0 {
		b.ReportMetric((writes1-writes0)/(fsyncs1-fsyncs0), "writes/fsync")
	}
}

// fsyncBatches returns how many writes the store's fsyncs made durable and
// how many fsyncs there were.
func fsyncBatches(b *testing.B, m *Metrics) (writes, fsyncs float64) {
	var pb dto.Metric
	if err := m.FsyncBatch.Write(&pb); err != nil {
		b.Fatal(err)
	}
	return pb.GetHistogram().GetSampleSum(), float64(pb.GetHistogram().GetSampleCount())
}
