package crdt

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
)

// itemsByMaps is the view Items returns, computed the plain way: per sku,
// the largest set plus the sum of the adds, skus with quantity > 0 in
// order.
func itemsByMaps(c *Cart) []CartItem {
	set, add := map[string]int64{}, map[string]int64{}
	for _, l := range c.Entries {
		if l.Kind == KindSet {
			set[l.SKU] = max(set[l.SKU], l.N)
		} else {
			add[l.SKU] += l.N
		}
	}
	var skus []string
	for s := range set {
		skus = append(skus, s)
	}
	for s := range add {
		if _, ok := set[s]; !ok {
			skus = append(skus, s)
		}
	}
	slices.Sort(skus)
	items := []CartItem{}
	for _, s := range skus {
		if q := set[s] + add[s]; q > 0 {
			items = append(items, CartItem{SKU: s, Qty: q})
		}
	}
	return items
}

// TestItemsView checks Items against itemsByMaps on random carts (seed
// printed) and that an empty cart's view is empty, not nil.
func TestItemsView(t *testing.T) {
	if v := (&Cart{}).Items(); v == nil || len(v) != 0 {
		t.Fatalf("empty cart's Items = %#v, want an empty slice", v)
	}
	const seed = 20261205
	t.Logf("seed %d", seed)
	r := rand.New(rand.NewPCG(seed, 0))
	for i := range 500 {
		c := &Cart{Entries: map[Dot]Line{}}
		for k := range r.IntN(40) {
			kind := KindAdd
			if r.IntN(3) == 0 {
				kind = KindSet
			}
			d := Dot{Replica: ReplicaID(fmt.Sprintf("r%d", r.IntN(3))), Counter: uint64(k + 1)}
			c.Entries[d] = Line{SKU: fmt.Sprintf("s%d", r.IntN(8)), Kind: kind, N: int64(1 + r.IntN(5))}
		}
		if got, want := c.Items(), itemsByMaps(c); !slices.Equal(got, want) {
			t.Fatalf("cart %d: Items = %v, want %v", i, got, want)
		}
	}
}
