package region

import (
	"fmt"
	"sync"
	"testing"
	"time"
)

// TestEmptiedLinesDeletedAsFastAsClientsEmptyThem: "a line left without
// entries is written empty and deleted in the background"
// (docs/operations.md, carts are stored split); until then its key stays
// in the store and in the node's list of lines to delete (cartStore.blank,
// in memory). 32 clients each add and remove lines of their cart, every
// remove leaving a line empty. While they do, the background deletion
// must keep up with them (here: delete at least half of the lines they
// empty): else, under that load sustained, the list and the store's empty
// keys grow without bound.
func TestEmptiedLinesDeletedAsFastAsClientsEmptyThem(t *testing.T) {
	n := newNode(t)
	const clients, each = 32, 150
	start := time.Now()
	exhaust18Clients(t, clients, each, func(c, i int) error {
		cart, sku := fmt.Sprintf("cart-%d", c), fmt.Sprintf("sku-%d", i)
		if _, err := n.AddItem(bg, cart, sku, 1); err != nil {
			return err
		}
		_, err := n.RemoveItem(bg, cart, sku)
		return err
	})
	took := time.Since(start)
	if t.Failed() {
		return
	}
	backlog := func() int {
		n.carts.mu.Lock()
		defer n.carts.mu.Unlock()
		return len(n.carts.blank)
	}
	left := backlog()
	const emptied = clients * each
	t.Logf("%d clients emptied %d lines in %v (%.0f/s); %d of them were still to delete when they stopped",
		clients, emptied, took, emptied/took.Seconds(), left)
	if left > emptied/2 {
		t.Errorf("while %d clients emptied %d lines in %v, the background deletion deleted %d: under that load the lines to delete grow by %.0f a second, in memory and in the store",
			clients, emptied, took, emptied-left, float64(left)/took.Seconds())
	}
	// Once the clients stop, the backlog does go (it is the rate, not the
	// deletion, that is at fault).
	deadline := time.Now().Add(60 * time.Second)
	for backlog() > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d emptied lines still to delete a minute after the clients stopped", backlog())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// exhaust18Clients runs clients goroutines, each calling fn(c, i) for i
// from 0 to each−1 and stopping at its first error (a test error), and
// waits for them.
func exhaust18Clients(t *testing.T, clients, each int, fn func(c, i int) error) {
	t.Helper()
	var wg sync.WaitGroup
	for c := range clients {
		wg.Go(func() {
			for i := range each {
				if err := fn(c, i); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
}
