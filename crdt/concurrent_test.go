package crdt

import "testing"

func TestConcurrent(t *testing.T) {
	var a, b Cart
	a.Join(a.Add("us-east", "book", 1))
	b.Join(b.Add("eu-west", "pen", 1))
	if a.Concurrent(b.Add("eu-west", "pen", 1)) {
		t.Error("edits of different lines reported as concurrent")
	}
	d := b.Add("eu-west", "book", 2) // eu-west never saw us-east's book
	if !a.Concurrent(d) {
		t.Error("two regions' entries of one line not reported")
	}
	// eu-west sees us-east's line, then sets it: the set replaces it.
	b.Join(&a)
	if a.Concurrent(b.Set("eu-west", "book", 5)) {
		t.Error("a set that observed the other region's entry reported as concurrent")
	}
	// A delta of the same region is never concurrent with itself.
	if a.Concurrent(a.Add("us-east", "book", 1)) {
		t.Error("an add of the same region reported as concurrent")
	}
}
