package crdt

import (
	"fmt"
	"testing"
)

// sparseRecordsCart is a valid cart of MaxReplicas replica records: the
// first holds 256 entries, the other 255 none (a replica version-vector
// entry each). It is about 4 KB.
func sparseRecordsCart() []byte {
	var entries [][]byte
	for k := uint64(1); k <= 256; k++ {
		entries = append(entries, wEntry(k, "a", uint8(KindAdd), 1))
	}
	recs := [][]byte{wRep("a000", 256, nil, entries...)}
	for k := 1; k < MaxReplicas; k++ {
		recs = append(recs, wRep(fmt.Sprintf("a%03d", k), 1, nil))
	}
	return wCart(recs...)
}

// TestDecodeGroupAllocationIsBoundedForManySmallCarts decodes a valid
// delta-group of small carts, each of which decodes alone for a small
// multiple of its size, and checks that the group costs a small multiple
// of its size too: what one cart of the group allocates must depend on
// that cart, not on how many bytes of other carts follow it in the group.
func TestDecodeGroupAllocationIsBoundedForManySmallCarts(t *testing.T) {
	const factor = 64 // the most the package's own allocation tests allow
	cart := sparseRecordsCart()
	if _, err := DecodeCart(cart); err != nil {
		t.Fatalf("test setup: the cart does not decode: %v", err)
	}
	alone := allocatedBy(func() { DecodeCart(cart) })
	t.Logf("one cart: %d bytes in, %d bytes allocated (%.1f×)", len(cart), alone, float64(alone)/float64(len(cart)))

	const carts = 32
	var gc [][]byte
	for k := range carts {
		gc = append(gc, wGroupCart(fmt.Sprintf("cart-%03d", k), cart))
	}
	// Items after the carts, as a delta-group of a busy region carries:
	// they only add to the bytes that follow each cart.
	var gi [][]byte
	for k := range 8192 {
		gi = append(gi, wGroupItem(fmt.Sprintf("sku-%05d", k), wItem([][]byte{wCounter("us-east", 1, 0)}, 0, "", 0)))
	}
	group := wGroup(gc, gi)
	var err error
	var g *Group
	alloc := allocatedBy(func() { g, err = DecodeGroup(group) })
	if err != nil {
		t.Fatalf("DecodeGroup refused a valid group: %v", err)
	}
	if len(g.Carts) != carts {
		t.Fatalf("decoded %d carts, want %d", len(g.Carts), carts)
	}
	t.Logf("group: %d bytes in, %d bytes allocated (%.1f×)", len(group), alloc, float64(alloc)/float64(len(group)))
	if alloc > uint64(factor*len(group)) {
		t.Fatalf("decoding a valid group of %d bytes (%d carts of %d bytes, each %.1f× alone, and %d one-counter items) allocated %d bytes: %.0f×, more than %d×",
			len(group), carts, len(cart), float64(alone)/float64(len(cart)), len(gi), alloc, float64(alloc)/float64(len(group)), factor)
	}
}
