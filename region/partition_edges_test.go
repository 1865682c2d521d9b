package region

import (
	"context"
	"errors"
	"testing"
	"time"
)

// peSpec is two regions, us-east and eu-west, each one process serving
// both partitions of a cluster of 2. Keys beginning "eu-" are homed at
// eu-west, every other key at us-east.
var peSpec = partRigSpec{regions: []string{"us-east", "eu-west"}, parts: 2, home: peHome}

var peHome = prefixHome("eu-", "eu-west", "us-east")

// TestCheckoutTokenCoversLinesOfOtherPartitions: in a partitioned
// cluster, a checkout's answer carries a token with the entries of the
// partitions whose homes the checkout reserved at (docs/api.md, causal
// tokens), whichever region coordinates the checkout. Here the cart is
// homed at eu-west, so us-east, where the client checks out, forwards the
// checkout to eu-west; the sku is homed at us-east in the other partition,
// so the order's commit lowers the stock at us-east itself. A client that
// then reads the sku at eu-west with the checkout's token must see the
// commit (or wait for it and get causal_timeout), never the stock from
// before its own order.
func TestCheckoutTokenCoversLinesOfOtherPartitions(t *testing.T) {
	c := newPartRig(t, peSpec)
	cart := c.key("eu-cart-", 0)
	sku := c.key("sku-", 1)
	if peHome(cart) != "eu-west" || peHome(sku) != "us-east" {
		t.Fatal("placement")
	}
	us, eu := c.parts["us-east"], c.parts["eu-west"]

	ctx, cancel := c.request(1, 5*time.Second)
	if _, err := us.Restock(ctx, sku, 5); err != nil {
		t.Fatal(err)
	}
	cancel()
	c.deliverTo("us-east", "eu-west", 1) // eu-west knows the stock
	ctx, cancel = c.request(0, 5*time.Second)
	if _, err := us.AddItem(ctx, cart, sku, 2); err != nil {
		t.Fatal(err)
	}
	cancel()

	ctx, cancel = c.request(0, 5*time.Second)
	order, err := us.Checkout(ctx, cart, 30*time.Second, Idem{})
	if err != nil {
		t.Fatalf("checkout: %v", err)
	}
	tok := us.TokenFor(ctx)
	cancel()
	if len(order.Lines) != 1 {
		t.Fatalf("order %+v", order)
	}
	home, err := c.nodes["us-east"][1].GetItem(context.Background(), sku, false)
	if err != nil {
		t.Fatal(err)
	}
	if home.Stock != 3 {
		t.Fatalf("at its home after the order, %s has stock %d, want 3", sku, home.Stock)
	}

	// The commit's delta has not reached eu-west yet (replication lag).
	rctx, rcancel := c.request(1, 5*time.Second)
	defer rcancel()
	wctx, wcancel := context.WithTimeout(rctx, 300*time.Millisecond)
	err = eu.WaitToken(wctx, tok)
	wcancel()
	var e *Error
	if errors.Is(err, context.DeadlineExceeded) || errors.As(err, &e) && e.Code == CodeCausalTimeout {
		return // the token covers the commit: eu-west waits for it
	}
	if err != nil {
		t.Fatalf("wait for the checkout's token at eu-west: %v", err)
	}
	it, err := eu.GetItem(rctx, sku, false)
	if err != nil {
		t.Fatal(err)
	}
	if it.Stock != home.Stock {
		t.Fatalf("with the token of its checkout (%s), a client reads %s at eu-west as stock %d: the order's commit at us-east (stock %d) is not covered by the token",
			tok, sku, it.Stock, home.Stock)
	}
}
