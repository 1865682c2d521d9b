package crdt

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"

	"pgregory.net/rapid"
)

// The hand-written codec against the reference codec of
// reference_test.go: the encoders must produce the same bytes for every
// value, the strict decoders must accept, refuse and decode exactly as the
// reference does, and the stored-value decoders must accept what the
// reference accepts, with the same value, and nothing the reference
// refuses for any reason but non-canonical encoding.

// checkEncoders checks every encoder of this package against the
// reference on the values of g.
func checkEncoders(t tb, g *Group) {
	t.Helper()
	sameBytes(t, "group", EncodeGroup(g), refEncodeGroup(g))
	prefix := []byte{0xde, 0xad}
	for id, c := range g.Carts {
		want := refEncodeCart(c)
		sameBytes(t, "cart "+id, EncodeCart(c), want)
		sameBytes(t, "appended cart "+id, AppendCart(slices.Clone(prefix), c), slices.Concat(prefix, want))
		sameBytes(t, "context of cart "+id, EncodeContext(&c.Ctx), refEncodeContext(&c.Ctx))
		sameBytes(t, "appended context of cart "+id, AppendContext(slices.Clone(prefix), &c.Ctx), slices.Concat(prefix, refEncodeContext(&c.Ctx)))
	}
	for sku, it := range g.Items {
		want := refEncodeItem(it)
		sameBytes(t, "item "+sku, EncodeItem(it), want)
		sameBytes(t, "appended item "+sku, AppendItem(slices.Clone(prefix), it), slices.Concat(prefix, want))
	}
	sameBytes(t, "appended group", AppendGroup(slices.Clone(prefix), g), slices.Concat(prefix, refEncodeGroup(g)))
}

func TestEncodersMatchReference(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		w := genWorld(t, 60)
		for _, g := range w.groups() {
			checkEncoders(t, g)
		}
	})
}

// TestEncodersMatchReferenceOnAnyValue draws values no history makes:
// replica ids and skus of any bytes, zero and covered context entries,
// entries outside the context, any kind and quantity, counters of every
// width. The encoders must still agree with the reference byte for byte.
func TestEncodersMatchReferenceOnAnyValue(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		g := &Group{}
		for _, id := range rapid.SliceOfNDistinct(drawAnyString(), 0, 3, rapid.ID).Draw(t, "cart ids") {
			if g.Carts == nil {
				g.Carts = make(map[string]*Cart)
			}
			g.Carts[id] = drawAnyCart(t)
		}
		for _, sku := range rapid.SliceOfNDistinct(drawAnyString(), 0, 3, rapid.ID).Draw(t, "skus") {
			if g.Items == nil {
				g.Items = make(map[string]*Item)
			}
			g.Items[sku] = drawAnyItem(t)
		}
		checkEncoders(t, g)
	})
}

func drawAnyString() *rapid.Generator[string] {
	return rapid.OneOf(
		rapid.SampledFrom([]string{"", "us-east", "eu-west", "a", "é", "\xff", "us-east\x00"}),
		rapid.String(),
		rapid.Custom(func(t *rapid.T) string { return string(rapid.SliceOf(rapid.Byte()).Draw(t, "bytes")) }),
	)
}

func drawAnyUint() *rapid.Generator[uint64] {
	return rapid.OneOf(rapid.Uint64Range(0, 30), rapid.Uint64Range(0, 1<<17), rapid.Uint64())
}

func drawAnyCart(t *rapid.T) *Cart {
	// Up to 40 replicas, so that some carts have more than the encoder
	// numbers by linear search.
	reps := rapid.SliceOfN(rapid.Map(drawAnyString(), func(s string) ReplicaID { return ReplicaID(s) }), 1, 40).Draw(t, "replicas")
	rep := rapid.SampledFrom(reps)
	c := &Cart{}
	for range rapid.IntRange(0, 8).Draw(t, "vv") {
		if c.Ctx.VV == nil {
			c.Ctx.VV = make(map[ReplicaID]uint64)
		}
		c.Ctx.VV[rep.Draw(t, "vv replica")] = drawAnyUint().Draw(t, "vv counter")
	}
	for range rapid.IntRange(0, 6).Draw(t, "cloud") {
		if c.Ctx.Cloud == nil {
			c.Ctx.Cloud = make(map[Dot]struct{})
		}
		c.Ctx.Cloud[Dot{rep.Draw(t, "cloud replica"), drawAnyUint().Draw(t, "cloud counter")}] = struct{}{}
	}
	for range rapid.IntRange(0, 40).Draw(t, "entries") {
		if c.Entries == nil {
			c.Entries = make(map[Dot]Line)
		}
		d := Dot{rep.Draw(t, "entry replica"), drawAnyUint().Draw(t, "entry counter")}
		c.Entries[d] = Line{SKU: drawAnyString().Draw(t, "sku"), Kind: LineKind(rapid.Uint8().Draw(t, "kind")), N: rapid.Int64().Draw(t, "n")}
	}
	return c
}

