package region

import (
	"strings"
	"testing"
	"time"
)

// cxSpec is three partitioned regions, each serving both partitions of a
// cluster of 2: h is the home of every sku and of carts not beginning
// "ca-", a the home of carts beginning "ca-"; skus beginning "e" are
// escrow skus. Every region names the others as its peers.
var cxSpec = partRigSpec{
	regions: []string{"h", "a", "b"},
	parts:   2,
	home:    prefixHome("ca-", "a", "h"),
	escrow:  func(sku string) bool { return strings.HasPrefix(sku, "e") },
	peers:   true,
}

// TestEscrowKeyedRetryAfterCheckoutUnderSameKey: a client checks out a
// cart coordinated at a under key K, then reserves an escrow sku under
// the same key K through b (decided at the sku's home h: another region,
// so an independent record, docs/api.md Idempotency), and retries that
// reservation through a. The retry must answer the reservation h
// recorded, as a retry through any region does; the checkout's record at
// a is no record of the reservation.
func TestEscrowKeyedRetryAfterCheckoutUnderSameKey(t *testing.T) {
	r := newPartRig(t, cxSpec)
	sku := r.key("e-", 1)
	cart := r.key("ca-", 1) // coordinated at a, in the sku's partition
	ctx, cancel := r.keyRequest(sku)
	must[Item](t)(r.parts["h"].Restock(ctx, sku, 10))
	cancel()
	r.deliver()

	ctx, cancel = r.keyRequest(cart)
	must[Cart](t)(r.parts["a"].AddItem(ctx, cart, sku, 1))
	cancel()
	ctx, cancel = r.keyRequest(cart)
	if _, err := r.parts["a"].Checkout(ctx, cart, time.Minute, Idem{Key: "K", Fingerprint: [32]byte{1}}); err != nil {
		t.Fatalf("checkout: %v", err)
	}
	cancel()
	r.deliver()

	key := Idem{Key: "K", Fingerprint: [32]byte{2}}
	first, err := r.reserve("b", sku, 2, key)
	if err != nil {
		t.Fatalf("reservation under K through b: %v", err)
	}
	if !strings.HasPrefix(first.ID, "h:") {
		t.Fatalf("keyed reservation decided at %s, want at the home h", first.ID)
	}
	again, err := r.reserve("a", sku, 2, key)
	if err != nil || again.ID != first.ID {
		t.Fatalf("the same keyed reservation retried through a: %+v, %v; through b it was %s", again, err, first.ID)
	}
}
