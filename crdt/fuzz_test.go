package crdt

import (
	"bytes"
	"flag"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
)

// The decoders face bytes from the network and from disk. The fuzz targets
// check that nothing panics, that whatever is accepted is exactly the
// canonical encoding of a valid value, and that oversized input is
// refused; the table tests check that each kind of hostile input is
// refused with an error that names the problem.

var updateCorpus = flag.Bool("update-corpus", false, "rewrite the fuzz seed corpus under testdata/fuzz")

// fuzzDecode is the body shared by the fuzz targets.
func fuzzDecode[V any](t *testing.T, b []byte, limit int, dec func([]byte) (V, error), enc func(V) []byte, check func(*testing.T, V)) {
	v, err := dec(b)
	if err != nil {
		if !strings.HasPrefix(err.Error(), "crdt: ") {
			t.Fatalf("error %q does not start with the package name", err)
		}
		return
	}
	if len(b) > limit {
		t.Fatalf("accepted %d bytes, over the limit of %d", len(b), limit)
	}
	out := enc(v)
	sameBytes(t, "an accepted input re-encodes to exactly itself", out, b)
	v2, err := dec(out)
	if err != nil {
		t.Fatalf("the re-encoding of an accepted input does not decode: %v", err)
	}
	sameBytes(t, "second decode", enc(v2), b)
	check(t, v)
}

func checkDecodedCart(t *testing.T, c *Cart) {
	t.Helper()
	checkCartInvariants(t, c)
	if len(c.Entries) > MaxCartEntries || len(c.Ctx.Replicas()) > MaxReplicas {
		t.Fatalf("accepted a cart of %d entries over %d replicas", len(c.Entries), len(c.Ctx.Replicas()))
	}
	for _, r := range c.Ctx.Replicas() {
		if !validReplica(r) || c.Ctx.Max(r) > MaxCounter {
			t.Fatalf("accepted replica %q with counter %d", r, c.Ctx.Max(r))
		}
	}
	if c.Brings(c) {
		t.Fatalf("a decoded cart brings something to itself")
	}
	sameCart(t, "c ⊔ c = c", joinCarts(c, c), c)
}

func checkDecodedItem(t *testing.T, it *Item) {
	t.Helper()
	for _, m := range []map[ReplicaID]uint64{it.Stock.P, it.Stock.N} {
		for r, v := range m {
			if !validReplica(r) || v == 0 || v > MaxCount {
				t.Fatalf("accepted counter %s = %d", r, v)
			}
		}
	}
	if h := it.Held; h.Value < 0 || h.Value > MaxCount || h.Version > MaxCounter ||
		(h.Version == 0 && (h.Replica != "" || h.Value != 0)) || (h.Version > 0 && !validReplica(h.Replica)) {
		t.Fatalf("accepted held register %+v", h)
	}
	if it.Brings(it) {
		t.Fatalf("a decoded item brings something to itself")
	}
	sameBytes(t, "it ⊔ it = it", EncodeItem(joinItems(it, it)), EncodeItem(it))
}

func checkDecodedGroup(t *testing.T, g *Group) {
	t.Helper()
	if g.Len() > MaxGroupKeys {
		t.Fatalf("accepted a group of %d keys", g.Len())
	}
	for id, c := range g.Carts {
		if !ValidID(id) {
			t.Fatalf("accepted cart id %q", id)
		}
		checkDecodedCart(t, c)
	}
	for sku, it := range g.Items {
		if !ValidID(sku) {
			t.Fatalf("accepted sku %q", sku)
		}
		checkDecodedItem(t, it)
	}
	sameBytes(t, "g ⊔ g = g", EncodeGroup(joinGroups(g, g)), EncodeGroup(g))
}

func FuzzDecodeCart(f *testing.F) {
	for _, s := range cartSeeds() {
		f.Add(s.data)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		fuzzDecode(t, b, MaxObjectBytes, DecodeCart, EncodeCart, checkDecodedCart)
	})
}

func FuzzDecodeItem(f *testing.F) {
	for _, s := range itemSeeds() {
		f.Add(s.data)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		fuzzDecode(t, b, MaxObjectBytes, DecodeItem, EncodeItem, checkDecodedItem)
	})
}

