package region

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/latticedb/lattice/crdt"
	"github.com/latticedb/lattice/region/store"
)

// TestCheckoutOfLongNamedRegionsFullCartReplays: four regions whose names
// have 63 characters (the longest a region name may be) each fill cart
// "big" to their local limit, 4,096 adds of one unit over 1,000 skus of
// 128 characters of their own (every limit of docs/api.md "Carts" kept:
// 4,096 entries, 1,000 distinct skus, lines of 4 or 5 entries against a
// line limit of 1,213). The coordinator, home of every sku, holds the
// join (16,384 entries, 4,000 lines) and checks it out with an
// Idempotency-Key. A retry with the key must answer the same order, and
// the checkout's status must be readable (docs/checkout.md: "a retry
// through any region answers the same, for 24 hours").
func TestCheckoutOfLongNamedRegionsFullCartReplays(t *testing.T) {
	var names []string
	for i := range 4 {
		p := fmt.Sprintf("region-%d-", i)
		names = append(names, p+strings.Repeat("a", 63-len(p)))
	}
	r := newBigCartRig(t, names...)
	coord := r.nodes[names[0]]
	entries, _ := coord.cartLimits()
	ctx := WithoutCartItems(bg)
	var all []string
	for i, name := range names {
		skus := bigSkus(MaxCartSKUs, crdt.MaxIDLen)
		for k := range skus {
			skus[k] = fmt.Sprintf("r%d", i) + skus[k][2:]
		}
		all = append(all, skus...)
		for k := range entries {
			must[Cart](t)(r.nodes[name].AddItem(ctx, "big", skus[k%len(skus)], 1))
		}
	}
	r.deliverAll()
	for _, s := range all {
		must[Item](t)(coord.Restock(bg, s, 10))
	}
	if c := must[Cart](t)(coord.GetCart(bg, "big")); len(c.Items) != len(all) {
		t.Fatalf("test setup: the coordinator's cart has %d lines, want %d", len(c.Items), len(all))
	}
	key := fp("big")
	order, err := coord.Checkout(bg, "big", time.Minute, key)
	if err != nil {
		t.Fatalf("checkout at the coordinator: %v", err)
	}
	if len(order.Lines) != len(all) {
		t.Fatalf("order of %d lines, want %d", len(order.Lines), len(all))
	}
	size := 0
	_ = coord.store.View([]string{prefixIdem + key.Key}, func(r store.Reader) error {
		b, _, err := r.Get(prefixIdem + key.Key)
		size = len(b)
		return err
	})
	again, err := coord.Checkout(bg, "big", time.Minute, key)
	if err != nil || again.OrderID != order.OrderID || len(again.Lines) != len(order.Lines) {
		t.Errorf("retry with the key of the order %s (its record: %d bytes, crdt.MaxRecordBytes %d): %d lines, %v; want the same order",
			order.OrderID, size, crdt.MaxRecordBytes, len(again.Lines), err)
	}
	st, err := coord.CheckoutStatusOf(bg, "big", key.Key)
	if err != nil || st.Phase != "settled" || st.Order == nil || st.Order.OrderID != order.OrderID {
		t.Errorf("status of the order %s: phase %q, %v", order.OrderID, st.Phase, err)
	}
}
