package region

import (
	"github.com/latticedb/lattice/crdt"
	"testing"
	"time"
)

// heldBack10StaleRemoval builds the state of TestHeldBackKeysSurviveARestart:
// us-east adds apple and pear to cart id (every region gets them), then
// removes apple; the removal reaches ap-south only. us-east's store is
// damaged on a line of the cart and it reopens, catching up; eu-west's
// older state (apple and pear) repairs the cart, which us-east holds back
// until it has caught up. It returns the token of the removal.
func heldBack10StaleRemoval(t *testing.T, r *semRig, id string) string {
	t.Helper()
	a, mark := damage8AddThenRemove(t, r, id)
	for _, d := range damage8Deltas(r, "us-east", mark) {
		r.apply("ap-south", d) // eu-west does not get the removal
	}
	tok := a.Token()
	must[Cart](t)(a.AddItem(bg, "other", "fig", 1)) // the damaged line is not in the last transaction
	a = damage8Reopen(t, r, "us-east", "e/"+id+"/pear")
	r.repair("eu-west", "us-east", id) // whole again, from the older state
	if !a.CatchingUp() {
		t.Fatal("us-east reopened on a damaged store is not catching up")
	}
	wantCode(t, second(a.GetCart(bg, id)), CodeUnavailable)
	return tok
}

// TestHeldBackCartIsRefusedToAPeersQuorumRead: while us-east holds back a
// cart that eu-west's older state repaired, it refuses to read it locally
// (503), as it refuses a damaged value. A peer's quorum read (OpRead) asks
// it for the same state, which the quorum read counts as us-east's whole
// state; serveState refuses a damaged value for that very reason. The
// held-back cart must be refused as well: served, it lacks us-east's own
// removal of apple (acknowledged with a write concern of 2: us-east and
// ap-south), and eu-west's quorum read of 2 regions (eu-west and us-east;
// W + R > 3) answers apple again.
func TestHeldBackCartIsRefusedToAPeersQuorumRead(t *testing.T) {
	const id = "v"
	r := newSemRig(t, "us-east", "eu-west", "ap-south")
	heldBack10StaleRemoval(t, r, id)
	a := r.nodes["us-east"]

	resp := a.ServeForwarded(bg, &HomeRequest{Op: OpRead, Keys: []string{prefixCart + id}})
	if resp.Err == nil {
		c := resp.State.Carts[id]
		items := "[]"
		if c != nil {
			items = itemsString(c.Items())
		}
		t.Errorf("us-east, holding cart %s back while it catches up (a local read is 503), answers a peer's quorum read with %s; want 503 unavailable, as for a damaged value", id, items)
	}

	// The effect: ap-south is unreachable; eu-west's quorum read of 2
	// regions is answered by eu-west and us-east.
	south := r.nodes["ap-south"]
	delete(r.nodes, "ap-south")
	ctx, cancel := contextWithTimeout(3 * time.Second)
	defer cancel()
	got, err := r.nodes["eu-west"].GetCart(WithQuorum(ctx, 2), id)
	r.nodes["ap-south"] = south
	if err == nil && qtyOf(got, "apple") != 0 {
		t.Errorf("eu-west's quorum read of 2 of 3 regions shows %s: us-east's removal of apple, acknowledged by us-east and ap-south, is lost to a held-back state", itemsString(got.Items))
	}
}

// TestHeldBackItemIsRefusedToAPeersQuorumRead: the same for a stock value:
// us-east's item, damaged and repaired from eu-west's older state, is
// refused to local reads while held back, but answered to a peer's quorum
// read, without us-east's own restock that ap-south holds.
func TestHeldBackItemIsRefusedToAPeersQuorumRead(t *testing.T) {
	const sku = "p1"
	r := newSemRig(t, "us-east", "eu-west", "ap-south")
	a := r.nodes["us-east"]
	must[Item](t)(a.Restock(bg, sku, 5))
	for _, d := range damage8Deltas(r, "us-east", 0) {
		r.apply("eu-west", d)
		r.apply("ap-south", d)
	}
	mark := r.published("us-east")
	must[Item](t)(a.Restock(bg, sku, 3))
	for _, d := range damage8Deltas(r, "us-east", mark) {
		r.apply("ap-south", d) // eu-west does not get the second restock
	}
	must[Cart](t)(a.AddItem(bg, "other", "fig", 1)) // the damaged value is not in the last transaction
	a = damage8Reopen(t, r, "us-east", prefixItem+sku)
	wantCode(t, second2(a.GetItem(bg, sku, false)), CodeUnavailable)
	heldBack10RepairItem(t, r, "eu-west", "us-east", sku)
	wantCode(t, second2(a.GetItem(bg, sku, false)), CodeUnavailable) // held back

	resp := a.ServeForwarded(bg, &HomeRequest{Op: OpRead, Keys: []string{prefixItem + sku}})
	if resp.Err == nil {
		var stock int64 = -1
		if it := resp.State.Items[sku]; it != nil {
			stock = it.Stock.Value()
		}
		t.Errorf("us-east, holding item %s back while it catches up (a local read is 503), answers a peer's quorum read with stock %d (its own restocks total 8); want 503 unavailable, as for a damaged value", sku, stock)
	}
}

// heldBack10RepairItem sends region from's whole state of sku to region
// to, as an anti-entropy repair does.
func heldBack10RepairItem(t *testing.T, r *semRig, from, to, sku string) {
	t.Helper()
	g, ctx, err := r.nodes[from].readObjects(nil, []string{sku}, false)
	if err != nil {
		t.Fatalf("read %s at %s: %v", sku, from, err)
	}
	if err := r.nodes[to].ApplyReflecting(&crdt.Context{}, g, &ctx); err != nil {
		t.Fatalf("repair of %s from %s at %s: %v", sku, from, to, err)
	}
}
