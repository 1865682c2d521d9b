package region

import (
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/latticedb/lattice/region/store"
)

// BenchmarkReadsUnderWrites measures cart reads and durable cart writes
// side by side on one region (durability always, a real file): b.N reads
// (GetCart, then the causal token, as the API answers a GET) from 4
// readers paced together at 8,000 reads/s, while writers set lines of
// carts as fast as they can. It reports the reads' p50 and p99 latency
// and the writes/s the writers reached meanwhile.
//
//   - idle: no writers; what a read costs alone.
//   - cold: the readers read 64 carts that no one writes.
//   - hot: every writer writes its own cart and the readers read those
//     carts, so a read nearly always meets a write of its key in flight.
func BenchmarkReadsUnderWrites(b *testing.B) {
	cases := []struct {
		name    string
		writers int
		hot     bool
	}{
		{"idle", 0, false},
		{"cold/writers=16", 16, false},
		{"hot/writers=16", 16, true},
		{"cold/writers=64", 64, false},
		{"hot/writers=64", 64, true},
	}
	for _, tc := range cases {
		b.Run(tc.name, func(b *testing.B) { benchReadsUnderWrites(b, tc.writers, tc.hot) })
	}
}

func benchReadsUnderWrites(b *testing.B, writers int, hot bool) {
	const readers = 4
	const interval = 500 * time.Microsecond // per reader: 8,000 reads/s in all
	n := benchNode(b, store.Options{})
	var carts []string
	if hot {
		for w := range writers {
			carts = append(carts, fmt.Sprintf("hot-%d", w))
		}
	} else {
		for i := range 64 {
			carts = append(carts, fmt.Sprintf("cold-%d", i))
		}
	}
	for _, id := range carts {
		for k := range 8 {
			if _, err := n.SetItem(bg, id, fmt.Sprintf("sku-%d", k), 1); err != nil {
				b.Fatal(err)
			}
		}
	}

	stop := make(chan struct{})
	var writes atomic.Int64
	var wwg sync.WaitGroup
	for w := range writers {
		wwg.Go(func() {
			id := fmt.Sprintf("w-%d", w)
			if hot {
				id = carts[w]
			}
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := n.SetItem(bg, id, fmt.Sprintf("sku-%d", i%8), int64(i%5+1)); err != nil {
					b.Error(err)
					return
				}
				writes.Add(1)
			}
		})
	}

	lat := make([][]time.Duration, readers)
	var next atomic.Int64
	var rwg sync.WaitGroup
	b.ResetTimer()
	w0 := writes.Load()
	start := time.Now()
	for r := range readers {
		rwg.Go(func() {
			tick := time.NewTicker(interval)
			defer tick.Stop()
			for {
				i := int(next.Add(1))
				if i > b.N {
					return
				}
				<-tick.C
				t0 := time.Now()
				ctx := WithAnswer(bg)
				if _, err := n.GetCart(ctx, carts[(i*7+r)%len(carts)]); err != nil {
					b.Error(err)
					return
				}
				_ = n.TokenFor(ctx)
				lat[r] = append(lat[r], time.Since(t0))
			}
		})
	}
	rwg.Wait()
	elapsed := time.Since(start)
	w1 := writes.Load()
	b.StopTimer()
	close(stop)
	wwg.Wait()

	all := slices.Concat(lat...)
	slices.Sort(all)
	if len(all) > 0 {
		b.ReportMetric(float64(all[len(all)/2].Nanoseconds())/1e3, "read-p50-us")
		b.ReportMetric(float64(all[len(all)*99/100].Nanoseconds())/1e3, "read-p99-us")
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "reads/s")
	if writers > 0 {
		b.ReportMetric(float64(w1-w0)/elapsed.Seconds(), "writes/s")
	}
}
