package crdt

import (
	"fmt"
	"testing"
)

// laggingCart is the cart a region holds that got rounds of one
// replica's adds (each round within that replica's limit of 4,096
// entries, spread over 64 skus) but none of the removals another region
// made of them between rounds: n entries of usEast, dots 1..n.
func laggingCart(n int) *Cart {
	c := &Cart{Entries: make(map[Dot]Line, n)}
	for k := range n {
		d := Dot{usEast, uint64(k + 1)}
		c.Entries[d] = Line{SKU: fmt.Sprintf("s%03d", k%64), Kind: KindAdd, N: 1}
		c.Ctx.Insert(d)
	}
	return c
}

// TestCodecCartsOfOneReplicaUpToMaxCartEntries: MaxCartEntries (and
// docs/api.md: "a peer's cart of up to 65,536 entries is accepted, a
// stored one of any honest size is read") exists for a cart whose
// removals lag behind its adds, where the entries come from one replica's
// successive rounds of adds. Such a cart of 20,480 entries, the delta of
// a clear of it after a remove of one of its lines, and a stored line of
// 16,485 entries of one sku (five rounds of a line limit of 3,297) must
// each decode.
func TestCodecCartsOfOneReplicaUpToMaxCartEntries(t *testing.T) {
	const n = 20480
	c := laggingCart(n)
	if n > MaxCartEntries {
		t.Fatalf("%d entries: past MaxCartEntries, the test's premise", n)
	}
	if got, err := DecodeCart(EncodeCart(c)); err != nil {
		t.Errorf("a cart of %d entries of one replica (MaxCartEntries %d) does not decode: %v", n, MaxCartEntries, err)
	} else {
		sameCart(t, "round trip of the lagging cart", got, c)
	}

	c.Join(c.Remove("s000"))
	clear := c.Clear()
	if got, err := DecodeCart(EncodeCart(clear)); err != nil {
		t.Errorf("the clear delta of a cart of %d entries of one replica does not decode: %v", len(c.Entries), err)
	} else {
		sameCart(t, "round trip of the clear delta", got, clear)
	}

	const lineEntries = 5 * 3297
	line := make(map[Dot]Line, lineEntries)
	for k := range lineEntries {
		line[Dot{usEast, uint64(k + 1)}] = Line{SKU: "a", Kind: KindAdd, N: 1}
	}
	b := AppendCartLine(nil, "a", line)
	if len(b) > MaxObjectBytes {
		t.Fatalf("the line takes %d bytes, past MaxObjectBytes: the test's premise", len(b))
	}
	if _, got, err := DecodeCartLine(b); err != nil {
		t.Errorf("a stored line of %d entries (%d bytes) does not decode: %v", lineEntries, len(b), err)
	} else if len(got) != lineEntries {
		t.Errorf("the line decodes to %d entries, want %d", len(got), lineEntries)
	}
}
