package region

import (
	"testing"
	"time"
)

// TestHeldBackItemIsRefusedToAConsistentRead: the home h commits 6 of a
// stock of 10; the commit reaches b, not a. h's stored item is damaged,
// h reopens catching up and a's older state repairs the item, which h
// holds back: h's own read of it is 503 (docs/operations.md, Damaged
// values: "stock to reads"). A consistent read at a (?consistent=true,
// "as its home has it") is answered by h from that same held-back state:
// stock 10 and 10 available, although 6 were sold (b shows 4). It must be
// refused as h's own read is, or count the commit.
func TestHeldBackItemIsRefusedToAConsistentRead(t *testing.T) {
	const sku = "p1"
	r := newEscrowRig(t)
	h := r.nodes["h"]
	must[Item](t)(h.Restock(bg, sku, 10))
	damage8DeliverTo(t, r, "a", "b")
	res := must[Reservation](t)(h.Reserve(bg, sku, 6, time.Minute, Idem{}))
	if c := must[Reservation](t)(h.Commit(bg, res.ID, Idem{})); c.State != StateCommitted {
		t.Fatalf("commit: %+v", c)
	}
	damage8DeliverTo(t, r, "b")           // a is cut off from h meanwhile
	must[Item](t)(h.Restock(bg, "x1", 1)) // the damaged value is not in the last transaction
	damage8DeliverTo(t, r, "b")

	h.close()
	flipStoredByte(t, h.path, prefixItem+sku)
	r.open("h")
	h = r.nodes["h"]
	if !h.CatchingUp() {
		t.Fatal("h reopened on a damaged store is not catching up")
	}
	damage8RepairItem(t, r, "a", "h", sku) // a's round with h comes first
	wantCode(t, second2(h.GetItem(bg, sku, false)), CodeUnavailable)
	if it := r.item("b", sku); it.Stock != 4 {
		t.Fatalf("b shows stock %d, want 4", it.Stock)
	}

	it, err := r.nodes["a"].GetItem(bg, sku, true)
	if err == nil && it.Stock != 4 {
		t.Errorf("a consistent read of %s (answered by its home h, which holds the item back while it catches up and refuses its own read of it) shows stock %d, %d available; 6 of 10 were committed (b shows stock 4)",
			sku, it.Stock, it.Available)
	}
}
