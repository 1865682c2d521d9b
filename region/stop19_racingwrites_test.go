package region

import (
	"bytes"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/latticedb/lattice/region/store"
)

// lockedBuf is a log sink safe for concurrent writers.
type lockedBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestStop19CloseWhileWriting stops a region (its node, then its store)
// while requests keep adding to carts. A clean stop must stay clean: no
// write may land in the file after the close marker (the next open would
// take the file for changed since its clean stop and start a new
// incarnation that catches up), no write may fail the store, and every
// add answered as made must be there at the next open.
func TestStop19CloseWhileWriting(t *testing.T) {
	dir := t.TempDir()
	clock := newFakeClock()
	path := filepath.Join(dir, "us-east", "data.db")
	var logs lockedBuf
	log := slog.New(slog.NewTextHandler(&logs, nil))
	st, err := OpenStore(path, store.Options{Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	n, err := NewNode(Options{Name: "us-east", Store: st, Clock: clock, ExpiryInterval: time.Hour, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	defer st.Close()
	inc := st.Incarnation()
	var (
		mu    sync.Mutex
		acked []string
		wg    sync.WaitGroup
		ok    atomic.Int64
	)
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				cart := fmt.Sprintf("c%d-%d", w, i)
				if _, err := n.AddItem(bg, cart, "sku", 1); err != nil {
					return
				}
				ok.Add(1)
				mu.Lock()
				acked = append(acked, cart)
				mu.Unlock()
			}
		}()
	}
	for ok.Load() < 50 {
		time.Sleep(time.Millisecond)
	}
	n.Close()
	if err := st.Close(); err != nil {
		t.Errorf("store close: %v", err)
	}
	wg.Wait()
	st2, err := OpenStore(path, store.Options{Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	defer st2.Close()
	if got := st2.Incarnation(); got != inc {
		t.Errorf("a clean stop started a new incarnation at the next open (%d, was %d)", got, inc)
	}
	for _, line := range strings.Split(logs.String(), "\n") {
		if strings.Contains(line, "level=WARN") || strings.Contains(line, "level=ERROR") {
			t.Errorf("log: %s", line)
		}
	}
	m, err := NewNode(Options{Name: "us-east", Store: st2, Clock: clock, ExpiryInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	for _, cart := range acked {
		c, err := m.GetCart(bg, cart)
		if err != nil || len(c.Items) != 1 {
			t.Errorf("acknowledged add to %s lost: %+v %v", cart, c, err)
		}
	}
}