func FuzzDecodeGroup(f *testing.F) {
	for _, s := range groupSeeds() {
		f.Add(s.data)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		fuzzDecode(t, b, MaxGroupBytes, DecodeGroup, EncodeGroup, checkDecodedGroup)
	})
}

// hostile is one input a decoder must refuse, and a fragment of the error
// it must give.
type hostile struct {
	name string
	data []byte
	want string
}

// Valid wire pieces the hostile inputs start from.
var (
	okEntry = wEntry(1, "book", 1, 2)
	okRep   = wRep("us-east", 1, nil, okEntry)
	okCart  = wCart(okRep)
	okItem  = wItem([][]byte{wCounter("eu-west", 5, 1), wCounter("us-east", 3, 0)}, 2, "us-east", 1)
)

func hostileCarts() []hostile {
	return []hostile{
		{"truncated", okCart[:len(okCart)-1], "unexpected EOF"},
		{"empty-input", nil, "EOF"},
		{"huge-array-header", cHeadWide(4, 1<<62, 8), "exceeds limit"},
		{"huge-nested-array-header", wCart(cat(cHead(4, 4), cText("us-east"), cUint(1), cArr(), cHeadWide(4, 1<<31-1, 4))), "exceeds limit"},
		{"array-header-beyond-input", wCart(cat(cHead(4, 4), cText("us-east"), cUint(1), cArr(), cHead(4, 1000), okEntry)), "unexpected EOF"},
		{"duplicate-entries", wCart(wRep("us-east", 1, nil, okEntry, okEntry)), "unsorted or duplicated"},
		{"unsorted-entries", wCart(wRep("us-east", 2, nil, wEntry(2, "cup", 1, 1), okEntry)), "unsorted or duplicated"},
		{"duplicate-replicas", wCart(okRep, okRep), "not strictly sorted"},
		{"unsorted-replicas", wCart(okRep, wRep("eu-west", 1, nil)), "not strictly sorted"},
		{"entry-not-in-context", wCart(wRep("us-east", 1, nil, wEntry(2, "book", 1, 1))), "not in the causal context"},
		{"entry-of-replica-without-context", wCart(wRep("us-east", 0, []uint64{3}, wEntry(2, "book", 1, 1))), "not in the causal context"},
		{"cloud-dot-covered", wCart(wRep("us-east", 3, []uint64{2})), "covered, unsorted or out of range"},
		{"cloud-not-compacted", wCart(wRep("us-east", 3, []uint64{4})), "covered, unsorted or out of range"},
		{"cloud-unsorted", wCart(wRep("us-east", 1, []uint64{9, 5})), "covered, unsorted or out of range"},
		{"cloud-duplicate", wCart(wRep("us-east", 1, []uint64{5, 5})), "covered, unsorted or out of range"},
		{"cloud-zero", wCart(wRep("us-east", 0, []uint64{0})), "covered, unsorted or out of range"},
		{"counter-out-of-range", wCart(wRep("us-east", MaxCounter+1, nil)), "out of range"},
		{"cloud-out-of-range", wCart(wRep("us-east", 1, []uint64{MaxCounter + 1})), "out of range"},
		{"empty-record", wCart(wRep("us-east", 0, nil)), "empty record"},
		{"empty-replica-id", wCart(wRep("", 1, nil)), "invalid replica id"},
		{"bad-replica-id", wCart(wRep("us east", 1, nil)), "invalid replica id"},
		{"long-replica-id", wCart(wRep(strings.Repeat("r", MaxReplicaIDLen+1), 1, nil)), "invalid replica id"},
		{"empty-sku", wCart(wRep("us-east", 1, nil, wEntry(1, "", 1, 1))), "invalid sku"},
		{"bad-sku", wCart(wRep("us-east", 1, nil, wEntry(1, "bo/ok", 1, 1))), "invalid sku"},
		{"long-sku", wCart(wRep("us-east", 1, nil, wEntry(1, strings.Repeat("s", MaxIDLen+1), 1, 1))), "invalid sku"},
		{"unknown-kind", wCart(wRep("us-east", 1, nil, wEntry(1, "book", 3, 1))), "unknown kind"},
		{"kind-zero", wCart(wRep("us-east", 1, nil, wEntry(1, "book", 0, 1))), "unknown kind"},
		{"quantity-zero", wCart(wRep("us-east", 1, nil, wEntry(1, "book", 1, 0))), "outside 1..1000000"},
		{"quantity-negative", wCart(wRep("us-east", 1, nil, wEntry(1, "book", 2, -3))), "outside 1..1000000"},
		{"quantity-too-large", wCart(wRep("us-east", 1, nil, wEntry(1, "book", 2, MaxQty+1))), "outside 1..1000000"},
		{"too-many-replicas", wCart(manyReplicas(MaxReplicas + 1)...), "exceeds limit"},
		{"non-minimal-int", wCart(cArr(cText("us-east"), cHeadWide(0, 1, 1), cArr(), cArr(okEntry))), "non-canonical"},
		{"non-minimal-int-64bit", wCart(cArr(cText("us-east"), cHeadWide(0, 1, 8), cArr(), cArr(okEntry))), "non-canonical"},
		{"non-minimal-array-length", cat(cHeadWide(4, 1, 1), okRep), "non-canonical"},
		{"non-minimal-text-length", wCart(cArr(cat(cHeadWide(3, 7, 2), []byte("us-east")), cUint(1), cArr(), cArr(okEntry))), "non-canonical"},
		{"indefinite-length-array", cat([]byte{0x9f}, okRep, []byte{0xff}), "indefinite"},
		{"indefinite-length-text", wCart(cArr(cat([]byte{0x7f}, cText("us-east"), []byte{0xff}), cUint(1), cArr(), cArr(okEntry))), "indefinite"},
		{"tag", cat([]byte{0xc1}, okCart), "tag"},
		{"nested-tag", wCart(cArr(cText("us-east"), cat([]byte{0xc2}, cBytes("\x01")), cArr(), cArr(okEntry))), "tag"},
		{"null", []byte{0xf6}, "expected"},
		{"null-record", wCart([]byte{0xf6}), "expected"},
		{"null-elements", cArrN(MaxReplicas, repeat([]byte{0xf6}, MaxReplicas)), "expected"},
		{"undefined", []byte{0xf7}, "expected"},
		{"float", wCart(cArr(cText("us-east"), []byte{0xf9, 0x3c, 0x00}, cArr(), cArr(okEntry))), "expected"},
		{"map", cat([]byte{0xa1}, cText("us-east"), cUint(1)), "expected"},
		{"byte-string-replica", wCart(cArr(cBytes("us-east"), cUint(1), cArr(), cArr(okEntry))), "expected"},
		{"negative-counter", wCart(cArr(cText("us-east"), cInt(-1), cArr(), cArr())), "expected"},
		{"record-too-short", wCart(cArr(cText("us-east"), cUint(1), cArr())), "expected"},
		{"record-too-long", wCart(cArr(cText("us-east"), cUint(1), cArr(), cArr(), cArr())), "expected"},
		{"entry-too-short", wCart(wRep("us-east", 1, nil, cArr(cUint(1), cText("book"), cUint(1)))), "expected"},
		{"deep-nesting", repeat([]byte{0x81}, 64), "expected"},
		{"invalid-utf8", wCart(wRep("us-east", 1, nil, wEntry(1, "bo\xffk", 1, 1))), "UTF-8"},
		{"trailing-data", cat(okCart, []byte{0x00}), "extraneous data"},
		{"two-values", cat(okCart, okCart), "extraneous data"},
		{"oversized", cat(okCart, make([]byte, MaxObjectBytes)), "exceeds limit"},
	}
}

