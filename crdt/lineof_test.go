package crdt

import (
	"maps"
	"testing"
	"unsafe"
)

// TestCartLineOf checks that the Of decoders of a line return the sku
// they were given, not a copy, when the line holds it, the line's own
// sku when it does not, and refuse what DecodeCartLine refuses.
func TestCartLineOf(t *testing.T) {
	line := map[Dot]Line{
		{Replica: "eu-west", Counter: 3}: {SKU: "book", Kind: KindAdd, N: 2},
		{Replica: "eu-west", Counter: 7}: {SKU: "book", Kind: KindAdd, N: 1},
		{Replica: "us-east", Counter: 1}: {SKU: "book", Kind: KindSet, N: 4},
	}
	b := AppendCartLine(nil, "book", line)
	want := string([]byte("book"))
	sku, es, err := DecodeCartLineOf(b, want)
	if err != nil || sku != "book" || !maps.Equal(es, line) {
		t.Fatalf("DecodeCartLineOf = %q %v %v", sku, es, err)
	}
	if unsafe.StringData(sku) != unsafe.StringData(want) {
		t.Error("DecodeCartLineOf copied the sku it was given")
	}
	sku, q, err := CartLineQtyOf(b, want)
	if err != nil || sku != "book" || q != 7 || unsafe.StringData(sku) != unsafe.StringData(want) {
		t.Fatalf("CartLineQtyOf = %q × %d, %v", sku, q, err)
	}
	if sku, _, err := DecodeCartLineOf(b, "pen"); err != nil || sku != "book" {
		t.Errorf("DecodeCartLineOf(pen) = %q, %v; want the line's own sku", sku, err)
	}
	if sku, q, err := CartLineQtyOf(b, "pen"); err != nil || sku != "book" || q != 7 {
		t.Errorf("CartLineQtyOf(pen) = %q × %d, %v; want the line's own sku", sku, q, err)
	}
	var reps []ReplicaID
	if _, err := decodeLine(b, "book", func(d Dot, _ Line) { reps = append(reps, d.Replica) }); err != nil {
		t.Fatal(err)
	}
	if len(reps) != 3 || unsafe.StringData(string(reps[0])) != unsafe.StringData(string(reps[1])) {
		t.Errorf("entries of one replica do not share its id: %q", reps)
	}
	if n := testing.AllocsPerRun(100, func() { _, _, _ = CartLineQtyOf(b, want) }); n > 2 {
		t.Errorf("CartLineQtyOf allocates %v times, want at most 2 (the replica ids)", n)
	}

	bad := AppendCartLine(nil, "book", line)
	bad[len(bad)-1] = 0 // quantity 0
	if _, _, err := DecodeCartLineOf(bad, "book"); err == nil {
		t.Error("a line with quantity 0 decoded")
	}
	if _, _, err := CartLineQtyOf(append(b[:len(b):len(b)], 0), "book"); err == nil {
		t.Error("a line with extraneous data decoded")
	}
}
