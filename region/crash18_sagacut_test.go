package region

import (
	"fmt"
	"testing"
	"time"

	"github.com/latticedb/lattice/region/store"
)

// crash18Txs counts the transactions of the store file at path.
func crash18Txs(t *testing.T, path string) int {
	t.Helper()
	txs, err := store.Transactions(path)
	if err != nil {
		t.Fatal(err)
	}
	return len(txs)
}

// crash18Swept waits until the coordinator's background collection of
// emptied lines has deleted every line the run left empty, so that every
// run writes the same transactions before its crash.
func crash18Swept(t *testing.T, r *sagaRig) {
	t.Helper()
	waitUntil(t, 10*time.Second, "the emptied lines deleted", func() bool {
		empty := 0
		err := r.coord.store.Scan(prefixCartLine, func(_ string, v []byte, _ error) bool {
			if len(v) == 0 {
				empty++
			}
			return true
		})
		return err == nil && empty == 0
	})
}

// crash18Retry retries the checkout under its key until it answers
// something other than a transient refusal (settling first, as the
// background would).
func crash18Retry(t *testing.T, r *sagaRig) (Order, error) {
	t.Helper()
	var order Order
	var err error
	for i := 0; i < 6; i++ {
		order, err = r.checkout()
		var e *Error
		if err == nil || !asErr(err, &e) || !transient(e) {
			return order, err
		}
		r.clock.Advance(sagaTTL)
		r.coord.SettleCheckouts()
	}
	return order, err
}

// TestCrash18SagaCutAtEveryCoordinatorTransaction runs a checkout (that
// succeeds, that fails for want of stock, and one that must undo a
// committed line), stops the coordinator as a crash does after each of
// the transactions it wrote (the later ones lost), restarts it and
// retries with the key: the outcome is an order with each line committed
// once and the cart bought, or a clean failure with every unit back and
// the cart untouched; nothing stays held past the ttl.
func TestCrash18SagaCutAtEveryCoordinatorTransaction(t *testing.T) {
	type scenario struct {
		name string
		prep func(r *sagaRig)
		run  func(r *sagaRig)
	}
	scenarios := []scenario{
		{"order", func(r *sagaRig) {}, func(r *sagaRig) { _, _ = r.checkout() }},
		{"short", func(r *sagaRig) {
			must[Cart](r.t)(r.coord.AddItem(bg, "c", "b", 20))
		}, func(r *sagaRig) { _, _ = r.checkout() }},
		{"undo", func(r *sagaRig) {
			r.homes.set(false, "commit b")
			_, _ = r.checkout()
			r.homes.set(false)
			r.clock.Advance(2 * sagaTTL)
			must[Reservation](r.t)(r.homes.nodes["h2"].Reserve(bg, "b", 10, 1000*sagaTTL, Idem{}))
		}, func(r *sagaRig) { _, _ = r.checkout() }},
	}
	for _, sc := range scenarios {
		// How many transactions the run writes at the coordinator.
		r := newSagaRig(t)
		r.fill()
		sc.prep(r)
		before := crash18Txs(t, r.coord.path)
		sc.run(r)
		crash18Swept(t, r)
		r.coord.crash()
		total := crash18Txs(t, r.coord.path) - before
		if total < 1 {
			t.Fatalf("%s: the run wrote %d transactions", sc.name, total)
		}
		for k := 1; k <= total; k++ {
			t.Run(fmt.Sprintf("%s/lose%d", sc.name, k), func(t *testing.T) {
				r := newSagaRig(t)
				r.fill()
				sc.prep(r)
				before := crash18Txs(t, r.coord.path)
				sc.run(r)
				crash18Swept(t, r)
				r.coord.crash()
				if wrote := crash18Txs(t, r.coord.path) - before; wrote != total {
					t.Fatalf("this run wrote %d transactions, the first %d", wrote, total)
				}
				if sc.name == "order" && k == total {
					// Losing the plan stored before any reservation went
					// out: TestCrash18EverysecPowerLossAfterCheckoutBuysCartAgain.
					return
				}
				if _, err := store.CutTransactions(r.coord.path, k, false); err != nil {
					t.Fatal(err)
				}
				r.coord = r.open("us-east", r.homes)
				r.homes.set(false)
				order, err := crash18Retry(t, r)
				r.clock.Advance(2 * sagaTTL)
				want := map[string]int64{"a": 10, "b": 10}
				c := must[Cart](t)(r.coord.GetCart(bg, "c"))
				if err == nil {
					if len(order.Lines) != 2 {
						t.Fatalf("order %+v", order)
					}
					want["a"]--
					want["b"]--
					if len(c.Items) != 0 {
						t.Fatalf("cart after the order: %s", itemsString(c.Items))
					}
				} else if len(c.Items) != 2 {
					t.Fatalf("cart after the failure %v: %s", err, itemsString(c.Items))
				}
				for home, sku := range map[string]string{"h1": "a", "h2": "b"} {
					it := r.item(home, sku)
					held := int64(0)
					if sc.name == "undo" && sku == "b" {
						held = 10 // the other buyer's
					}
					if it.Stock != want[sku] || it.Reserved != held {
						t.Fatalf("outcome %v: %s at %s: %+v, want stock %d, nothing held", err, sku, home, it, want[sku])
					}
				}
			})
		}
	}
}
