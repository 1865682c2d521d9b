package store

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
)

// oneP runs the rest of the test with GOMAXPROCS=1, where group commit
// hands its fsyncs to the syncer.
func oneP(t *testing.T) {
	t.Helper()
	prev := runtime.GOMAXPROCS(1)
	t.Cleanup(func() { runtime.GOMAXPROCS(prev) })
}

// TestGroupCommitOneP runs the group commit tests with one P: concurrent
// writers share fsyncs, and when fsync fails no write is acknowledged nor
// reported durable, none is left waiting, and the store fails.
func TestGroupCommitOneP(t *testing.T) {
	t.Run("shares-fsyncs", func(t *testing.T) {
		oneP(t)
		TestGroupCommitSharesFsyncs(t)
	})
	t.Run("fsync-failure", func(t *testing.T) {
		oneP(t)
		TestGroupCommitFsyncFailure(t)
	})
}

// TestGroupCommitOnePPolledWriters checks that with one P, writers that
// the network poller makes runnable together (as it does HTTP handlers
// whose requests have arrived) share an fsync: each waits for a byte on
// its own pipe, all the bytes are written at once, and the writes they
// trigger must take far fewer fsyncs than writers. A writer that fsynced
// as soon as it committed would hold the only P during its fsync and
// cover only its own write.
func TestGroupCommitOnePPolledWriters(t *testing.T) {
	oneP(t)
	m := newMetrics()
	st, err := Open(filepath.Join(t.TempDir(), "p.db"), Options{LockKey: unlocked, Metrics: m})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	const writers, rounds = 32, 5
	ws := make([]*os.File, writers)
	acked := make(chan struct{}, writers)
	var wg sync.WaitGroup
	for w := range writers {
		r, wr, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		defer wr.Close()
		ws[w] = wr
		wg.Go(func() {
			var b [1]byte
			for i := range rounds {
				if _, err := r.Read(b[:]); err != nil {
					t.Error(err)
					return
				}
				if err := st.Update(nil, func(tx *Tx) error {
					tx.Set(fmt.Sprintf("w/%d/%d", w, i), []byte{b[0]})
					return nil
				}); err != nil {
					t.Error(err)
					return
				}
				acked <- struct{}{}
			}
		})
	}
	var start dtoHist
	start.read(t, m)
	for range rounds {
		for _, w := range ws {
			if _, err := w.Write([]byte{1}); err != nil {
				t.Fatal(err)
			}
		}
		for range writers {
			<-acked
		}
	}
	wg.Wait()
	var h dtoHist
	h.read(t, m)
	count, sum := h.count-start.count, h.sum-start.sum
	if sum != writers*rounds {
		t.Fatalf("fsyncs cover %d writes, want %d", sum, writers*rounds)
	}
	if count > 2*rounds {
		t.Fatalf("%d fsyncs for %d rounds of %d writers made runnable together: they do not share fsyncs", count, rounds, writers)
	}
	t.Logf("%d writes made durable by %d fsyncs", sum, count)
}