func manyReplicas(n int) [][]byte {
	var out [][]byte
	for k := range n {
		out = append(out, wRep(fmt.Sprintf("r%03d", k), 1, nil))
	}
	return out
}

func hostileItems() []hostile {
	return []hostile{
		{"truncated", okItem[:len(okItem)-2], "unexpected EOF"},
		{"huge-array-header", cat(cHead(4, 4), cHeadWide(4, 1<<40, 8)), "exceeds limit"},
		{"held-without-version", wItem(nil, 0, "", 3), "held units without a version"},
		{"writer-without-version", wItem(nil, 0, "us-east", 0), "held units without a version"},
		{"invalid-writer", wItem(nil, 1, "", 0), "invalid held writer"},
		{"held-negative", wItem(nil, 1, "us-east", -1), "out of range"},
		{"held-too-large", wItem(nil, 1, "us-east", MaxCount+1), "out of range"},
		{"version-out-of-range", wItem(nil, MaxCounter+1, "us-east", 0), "held version out of range"},
		{"counter-out-of-range", wItem([][]byte{wCounter("us-east", MaxCount+1, 0)}, 0, "", 0), "out of range"},
		{"empty-record", wItem([][]byte{wCounter("us-east", 0, 0)}, 0, "", 0), "empty record"},
		{"duplicate-replicas", wItem([][]byte{wCounter("us-east", 1, 0), wCounter("us-east", 2, 0)}, 0, "", 0), "not strictly sorted"},
		{"unsorted-replicas", wItem([][]byte{wCounter("us-east", 1, 0), wCounter("eu-west", 2, 0)}, 0, "", 0), "not strictly sorted"},
		{"invalid-replica", wItem([][]byte{wCounter("us east", 1, 0)}, 0, "", 0), "invalid replica id"},
		{"too-many-replicas", wItem(manyCounters(MaxReplicas+1), 0, "", 0), "exceeds limit"},
		{"non-minimal-int", cArr(cArr(), cHeadWide(0, 2, 4), cText("us-east"), cUint(1)), "non-canonical"},
		{"indefinite-length-array", cat([]byte{0x9f}, cArr(), cUint(0), cText(""), cUint(0), []byte{0xff}), "indefinite"},
		{"tag", cat([]byte{0xd8, 0x40}, okItem), "tag"},
		{"null", []byte{0xf6}, "expected"},
		{"too-few-fields", cArr(cArr(), cUint(0), cText("")), "expected"},
		{"trailing-data", cat(okItem, []byte{0xf6}), "extraneous data"},
		{"oversized", cat(okItem, make([]byte, MaxObjectBytes)), "exceeds limit"},
	}
}

