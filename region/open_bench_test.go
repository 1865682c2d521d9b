package region

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tidwall/buntdb"

	"github.com/latticedb/lattice/region/config"
	"github.com/latticedb/lattice/region/store"
)

// openCartsEnv, if set, is the number of carts BenchmarkOpenLargeStore
// stores (default 20,000, so that a plain -bench run stays short);
// openDirEnv, if set, is the directory it keeps the built store in, so
// that later runs (and other builds of the package) open the same file.
const (
	openCartsEnv = "LATTICE_OPEN_CARTS"
	openDirEnv   = "LATTICE_OPEN_DIR"
)

// BenchmarkOpenLargeStore measures how fast a region opens its store
// after an unclean stop: a store of N carts of 3 lines each (one durable
// cart add per line, through Node.AddItem with durability everysec, from
// 16 writers) is built once and left as a killed process leaves it
// (store.CloseUnclean: no close marker, the identity file still says it
// is running); every iteration copies it to a fresh directory and opens
// it as `lattice serve` does (OpenStore, then NewNode's scans), with the
// garbage collector at the region's default percentage. Run it as
//
//	LATTICE_OPEN_CARTS=1000000 LATTICE_OPEN_DIR=/tmp/lattice-open \
//	  go test -run '^$' -bench 'OpenLargeStore' -benchtime 1x ./region
//
// Reported: MB/s of file opened; store-s and node-s, the time in
// OpenStore and in NewNode; file-MB and live-MB, the file's and its live
// data's (keys and values) size; heap-B/cart, the Go heap live after the
// open (after a collection) per cart; rss-B/cart, the process's resident
// set after the open less before it, per cart; peak-rss-MB, the resident
// set's peak during the open (VmHWM, reset before it); heap/live and
// rss/live, those against the live data. With -test.v the store's
// progress lines are logged to stderr. The buntdb sub-benchmark opens
// the same file with buntdb.Open alone: the floor of what the store can
// do.
func BenchmarkOpenLargeStore(b *testing.B) {
	carts := 20000
	if v := os.Getenv(openCartsEnv); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			b.Fatalf("%s=%q: want a positive number", openCartsEnv, v)
		}
		carts = n
	}
	src := buildOpenStore(b, carts)
	fi, err := os.Stat(filepath.Join(src, "data.db"))
	if err != nil {
		b.Fatal(err)
	}
	fileMB := float64(fi.Size()) / 1e6
	defer debug.SetGCPercent(debug.SetGCPercent(config.DefaultGCPercent))

	b.Run("region", func(b *testing.B) {
		var storeD, nodeD time.Duration
		var heap, rss, peak, live int64
		for range b.N {
			b.StopTimer()
			path := copyOpenStore(b, src)
			rss0 := settleMemory(b)
			b.StartTimer()
			t0 := time.Now()
			st, err := OpenStore(path, store.Options{Durability: config.DurabilityEverySec, Logger: openLog()})
			if err != nil {
				b.Fatal(err)
			}
			t1 := time.Now()
			n, err := NewNode(Options{Name: "us-east", Store: st, ExpiryInterval: time.Hour})
			if err != nil {
				b.Fatal(err)
			}
			t2 := time.Now()
			b.StopTimer()
			storeD += t1.Sub(t0)
			nodeD += t2.Sub(t1)
			peak += procStatus(b, "VmHWM:")
			runtime.GC()
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			heap += int64(ms.HeapAlloc)
			rss += procStatus(b, "VmRSS:") - rss0
			_, l := st.Sizes()
			live += l
			if c := st.Corrupt(); len(c) > 0 {
				b.Fatalf("corrupt keys after open: %v", c)
			}
			n.Close()
			if err := st.CloseUnclean(); err != nil {
				b.Fatal(err)
			}
			os.RemoveAll(filepath.Dir(path))
			b.StartTimer()
		}
		N := float64(b.N)
		secs := (storeD + nodeD).Seconds() / N
		b.ReportMetric(fileMB/secs, "MB/s")
		b.ReportMetric(storeD.Seconds()/N, "store-s")
		b.ReportMetric(nodeD.Seconds()/N, "node-s")
		b.ReportMetric(fileMB, "file-MB")
		b.ReportMetric(float64(live)/N/1e6, "live-MB")
		b.ReportMetric(float64(heap)/N/float64(carts), "heap-B/cart")
		b.ReportMetric(float64(rss)/N/float64(carts), "rss-B/cart")
		b.ReportMetric(float64(peak)/N/1e6, "peak-rss-MB")
		b.ReportMetric(float64(heap)/float64(live), "heap/live")
		b.ReportMetric(float64(rss)/float64(live), "rss/live")
	})

	b.Run("buntdb", func(b *testing.B) {
		var d time.Duration
		for range b.N {
			b.StopTimer()
			path := copyOpenStore(b, src)
			settleMemory(b)
			b.StartTimer()
			t0 := time.Now()
			db, err := buntdb.Open(path)
			if err != nil {
				b.Fatal(err)
			}
			d += time.Since(t0)
			b.StopTimer()
			db.Close()
			os.RemoveAll(filepath.Dir(path))
			b.StartTimer()
		}
		b.ReportMetric(fileMB/(d.Seconds()/float64(b.N)), "MB/s")
	})
}

