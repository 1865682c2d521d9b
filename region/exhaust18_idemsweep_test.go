package region

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestIdempotencySweepKeepsPaceWithKeyedRequests: every keyed request a
// home decides leaves a record (refusals included), "used for 24 hours
// after it was written, then ignored and deleted (a sweep runs every
// minute)" (docs/api.md, Idempotency); the Go client sends a fresh key
// with every Reserve, Commit, Release and Checkout. 32 clients send keyed
// reservations (each refused, and so recorded) to a home on a durable
// store; 24 hours later the sweep deletes their records. Deleting them
// must not take much longer than making them did: else, under that load
// sustained, a sweep deletes less than a minute's records each minute,
// the records past their 24 hours pile up without bound (in the store,
// and in the list each sweep builds in memory), and the expiry loop, in
// which the sweep runs, expires no hold for longer and longer.
func TestIdempotencySweepKeepsPaceWithKeyedRequests(t *testing.T) {
	n := newNode(t)
	const clients, each = 32, 100
	start := time.Now()
	exhaust18Clients(t, clients, each, func(c, i int) error {
		_, err := n.Reserve(bg, fmt.Sprintf("none-%d", c), 1, time.Minute, idemKey(fmt.Sprintf("k-%d-%d", c, i), "qty 1"))
		if e, ok := err.(*Error); !ok || e.Code != CodeInsufficientStock {
			return fmt.Errorf("keyed reservation of a sku without stock: %v, want insufficient_stock", err)
		}
		return nil
	})
	made := time.Since(start)
	if t.Failed() {
		return
	}
	count := func() int {
		k := 0
		if err := n.store.Scan(prefixIdem, func(key string, _ []byte, _ error) bool {
			if !strings.HasPrefix(key, prefixIdem+sagaKeyPrefix) {
				k++
			}
			return true
		}); err != nil {
			t.Fatal(err)
		}
		return k
	}
	if k := count(); k != clients*each {
		t.Fatalf("%d idempotency records, want %d", k, clients*each)
	}
	n.clock.Advance(IdempotencyRetention + time.Minute)
	start = time.Now()
	if err := n.CollectIdempotency(); err != nil {
		t.Fatal(err)
	}
	swept := time.Since(start)
	if k := count(); k != 0 {
		t.Fatalf("%d records left past their retention", k)
	}
	t.Logf("%d records made by %d clients in %v (%.0f/s), deleted by the sweep in %v (%.0f/s)",
		clients*each, clients, made, clients*each/made.Seconds(), swept, clients*each/swept.Seconds())
	if swept > 2*made {
		t.Errorf("the sweep took %.1f times as long to delete the records as %d clients took to make them: under that load a minute's sweep deletes %.0f s of records, and the rest piles up",
			swept.Seconds()/made.Seconds(), clients, 60*made.Seconds()/swept.Seconds())
	}
}
