package region

import (
	"context"
	"errors"
	"testing"
	"time"
)

// pc14ReadWithToken reads sku at region name (at the sku's partition)
// with the causal token tok, as a client sending Lattice-Token would. It
// returns the stock, or ok=false when the region waits for what the token
// covers (the token covers a write it has not applied yet).
func pc14ReadWithToken(t *testing.T, s *pcShop, name, sku, tok string) (stock int64, ok bool) {
	t.Helper()
	ctx, cancel := s.keyRequest(sku)
	defer cancel()
	wctx, wcancel := context.WithTimeout(ctx, 300*time.Millisecond)
	err := s.parts[name].WaitToken(wctx, tok)
	wcancel()
	var e *Error
	if errors.Is(err, context.DeadlineExceeded) || errors.As(err, &e) && e.Code == CodeCausalTimeout {
		return 0, false
	}
	if err != nil {
		t.Fatalf("wait for token at %s: %v", name, err)
	}
	return must[Item](t)(s.parts[name].GetItem(ctx, sku, false)).Stock, true
}

// TestReplayedPartitionedCheckoutTokenCoversItsCommits: a keyed checkout
// answered by region k is coordinated at h (partition 0) and commits x at
// its home, h partition 1; the coordinator's answer to k is lost
// (partition_unanswered / home_unavailable to the client). The client
// retries with the same key through k, as docs/checkout.md says ("a retry
// through any region answers the same"), and gets the order. In a
// partitioned cluster a checkout's answer's token carries "the entries of
// the partitions whose homes a checkout reserved at" (docs/api.md, Causal
// tokens), as the first answer's does
// (TestCheckoutTokenCoversLinesOfOtherPartitions). The replayed answer's
// token must too: with it, a read of x at k (whose partition 1 has not
// received the commit yet) must wait for the commit, never show the
// stock from before the client's own order.
func TestReplayedPartitionedCheckoutTokenCoversItsCommits(t *testing.T) {
	s := newPCShop(t)
	idem := fp("replay-token")

	// First attempt: the coordinator settles the order, its answer to k
	// is lost.
	s.faults.set("k", "checkout "+s.cart+" lose")
	_, err := s.checkout("k", idem)
	s.faults.set("")
	if err == nil {
		t.Fatal("the first answer was to be lost")
	}
	if it := s.homeItem(s.x); it.Stock != 9 {
		t.Fatalf("x at its home after the order: stock %d, want 9", it.Stock)
	}

	// The retry with the key through k answers the recorded order.
	ctx, cancel := s.keyRequest(s.cart)
	order, err := s.parts["k"].Checkout(ctx, s.cart, sagaTTL, idem)
	if err != nil {
		cancel()
		t.Fatalf("retry with the key through k: %v", err)
	}
	tok := s.parts["k"].TokenFor(ctx)
	cancel()
	if !co4Same(co4Order(order), map[string]int64{s.x: 1, s.y: 1}) {
		t.Fatalf("replayed order %+v", order)
	}

	// Nothing has replicated: k's partition 1 still has x's stock from
	// before the order.
	if stock, ok := pc14ReadWithToken(t, s, "k", s.x, tok); ok && stock != 9 {
		t.Fatalf("with the token of its replayed checkout (%s), the client reads x at k as stock %d; "+
			"its order committed 1 unit of x at x's home (h partition 1, stock 9): the replayed answer's token "+
			"does not cover the commit at the partition whose home the checkout reserved at", tok, stock)
	}
}

// TestSettledAfterCrashPartitionedCheckoutTokenCoversItsCommits: a keyed
// checkout answered by k commits x (home h partition 1), its commit of y
// (home k) is lost, the coordinator (h partition 0) restarts uncleanly
// and settles the checkout on its own (docs/checkout.md, background
// settling). The client's retry with the key through k answers the
// order; its token must cover the order's commit of x (docs/api.md:
// the entries of the partitions whose homes a checkout reserved at), so
// that reading x at k with it waits for the commit instead of showing
// the stock from before the order.
func TestSettledAfterCrashPartitionedCheckoutTokenCoversItsCommits(t *testing.T) {
	s := newPCShop(t)
	idem := fp("crash-token")
	s.faults.set("h", "commit "+s.y+" drop")
	_, err := s.checkout("k", idem)
	s.faults.set("")
	wantCode(t, err, CodeHomeUnavailable)

	s.nodes["h"][0].crash()
	s.open("h", 0)
	s.regroup("h")
	s.clock.Advance(settleAfter + time.Second)
	s.parts["h"].Node(0).SettleCheckouts()
	if it := s.homeItem(s.x); it.Stock != 9 {
		t.Fatalf("x at its home after the order: stock %d, want 9", it.Stock)
	}
	if it := s.homeItem(s.y); it.Stock != 9 {
		t.Fatalf("y at its home after the settling: stock %d, want 9", it.Stock)
	}

	ctx, cancel := s.keyRequest(s.cart)
	order, err := s.parts["k"].Checkout(ctx, s.cart, sagaTTL, idem)
	if err != nil {
		cancel()
		t.Fatalf("retry with the key through k: %v", err)
	}
	tok := s.parts["k"].TokenFor(ctx)
	cancel()
	if !co4Same(co4Order(order), map[string]int64{s.x: 1, s.y: 1}) {
		t.Fatalf("order %+v", order)
	}
	if stock, ok := pc14ReadWithToken(t, s, "k", s.x, tok); ok && stock != 9 {
		t.Fatalf("with the token of the retry that answered its order (%s), the client reads x at k as stock %d; "+
			"the order committed 1 unit of x at x's home (h partition 1, stock 9): the token does not cover that commit", tok, stock)
	}
}
