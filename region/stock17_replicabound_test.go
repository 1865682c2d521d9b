package region

import (
	"testing"

	"github.com/latticedb/lattice/crdt"
	"github.com/latticedb/lattice/region/store"
)

// TestRestockKeepsOwnCounterWithinBound: the stock of w is 5, but this
// region's replica has restocked MaxCount−5 units of it over time and the
// home consumed MaxCount−10 (a long-lived sku whose units turned over).
// A restock of 10 keeps the stock (15) far below 2⁵⁵, so it passes the
// documented stock bound, but it takes the replica's own increment
// counter past crdt.MaxCount, which no item decoder accepts: the region
// answers 200 and then cannot read its own item (503 damaged), and its
// peers refuse the delta. Either the restock is refused (400, field qty)
// or the item stays readable with stock 15.
func TestRestockKeepsOwnCounterWithinBound(t *testing.T) {
	n := newNode(t)
	it := &crdt.Item{}
	it.Join(it.Restock(n.Self(), crdt.MaxCount-5))
	it.Join(it.Consume(n.Self(), crdt.MaxCount-10))
	if err := n.store.Update([]string{prefixItem + "w"}, func(tx *store.Tx) error {
		tx.Set(prefixItem+"w", crdt.EncodeItem(it))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if got := must[Item](t)(n.GetItem(bg, "w", false)); got.Stock != 5 {
		t.Fatalf("test setup: stock %d, want 5", got.Stock)
	}
	if _, err := n.Restock(bg, "w", 10); err != nil {
		wantCode(t, err, CodeInvalidRequest)
		return
	}
	got, err := n.GetItem(bg, "w", false)
	if err != nil || got.Stock != 15 {
		t.Fatalf("after a restock of 10 answered 200 (stock 5 before): the item reads %+v, %v; want stock 15", got, err)
	}
}
