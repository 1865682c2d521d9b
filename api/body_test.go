package api

import (
	"fmt"
	"reflect"
	"strings"
	"testing"

	"pgregory.net/rapid"
)

// fastBodies returns a new value of every body type decodeFast serves.
func fastBodies() []fastBody {
	return []fastBody{&addItemBody{}, &qtyBody{}, &adjustBody{}, &reserveBody{}, &checkoutBody{}}
}

// checkFastAgrees checks that decodeFast, wherever it accepts b, decodes
// what the strict decoder decodes, and that it leaves dst untouched where it
// does not.
func checkFastAgrees(t interface{ Fatalf(string, ...any) }, b []byte) {
	for _, dst := range fastBodies() {
		typ := reflect.TypeOf(dst).Elem()
		zero := reflect.New(typ).Interface()
		if !decodeFast(b, dst) {
			if !reflect.DeepEqual(dst, zero) {
				t.Fatalf("%s: decodeFast refused %q but changed dst to %+v", typ, b, dst)
			}
			continue
		}
		strict := reflect.New(typ).Interface()
		if err := decodeStrict(b, strict); err != nil {
			t.Fatalf("%s: decodeFast accepted %q, the strict decoder refuses it: %v", typ, b, err)
		}
		if !reflect.DeepEqual(dst, strict) {
			t.Fatalf("%s: %q decodes to %s fast, %s strictly", typ, b, show(dst), show(strict))
		}
	}
}

// show formats a body with the values its pointer fields point to.
func show(v any) string {
	rv := reflect.ValueOf(v).Elem()
	parts := make([]string, 0, rv.NumField())
	for i := range rv.NumField() {
		val := "nil"
		if f := rv.Field(i); !f.IsNil() {
			val = fmt.Sprintf("%q", fmt.Sprint(f.Elem().Interface()))
		}
		parts = append(parts, rv.Type().Field(i).Name+"="+val)
	}
	return strings.Join(parts, " ")
}

var fastCorpus = []string{
	`{"sku":"book","qty":1}`,
	`{"qty":1,"sku":"book"}`,
	" \t\r\n{ \"sku\" : \"a.b:c-d_e\" ,\n\"qty\":\t1000000 } \n",
	`{}`,
	`{"qty":0}`,
	`{"qty":-0}`,
	`{"qty":-5}`,
	`{"qty":007}`,
	`{"qty":1.0}`,
	`{"qty":1e3}`,
	`{"qty":1E3}`,
	`{"qty":123456789012345678}`,
	`{"qty":1234567890123456789}`,
	`{"qty":99999999999999999999}`,
	`{"qty":-}`,
	`{"qty":"1"}`,
	`{"qty":null}`,
	`{"qty":true}`,
	`{"qty":[1]}`,
	`{"qty":{}}`,
	`{"qty":1,}`,
	`{"qty":1,"qty":2}`,
	`{"Qty":1}`,
	`{"QTY":1}`,
	`{"sku":"a\"b","qty":1}`,
	`{"sku":"a\u0062","qty":1}`,
	`{"sku":"é","qty":1}`,
	"{\"sku\":\"a\x01\",\"qty\":1}",
	"{\"sku\":\"a\x7f\",\"qty\":1}",
	`{"sku":"","qty":1}`,
	`{"sku":"<&>","qty":1}`,
	`{"sku":1,"qty":1}`,
	`{"sku":"a","qty":1,"extra":2}`,
	`{"sku":"a","qty":1}x`,
	`{"sku":"a","qty":1}{}`,
	`{"sku":"a","qty":1} []`,
	`{"sku":"a" "qty":1}`,
	`{"sku" "a"}`,
	`{"sku":"a"`,
	`{"sku":"a",`,
	`{"sku`,
	`{`,
	`[]`,
	`"x"`,
	`1`,
	`{"delta":-3,"reason":"count"}`,
	`{"delta":-3,"reason":null}`,
	`{"sku":"a","qty":2,"ttl_ms":60000}`,
	`{"ttl_ms":1000}`,
	`{"a":1,"b":2,"c":3,"d":4,"e":5}`,
	`{"sku":"a","qty":2,"ttl_ms":60000,"sku":"b"}`,
	"\ufeff{\"qty\":1}",
	"{\"qty\":1}\u00a0",
}

