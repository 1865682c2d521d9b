package region

import (
	"bytes"
	"fmt"
	"testing"

	"github.com/latticedb/lattice/region/store"
)

// TestReleaseCutAfterItsFirstBatchHoldsBackAgain: us-east's store opens
// with a damaged cart line and 300 damaged stock values that no peer
// holds; it holds them back while it catches up. The release writes them
// anew, empty, in batches of 256; the region then stops as a power loss
// stops it, and the file keeps the first batch only (not the second, nor
// the record that the keys are served again). At the next start the
// region must be catching up again and refuse every one of those keys
// (the second batch is damaged again; the first is still listed as held
// back); after the next round it serves them all, the cart with
// eu-west's state, and lists no damaged key.
func TestReleaseCutAfterItsFirstBatchHoldsBackAgain(t *testing.T) {
	const items = 300
	r := newSemRig(t, "us-east", "eu-west")
	a := r.nodes["us-east"]
	must[Cart](t)(a.AddItem(bg, "v", "apple", 1))
	must[Cart](t)(a.AddItem(bg, "v", "pear", 1))
	for _, d := range damage8Deltas(r, "us-east", 0) {
		r.apply("eu-west", d)
	}
	must[Cart](t)(a.AddItem(bg, "other", "fig", 1))
	a.close()
	r.closed["us-east"] = true
	st, err := OpenStore(a.path, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	keys := make([]string, items)
	for i := range keys {
		keys[i] = prefixItem + fmt.Sprintf("sku-%05d", i)
	}
	if err := st.Update(keys, func(tx *store.Tx) error {
		for _, k := range keys {
			tx.Set(k, bytes.Repeat([]byte{0x5a}, 32))
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	flipStoredByte(t, a.path, cartLineKey("v", "pear"))
	heldBack10FlipAll(t, a.path, prefixItem+"sku-")
	a = r.open("us-east")
	if !a.CatchingUp() || !a.isHeldBack(keys[0]) || !a.isHeldBack(keys[items-1]) {
		t.Fatal("us-east does not hold back the damaged keys while catching up")
	}
	r.repair("eu-west", "us-east", "v")
	before := fileSize(t, a.path)
	a.SyncedWith("eu-west", "", []string{"eu-west"})
	if a.CatchingUp() {
		t.Fatal("us-east did not catch up")
	}
	a.crash()
	r.closed["us-east"] = true
	txs, err := store.Transactions(a.path)
	if err != nil {
		t.Fatal(err)
	}
	var after []store.TxSpan
	for _, s := range txs {
		if s.Start >= before {
			after = append(after, s)
		}
	}
	if len(after) < 2 || after[0].Commands < releaseBatch-1 {
		t.Fatalf("the release wrote %d transactions, the first of %d commands; want a first batch of %d items", len(after), after[0].Commands, releaseBatch-1)
	}
	if _, err := store.CutTransactions(a.path, len(after)-1, false); err != nil {
		t.Fatal(err)
	}

	a = r.open("us-east")
	if !a.CatchingUp() {
		t.Fatal("restarted after losing the end of the release, us-east is not catching up")
	}
	for _, k := range []string{keys[0], keys[items-1]} {
		sku := k[len(prefixItem):]
		if it, err := a.GetItem(bg, sku, false); err == nil {
			t.Fatalf("restarted before catching up again, us-east serves %s (stock %d)", sku, it.Stock)
		}
	}
	if c, err := a.GetCart(bg, "v"); err == nil {
		t.Fatalf("restarted before catching up again, us-east serves cart v %s", itemsString(c.Items))
	}
	a.SyncedWith("eu-west", "", []string{"eu-west"})
	if a.CatchingUp() {
		t.Fatal("us-east did not catch up after the restart")
	}
	for _, k := range []string{keys[0], keys[items-1]} {
		sku := k[len(prefixItem):]
		if _, err := a.GetItem(bg, sku, false); err != nil {
			t.Fatalf("caught up again, us-east refuses %s: %v", sku, err)
		}
	}
	if c := r.cart("us-east", "v"); qtyOf(c, "apple") != 1 || qtyOf(c, "pear") != 1 {
		t.Fatalf("caught up again, us-east serves cart v %s, want apple:1 pear:1", itemsString(c.Items))
	}
	if bad := a.store.Corrupt(); len(bad) > 0 {
		t.Fatalf("caught up again, us-east still lists damaged keys %v", bad)
	}
}
