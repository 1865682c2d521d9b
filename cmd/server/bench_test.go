package server

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tidwall/buntdb"

	"github.com/latticedb/lattice/region/config"
)

// benchClients are the concurrencies BenchmarkHTTPDurableCartAdds runs.
var benchClients = []int{1, 16, 64}

// BenchmarkHTTPDurableCartAdds measures durable cart adds (durability
// always: fsynced before the answer) over HTTP through a real region, and
// beside it a raw BuntDB with SyncPolicy Always doing one single-key
// Update per write, at 1, 16 and 64 concurrent clients. Each reports
// writes/s and the p50 and p99 latency; the region also reports how many
// transactions one fsync made durable (group commit) and the mean fsync
// time. A last run paces 64
// clients at half the region's 64-client throughput, open loop, and
// reports its latency (measured from each write's scheduled start).
func BenchmarkHTTPDurableCartAdds(b *testing.B) {
	var maxRate float64 // writes/s of the region at 64 clients
	for _, clients := range benchClients {
		b.Run(fmt.Sprintf("lattice/clients=%d", clients), func(b *testing.B) {
			rate := benchLattice(b, clients, 0)
			if clients == 64 {
				maxRate = rate
			}
		})
		b.Run(fmt.Sprintf("buntdb/clients=%d", clients), func(b *testing.B) {
			benchBuntDB(b, clients)
		})
	}
	b.Run("lattice-paced/clients=64/rate=half", func(b *testing.B) {
		if maxRate == 0 {
			b.Skip("needs the lattice/clients=64 run to set the pace")
		}
		benchLattice(b, 64, maxRate/2)
	})
}

// benchLattice runs b.N cart adds from clients concurrent HTTP clients
// against a fresh region and returns the writes/s. With rate > 0 the adds
// are scheduled at that rate (open loop).
func benchLattice(b *testing.B, clients int, rate float64) float64 {
	srv := startBenchRegion(b)
	defer srv.Close()
	tr := &http.Transport{MaxIdleConnsPerHost: clients, MaxIdleConns: clients, IdleConnTimeout: time.Minute}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	base := srv.URL()

	add := func(g, k int) error {
		body := fmt.Sprintf(`{"sku":"sku-%d","qty":1}`, k%8)
		res, err := hc.Post(fmt.Sprintf("%s/v1/carts/bench-%d-%d/items", base, g, k/8), "application/json", strings.NewReader(body))
		if err != nil {
			return err
		}
		_, _ = io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if res.StatusCode != http.StatusOK {
			return fmt.Errorf("status %d", res.StatusCode)
		}
		return nil
	}
	// Open the connections before the clock starts.
	var warm sync.WaitGroup
	for g := range clients {
		warm.Go(func() {
			if res, err := hc.Get(fmt.Sprintf("%s/v1/carts/warm-%d", base, g)); err == nil {
				_, _ = io.Copy(io.Discard, res.Body)
				res.Body.Close()
			}
		})
	}
	warm.Wait()
	batch0, syncs0 := histogram(b, srv, "lattice_store_fsync_batch_size")
	secs0, _ := histogram(b, srv, "lattice_store_fsync_seconds")

	lat, elapsed := drive(b, clients, rate, func(g, k int) error { return add(g, k) })

	batch1, syncs1 := histogram(b, srv, "lattice_store_fsync_batch_size")
	secs1, _ := histogram(b, srv, "lattice_store_fsync_seconds")
	if n := counter(b, srv, "lattice_store_shrinks_total"); n > 0 {
		b.ReportMetric(n, "shrinks")
	}
	writes := float64(b.N) / elapsed.Seconds()
	report(b, writes, lat)
	if syncs1 > syncs0 {
		b.ReportMetric((batch1-batch0)/(syncs1-syncs0), "txn/fsync")
		b.ReportMetric((secs1-secs0)/(syncs1-syncs0)*1000, "fsync-ms")
	}
	return writes
}