func TestDecodeFastAgreesWithStrictOnCorpus(t *testing.T) {
	for _, b := range fastCorpus {
		checkFastAgrees(t, []byte(b))
	}
	// The plain forms take the fast path.
	for _, b := range []string{`{"sku":"book","qty":1}`, ` { "qty" : -0 } `, `{}`} {
		if !decodeFast([]byte(b), &addItemBody{}) {
			t.Errorf("decodeFast refuses %q", b)
		}
	}
}

// TestDecodeFastAgreesWithStrict checks bodies put together from the
// pieces that tell the two decoders apart.
func TestDecodeFastAgreesWithStrict(t *testing.T) {
	keys := []string{`"sku"`, `"qty"`, `"delta"`, `"reason"`, `"ttl_ms"`, `"SKU"`, `"Qty"`, `"x"`, `"q\u0074y"`, `""`, `1`, `null`}
	values := []string{`"book"`, `""`, `"a\"b"`, `"\u00e9"`, `"é"`, "\"\x1f\"", `1`, `0`, `-0`, `-12`, `01`, `1.5`, `1e2`,
		`123456789012345678`, `1234567890123456789`, `-9223372036854775808`, `null`, `true`, `[]`, `{}`, `{"qty":1}`, `"`, `-`}
	spaces := []string{"", " ", "\t", "\n", "\r", "\u00a0", "x"}
	seps := []string{",", ":", "", ",,", "}", "{"}
	rapid.Check(t, func(t *rapid.T) {
		sp := func(label string) string { return rapid.SampledFrom(spaces).Draw(t, label) }
		var sb strings.Builder
		sb.WriteString(sp("lead"))
		if rapid.IntRange(0, 20).Draw(t, "open") > 0 {
			sb.WriteString("{")
		}
		n := rapid.IntRange(0, 5).Draw(t, "members")
		for i := range n {
			if i > 0 {
				if rapid.IntRange(0, 20).Draw(t, "plain") > 0 {
					sb.WriteString(",")
				} else {
					sb.WriteString(rapid.SampledFrom(seps).Draw(t, "sep"))
				}
			}
			sb.WriteString(sp("k0") + rapid.SampledFrom(keys).Draw(t, "key") + sp("k1"))
			if rapid.IntRange(0, 20).Draw(t, "colon") > 0 {
				sb.WriteString(":")
			}
			sb.WriteString(sp("v0") + rapid.SampledFrom(values).Draw(t, "value") + sp("v1"))
		}
		if rapid.IntRange(0, 20).Draw(t, "close") > 0 {
			sb.WriteString("}")
		}
		sb.WriteString(sp("trail"))
		checkFastAgrees(t, []byte(sb.String()))
	})
}

func FuzzDecodeFast(f *testing.F) {
	for _, b := range fastCorpus {
		f.Add([]byte(b))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > MaxBodyBytes {
			return
		}
		checkFastAgrees(t, b)
	})
}

// BenchmarkDecodeBody compares the two ways a body is decoded: a plain
// cart add through decodeFast, and the same add with an escaped
// character, which only the strict decoder (JSON v2) reads.
func BenchmarkDecodeBody(b *testing.B) {
	plain := []byte(`{"sku":"sku-1","qty":1}`)
	esc := []byte(`{"sku":"sku-\u0031","qty":1}`)
	b.Run("fast", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var d addItemBody
			if !decodeFast(plain, &d) {
				b.Fatal("not plain")
			}
		}
	})
	b.Run("strict", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var d addItemBody
			if err := decodeStrict(esc, &d); err != nil {
				b.Fatal(err)
			}
		}
	})
}
