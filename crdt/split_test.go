package crdt

import (
	"maps"
	"testing"
)

// TestCartHeadAndLineRoundTrip checks that heads and lines decode to what
// was encoded, that a head's Sum kept up entry by entry equals HeadOf's,
// and that a whole cart is not taken for a head nor a head for a cart.
func TestCartHeadAndLineRoundTrip(t *testing.T) {
	c := &Cart{Entries: map[Dot]Line{}}
	h := CartHead{}
	for i, sku := range []string{"a", "b", "a", "c"} {
		d := Dot{Replica: "us-east", Counter: uint64(i + 1)}
		l := Line{SKU: sku, Kind: KindAdd, N: int64(i + 1)}
		c.Entries[d] = l
		c.Ctx.Insert(d)
		h.Entries++
		h.Sum ^= EntryHash(d, l)
	}
	c.Ctx.Insert(Dot{Replica: "eu-west", Counter: 7})
	want := HeadOf(c)
	if want.Entries != 4 || want.Lines != 3 || want.Sum != h.Sum {
		t.Fatalf("head %+v, entry sum %x", want, h.Sum)
	}
	b := EncodeCartHead(&want)
	got, err := DecodeCartHead(b)
	if err != nil {
		t.Fatal(err)
	}
	if !got.Ctx.Equal(&want.Ctx) || got.Entries != 4 || got.Lines != 3 || got.Sum != want.Sum {
		t.Fatalf("decoded head %+v, want %+v", got, want)
	}
	if _, err := DecodeCartHead(EncodeCart(c)); err == nil {
		t.Fatal("a whole cart decoded as a head")
	}
	if _, err := DecodeCartStored(b); err == nil {
		t.Fatal("a head decoded as a cart")
	}
	line := map[Dot]Line{}
	for d, l := range c.Entries {
		if l.SKU == "a" {
			line[d] = l
		}
	}
	sku, es, err := DecodeCartLine(AppendCartLine(nil, "a", line))
	if err != nil || sku != "a" || !maps.Equal(es, line) {
		t.Fatalf("line a: %q %v %v", sku, es, err)
	}
	if sku, q, err := CartLineQty(AppendCartLine(nil, "a", line)); err != nil || sku != "a" || q != 4 {
		t.Fatalf("line a: %q × %d, %v", sku, q, err)
	}
	bad := AppendCartLine(nil, "a", line)
	bad[len(bad)-1] = 0 // quantity 0
	if _, _, err := DecodeCartLine(bad); err == nil {
		t.Fatal("a line with quantity 0 decoded")
	}
	if _, _, err := DecodeCartLine(AppendCartLine(nil, "a", nil)); err == nil {
		t.Fatal("a line without entries decoded")
	}
}
