package region

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"github.com/latticedb/lattice/crdt"
	"github.com/latticedb/lattice/region/store"
)

// damage8Deltas returns the deltas region name published from index from
// on.
// damage8AddThenRemove has us-east add apple and pear to cart id, which
// reach eu-west and ap-south, then remove apple; it returns us-east and
// where the removal's deltas begin in its published log (damage8Deltas
// from there is the removal, delivered to no region yet).
func damage8AddThenRemove(t *testing.T, r *semRig, id string) (*testNode, int) {
	t.Helper()
	a := r.nodes["us-east"]
	must[Cart](t)(a.AddItem(bg, id, "apple", 1))
	must[Cart](t)(a.AddItem(bg, id, "pear", 1))
	for _, d := range damage8Deltas(r, "us-east", 0) {
		r.apply("eu-west", d)
		r.apply("ap-south", d)
	}
	mark := r.published("us-east")
	must[Cart](t)(a.RemoveItem(bg, id, "apple"))
	return a, mark
}

func damage8Deltas(r *semRig, name string, from int) []Delta {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Delta(nil), r.log[name][from:]...)
}

// damage8Reopen stops region name cleanly, flips a byte of the stored
// value of key in its file and opens it again.
func damage8Reopen(t *testing.T, r *semRig, name, key string) *testNode {
	t.Helper()
	tn := r.nodes[name]
	tn.close()
	r.closed[name] = true
	flipStoredByte(t, tn.path, key)
	return r.open(name)
}

// damage8CatchUp brings region name every other region's state of cart
// id and reports its rounds with them complete, as anti-entropy does: a
// store found damaged at its start catches up, and its damaged keys are
// held back until then.
func damage8CatchUp(r *semRig, name, id string) {
	r.t.Helper()
	var peers []string
	for _, p := range r.regions {
		if p != name {
			peers = append(peers, p)
			r.repair(p, name, id)
		}
	}
	for _, p := range peers {
		r.nodes[name].SyncedWith(p, "", peers)
	}
	if r.nodes[name].CatchingUp() {
		r.t.Fatalf("%s still catching up", name)
	}
}

// damage8Converge runs anti-entropy repairs of cart id between every pair
// of regions, both ways, twice.
func damage8Converge(r *semRig, id string) {
	for range 2 {
		for _, a := range r.regions {
			for _, b := range r.regions {
				if a != b {
					r.repair(a, b, id)
				}
			}
		}
	}
}

// TestDamage8StaleRepairKeepsReplicatedAdd: us-east adds kiwi to a cart;
// the add reaches ap-south but not eu-west. us-east stops cleanly and a
// line of the cart is damaged on disk; eu-west's (older) whole state
// repairs it. The kiwi add did replicate, so it must not be lost (README,
// Limitations: "what did replicate is never lost"), and us-east's next
// add must not take kiwi's dot again for another item: once every region
// has every state, each must show apple, pear, kiwi and grape.
func TestDamage8StaleRepairKeepsReplicatedAdd(t *testing.T) {
	const id = "v"
	r := newSemRig(t, "us-east", "eu-west", "ap-south")
	a := r.nodes["us-east"]
	must[Cart](t)(a.AddItem(bg, id, "apple", 1))
	must[Cart](t)(a.AddItem(bg, id, "pear", 1))
	for _, d := range damage8Deltas(r, "us-east", 0) {
		r.apply("eu-west", d)
		r.apply("ap-south", d)
	}
	mark := r.published("us-east")
	must[Cart](t)(a.AddItem(bg, id, "kiwi", 1))
	for _, d := range damage8Deltas(r, "us-east", mark) {
		r.apply("ap-south", d) // eu-west is cut off from us-east meanwhile
	}
	kiwiState := r.stateOf("ap-south", id).Clone()

	a = damage8Reopen(t, r, "us-east", "e/"+id+"/apple")
	wantCode(t, second(a.GetCart(bg, id)), CodeUnavailable)
	// eu-west's round with us-east comes first: its state repairs the cart,
	// which is held back until every peer's round.
	r.repair("eu-west", "us-east", id)
	wantCode(t, second(a.AddItem(bg, id, "grape", 1)), CodeUnavailable)
	damage8CatchUp(r, "us-east", id)
	mark = r.published("us-east")
	must[Cart](t)(a.AddItem(bg, id, "grape", 1))
	for _, d := range damage8Deltas(r, "us-east", mark) {
		r.apply("eu-west", d)
		r.apply("ap-south", d)
	}
	grapeState := r.stateOf("us-east", id)
	if bad := kiwiState.Conflicts(grapeState); len(bad) > 0 {
		t.Errorf("us-east issued dot(s) %v again after the repair: ap-south holds %v, us-east %v",
			bad, kiwiState.Entries, grapeState.Entries)
	}
	damage8Converge(r, id)
	for _, name := range r.regions {
		c := r.cart(name, id)
		for _, sku := range []string{"apple", "pear", "kiwi", "grape"} {
			if qtyOf(c, sku) != 1 {
				t.Errorf("%s after every repair: %s; want apple, pear, kiwi and grape (all acknowledged adds, kiwi replicated before the damage)",
					name, itemsString(c.Items))
				break
			}
		}
	}
}

