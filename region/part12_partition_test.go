package region

import (
	"context"
	"testing"
	"time"

	"github.com/latticedb/lattice/crdt"
)

// part12Reopen stops partition part of region name cleanly, flips a byte
// of the stored value of key in its store file, opens it again and makes
// the region's partitions one region again.
func part12Reopen(t *testing.T, r *partRig, name string, part int, key string) *testNode {
	t.Helper()
	r.nodes[name][part].close()
	flipStoredByte(t, r.path(name, part), key)
	tn := r.open(name, part)
	r.regroup(name)
	return tn
}

// part12Repair sends partition part of region from's whole state of cart
// id to the same partition of region to, as an anti-entropy repair does.
func part12Repair(t *testing.T, r *partRig, from, to string, part int, id string) {
	t.Helper()
	g, ctx, err := r.nodes[from][part].readObjects([]string{id}, nil, false)
	if err != nil {
		t.Fatalf("read %s at %s/%d: %v", id, from, part, err)
	}
	if g, err = crdt.DecodeGroup(crdt.EncodeGroup(g)); err != nil {
		t.Fatal(err)
	}
	if err := r.nodes[to][part].ApplyReflecting(&crdt.Context{}, g, &ctx); err != nil {
		t.Fatalf("repair of %s from %s at %s/%d: %v", id, from, to, part, err)
	}
}

