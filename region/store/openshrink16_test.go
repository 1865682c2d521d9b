package store

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// slowCheckHandler stands for the check of a large store's values taking
// more than a second: it holds every "failed its checksum" log line, which
// Open's check of the values writes from inside its pass over the keys,
// until the store's file gets a second name (a rewrite began: Shrink's
// prevPath) or a deadline passes.
type slowCheckHandler struct {
	prev    string
	wait    time.Duration
	sawPrev atomic.Bool
}

func (h *slowCheckHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *slowCheckHandler) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *slowCheckHandler) WithGroup(string) slog.Handler            { return h }
func (h *slowCheckHandler) Handle(_ context.Context, r slog.Record) error {
	if !strings.Contains(r.Message, "failed its checksum") {
		return nil
	}
	deadline := time.Now().Add(h.wait)
	for time.Now().Before(deadline) {
		if _, err := os.Stat(h.prev); err == nil {
			h.sawPrev.Store(true)
			return nil
		}
		time.Sleep(5 * time.Millisecond)
	}
	return nil
}

// TestOpenDoesNotRewriteAFileWithoutDeadData: the store rewrites its file
// only once it exceeds twice the live data (MaybeShrink). While Open still
// checks the values of a large store (a pass that takes seconds), it has
// counted only part of the live data; the store's background work (the
// once-a-second fsync and shrink check) must not decide from that partial
// count. Here the file holds no dead data at all, and the pass over its
// keys is slowed (a damaged value whose log line takes a while, standing
// for a large store) past the first tick: no rewrite may begin.
func TestOpenDoesNotRewriteAFileWithoutDeadData(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.db")
	const minBytes = 1 << 20
	st, err := Open(path, Options{LockKey: unlocked, ShrinkMinBytes: 1 << 40})
	if err != nil {
		t.Fatal(err)
	}
	const keys = 20 * scanBatch
	val := []byte(strings.Repeat("v", 100))
	key := func(i int) string { return fmt.Sprintf("k/%05d", i) }
	for from := 0; from < keys; from += 1000 {
		if err := st.Update(nil, func(tx *Tx) error {
			for i := from; i < min(from+1000, keys); i++ {
				tx.Set(key(i), val)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	file, live := st.Sizes()
	if file < minBytes || file > 2*live {
		t.Fatalf("setup: file %d bytes, live %d: want a file of at least %d bytes and no more than twice the live data", file, live, minBytes)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}

	// Damage one value early in key order (the first batch checked) and
	// one well inside the pass (checked by the goroutine walking the
	// keys whatever the number of processors).
	damaged := []string{key(10), key(8500)}
	frames := map[string]int{}
	if err := Commands(path, func(cmd [][]byte, _ int64) bool {
		if len(cmd) == 3 && string(cmd[0]) == "set" {
			frames[string(cmd[1])] = len(cmd[2])
		}
		return true
	}); err != nil {
		t.Fatal(err)
	}
	offs := valueOffsets(t, path, damaged...)
	for _, k := range damaged {
		flipByte(t, path, offs[k]+int64(frames[k])-1, 0x01) // the payload's last byte
	}

	h := &slowCheckHandler{prev: prevPath(path), wait: 4 * time.Second}
	st, err = Open(path, Options{LockKey: unlocked, ShrinkMinBytes: minBytes, Logger: slog.New(h)})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if h.sawPrev.Load() {
		file, live := st.Sizes()
		t.Fatalf("a rewrite of the store's file (%d bytes, %d of live data: no dead data) began while Open was still checking its values: "+
			"the background shrink check ran on the live data counted so far", file, live)
	}
}
