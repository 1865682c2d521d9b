package region

import (
	"fmt"
	"testing"
	"time"

	"github.com/latticedb/lattice/crdt"
)

// part12Stripe is the store's lock stripe of key (store.keyLocks).
func part12Stripe(key string) uint32 { return crdt.FNV32(key) % 4096 }

// TestCartWrittenWhileItsReleaseWaitsKeepsTheDeltasKeptAside: us-east
// holds back cart v (a line damaged on disk) and a damaged stock value
// while it catches up; eu-west's older state repairs v, and eu-west's
// removal of apple then arrives as a delta, which us-east keeps aside
// (the cart is still held back) and claims in its applied context. The
// round that completes the catch-up releases both keys in one batch: it
// takes them out of the held-back set, then waits for their locks (a
// write of the stock value holds one). A shopper's add to v in that
// moment is no longer refused; it reads v from disk, which notes the cart
// whole again, so the release that follows no longer takes the deltas
// kept aside for it. us-east then serves v with apple, whose removal its
// applied context claims (a reader holding eu-west's token of the
// removal sees the item back), and the kept-aside value stays in the
// store for good.
func TestCartWrittenWhileItsReleaseWaitsKeepsTheDeltasKeptAside(t *testing.T) {
	const id = "v"
	r := newSemRig(t, "us-east", "eu-west")
	a := r.nodes["us-east"]
	sku := ""
	for i := 0; ; i++ {
		s := fmt.Sprintf("x%d", i)
		if part12Stripe(prefixItem+s) < part12Stripe(prefixCart+id) {
			sku = s
			break
		}
	}
	must[Item](t)(a.Restock(bg, sku, 5))
	must[Cart](t)(a.AddItem(bg, id, "apple", 1))
	must[Cart](t)(a.AddItem(bg, id, "pear", 1))
	must[Cart](t)(a.AddItem(bg, "other", "fig", 1))
	for _, d := range damage8Deltas(r, "us-east", 0) {
		r.apply("eu-west", d)
	}
	a.close()
	r.closed["us-east"] = true
	flipStoredByte(t, a.path, cartLineKey(id, "pear"))
	flipStoredByte(t, a.path, prefixItem+sku)
	a = r.open("us-east")
	if !a.isHeldBack(prefixCart+id) || !a.isHeldBack(prefixItem+sku) {
		t.Fatal("us-east does not hold back the damaged cart and item")
	}
	r.repair("eu-west", "us-east", id) // whole again, still held back

	mark := r.published("eu-west")
	must[Cart](t)(r.nodes["eu-west"].RemoveItem(bg, id, "apple"))
	removal := damage8Deltas(r, "eu-west", mark)
	if len(removal) != 1 {
		t.Fatalf("eu-west published %d deltas for the removal", len(removal))
	}
	r.apply("us-east", removal[0]) // kept aside: the cart is held back
	if p := part12Pending(t, a); len(p) != 1 {
		t.Fatalf("us-east keeps aside %v for the held-back cart, want its removal", p)
	}
	dot := crdt.Dot{Replica: removal[0].Origin, Counter: removal[0].Seq}

	lk := a.store.Lock(prefixItem + sku) // a write of the stock value in flight
	done := make(chan struct{})
	go func() {
		defer close(done)
		a.SyncedWith("eu-west", "", []string{"eu-west"})
	}()
	// The release waits for the stock value's lock; the cart stays held
	// back (refused) until the release holds the cart's lock too, so a
	// shopper's add meanwhile is refused, or, once the release has taken
	// the cart, waits for it and lands on the cart with the kept deltas.
	_, addErr := a.AddItem(bg, id, "grape", 1)
	if addErr != nil && codeOf(addErr) != CodeUnavailable {
		t.Errorf("add while the release waits: %v, want it applied or 503 unavailable", addErr)
	}
	lk.Unlock()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the release did not end")
	}
	t.Logf("add during the release: %v", addErr)
	if a.CatchingUp() {
		t.Fatal("us-east did not catch up")
	}
	if applied := a.Applied(); !applied.Contains(dot) {
		t.Fatalf("us-east's applied context does not claim eu-west's removal %v", dot)
	}
	c := r.cart("us-east", id)
	pending := part12Pending(t, a)
	if qtyOf(c, "apple") != 0 {
		t.Errorf("after the release us-east serves cart %s %s: apple is back although its applied context claims eu-west's removal of it (%v); deltas still kept aside: %v",
			id, itemsString(c.Items), dot, pending)
	}
	if len(pending) > 0 {
		t.Errorf("after the release, the deltas kept aside for cart %s are still in the store (%v): no release or repair takes them any more", id, pending)
	}
}

// part12Pending lists the keys of the deltas tn keeps aside (not yet
// emptied).
func part12Pending(t *testing.T, tn *testNode) []string {
	t.Helper()
	var keys []string
	if err := tn.store.Scan(prefixPending, func(k string, v []byte, err error) bool {
		if err != nil || len(v) > 0 {
			keys = append(keys, k)
		}
		return true
	}); err != nil {
		t.Fatal(err)
	}
	return keys
}