// TestDamage8StaleRepairKeepsReplicatedRemove: us-east removes apple;
// the removal reaches ap-south but not eu-west. us-east stops cleanly, a
// line of the cart is damaged on disk and eu-west's older state repairs
// it. A reader holding the token of the removal (which us-east's applied
// context covers, so it is served at once) must not see apple again.
func TestDamage8StaleRepairKeepsReplicatedRemove(t *testing.T) {
	const id = "v"
	r := newSemRig(t, "us-east", "eu-west", "ap-south")
	a, mark := damage8AddThenRemove(t, r, id)
	removal := damage8Deltas(r, "us-east", mark)
	if len(removal) != 1 {
		t.Fatalf("the removal published %d deltas", len(removal))
	}
	r.apply("ap-south", removal[0])
	tok := a.Token() // the client's token after its removal

	a = damage8Reopen(t, r, "us-east", "e/"+id+"/pear")
	r.repair("eu-west", "us-east", id)
	ctx, cancel := contextWithTimeout(2 * time.Second)
	defer cancel()
	if err := a.WaitToken(ctx, tok); err != nil {
		t.Fatalf("us-east does not serve the token of its own durable removal: %v", err)
	}
	// Repaired from eu-west alone, the cart is held back.
	if c, err := a.GetCart(bg, id); err == nil {
		t.Errorf("us-east serves cart %s repaired from eu-west's older state alone", itemsString(c.Items))
	}
	damage8CatchUp(r, "us-east", id)
	c := r.cart("us-east", id)
	if qtyOf(c, "apple") != 0 {
		t.Errorf("us-east serves the token of the removal of apple (SPEC §5, read-your-writes) but its cart is %s after eu-west's older state repaired it; ap-south holds %s",
			itemsString(c.Items), itemsString(r.cart("ap-south", id).Items))
	}
}

// TestDamage8DamagedKeptDeltasLeaveNoPermanentDamage: us-east's cart is
// damaged; ap-south's add of kiwi reaches it and is kept aside under
// "p/c/v" (claimed: us-east's applied context holds its dot). Before a
// peer repairs the cart, the kept value is damaged too. eu-west's state
// (without kiwi) then repairs the cart. us-east must not claim kiwi while
// serving the cart without it (SPEC §5: a token is served only once the
// region has applied what it covers), and the damaged kept value must not
// stay in the file for good: docs/operations.md says a backup refused for
// damage succeeds once the region has repaired its damaged carts.
func TestDamage8DamagedKeptDeltasLeaveNoPermanentDamage(t *testing.T) {
	const id = "v"
	r := newSemRig(t, "us-east", "eu-west", "ap-south")
	a := r.nodes["us-east"]
	must[Cart](t)(a.AddItem(bg, id, "apple", 1))
	must[Cart](t)(a.AddItem(bg, id, "pear", 1))
	for _, d := range damage8Deltas(r, "us-east", 0) {
		r.apply("eu-west", d)
		r.apply("ap-south", d)
	}
	must[Cart](t)(a.AddItem(bg, "other", "fig", 1)) // the damaged line is not in the last transaction
	a = damage8Reopen(t, r, "us-east", "e/"+id+"/apple")
	wantCode(t, second(a.GetCart(bg, id)), CodeUnavailable)

	c := r.nodes["ap-south"]
	mark := r.published("ap-south")
	must[Cart](t)(c.AddItem(bg, id, "kiwi", 1))
	for _, d := range damage8Deltas(r, "ap-south", mark) {
		r.apply("us-east", d) // kept aside at us-east; eu-west is cut off from ap-south
	}
	tok := c.Token()
	must[Cart](t)(a.AddItem(bg, "other", "fig", 1)) // nor is the kept value

	a = damage8Reopen(t, r, "us-east", prefixPending+prefixCart+id)
	r.repair("eu-west", "us-east", id)

	ctx, cancel := contextWithTimeout(time.Second)
	defer cancel()
	if err := a.WaitToken(ctx, tok); err == nil {
		if got, err := a.GetCart(bg, id); err == nil && qtyOf(got, "kiwi") != 1 {
			t.Errorf("us-east serves a token covering ap-south's add of kiwi but its cart is %s", itemsString(got.Items))
		}
	}
	damage8CatchUp(r, "us-east", id)
	if got := r.cart("us-east", id); qtyOf(got, "kiwi") != 1 {
		t.Errorf("us-east caught up serves cart %s without ap-south's add of kiwi", itemsString(got.Items))
	}
	// Kept values left empty are deleted in the background: give it time.
	deadline := time.Now().Add(2 * time.Second)
	for len(r.nodes["us-east"].store.Corrupt()) > 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if bad := r.nodes["us-east"].store.Corrupt(); len(bad) > 0 {
		t.Errorf("after the repair us-east still lists damaged keys %v", bad)
	}
	var snap bytes.Buffer
	if _, err := store.Backup(r.nodes["us-east"].path, &snap); err != nil {
		t.Errorf("a backup after the repair is refused: %v", err)
	}
}