func drawAnyItem(t *rapid.T) *Item {
	rep := rapid.Map(drawAnyString(), func(s string) ReplicaID { return ReplicaID(s) })
	it := &Item{}
	for range rapid.IntRange(0, 4).Draw(t, "p") {
		if it.Stock.P == nil {
			it.Stock.P = make(map[ReplicaID]uint64)
		}
		it.Stock.P[rep.Draw(t, "p replica")] = drawAnyUint().Draw(t, "p counter")
	}
	for range rapid.IntRange(0, 4).Draw(t, "n") {
		if it.Stock.N == nil {
			it.Stock.N = make(map[ReplicaID]uint64)
		}
		it.Stock.N[rep.Draw(t, "n replica")] = drawAnyUint().Draw(t, "n counter")
	}
	it.Held = Register{Version: drawAnyUint().Draw(t, "version"), Replica: rep.Draw(t, "writer"), Value: rapid.Int64().Draw(t, "held")}
	return it
}

// checkDecoders compares the strict decoder and the stored-value decoder
// (nil if there is none) with the reference decoder on b.
func checkDecoders[V any](t tb, b []byte, ref, strict, stored func([]byte) (V, error)) {
	t.Helper()
	want, refErr := ref(b)
	got, err := strict(b)
	for _, e := range []error{err, refErr} {
		if e != nil && !strings.HasPrefix(e.Error(), "crdt: ") {
			t.Fatalf("error %q does not start with the package name", e)
		}
	}
	switch {
	case (err == nil) != (refErr == nil):
		t.Fatalf("strict decoder: error %v, reference: error %v, on %x", err, refErr, b)
	case err == nil && !reflect.DeepEqual(got, want):
		t.Fatalf("strict decoder: %+v, reference: %+v", got, want)
	case errors.Is(err, ErrNonCanonical) != errors.Is(refErr, ErrNonCanonical):
		t.Fatalf("strict decoder: error %v, reference: error %v, on %x", err, refErr, b)
	}
	if stored == nil {
		return
	}
	sv, serr := stored(b)
	switch {
	case serr != nil && !strings.HasPrefix(serr.Error(), "crdt: "):
		t.Fatalf("error %q does not start with the package name", serr)
	case refErr == nil && serr != nil:
		t.Fatalf("stored decoder refuses what the reference accepts: %v, on %x", serr, b)
	case refErr == nil && !reflect.DeepEqual(sv, want):
		t.Fatalf("stored decoder: %+v, reference: %+v", sv, want)
	case serr == nil && refErr != nil && !errors.Is(refErr, ErrNonCanonical):
		t.Fatalf("stored decoder accepts what the reference refuses (%v): %x", refErr, b)
	}
}

func checkCartDecoders(t tb, b []byte) {
	t.Helper()
	checkDecoders(t, b, refDecodeCart, DecodeCart, DecodeCartStored)
}

func checkItemDecoders(t tb, b []byte) {
	t.Helper()
	checkDecoders(t, b, refDecodeItem, DecodeItem, DecodeItemStored)
}

func checkGroupDecoders(t tb, b []byte) {
	t.Helper()
	checkDecoders(t, b, refDecodeGroup, DecodeGroup, nil)
}

// widen rewrites the well-formed CBOR b with some heads in a wider form
// than their shortest: the same values, non-canonically encoded.
func widen(t *rapid.T, b []byte) []byte {
	var out []byte
	for i := 0; i < len(b); {
		major, arg, next, _, err := head(b, i)
		if err != nil {
			t.Fatalf("widen: %v", err)
		}
		width := rapid.SampledFrom([]int{0, 0, 0, 0, 0, 1, 2, 4, 8}).Draw(t, "width")
		if width == 0 || (width < 8 && arg >= 1<<(8*width)) {
			out = append(out, b[i:next]...)
		} else {
			out = append(out, cHeadWide(major, arg, width)...)
		}
		i = next
		if major == majorText {
			out = append(out, b[i:i+int(arg)]...)
			i += int(arg)
		}
	}
	return out
}

