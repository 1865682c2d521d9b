package region

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/latticedb/lattice/crdt"
)

// TestLateHomeRequestIsCounted: a reservation request that reaches its
// home after its caller's deadline is refused (unavailable, nothing
// decided) and counted in lattice_reservations_total with result
// "unavailable", the series docs/operations.md's alerts read for
// requests arriving after their deadline.
func TestLateHomeRequestIsCounted(t *testing.T) {
	n := newNode(t)
	must[Item](t)(n.Restock(bg, "w", 10))
	before := testutil.ToFloat64(n.m.Reservations.WithLabelValues(OpReserve, CodeUnavailable))
	resp := n.ServeForwarded(context.Background(), &HomeRequest{Op: OpReserve, SKU: "w", Qty: 1, TTLMs: 60000,
		DeadlineMs: time.Now().Add(-time.Second).UnixMilli()})
	if resp.Err == nil || resp.Err.Code != CodeUnavailable {
		t.Fatalf("late reservation answered %+v, want unavailable", resp)
	}
	if got := testutil.ToFloat64(n.m.Reservations.WithLabelValues(OpReserve, CodeUnavailable)) - before; got != 1 {
		t.Fatalf("lattice_reservations_total{op=reserve,result=unavailable} grew by %v for a request that arrived after its deadline, want 1", got)
	}
}

// TestDamagedLineCountsOneChecksumFailure: one stored value (a cart's
// line) that fails its checksum is one checksum failure in
// lattice_store_checksum_failures_total ("stored values found failing
// their checksum"), although the whole cart is refused and its head is
// listed in store.corrupt_keys beside the line.
func TestDamagedLineCountsOneChecksumFailure(t *testing.T) {
	dir := t.TempDir()
	clock := newFakeClock()
	n := openNode(t, dir, clock)
	must[Cart](t)(n.AddItem(bg, "victim", "apple", 2))
	must[Cart](t)(n.AddItem(bg, "victim", "pear", 1))
	n.close()

	flipStoredByte(t, n.path, "e/victim/apple")
	node, st, m := reopen(t, n.path, clock)
	wantCode(t, second(node.GetCart(bg, "victim")), CodeUnavailable)
	t.Logf("corrupt keys %v", st.Corrupt())
	if got := testutil.ToFloat64(m.ChecksumFailures); got != 1 {
		t.Fatalf("lattice_store_checksum_failures_total = %v after one damaged value (corrupt keys %v), want 1", got, st.Corrupt())
	}
}

// TestConcurrentEditCountedOnce: two regions adding to one cart line
// concurrently is one concurrent edit. The other region's delta joined
// here counts it in lattice_replication_concurrent_merges_total; its
// whole state arriving afterwards (anti-entropy after a partition heals),
// which brings nothing this region does not already hold, combines
// nothing new and must not count it again.
func TestConcurrentEditCountedOnce(t *testing.T) {
	n := newNode(t)
	must[Cart](t)(n.AddItem(bg, "c", "x", 1))

	var theirs crdt.Cart
	delta := theirs.Add("eu-west", "x", 1)
	theirs.Join(delta)
	dots := &crdt.Context{}
	dots.Insert(crdt.Dot{Replica: "eu-west", Counter: 1})
	if err := n.ApplyRemote(dots, &crdt.Group{Carts: map[string]*crdt.Cart{"c": delta}}); err != nil {
		t.Fatal(err)
	}
	if got := testutil.ToFloat64(n.m.Concurrent); got != 1 {
		t.Fatalf("after the other region's delta: concurrent merges %v, want 1", got)
	}
	if c := must[Cart](t)(n.GetCart(bg, "c")); qtyOf(c, "x") != 2 {
		t.Fatalf("cart %+v", c)
	}
	// The same edit again, as the other region's whole state.
	if err := n.ApplyRemote(&crdt.Context{}, &crdt.Group{Carts: map[string]*crdt.Cart{"c": theirs.Clone()}}); err != nil {
		t.Fatal(err)
	}
	if c := must[Cart](t)(n.GetCart(bg, "c")); qtyOf(c, "x") != 2 {
		t.Fatalf("cart %+v", c)
	}
	if got := testutil.ToFloat64(n.m.Concurrent); got != 1 {
		t.Fatalf("lattice_replication_concurrent_merges_total = %v after one concurrent edit, delivered as a delta and then within a state that brought nothing new; want 1", got)
	}
}
