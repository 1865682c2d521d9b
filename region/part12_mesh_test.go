package region

import (
	"context"
	"testing"
	"time"
)

// part12PartitionMesh runs the replication protocol between partition part
// of every region of r, as the partition's replicators do over the Mux:
// each partition replicates with the same partition of the other regions,
// whose names are its peers.
func part12PartitionMesh(t *testing.T, r *partRig, part int) *damage8Mesh {
	t.Helper()
	sr := &semRig{t: t, clock: r.clock, regions: r.spec.regions, nodes: map[string]*testNode{}}
	for _, name := range r.spec.regions {
		sr.nodes[name] = r.nodes[name][part]
	}
	return newDamage8Mesh(t, sr)
}

// TestDamagedPartitionCatchesUpOverItsOwnReplication: three regions of two
// partitions. us-east removes apple from a cart of partition 1; the
// removal reaches ap-south but not eu-west. A line of the cart is then
// damaged on us-east's disk. Partition 1 of us-east holds the cart back
// while the anti-entropy of partition 1 alone runs between the regions;
// once it has completed a round with both peers, the cart is served with
// the removal (not eu-west's older state), takes writes, and partition 1
// decides as a home again. Partition 0 was never held up.
func TestDamagedPartitionCatchesUpOverItsOwnReplication(t *testing.T) {
	r := newPartRig(t, partRigSpec{regions: []string{"us-east", "eu-west", "ap-south"}, parts: 2,
		home: func(string) string { return "us-east" }, peers: true})
	cart := r.key("cart-", 1)
	sku0, sku1 := r.key("sku-", 0), r.key("sku-", 1)
	us := r.parts["us-east"]
	do := func(key string, f func(ctx context.Context) error) {
		t.Helper()
		ctx, cancel := r.keyRequest(key)
		defer cancel()
		if err := f(ctx); err != nil {
			t.Fatal(err)
		}
	}
	for _, sku := range []string{sku0, sku1} {
		do(sku, func(ctx context.Context) error { _, err := us.Restock(ctx, sku, 10); return err })
	}
	for _, it := range []string{"apple", "pear"} {
		do(cart, func(ctx context.Context) error { _, err := us.AddItem(ctx, cart, it, 1); return err })
	}
	r.deliver()
	do(cart, func(ctx context.Context) error { _, err := us.RemoveItem(ctx, cart, "apple"); return err })
	r.deliverTo("us-east", "ap-south", 1) // eu-west does not get the removal
	do(cart, func(ctx context.Context) error { _, err := us.AddItem(ctx, r.key("other-", 1), "fig", 1); return err })
	r.mu.Lock()
	r.queue["us-east"][1] = nil // anti-entropy alone carries it from here
	r.mu.Unlock()

	p1 := part12Reopen(t, r, "us-east", 1, "e/"+cart+"/pear")
	us = r.parts["us-east"]
	if !p1.CatchingUp() || r.nodes["us-east"][0].CatchingUp() {
		t.Fatalf("catching up: partition 0 %v, partition 1 %v; want only partition 1",
			r.nodes["us-east"][0].CatchingUp(), p1.CatchingUp())
	}
	if _, err := r.reserve("us-east", sku0, 1, Idem{}); err != nil {
		t.Fatalf("partition 0 does not decide while partition 1 catches up: %v", err)
	}

	mh := part12PartitionMesh(t, r, 1)
	mh.run(20 * time.Second)
	if p1.CatchingUp() {
		t.Fatalf("after 20 s of partition 1's anti-entropy with both peers, us-east's partition 1 is still catching up (corrupt keys %v)", p1.store.Corrupt())
	}
	ctx, cancel := r.keyRequest(cart)
	c, err := us.GetCart(ctx, cart)
	cancel()
	if err != nil {
		t.Fatalf("caught up, us-east refuses cart %s: %v", cart, err)
	}
	if qtyOf(c, "apple") != 0 || qtyOf(c, "pear") != 1 {
		t.Fatalf("caught up, us-east serves %s, want pear:1 alone (ap-south holds the removal)", itemsString(c.Items))
	}
	do(cart, func(ctx context.Context) error { _, err := us.AddItem(ctx, cart, "kiwi", 1); return err })
	if _, err := r.reserve("us-east", sku1, 1, Idem{}); err != nil {
		t.Fatalf("caught up, partition 1 does not decide as a home: %v", err)
	}
	if bad := p1.store.Corrupt(); len(bad) > 0 {
		t.Fatalf("caught up, partition 1 still lists damaged keys %v", bad)
	}
}