// TestDamagedPartitionAloneCatchesUpAndHoldsBack: a region of two
// partitions, both regions' homes at us-east. A line of a cart of
// partition 1 is damaged on us-east's disk. Only partition 1 starts a new
// incarnation, catches up and holds the cart back; partition 0 keeps
// deciding reservations as a home, and serves its own cart. Once
// partition 1's replication has completed a round with eu-west, the cart
// is served again with every line and partition 1 decides again; the
// region's status no longer reports catching up or damaged keys.
func TestDamagedPartitionAloneCatchesUpAndHoldsBack(t *testing.T) {
	r := newPartRig(t, partRigSpec{regions: []string{"us-east", "eu-west"}, parts: 2,
		home: func(string) string { return "us-east" }, peers: true})
	cart0, cart1 := r.key("cart-", 0), r.key("cart-", 1)
	sku0, sku1 := r.key("sku-", 0), r.key("sku-", 1)
	us := r.parts["us-east"]
	do := func(key string, f func(ctx context.Context) error) error {
		ctx, cancel := r.keyRequest(key)
		defer cancel()
		return f(ctx)
	}
	for _, sku := range []string{sku0, sku1} {
		if err := do(sku, func(ctx context.Context) error { _, err := us.Restock(ctx, sku, 10); return err }); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []string{cart0, cart1} {
		for _, it := range []string{"apple", "pear"} {
			if err := do(c, func(ctx context.Context) error { _, err := us.AddItem(ctx, c, it, 1); return err }); err != nil {
				t.Fatal(err)
			}
		}
	}
	// The last write of partition 1 is not the damaged line.
	if err := do(cart1, func(ctx context.Context) error { _, err := us.AddItem(ctx, r.key("other-", 1), "fig", 1); return err }); err != nil {
		t.Fatal(err)
	}
	r.deliver()

	p1 := part12Reopen(t, r, "us-east", 1, "e/"+cart1+"/pear")
	us = r.parts["us-east"]
	if !p1.CatchingUp() {
		t.Fatalf("us-east partition 1, found damaged at its start, is not catching up")
	}
	if p0 := r.nodes["us-east"][0]; p0.CatchingUp() {
		t.Fatalf("us-east partition 0, whose store is whole, is catching up")
	}
	if !us.Cluster().CatchingUp {
		t.Fatalf("the region's status does not report partition 1 catching up")
	}
	err := do(cart1, func(ctx context.Context) error { _, err := us.GetCart(ctx, cart1); return err })
	wantCode(t, err, CodeUnavailable)
	if err := do(cart0, func(ctx context.Context) error {
		c, err := us.GetCart(ctx, cart0)
		if err == nil && (qtyOf(c, "apple") != 1 || qtyOf(c, "pear") != 1) {
			t.Errorf("partition 0 serves %s, want apple:1 pear:1", itemsString(c.Items))
		}
		return err
	}); err != nil {
		t.Fatalf("partition 0's cart is refused while partition 1 catches up: %v", err)
	}
	if _, err := r.reserve("us-east", sku0, 1, Idem{}); err != nil {
		t.Fatalf("partition 0 does not decide as a home while partition 1 catches up: %v", err)
	}

	part12Repair(t, r, "eu-west", "us-east", 1, cart1)
	r.nodes["us-east"][1].SyncedWith("eu-west", "", []string{"eu-west"})
	if r.nodes["us-east"][1].CatchingUp() {
		t.Fatalf("us-east partition 1 still catching up after a round with its only peer")
	}
	var c Cart
	if err := do(cart1, func(ctx context.Context) error { var err error; c, err = us.GetCart(ctx, cart1); return err }); err != nil {
		t.Fatalf("caught up, partition 1 still refuses cart %s: %v", cart1, err)
	}
	if qtyOf(c, "apple") != 1 || qtyOf(c, "pear") != 1 {
		t.Fatalf("caught up, partition 1 serves %s, want apple:1 pear:1", itemsString(c.Items))
	}
	if _, err := r.reserve("us-east", sku1, 1, Idem{}); err != nil {
		t.Fatalf("caught up, partition 1 does not decide as a home: %v", err)
	}
	st := us.Cluster()
	if st.CatchingUp || len(st.Store.CorruptKeys) > 0 {
		t.Fatalf("caught up, the region reports catching up %v, corrupt keys %v", st.CatchingUp, st.Store.CorruptKeys)
	}
}

// TestHeldBackCartOfAPartitionRefusedToCheckout: while us-east's
// partition 1 holds a damaged cart back, a checkout of it is refused as
// damaged and decides nothing: no sku (homed at partition 0) loses
// stock to it.
func TestHeldBackCartOfAPartitionRefusedToCheckout(t *testing.T) {
	r := newPartRig(t, partRigSpec{regions: []string{"us-east", "eu-west"}, parts: 2,
		home: func(string) string { return "us-east" }, peers: true})
	cart1, sku0 := r.key("cart-", 1), r.key("sku-", 0)
	us := r.parts["us-east"]
	ctx, cancel := r.keyRequest(sku0)
	if _, err := us.Restock(ctx, sku0, 10); err != nil {
		t.Fatal(err)
	}
	cancel()
	for _, it := range []string{sku0, "pear"} {
		ctx, cancel := r.keyRequest(cart1)
		if _, err := us.AddItem(ctx, cart1, it, 2); err != nil {
			t.Fatal(err)
		}
		cancel()
	}
	ctx, cancel = r.keyRequest(cart1)
	if _, err := us.AddItem(ctx, r.key("other-", 1), "fig", 1); err != nil {
		t.Fatal(err)
	}
	cancel()
	r.deliver()
	part12Reopen(t, r, "us-east", 1, "e/"+cart1+"/pear")
	us = r.parts["us-east"]
	ctx, cancel = r.keyRequest(cart1)
	_, err := us.Checkout(ctx, cart1, 30*time.Second, Idem{})
	cancel()
	wantCode(t, err, CodeUnavailable)
	it, err := r.nodes["us-east"][0].GetItem(context.Background(), sku0, false)
	if err != nil {
		t.Fatal(err)
	}
	if it.Stock != 10 {
		t.Fatalf("a refused checkout of a held-back cart left %s at stock %d, want 10", sku0, it.Stock)
	}
}

// TestHeldBackItemOfAPartitionRefusedToAConsistentRead: us-east, home of
// every sku, holds a damaged stock value of partition 1 back while that
// partition catches up. A consistent read of it through eu-west (forwarded
// to us-east's partition 1) answers 503 rather than the held-back stock;
// a consistent read of a sku of partition 0 is answered from its home.
func TestHeldBackItemOfAPartitionRefusedToAConsistentRead(t *testing.T) {
	r := newPartRig(t, partRigSpec{regions: []string{"us-east", "eu-west"}, parts: 2,
		home: func(string) string { return "us-east" }, peers: true})
	sku0, sku1 := r.key("sku-", 0), r.key("sku-", 1)
	us := r.parts["us-east"]
	for _, sku := range []string{sku0, sku1} {
		ctx, cancel := r.keyRequest(sku)
		if _, err := us.Restock(ctx, sku, 10); err != nil {
			t.Fatal(err)
		}
		cancel()
	}
	ctx, cancel := r.keyRequest(sku1)
	if _, err := us.Restock(ctx, r.key("other-", 1), 1); err != nil {
		t.Fatal(err)
	}
	cancel()
	r.deliver()
	part12Reopen(t, r, "us-east", 1, prefixItem+sku1)
	eu := r.parts["eu-west"]
	ctx, cancel = r.keyRequest(sku1)
	it, err := eu.GetItem(ctx, sku1, true)
	cancel()
	if err == nil {
		t.Fatalf("a consistent read of %s through eu-west answered stock %d from us-east's held-back value", sku1, it.Stock)
	}
	wantCode(t, err, CodeUnavailable)
	ctx, cancel = r.keyRequest(sku0)
	it, err = eu.GetItem(ctx, sku0, true)
	cancel()
	if err != nil || it.Stock != 10 {
		t.Fatalf("a consistent read of %s (partition 0) through eu-west: stock %d, err %v; want 10", sku0, it.Stock, err)
	}
}
