package region

import (
	"testing"
	"time"

	"github.com/latticedb/lattice/crdt"
	"github.com/latticedb/lattice/region/store"
)

// TestEscrowGrantKeepsRecordWithinBound: escrow sku e1 has turned over
// for a long time between its home h and region a: h has granted a
// MaxCount−5 units over the sku's life and a has given all of them back,
// so a holds no rights and the stock (100) is all available. A grant is
// a grow-only counter like a replica's restocks, and the item decoder
// refuses any escrow record above crdt.MaxCount (crdt/decode.go), just
// as it refuses a restock counter above it (which Restock guards,
// region/inventory.go). A reservation of 3 at a asks the home for
// rights; the home grants and adds them to the MaxCount−5 record with no
// bound, storing an item that neither the home nor any peer can decode.
// Either the grant is refused (the reservation is decided at the home)
// or the item stays readable.
func TestEscrowGrantKeepsRecordWithinBound(t *testing.T) {
	r := newEscrowRig(t)
	h, a := r.nodes["h"], r.nodes["a"]
	it := &crdt.Item{}
	it.Join(it.Restock(h.Self(), 100))
	it.Join(it.Grant(h.Self(), "a", crdt.MaxCount-5))
	it.Join(it.ReturnRights(a.Self(), crdt.MaxCount-5))
	for _, n := range []*testNode{h, a} {
		if err := n.store.Update([]string{prefixItem + "e1"}, func(tx *store.Tx) error {
			tx.Set(prefixItem+"e1", crdt.EncodeItem(it))
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	if got := r.item("h", "e1"); got.Stock != 100 || got.Available != 100 {
		t.Fatalf("test setup: home reads %+v, want stock and available 100", got)
	}
	res, err := a.Reserve(bg, "e1", 3, time.Minute, Idem{})
	if err != nil {
		_, herr := h.GetItem(bg, "e1", false)
		t.Fatalf("reservation of 3 of 100 available: %v (the home's item then reads: %v)", err, herr)
	}
	got, err := h.GetItem(bg, "e1", false)
	if err != nil {
		t.Fatalf("after reservation %s (answered 201) the home cannot read its item: %v", res.ID, err)
	}
	if got.Stock != 100 {
		t.Fatalf("after reservation %s the home reads %+v, want stock 100", res.ID, got)
	}
	r.deliver(nil)
	if _, err := a.GetItem(bg, "e1", false); err != nil {
		t.Fatalf("after reservation %s region a cannot read the item: %v", res.ID, err)
	}
}