// benchBuntDB runs b.N single-key durable Updates from clients goroutines
// on a raw BuntDB file with SyncPolicy Always: each Update reads the key
// and sets a value of the size of a small cart.
func benchBuntDB(b *testing.B, clients int) {
	db, err := buntdb.Open(filepath.Join(b.TempDir(), "raw.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	var c buntdb.Config
	if err := db.ReadConfig(&c); err != nil {
		b.Fatal(err)
	}
	c.SyncPolicy = buntdb.Always
	c.AutoShrinkDisabled = true
	if err := db.SetConfig(c); err != nil {
		b.Fatal(err)
	}
	value := strings.Repeat("v", 120)
	lat, elapsed := drive(b, clients, 0, func(g, k int) error {
		return db.Update(func(tx *buntdb.Tx) error {
			key := fmt.Sprintf("c/bench-%d-%d", g, k/8)
			if _, err := tx.Get(key); err != nil && err != buntdb.ErrNotFound {
				return err
			}
			_, _, err := tx.Set(key, value, nil)
			return err
		})
	})
	report(b, float64(b.N)/elapsed.Seconds(), lat)
}

// drive runs b.N calls of op from clients goroutines (g is the goroutine,
// k its own count) and returns every call's latency and the elapsed time.
// With rate > 0, call i is scheduled at start + i/rate and its latency
// counts from then, so a slow answer delays no later measurement.
func drive(b *testing.B, clients int, rate float64, op func(g, k int) error) ([]time.Duration, time.Duration) {
	var next atomic.Int64
	lats := make([][]time.Duration, clients)
	var failed atomic.Value
	var wg sync.WaitGroup
	b.ResetTimer()
	start := time.Now()
	for g := range clients {
		wg.Go(func() {
			own := make([]time.Duration, 0, b.N/clients+1)
			for k := 0; ; k++ {
				i := next.Add(1) - 1
				if i >= int64(b.N) {
					break
				}
				began := time.Now()
				if rate > 0 {
					began = start.Add(time.Duration(float64(i) / rate * float64(time.Second)))
					waitUntil(began)
				}
				if err := op(g, k); err != nil {
					failed.CompareAndSwap(nil, err)
					break
				}
				own = append(own, time.Since(began))
			}
			lats[g] = own
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	if err, _ := failed.Load().(error); err != nil {
		b.Fatal(err)
	}
	return slices.Concat(lats...), elapsed
}

// waitUntil paces an open-loop run: it returns at t.
func waitUntil(t time.Time) {
	if d := time.Until(t); d > 0 {
		timer := time.NewTimer(d)
		<-timer.C
	}
}

func report(b *testing.B, writesPerSec float64, lat []time.Duration) {
	slices.Sort(lat)
	pct := func(p float64) float64 {
		if len(lat) == 0 {
			return 0
		}
		return float64(lat[min(len(lat)-1, int(p*float64(len(lat))))]) / float64(time.Millisecond)
	}
	b.ReportMetric(writesPerSec, "writes/s")
	b.ReportMetric(pct(0.50), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
}

// counter returns the value of one of the region's counters.
func counter(b *testing.B, srv *Server, name string) float64 {
	mfs, err := srv.Registry().Gather()
	if err != nil {
		b.Fatal(err)
	}
	var v float64
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				v += m.GetCounter().GetValue()
			}
		}
	}
	return v
}

// histogram returns the sum and count of one of the region's histograms.
func histogram(b *testing.B, srv *Server, name string) (sum, count float64) {
	mfs, err := srv.Registry().Gather()
	if err != nil {
		b.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			sum += m.GetHistogram().GetSampleSum()
			count += float64(m.GetHistogram().GetSampleCount())
		}
	}
	return sum, count
}

// startBenchRegion starts region us-east with durability always on a
// loopback listener, for the HTTP benchmarks. Its durability is always,
// or what LATTICE_BENCH_DURABILITY names (always or everysec).
func startBenchRegion(b *testing.B) *Server {
	b.Helper()
	durability := config.DurabilityAlways
	switch d := config.Durability(os.Getenv("LATTICE_BENCH_DURABILITY")); d {
	case "":
	case config.DurabilityAlways, config.DurabilityEverySec:
		durability = d
	default:
		b.Fatalf("LATTICE_BENCH_DURABILITY=%q: want always or everysec", d)
	}
	cfg := testConfig(b.TempDir(), durability)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv, err := Start(context.Background(), cfg, "us-east", Options{Listener: ln, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	return srv
}