func manyCounters(n int) [][]byte {
	var out [][]byte
	for k := range n {
		out = append(out, wCounter(fmt.Sprintf("r%03d", k), 1, 0))
	}
	return out
}

func hostileGroups() []hostile {
	emptyItem := wItem(nil, 0, "", 0)
	return []hostile{
		{"truncated", wGroup([][]byte{wGroupCart("cart-1", okCart)}, nil)[:10], "unexpected EOF"},
		{"huge-array-header", cat(cHead(4, 2), cHeadWide(4, 1<<32, 8)), "exceeds limit"},
		{"unsorted-carts", wGroup([][]byte{wGroupCart("b", okCart), wGroupCart("a", okCart)}, nil), "cart ids not strictly sorted"},
		{"duplicate-carts", wGroup([][]byte{wGroupCart("a", okCart), wGroupCart("a", okCart)}, nil), "cart ids not strictly sorted"},
		{"unsorted-items", wGroup(nil, [][]byte{wGroupItem("b", emptyItem), wGroupItem("a", emptyItem)}), "skus not strictly sorted"},
		{"invalid-cart-id", wGroup([][]byte{wGroupCart("", okCart)}, nil), "invalid cart id"},
		{"invalid-sku", wGroup(nil, [][]byte{wGroupItem("a b", emptyItem)}), "invalid sku"},
		{"bad-cart-inside", wGroup([][]byte{wGroupCart("cart-9", wCart(wRep("us-east", 1, nil, wEntry(2, "book", 1, 1))))}, nil), `not in the causal context (cart "cart-9")`},
		{"bad-item-inside", wGroup(nil, [][]byte{wGroupItem("sku-9", wItem(nil, 0, "", 5))}), `held units without a version (sku "sku-9")`},
		{"too-many-keys", cArr(cArrN(MaxGroupKeys/2+1, repeat(wGroupCart("a", wCart()), MaxGroupKeys/2+1)), cArrN(MaxGroupKeys/2, repeat(wGroupItem("a", emptyItem), MaxGroupKeys/2))), "more than 16384 keys"},
		{"non-minimal-int", wGroup([][]byte{wGroupCart("a", wCart(cArr(cText("us-east"), cHeadWide(0, 1, 2), cArr(), cArr())))}, nil), "non-canonical"},
		{"indefinite-length-array", cat([]byte{0x82, 0x9f, 0xff}, cArr()), "indefinite"},
		{"tag", cat([]byte{0xd9, 0xd9, 0xf7}, wGroup(nil, nil)), "tag"},
		{"null-carts", cat([]byte{0x82, 0xf6}, cArr()), "expected"},
		{"one-field", cArr(cArr()), "expected"},
		{"trailing-data", cat(wGroup(nil, nil), []byte{0x80}), "extraneous data"},
		{"oversized", cat(wGroup(nil, nil), make([]byte, MaxGroupBytes)), "exceeds limit"},
	}
}