// mutate applies a few random byte-level changes to b.
func mutate(t *rapid.T, b []byte) []byte {
	b = slices.Clone(b)
	for range rapid.IntRange(1, 3).Draw(t, "mutations") {
		if len(b) == 0 {
			return append(b, rapid.Byte().Draw(t, "byte"))
		}
		k := rapid.IntRange(0, len(b)-1).Draw(t, "at")
		switch rapid.IntRange(0, 4).Draw(t, "mutation") {
		case 0:
			b[k] = rapid.Byte().Draw(t, "byte")
		case 1:
			b[k] ^= 1 << rapid.IntRange(0, 7).Draw(t, "bit")
		case 2:
			b = slices.Insert(b, k, rapid.Byte().Draw(t, "byte"))
		case 3:
			b = slices.Delete(b, k, k+1)
		default:
			b = b[:k]
		}
	}
	return b
}

// TestDecodersMatchReference runs the decoders on the encodings of the
// values of random histories, on non-canonical re-encodings of them and
// on randomly damaged copies.
func TestDecodersMatchReference(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		w := genWorld(t, 40)
		for _, g := range w.groups() {
			inputs := []struct {
				b     []byte
				check func(tb, []byte)
			}{{EncodeGroup(g), checkGroupDecoders}}
			for _, c := range g.Carts {
				inputs = append(inputs, struct {
					b     []byte
					check func(tb, []byte)
				}{EncodeCart(c), checkCartDecoders})
			}
			for _, it := range g.Items {
				inputs = append(inputs, struct {
					b     []byte
					check func(tb, []byte)
				}{EncodeItem(it), checkItemDecoders})
			}
			for _, in := range inputs {
				in.check(t, in.b)
				in.check(t, widen(t, in.b))
				in.check(t, mutate(t, in.b))
			}
		}
	})
}

// TestDecodersOnStoredValues checks that the stored-value decoders give
// back exactly what was encoded, for every value of random histories.
func TestDecodersOnStoredValues(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		w := genWorld(t, 60)
		for _, g := range w.groups() {
			for id, c := range g.Carts {
				b := EncodeCart(c)
				got, err := DecodeCartStored(b)
				if err != nil {
					t.Fatalf("DecodeCartStored(EncodeCart(cart %s)): %v", id, err)
				}
				want, err := DecodeCart(b)
				if err != nil || !reflect.DeepEqual(got, want) {
					t.Fatalf("cart %s: DecodeCartStored and DecodeCart differ (%v)", id, err)
				}
				sameBytes(t, "cart "+id, EncodeCart(got), b)
			}
			for sku, it := range g.Items {
				b := EncodeItem(it)
				got, err := DecodeItemStored(b)
				if err != nil {
					t.Fatalf("DecodeItemStored(EncodeItem(item %s)): %v", sku, err)
				}
				want, err := DecodeItem(b)
				if err != nil || !reflect.DeepEqual(got, want) {
					t.Fatalf("item %s: DecodeItemStored and DecodeItem differ (%v)", sku, err)
				}
			}
		}
	})
}

// readCorpus returns the inputs of the committed seed corpus of a fuzz
// target.
func readCorpus(t *testing.T, target string) map[string][]byte {
	t.Helper()
	dir := filepath.Join("testdata", "fuzz", target)
	names, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	out := make(map[string][]byte)
	for _, e := range names {
		data, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		head, lit, ok := strings.Cut(strings.TrimSpace(string(data)), "\n")
		inner, ok2 := strings.CutPrefix(lit, "[]byte(")
		inner, ok3 := strings.CutSuffix(inner, ")")
		b, err := strconv.Unquote(inner)
		if head != "go test fuzz v1" || !ok || !ok2 || !ok3 || err != nil {
			t.Fatalf("%s/%s: not a corpus file of one []byte", target, e.Name())
		}
		out[e.Name()] = []byte(b)
	}
	if len(out) == 0 {
		t.Fatalf("no seed corpus for %s", target)
	}
	return out
}

