package region

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/latticedb/lattice/crdt"
)

// pc14Reach is the replication of a partRig as a write concern sees it: a
// write (dot) is held by its own region and by every other region whose
// node of the same partition has applied it (the test delivers deltas by
// hand, partRig.deliverTo).
type pc14Reach struct {
	r      *partRig
	region string
	part   int
}

func (w pc14Reach) holders(d crdt.Dot, through bool) int {
	w.r.mu.Lock()
	defer w.r.mu.Unlock()
	// A partition's replicas are its namesakes at the other regions (a
	// region's other partitions are not replicas of it; every partition
	// of a region writes under the region's replica id).
	count := 1
	for name, parts := range w.r.nodes {
		for p, tn := range parts {
			if name == w.region || p != w.part {
				continue
			}
			n := tn.Node
			n.amu.Lock()
			ok := n.applied.Contains(d)
			for c := uint64(1); ok && through && c < d.Counter; c++ {
				ok = n.applied.Contains(crdt.Dot{Replica: d.Replica, Counter: c})
			}
			n.amu.Unlock()
			if ok {
				count++
			}
		}
	}
	return count
}

func (w pc14Reach) wait(ctx context.Context, d crdt.Dot, n int, through bool) error {
	for {
		if w.holders(d, through) >= n {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
}

func (w pc14Reach) WaitReplicas(ctx context.Context, d crdt.Dot, n int) error {
	return w.wait(ctx, d, n, false)
}

func (w pc14Reach) WaitReplicasThrough(ctx context.Context, d crdt.Dot, n int) error {
	return w.wait(ctx, d, n, true)
}

// newPC14ConcernRig is a partRig of spec (its regions naming each other
// as peers) whose nodes meet write concerns as pc14Reach says.
func newPC14ConcernRig(t *testing.T, spec partRigSpec) *partRig {
	t.Helper()
	spec.peers = true
	spec.replicas = func(r *partRig, region string, part int) ReplicaWaiter { return pc14Reach{r, region, part} }
	return newPartRig(t, spec)
}

// TestReplayedPartitionedCheckoutWaitsForItsRegionsOtherPartitions: a
// keyed checkout coordinated at h partition 0 buys x (homed at h,
// partition 1: another node of the coordinator's region) and y (homed at
// k). Everything replicates but partition 1 of h: x's commit has reached
// only h. A retry with the key and Lattice-Replicas: 2 "waits again"
// (docs/api.md, write concern: "A checkout waits for the coordinator's
// writes and each home's decisions"; "a retry that changes nothing waits
// again too") - as the first request with that concern would have waited
// for x's commit at h partition 1. The replay must not answer the order as
// replicated to 2 regions while x's commit is at one: it must answer
// replication_timeout.
func TestReplayedPartitionedCheckoutWaitsForItsRegionsOtherPartitions(t *testing.T) {
	r := newPC14ConcernRig(t, pcSpec)
	cart, x, y := r.key("cart-", 0), r.key("x-", 1), r.key("k-y-", 0)
	if pcHome(cart) != "h" || pcHome(x) != "h" || pcHome(y) != "k" {
		t.Fatal("placement")
	}
	for _, sku := range []string{x, y} {
		ctx, cancel := r.keyRequest(sku)
		must[Item](t)(r.parts[pcHome(sku)].Restock(ctx, sku, 10))
		cancel()
	}
	ctx, cancel := r.keyRequest(cart)
	must[Cart](t)(r.parts["h"].AddItem(ctx, cart, x, 1))
	must[Cart](t)(r.parts["h"].AddItem(ctx, cart, y, 1))
	cancel()
	r.deliver()

	// The order, without a concern.
	idem := fp("replay-concern")
	ctx, cancel = r.keyRequest(cart)
	order := must[Order](t)(r.parts["h"].Checkout(ctx, cart, sagaTTL, idem))
	cancel()
	if !co4Same(co4Order(order), map[string]int64{x: 1, y: 1}) {
		t.Fatalf("order %+v", order)
	}
	// Partition 0 replicates both ways; partition 1 of h (x's commit)
	// does not.
	r.deliverTo("h", "k", 0)
	r.deliverTo("k", "h", 0)
	r.deliverTo("k", "h", 1)

	attempt := func() error {
		rctx, rcancel := r.request(0, time.Second)
		defer rcancel()
		rctx = WithReplicas(rctx, 2)
		again, err := r.parts["h"].Checkout(rctx, cart, sagaTTL, idem)
		if err != nil {
			return err
		}
		if again.OrderID != order.OrderID {
			t.Fatalf("replay answered order %s, want %s", again.OrderID, order.OrderID)
		}
		return r.parts["h"].AwaitReplicas(rctx)
	}
	err := attempt()
	var e *Error
	if err == nil {
		t.Fatalf("a retry of the order with Lattice-Replicas: 2 answered it as replicated to 2 regions, "+
			"but its commit of %s (home h, partition 1) has reached only h: the replay skips the homes of the coordinator's "+
			"own region that are other partitions", x)
	}
	if !errors.As(err, &e) || e.Code != CodeReplicationTimeout {
		t.Fatalf("replay with Lattice-Replicas: 2: %v, want replication_timeout", err)
	}
	// Once partition 1 has replicated too, the replay meets the concern.
	r.deliverTo("h", "k", 1)
	if err := attempt(); err != nil {
		t.Fatalf("replay once everything replicated: %v", err)
	}
}