// TestDamage8DamagedHeadRepairDropsRemovedLine: eu-west removes apple
// from a cart; before the removal reaches us-east, us-east's head of the
// cart is damaged on disk (its lines are whole). eu-west's state repairs
// it: the apple line still stored at us-east must not come back.
func TestDamage8DamagedHeadRepairDropsRemovedLine(t *testing.T) {
	const id = "v"
	r := newSemRig(t, "us-east", "eu-west")
	a := r.nodes["us-east"]
	must[Cart](t)(a.AddItem(bg, id, "apple", 2))
	must[Cart](t)(a.AddItem(bg, id, "pear", 1))
	for _, d := range damage8Deltas(r, "us-east", 0) {
		r.apply("eu-west", d)
	}
	must[Cart](t)(r.nodes["eu-west"].RemoveItem(bg, id, "apple"))
	must[Cart](t)(a.AddItem(bg, "other", "fig", 1))
	a = damage8Reopen(t, r, "us-east", prefixCart+id)
	wantCode(t, second(a.GetCart(bg, id)), CodeUnavailable)
	damage8CatchUp(r, "us-east", id)
	c := r.cart("us-east", id)
	if qtyOf(c, "apple") != 0 || qtyOf(c, "pear") != 1 {
		t.Fatalf("us-east after the repair: %s, want pear:1 alone", itemsString(c.Items))
	}
	r.restart("us-east", true) // and as the file holds it
	if c := r.cart("us-east", id); qtyOf(c, "apple") != 0 || qtyOf(c, "pear") != 1 {
		t.Fatalf("us-east after a restart: %s, want pear:1 alone", itemsString(c.Items))
	}
}

// TestDamage8WritesToDamagedCartAreRefusedAlike: while a cart is damaged,
// every kind of write to it (add, set, remove, clear, checkout) is
// answered 503 unavailable with Retry-After 5, and none changes what the
// repair then restores.
func TestDamage8WritesToDamagedCartAreRefusedAlike(t *testing.T) {
	node, _, _, peer, _ := damagedCartNode(t)
	must[Item](t)(node.Restock(bg, "apple", 5))
	for what, err := range map[string]error{
		"add":      second(node.AddItem(bg, "v", "kiwi", 1)),
		"set":      second(node.SetItem(bg, "v", "pear", 3)),
		"remove":   second(node.RemoveItem(bg, "v", "pear")),
		"clear":    second(node.ClearCart(bg, "v")),
		"checkout": second4(node.Checkout(bg, "v", time.Minute, fp("v"))),
	} {
		var e *Error
		if !errors.As(err, &e) || e.Code != CodeUnavailable || e.RetryAfter != 5 {
			t.Errorf("%s of the damaged cart answered %v, want 503 unavailable with Retry-After 5", what, err)
		}
	}
	if it := must[Item](t)(node.GetItem(bg, "apple", false)); it.Reserved != 0 || it.Stock != 5 {
		t.Errorf("a refused checkout left the stock at %+v", it)
	}
	if err := node.ApplyReflecting(&crdt.Context{}, &crdt.Group{Carts: map[string]*crdt.Cart{"v": peer.Clone()}}, &crdt.Context{}); err != nil {
		t.Fatal(err)
	}
	c := must[Cart](t)(node.GetCart(bg, "v"))
	if qtyOf(c, "apple") != 2 || qtyOf(c, "pear") != 1 || len(c.Items) != 2 {
		t.Errorf("after the repair: %s, want apple:2 pear:1", itemsString(c.Items))
	}
}
