package region

import (
	"testing"

	"github.com/latticedb/lattice/crdt"
	"github.com/latticedb/lattice/region/store"
)

// TestStock18CommitKeepsOwnDecrementsWithinBound: this home's replica has
// taken MaxCount−5 units out of w over its life (a long-lived sku whose
// units turned over; the home's restocks of MaxCount−5 matched them) and
// eu-west restocked 100, so the stock is 100. A reservation of 10 is
// decided and committed: the commit answers 200 but takes the replica's
// decrement counter to MaxCount+5, which no item decoder accepts, so the
// home can no longer read its own item (and its peers refuse the delta).
// A negative adjustment of the same units is refused with 400 (field
// delta) exactly for this; a commit must either be refused before the
// units are held, or leave the item readable with stock 90.
func TestStock18CommitKeepsOwnDecrementsWithinBound(t *testing.T) {
	n := newNode(t)
	it := &crdt.Item{}
	it.Join(it.Restock(n.Self(), crdt.MaxCount-5))
	it.Join(it.Consume(n.Self(), crdt.MaxCount-5))
	it.Join(it.Restock("eu-west", 100))
	if err := n.store.Update([]string{prefixItem + "w"}, func(tx *store.Tx) error {
		tx.Set(prefixItem+"w", crdt.EncodeItem(it))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if got := must[Item](t)(n.GetItem(bg, "w", false)); got.Stock != 100 || got.Available != 100 {
		t.Fatalf("test setup: %+v, want stock 100", got)
	}
	res, err := n.Reserve(bg, "w", 10, 0, Idem{})
	if err != nil {
		// Refusing the hold up front is a fine answer.
		t.Logf("reservation refused: %v", err)
		return
	}
	if _, err := n.Commit(bg, res.ID, Idem{}); err != nil {
		t.Logf("commit refused: %v", err)
		return
	}
	got, err := n.GetItem(bg, "w", false)
	if err != nil || got.Stock != 90 {
		t.Fatalf("a commit of 10 answered 200 (stock 100 before): the item reads %+v, %v; want stock 90", got, err)
	}
}

// TestStock18ReturnKeepsOwnRestocksWithinBound: the home's replica has
// restocked w with MaxCount−5 units over its life and taken MaxCount−100
// out; eu-west restocked 100 (stock 195). A reservation of 10 is held and
// committed, then a checkout's compensation returns it (OpReturn): the
// return puts the 10 units back as a restock by the home's replica, which
// takes that replica's increment counter to MaxCount+5. The return answers
// success, and the item no longer decodes (503 damaged at the home, the
// delta refused by every peer). Five units fit under the bound: the stock
// reads 190, the other five stay out of sale rather than break the item.
func TestStock18ReturnKeepsOwnRestocksWithinBound(t *testing.T) {
	n := newNode(t)
	it := &crdt.Item{}
	it.Join(it.Restock(n.Self(), crdt.MaxCount-5))
	it.Join(it.Consume(n.Self(), crdt.MaxCount-100))
	it.Join(it.Restock("eu-west", 100))
	if err := n.store.Update([]string{prefixItem + "w"}, func(tx *store.Tx) error {
		tx.Set(prefixItem+"w", crdt.EncodeItem(it))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if got := must[Item](t)(n.GetItem(bg, "w", false)); got.Stock != 195 {
		t.Fatalf("test setup: %+v, want stock 195", got)
	}
	res := must[Reservation](t)(n.Reserve(bg, "w", 10, 0, Idem{}))
	must[Reservation](t)(n.Commit(bg, res.ID, Idem{}))
	if got := must[Item](t)(n.GetItem(bg, "w", false)); got.Stock != 185 {
		t.Fatalf("after the commit: %+v, want stock 185", got)
	}
	resp := n.ServeHome(bg, &HomeRequest{Op: OpReturn, ID: res.ID})
	if resp.Err != nil {
		t.Logf("return refused: %v", resp.Err)
		return
	}
	// The replica's restocks may grow by 5 more: those 5 units go back,
	// the other 5 stay out of sale (logged), and the item stays readable.
	got, err := n.GetItem(bg, "w", false)
	if err != nil || got.Stock != 190 {
		t.Fatalf("the return of a committed reservation of 10 answered %+v (stock 185 before): the item reads %+v, %v; want stock 190", resp.Res, got, err)
	}
}