func checkHostile[V any](t *testing.T, cases []hostile, dec func([]byte) (V, error)) {
	for _, h := range cases {
		t.Run(h.name, func(t *testing.T) {
			_, err := dec(h.data)
			if err == nil {
				t.Fatalf("accepted %x", h.data[:min(len(h.data), 64)])
			}
			if !strings.Contains(err.Error(), h.want) {
				t.Fatalf("error %q does not mention %q", err, h.want)
			}
			if !strings.HasPrefix(err.Error(), "crdt: ") {
				t.Fatalf("error %q does not start with the package name", err)
			}
		})
	}
}

func TestDecodeCartRefusesHostileInput(t *testing.T) { checkHostile(t, hostileCarts(), DecodeCart) }
func TestDecodeItemRefusesHostileInput(t *testing.T) { checkHostile(t, hostileItems(), DecodeItem) }
func TestDecodeGroupRefusesHostileInput(t *testing.T) {
	checkHostile(t, hostileGroups(), DecodeGroup)
	// The same checks apply to a group embedded in another message.
	type message struct {
		_     struct{} `cbor:",toarray"`
		From  string
		Delta *Group
	}
	for _, h := range hostileGroups() {
		if len(h.data) > 1<<16 {
			continue // the message limit below would hide the group's own
		}
		b := cat(cHead(4, 2), cText("us-east"), h.data)
		var m message
		if err := Unmarshal(b, &m, MaxGroupBytes+64); err == nil {
			t.Errorf("%s: accepted inside a message", h.name)
		}
	}
	var m message
	if err := Unmarshal(cat(cHead(4, 2), cText("us-east"), cArr(cArr(), cArr())), &m, 1<<10); err != nil || m.Delta == nil || m.Delta.Len() != 0 {
		t.Fatalf("an empty embedded group: %v, %+v", err, m)
	}
}

func TestWireBuilderMatchesEncoder(t *testing.T) {
	c := &Cart{}
	c.Join(c.Add(usEast, "book", 2))
	sameBytes(t, "cart", okCart, EncodeCart(c))
	it := &Item{}
	it.Join(it.Restock(euWest, 5))
	it.Join(it.Consume(euWest, 1))
	it.Join(it.Restock(usEast, 3))
	it.Join(it.SetHeld(usEast, 0))
	it.Join(it.SetHeld(usEast, 1))
	sameBytes(t, "item", okItem, EncodeItem(it))
	g := &Group{}
	g.AddCart("cart-1", c)
	g.AddItem("sku-a", it)
	sameBytes(t, "group", wGroup([][]byte{wGroupCart("cart-1", okCart)}, [][]byte{wGroupItem("sku-a", okItem)}), EncodeGroup(g))
	for _, h := range [][]byte{cInt(-1), cInt(-24), cInt(-25), cInt(1 << 40), cText("é")} {
		var v any
		if err := Unmarshal(h, &v, 64); err != nil {
			t.Fatalf("builder output %x is not CBOR: %v", h, err)
		}
	}
}

// TestDecodeRefusesOversizedInputUnread checks that the size limit comes
// before any parsing: an oversized input that is otherwise a valid
// encoding is refused with the limit named.
func TestDecodeRefusesOversizedInputUnread(t *testing.T) {
	// A valid cart followed by padding: the size check refuses it, and
	// its message names the length and the limit.
	big := make([]byte, MaxObjectBytes+1)
	copy(big, okCart)
	for _, dec := range []func([]byte) error{
		func(b []byte) error { _, err := DecodeCart(b); return err },
		func(b []byte) error { _, err := DecodeItem(b); return err },
	} {
		if err := dec(big); err == nil || !strings.Contains(err.Error(), fmt.Sprintf("%d bytes exceeds limit of %d", len(big), MaxObjectBytes)) {
			t.Fatalf("oversized object: %v", err)
		}
	}
	bigGroup := make([]byte, MaxGroupBytes+1)
	copy(bigGroup, wGroup(nil, nil))
	if _, err := DecodeGroup(bigGroup); err == nil || !strings.Contains(err.Error(), fmt.Sprintf("%d bytes exceeds limit of %d", len(bigGroup), MaxGroupBytes)) {
		t.Fatalf("oversized group: %v", err)
	}
}