// openLog returns the logger of the stores the benchmark opens: their
// progress lines on stderr with -test.v, else none.
func openLog() *slog.Logger {
	if !testing.Verbose() {
		return nil
	}
	return slog.New(slog.NewTextHandler(os.Stderr, nil))
}

// buildOpenStore returns the directory of a store of carts carts of 3
// lines each, stopped uncleanly, building it if openDirEnv does not
// already hold one.
func buildOpenStore(b *testing.B, carts int) string {
	dir := os.Getenv(openDirEnv)
	if dir == "" {
		dir = b.TempDir()
	}
	dir = filepath.Join(dir, fmt.Sprintf("carts-%d", carts))
	done := filepath.Join(dir, "built")
	if _, err := os.Stat(done); err == nil {
		return dir
	}
	os.RemoveAll(dir)
	path := filepath.Join(dir, "data.db")
	st, err := OpenStore(path, store.Options{Durability: config.DurabilityEverySec})
	if err != nil {
		b.Fatal(err)
	}
	n, err := NewNode(Options{Name: "us-east", Store: st, ExpiryInterval: time.Hour})
	if err != nil {
		b.Fatal(err)
	}
	t0 := time.Now()
	var next atomic.Int64
	var wg sync.WaitGroup
	var failed atomic.Value
	for range 16 {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= carts {
					return
				}
				id := fmt.Sprintf("cart-%08d", i)
				for j := range 3 {
					if _, err := n.AddItem(bg, id, fmt.Sprintf("sku-%04d", (i*7+j*131)%5000), int64(1+j)); err != nil {
						failed.Store(err)
						return
					}
				}
			}
		})
	}
	wg.Wait()
	if err, ok := failed.Load().(error); ok {
		b.Fatal(err)
	}
	file, live := st.Sizes()
	b.Logf("built %d carts in %v: file %d bytes, live %d bytes", carts, time.Since(t0).Round(time.Millisecond), file, live)
	n.Close()
	if _, err := st.SyncNow(); err != nil {
		b.Fatal(err)
	}
	if err := st.CloseUnclean(); err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(done, nil, 0o644); err != nil {
		b.Fatal(err)
	}
	return dir
}

// copyOpenStore copies the store of src (its file and identity file) to a
// new directory and returns the path of the copy's file. The copy is
// synced, as the file of a store that was killed mostly is (its writes
// were synced every second): the open's own fsyncs would otherwise write
// the whole copy back.
func copyOpenStore(b *testing.B, src string) string {
	dst, err := os.MkdirTemp(filepath.Dir(src), "open-")
	if err != nil {
		b.Fatal(err)
	}
	for _, name := range []string{"data.db", "data.db.id"} {
		in, err := os.Open(filepath.Join(src, name))
		if err != nil {
			b.Fatal(err)
		}
		out, err := os.Create(filepath.Join(dst, name))
		if err != nil {
			b.Fatal(err)
		}
		if _, err := io.Copy(out, in); err != nil {
			b.Fatal(err)
		}
		in.Close()
		if err := out.Sync(); err != nil {
			b.Fatal(err)
		}
		if err := out.Close(); err != nil {
			b.Fatal(err)
		}
	}
	return filepath.Join(dst, "data.db")
}

// settleMemory collects garbage, returns what it can to the system, resets
// the resident set's peak (VmHWM) and returns the resident set.
func settleMemory(b *testing.B) int64 {
	runtime.GC()
	debug.FreeOSMemory()
	if err := os.WriteFile("/proc/self/clear_refs", []byte("5"), 0); err != nil {
		b.Logf("cannot reset VmHWM: %v", err)
	}
	return procStatus(b, "VmRSS:")
}

// procStatus returns the field (in kB) of /proc/self/status in bytes.
func procStatus(b *testing.B, field string) int64 {
	st, err := os.ReadFile("/proc/self/status")
	if err != nil {
		b.Fatal(err)
	}
	for line := range bytes.Lines(st) {
		if v, ok := bytes.CutPrefix(line, []byte(field)); ok {
			kb, err := strconv.ParseInt(string(bytes.Fields(v)[0]), 10, 64)
			if err != nil {
				b.Fatal(err)
			}
			return kb << 10
		}
	}
	b.Fatalf("no %s in /proc/self/status", field)
	return 0
}
