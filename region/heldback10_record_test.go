package region

import (
	"slices"
	"testing"
	"time"

	"github.com/latticedb/lattice/region/store"
)

// TestDamagedHeldBackListDoesNotStopTheRegion: us-east's store is found
// damaged on a cart line; it holds the cart back and lists it in the
// store (m/heldback). Before it has caught up it stops, and the stored
// list is damaged in turn. A damaged value is "kept out of service"
// (docs/operations.md): the region starts, holds back every cart until
// it has caught up (it cannot tell which a first peer repaired), then
// serves them and rewrites the list. It once failed to start at all.
func TestDamagedHeldBackListDoesNotStopTheRegion(t *testing.T) {
	const id = "cart-0001"
	r := newSemRig(t, "us-east", "eu-west", "ap-south")
	a := r.nodes["us-east"]
	must[Cart](t)(a.AddItem(bg, id, "apple", 1))
	must[Cart](t)(a.AddItem(bg, id, "pear", 1))
	must[Cart](t)(a.AddItem(bg, "other", "fig", 1))
	r.deliverAll()
	a = damage8Reopen(t, r, "us-east", cartLineKey(id, "pear"))
	if !a.isHeldBack(prefixCart + id) {
		t.Fatalf("us-east does not hold back cart %s", id)
	}
	r.repair("eu-west", "us-east", id)
	a.close()
	r.closed["us-east"] = true
	flipStoredByte(t, a.path, keyHeldBack)

	st, err := OpenStore(a.path, store.Options{})
	if err != nil {
		t.Fatalf("the store does not open: %v", err)
	}
	peers := []string{"eu-west", "ap-south"}
	n, err := NewNode(Options{Name: "us-east", Store: st, Clock: r.clock, ExpiryInterval: time.Hour,
		IsRegion:    func(s string) bool { return slices.Contains(r.regions, s) },
		Publisher:   semPub{r, "us-east"},
		Forwarder:   semFwd{r},
		PeerRegions: peers})
	if err != nil {
		st.Close()
		t.Fatalf("us-east, whose list of held-back keys (%s) is damaged, does not start: %v", keyHeldBack, err)
	}
	tn := &testNode{Node: n, store: st, path: a.path, clock: r.clock}
	r.nodes["us-east"] = tn
	r.closed["us-east"] = false
	// Which keys the earlier run held back is lost with the list: every
	// cart is held back until us-east has caught up, the one repaired
	// from eu-west's state alone among them.
	if c, err := n.GetCart(bg, id); err == nil {
		t.Errorf("us-east, catching up, serves cart %s (%s) although its held-back list is damaged", id, itemsString(c.Items))
	}
	wantCode(t, second(n.GetCart(bg, "other")), CodeUnavailable)
	damage8CatchUp(r, "us-east", id)
	if c, err := n.GetCart(bg, "other"); err != nil || qtyOf(c, "fig") != 1 {
		t.Errorf("us-east caught up serves cart other as %v, %v", c.Items, err)
	}
	if c, err := n.GetCart(bg, id); err != nil || qtyOf(c, "apple") != 1 || qtyOf(c, "pear") != 1 {
		t.Errorf("us-east caught up serves cart %s as %v, %v", id, c.Items, err)
	}
	if bad := n.store.Corrupt(); len(bad) > 0 {
		t.Errorf("caught up, us-east still lists damaged keys %v", bad)
	}
}