// TestDecodeAllocationIsBounded decodes hostile inputs of the largest
// allowed size built from the cheapest wrong elements, and checks that
// decoding (and refusing) them allocates at most a small multiple of
// their size. Ill-typed elements are refused before anything is allocated
// for them; the worst well-typed case (64 empty replica records per cart)
// costs the typed decoder about 25 times its input.
func TestDecodeAllocationIsBounded(t *testing.T) {
	const factor = 32
	fill := func(limit, headerRoom, elemSize int) int { return (limit - headerRoom) / elemSize }

	// A group of carts of null replica records, and of integers where
	// records should be.
	groupOf := func(elem []byte) []byte {
		perCart := MaxReplicas
		cartBytes := 3 + 5 + perCart*len(elem)
		n := min(fill(MaxGroupBytes, 16, cartBytes), MaxGroupKeys)
		one := cat(cHead(4, 2), cText("a"), cArrN(perCart, repeat(elem, perCart)))
		return cArr(cArrN(n, repeat(one, n)), cArr())
	}
	// Minimal well-typed replica records, 64 per cart.
	minimalRecord := cArr(cText(""), cUint(0), cArr(), cArr())
	typedGroup := func() []byte {
		one := cArr(cText("a"), cArrN(MaxReplicas, repeat(minimalRecord, MaxReplicas)))
		n := fill(MaxGroupBytes, 16, len(one))
		n = min(n, MaxGroupKeys)
		return cArr(cArrN(n, repeat(one, n)), cArr())
	}
	// A cart of one record with as many minimal entries as fit.
	minimalEntry := cArr(cUint(0), cText(""), cUint(0), cUint(0))
	entriesCart := func() []byte {
		var recs [][]byte
		per := 16384
		for k := 0; k < MaxReplicas && (k+1)*per*len(minimalEntry) < MaxObjectBytes; k++ {
			recs = append(recs, cat(cHead(4, 4), cText(fmt.Sprintf("r%02d", k)), cUint(1), cArr(), cArrN(per, repeat(minimalEntry, per))))
		}
		return wCart(recs...)
	}
	cloudCart := func() []byte {
		per := 16384
		var recs [][]byte
		for k := 0; k < MaxReplicas && (k+1)*per < MaxObjectBytes; k++ {
			recs = append(recs, cat(cHead(4, 4), cText(fmt.Sprintf("r%02d", k)), cUint(1), cArrN(per, repeat(cUint(0), per)), cArr()))
		}
		return wCart(recs...)
	}
	cases := []struct {
		name  string
		data  []byte
		limit int
		dec   func([]byte) error
	}{
		{"group-of-null-records", groupOf([]byte{0xf6}), MaxGroupBytes, func(b []byte) error { _, err := DecodeGroup(b); return err }},
		{"group-of-integer-records", groupOf([]byte{0x00}), MaxGroupBytes, func(b []byte) error { _, err := DecodeGroup(b); return err }},
		{"group-of-minimal-records", typedGroup(), MaxGroupBytes, func(b []byte) error { _, err := DecodeGroup(b); return err }},
		{"cart-of-minimal-entries", entriesCart(), MaxObjectBytes, func(b []byte) error { _, err := DecodeCart(b); return err }},
		{"cart-of-zero-cloud-dots", cloudCart(), MaxObjectBytes, func(b []byte) error { _, err := DecodeCart(b); return err }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if len(tc.data) > tc.limit || len(tc.data) < tc.limit/4 {
				t.Fatalf("test input of %d bytes does not fill the limit of %d", len(tc.data), tc.limit)
			}
			runtime.GC()
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			err := tc.dec(tc.data)
			runtime.ReadMemStats(&after)
			if err == nil {
				t.Fatalf("accepted")
			}
			alloc := after.TotalAlloc - before.TotalAlloc
			t.Logf("%d bytes in, %d bytes allocated (%.1f×): %.80s", len(tc.data), alloc, float64(alloc)/float64(len(tc.data)), err)
			if alloc > uint64(factor*len(tc.data)) {
				t.Fatalf("decoding %d bytes allocated %d bytes, more than %d×", len(tc.data), alloc, factor)
			}
		})
	}
}

