package region

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/latticedb/lattice/region/store"
)

// TestIdempotencySweepKeepsFreshRecord: an Idempotency-Key may be used
// again once its record is past the 24 h retention. A reservation made
// with such a key while the idempotency sweep runs keeps its own, fresh
// record: a retry of it with the same key returns it and holds nothing
// more. The sweep must not delete the record it judged old after a new
// request has replaced it under the same key.
func TestIdempotencySweepKeepsFreshRecord(t *testing.T) {
	dir := t.TempDir()
	clock := newFakeClock()
	n := openNode(t, dir, clock)
	must[Item](t)(n.Restock(bg, "w", 10))
	k := fp("reused")
	first := must[Reservation](t)(n.Reserve(bg, "w", 2, time.Minute, k))
	clock.Advance(IdempotencyRetention + time.Minute)
	n.close()

	// Reopened on a slower disk: each fsync takes a while, as a loaded
	// disk's does. The next reservation number needs a new block, made
	// durable while the reservation's keys are held.
	path := filepath.Join(dir, "us-east", "data.db")
	st, err := OpenStore(path, store.Options{FsyncDelay: 400 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	node, err := NewNode(Options{Name: "us-east", Store: st, Clock: clock, ExpiryInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	n = &testNode{Node: node, store: st, path: path, clock: clock}
	t.Cleanup(n.close)

	type result struct {
		r   Reservation
		err error
	}
	done := make(chan result, 1)
	go func() {
		r, err := n.Reserve(bg, "w", 2, time.Minute, k)
		done <- result{r, err}
	}()
	// Once the reservation with the key holds its keys (it is making its
	// block of reservation numbers durable, under n.resMu), the sweep runs.
	deadline := time.Now().Add(5 * time.Second)
	for n.resMu.TryLock() {
		n.resMu.Unlock()
		if time.Now().After(deadline) {
			t.Fatal("the reservation never started")
		}
		time.Sleep(100 * time.Microsecond)
	}
	if err := n.CollectIdempotency(); err != nil {
		t.Fatal(err)
	}
	res := <-done
	if res.err != nil {
		t.Fatal(res.err)
	}
	second := res.r
	if second.ID == first.ID {
		t.Fatalf("the key past retention replayed %s", first.ID)
	}

	// The client did not get the answer and retries with the same key.
	retry := must[Reservation](t)(n.Reserve(bg, "w", 2, time.Minute, k))
	it := must[Item](t)(n.GetItem(bg, "w", false))
	if retry.ID != second.ID || it.Reserved != 2 {
		t.Fatalf("retry with the key of reservation %s made %s; %d units held for one request (item %+v)", second.ID, retry.ID, it.Reserved, it)
	}
}
