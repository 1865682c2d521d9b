package crdt

import (
	"errors"
	"testing"
)

// TestDecodeCartCeilUpTo: a cart whose cloud is within the cap decodes as
// DecodeCartUpTo does (canonical check included); past it, its context is
// its ceiling, still covering its entries, including those of a replica
// whose cloud was cut.
func TestDecodeCartCeilUpTo(t *testing.T) {
	var c Cart
	c.Ctx.Insert(Dot{Replica: "a", Counter: 1})
	for k := uint64(3); k <= 40; k += 2 {
		c.Ctx.Insert(Dot{Replica: "a", Counter: k})
		c.Ctx.Insert(Dot{Replica: "b", Counter: k})
	}
	c.Entries = map[Dot]Line{
		{Replica: "a", Counter: 39}: {SKU: "s", Kind: KindAdd, N: 2},
		{Replica: "b", Counter: 5}:  {SKU: "t", Kind: KindAdd, N: 1},
	}
	b := EncodeCart(&c)
	want, err := DecodeCartUpTo(b, MaxGroupBytes)
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeCartCeilUpTo(b, MaxGroupBytes, 100)
	if err != nil {
		t.Fatal(err)
	}
	if !got.Ctx.Covers(&want.Ctx) || !want.Ctx.Covers(&got.Ctx) || len(got.Entries) != 2 {
		t.Fatalf("within the cap: %+v, want %+v", got, want)
	}
	if _, err := DecodeCartCeilUpTo(append(b[:len(b):len(b)], 0), MaxGroupBytes, 100); err == nil {
		t.Fatal("extraneous data taken")
	}

	got, err = DecodeCartCeilUpTo(b, MaxGroupBytes, 5)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Ctx.Cloud) != 0 || got.Ctx.VV["a"] != 39 || got.Ctx.VV["b"] != 39 || len(got.Entries) != 2 {
		t.Fatalf("past the cap: context %v %v, %d entries", got.Ctx.VV, got.Ctx.Cloud, len(got.Entries))
	}
	for d := range got.Entries {
		if !got.Ctx.Contains(d) {
			t.Errorf("entry %s not in the ceiling", d)
		}
	}

	// Not canonical (a wide head) is refused either way.
	wide := append([]byte{0x98, b[0] & 0x1f}, b[1:]...)
	for _, cap := range []int{5, 100} {
		if _, err := DecodeCartCeilUpTo(wide, MaxGroupBytes, cap); !errors.Is(err, ErrNonCanonical) {
			t.Errorf("cap %d: a wide head: %v", cap, err)
		}
	}
}