// Seeds of the fuzz targets: realistic values and the hostile inputs of the
// tables (those small enough to keep in the repository).

func seedsOf[V any](samples map[string]V, enc func(V) []byte, bad []hostile) []seed {
	var out []seed
	for _, name := range slices.Sorted(maps.Keys(samples)) {
		out = append(out, seed{"valid-" + name, enc(samples[name])})
	}
	for _, h := range bad {
		if len(h.data) <= 4096 {
			out = append(out, seed{"hostile-" + h.name, h.data})
		}
	}
	return out
}

func cartSeeds() []seed  { return seedsOf(sampleCarts(), EncodeCart, hostileCarts()) }
func itemSeeds() []seed  { return seedsOf(sampleItems(), EncodeItem, hostileItems()) }
func groupSeeds() []seed { return seedsOf(sampleGroups(), EncodeGroup, hostileGroups()) }

// corpusFile formats b in the fuzz corpus file format.
func corpusFile(b []byte) []byte { return fmt.Appendf(nil, "go test fuzz v1\n[]byte(%q)\n", b) }

// TestFuzzSeedCorpus checks that the committed seed corpus holds every seed
// (go test -run TestFuzzSeedCorpus -update-corpus ./crdt rewrites it), and
// that its valid seeds decode and its hostile ones do not.
func TestFuzzSeedCorpus(t *testing.T) {
	targets := map[string]struct {
		seeds []seed
		dec   func([]byte) error
	}{
		"FuzzDecodeCart":  {cartSeeds(), func(b []byte) error { _, err := DecodeCart(b); return err }},
		"FuzzDecodeItem":  {itemSeeds(), func(b []byte) error { _, err := DecodeItem(b); return err }},
		"FuzzDecodeGroup": {groupSeeds(), func(b []byte) error { _, err := DecodeGroup(b); return err }},
	}
	for target, tc := range targets {
		dir := filepath.Join("testdata", "fuzz", target)
		if *updateCorpus {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		for _, s := range tc.seeds {
			err := tc.dec(s.data)
			if valid := strings.HasPrefix(s.name, "valid-"); valid != (err == nil) {
				t.Errorf("%s/%s: decode error %v", target, s.name, err)
			}
			path := filepath.Join(dir, s.name)
			want := corpusFile(s.data)
			if *updateCorpus {
				if err := os.WriteFile(path, want, 0o644); err != nil {
					t.Fatal(err)
				}
				continue
			}
			got, err := os.ReadFile(path)
			if err != nil {
				t.Errorf("seed corpus: %v (run with -update-corpus)", err)
				continue
			}
			if !bytes.Equal(got, want) {
				t.Errorf("seed corpus file %s is stale (run with -update-corpus)", path)
			}
		}
	}
}

// TestCodecLargestValues round-trips values near the limits: a cart of
// 1,000 lines (the most a cart may hold, SPEC §6) and a cart whose clouds at
// 64 replicas fill most of MaxObjectBytes.
func TestCodecLargestValues(t *testing.T) {
	lines := freshCart(1000, testReplicas...)
	var recs [][]byte
	for r := range MaxReplicas {
		cloud := make([]uint64, 5000*64/MaxReplicas)
		for k := range cloud {
			cloud[k] = uint64(1000 + 2*k)
		}
		recs = append(recs, wRep(fmt.Sprintf("r%03d", r), 1, cloud))
	}
	clouds := mustDecodeCart(t, wCart(recs...))
	if len(clouds.Ctx.Cloud) != 64*5000 {
		t.Fatalf("decoded %d cloud dots", len(clouds.Ctx.Cloud))
	}
	for name, c := range map[string]*Cart{"1000 lines": lines, "64 clouds": clouds} {
		b := EncodeCart(c)
		if len(b) > MaxObjectBytes {
			t.Fatalf("%s: %d bytes, over MaxObjectBytes", name, len(b))
		}
		got := mustDecodeCart(t, b)
		sameCart(t, name, got, c)
		if !got.Ctx.Equal(&c.Ctx) || len(got.Items()) != len(c.Items()) {
			t.Fatalf("%s: differs after the round trip", name)
		}
	}
}
