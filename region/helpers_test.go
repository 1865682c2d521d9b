package region

import (
	"context"
	"errors"
	"github.com/latticedb/lattice/region/store"
	dto "github.com/prometheus/client_model/go"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"
)

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

type testNode struct {
	*Node
	store *store.Store
	path  string
	clock *fakeClock
}

// openNode opens a region "us-east" on a BuntDB file in dir.
func openNode(t *testing.T, dir string, clock *fakeClock) *testNode {
	t.Helper()
	path := filepath.Join(dir, "us-east", "data.db")
	st, err := OpenStore(path, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	n, err := NewNode(Options{Name: "us-east", Store: st, Clock: clock, ExpiryInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	tn := &testNode{Node: n, store: st, path: path, clock: clock}
	t.Cleanup(tn.close)
	return tn
}

func (tn *testNode) close() {
	tn.Node.Close()
	tn.store.Close()
}

func newNode(t *testing.T) *testNode { return openNode(t, t.TempDir(), newFakeClock()) }

func wantCode(t *testing.T, err error, code string) *Error {
	t.Helper()
	var e *Error
	if !errors.As(err, &e) || e.Code != code {
		t.Fatalf("got error %v, want code %s", err, code)
	}
	return e
}

func must[T any](t *testing.T) func(v T, err error) T {
	return func(v T, err error) T {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
}

var bg = context.Background()

func contextWithTimeout(d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), d)
}

type dtoHist struct{ count, sum uint64 }

func (h *dtoHist) read(t *testing.T, m *Metrics) {
	t.Helper()
	var pb dto.Metric
	if err := m.FsyncBatch.Write(&pb); err != nil {
		t.Fatal(err)
	}
	h.count = pb.GetHistogram().GetSampleCount()
	h.sum = uint64(pb.GetHistogram().GetSampleSum())
}

func fileSize(t *testing.T, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

// testSeed returns the seed of a randomized test: LATTICE_SEED if set,
// else the clock's; it logs it.
func testSeed(t *testing.T) uint64 {
	t.Helper()
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("LATTICE_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		seed = v
	}
	t.Logf("seed %d (rerun with LATTICE_SEED=%d)", seed, seed)
	return seed
}

// benchNode opens region "us-east" on a store file in b's temporary
// directory, both closed when b ends.
func benchNode(b *testing.B, opts store.Options) *Node {
	b.Helper()
	st, err := OpenStore(filepath.Join(b.TempDir(), "data.db"), opts)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { st.Close() })
	n, err := NewNode(Options{Name: "us-east", Store: st})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(n.Close)
	return n
}