// TestCodecMatchesReferenceOnSeedCorpus runs every input of the committed
// seed corpora through both codecs: the decoders agree, and every accepted
// input is what both encoders make of the decoded value. The sample
// values behind the corpus encode identically too.
func TestCodecMatchesReferenceOnSeedCorpus(t *testing.T) {
	for name, b := range readCorpus(t, "FuzzDecodeCart") {
		checkCartDecoders(t, b)
		if c, err := refDecodeCart(b); err == nil {
			sameBytes(t, name, EncodeCart(c), b)
			sameBytes(t, name, refEncodeCart(c), b)
		}
	}
	for name, b := range readCorpus(t, "FuzzDecodeItem") {
		checkItemDecoders(t, b)
		if it, err := refDecodeItem(b); err == nil {
			sameBytes(t, name, EncodeItem(it), b)
			sameBytes(t, name, refEncodeItem(it), b)
		}
	}
	for name, b := range readCorpus(t, "FuzzDecodeGroup") {
		checkGroupDecoders(t, b)
		if g, err := refDecodeGroup(b); err == nil {
			sameBytes(t, name, EncodeGroup(g), b)
			sameBytes(t, name, refEncodeGroup(g), b)
		}
	}
	for name, c := range sampleCarts() {
		sameBytes(t, "sample cart "+name, EncodeCart(c), refEncodeCart(c))
		sameBytes(t, "sample context "+name, EncodeContext(&c.Ctx), refEncodeContext(&c.Ctx))
	}
	for name, it := range sampleItems() {
		sameBytes(t, "sample item "+name, EncodeItem(it), refEncodeItem(it))
	}
	for name, g := range sampleGroups() {
		sameBytes(t, "sample group "+name, EncodeGroup(g), refEncodeGroup(g))
	}
}

// TestDecodeAllocationIsBoundedForDeclaredEntries decodes carts whose
// records declare many entries but carry one valid entry followed by
// junk. The decoders size the map of entries from what the records
// declare, bounded by what the input could hold, so refusing these costs
// no more than decoding valid input of the same size.
func TestDecodeAllocationIsBoundedForDeclaredEntries(t *testing.T) {
	const factor = 32
	junk := cArr(cUint(0), cText(""), cUint(0), cUint(0))
	record := func(replica string, declared, junkCount int) []byte {
		return cat(cHead(4, 4), cText(replica), cUint(1), cArr(),
			cHead(4, uint64(declared)), wEntry(1, "a", 1, 1), repeat(junk, junkCount))
	}
	cases := map[string][]byte{
		"one-record-of-16384": wCart(record("r", MaxCartEntries, MaxCartEntries-1)),
		"small":               wCart(record("r", 64, 63)),
		"many-records":        cat(cHead(4, MaxReplicas), record("r00", maxArray, MaxObjectBytes/len(junk)-1000)),
	}
	for name, data := range cases {
		t.Run(name, func(t *testing.T) {
			for _, dec := range []func([]byte) (*Cart, error){DecodeCart, DecodeCartStored} {
				runtime.GC()
				var before, after runtime.MemStats
				runtime.ReadMemStats(&before)
				_, err := dec(data)
				runtime.ReadMemStats(&after)
				if err == nil {
					t.Fatalf("accepted")
				}
				alloc := after.TotalAlloc - before.TotalAlloc
				t.Logf("%d bytes in, %d bytes allocated (%.1f×): %.80s", len(data), alloc, float64(alloc)/float64(len(data)), err)
				if alloc > uint64(factor*len(data)) {
					t.Fatalf("decoding %d bytes allocated %d bytes, more than %d×", len(data), alloc, factor)
				}
			}
		})
	}
}

// TestStoredDecodersRefuseHostileInput runs the hostile-input tables
// through the stored-value decoders: they validate as the strict decoders
// do, so they refuse every case, and with the same kind of error.
func TestStoredDecodersRefuseHostileInput(t *testing.T) {
	t.Run("cart", func(t *testing.T) { checkHostile(t, hostileCarts(), DecodeCartStored) })
	t.Run("item", func(t *testing.T) { checkHostile(t, hostileItems(), DecodeItemStored) })
}

func FuzzDecodeCartStored(f *testing.F) {
	for _, s := range cartSeeds() {
		f.Add(s.data)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		checkCartDecoders(t, b)
		if c, err := DecodeCartStored(b); err == nil {
			checkDecodedCart(t, c)
		}
	})
}

func FuzzDecodeItemStored(f *testing.F) {
	for _, s := range itemSeeds() {
		f.Add(s.data)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		checkItemDecoders(t, b)
		if it, err := DecodeItemStored(b); err == nil {
			checkDecodedItem(t, it)
		}
	})
}

// FuzzDecodeGroupReference compares DecodeGroup with the reference
// decoder.
func FuzzDecodeGroupReference(f *testing.F) {
	for _, s := range groupSeeds() {
		f.Add(s.data)
	}
	f.Fuzz(func(t *testing.T, b []byte) { checkGroupDecoders(t, b) })
}
