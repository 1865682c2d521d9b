package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"
	"unicode/utf16"

	"pgregory.net/rapid"

	"github.com/latticedb/lattice/region"
)

// servingCost serves a request runs times, the requests built beforehand
// so that building them is not counted, and returns the bytes and the
// allocations serving one costs on average (each measured after a
// warm-up, with GOMAXPROCS 1, as testing.AllocsPerRun measures), and the
// last response. A chunked request has no Content-Length.
func servingCost(t *testing.T, h http.Handler, r req, chunked bool) (bytes uint64, allocs float64, w *httptest.ResponseRecorder) {
	t.Helper()
	const runs = 10
	n := 2 * (runs + 1)
	reqs := make([]*http.Request, n)
	recs := make([]*httptest.ResponseRecorder, n)
	for i := range reqs {
		reqs[i] = httptest.NewRequest(r.method, r.path, strings.NewReader(r.body))
		if chunked {
			reqs[i].ContentLength = -1
		}
		recs[i] = httptest.NewRecorder()
	}
	i := 0
	serve := func() {
		h.ServeHTTP(recs[i], reqs[i])
		i++
	}
	allocs = testing.AllocsPerRun(runs, serve)

	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	serve()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range runs {
		serve()
	}
	runtime.ReadMemStats(&after)
	return (after.TotalAlloc - before.TotalAlloc) / runs, allocs, recs[n-1]
}

// The detail of each problem refusing a body over a limit.
var (
	nestsDeeper = fmt.Sprintf("request body nests deeper than %d levels", MaxBodyDepth)
	tooMany     = fmt.Sprintf("request body holds more than %d names and values", MaxBodyTokens)
	tooLong     = fmt.Sprintf("request body holds a name or value longer than %d bytes", MaxBodyTokenBytes)
)

// nest returns body nested depth-1 levels deep in objects {"a":…}.
func nest(depth int, body string) string {
	return strings.Repeat(`{"a":`, depth-1) + body + strings.Repeat("}", depth-1)
}

// array returns a JSON array of n copies of v.
func array(v string, n int) string {
	if n == 0 {
		return "[]"
	}
	return "[" + strings.Repeat(v+",", n-1) + v + "]"
}

// members returns n members "0":v, "1":v, … (without braces).
func members(n int, v string) string {
	parts := make([]string, n)
	for i := range parts {
		parts[i] = fmt.Sprintf("%q:%s", fmt.Sprint(i), v)
	}
	return strings.Join(parts, ",")
}

// escaped returns a JSON string body of n bytes as written, every
// character escaped as \u0000.
func escaped(n int) string { return strings.Repeat(`\u0000`, n/6) + strings.Repeat("x", n%6) }

// TestAdversarialBodies serves bodies built to make decoding expensive
// (the 9,000-deep body of the report first) and checks that each is
// refused with 400 invalid_request naming what was wrong, without
// reaching the service, and that serving one allocates at most 8× its
// size. 8× leaves room over what serving such a body must cost: the body
// itself, once (up to about 4× when it comes without a Content-Length,
// in doubling buffers), and the small fixed cost of any request. Before
// the limits, the 54,001-byte 9,000-deep body cost 90 MB (1,671×, 90,087
// allocations): a scan of the body's structure (since replaced by JSON v2)
// kept a map and the joined path of every level
// of nesting, 81 MB of paths for 9,000 levels. The others cost up to 163×.
func TestAdversarialBodies(t *testing.T) {
	const items = "/v1/carts/c1/items"
	cases := []struct {
		name, path, body string
		chunked          bool
		detail           string
	}{
		{"objects 9000 deep", items, nest(9001, "1"), false, nestsDeeper},
		{"objects 9000 deep, chunked", items, nest(9001, "1"), true, nestsDeeper},
		{"objects 9000 deep, empty object", "/v1/reservations/r1/commit", nest(9000, "{}"), false, nestsDeeper},
		{"arrays 30000 deep", items, `{"sku":` + strings.Repeat("[", 30000) + strings.Repeat("]", 30000) + `}`, false, nestsDeeper},
		{"arrays 60000 deep, unclosed", items, `{"sku":` + strings.Repeat("[", 60000), false, nestsDeeper},
		{"mixed 16000 deep", "/v1/inventory/a/adjust", strings.Repeat(`[{"a":`, 8000) + "1" + strings.Repeat("}]", 8000), false, nestsDeeper},
		{"many keys", items, "{" + members(6000, "1") + "}", false, tooMany},
		{"many keys, nested", items, `{"sku":{` + members(6000, "1") + `},"qty":1}`, false, tooMany},
		{"many repeated keys", items, `{"sku":"a",` + strings.Repeat(`"qty":1,`, 7000) + `"qty":1}`, false, tooMany},
		{"many values", "/v1/carts/c1/checkout", `{"ttl_ms":` + array("0", 30000) + `}`, false, tooMany},
		{"many empty objects", items, `{"sku":` + array("{}", 20000) + `}`, false, tooMany},
		{"long key", items, `{"` + strings.Repeat("<", 60000) + `":1}`, false, tooLong},
		{"long escaped key", items, `{"` + escaped(60000) + `":1}`, false, tooLong},
		{"long string", items, `{"sku":"` + strings.Repeat("a", 60000) + `","qty":1}`, false, tooLong},
		{"long escaped string", "/v1/inventory/a/adjust", `{"delta":1,"reason":"` + escaped(60000) + `"}`, false, tooLong},
		{"huge number", items, `{"sku":"a","qty":` + strings.Repeat("9", 60000) + `}`, false, tooLong},
		{"huge fraction", "/v1/reservations", `{"sku":"a","qty":1,"ttl_ms":1.` + strings.Repeat("0", 60000) + `}`, false, tooLong},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e, f := newTestAPI(t)
			method := http.MethodPost
			bytes, allocs, w := servingCost(t, e, req{method: method, path: tc.path, body: tc.body}, tc.chunked)
			m := assertProblem(t, w, http.StatusBadRequest, region.CodeInvalidRequest, "body")
			if d, _ := m["detail"].(string); !strings.Contains(d, tc.detail) {
				t.Errorf("detail %q, want it to say %q", d, tc.detail)
			}
			if calls := f.Calls(); len(calls) != 0 {
				t.Errorf("a refused request reached the service: %d calls", len(calls))
			}
			ratio := float64(bytes) / float64(len(tc.body))
			t.Logf("%d-byte body: %d bytes, %.0f allocations a request (%.1f× the body)", len(tc.body), bytes, allocs, ratio)
			if ratio > 8 {
				t.Errorf("serving a %d-byte body allocates %d bytes, %.1f× its size; want at most 8×", len(tc.body), bytes, ratio)
			}
			if allocs > 100 {
				t.Errorf("serving it takes %.0f allocations; want at most 100", allocs)
			}
		})
	}
}

// TestBodiesAtTheLimits serves the bodies within the limits that cost the
// most to decode, and checks that each is refused or accepted for what it
// holds, not for its size, and at a bounded cost: at most 8× its size
// plus a fixed 32 KiB. The fixed part is what a body can cost whatever its
// size: encoding/json allocates about 130 bytes for each of up to
// MaxBodyTokens names and values, and its buffer and its copies of one
// value of up to MaxBodyTokenBytes come to about 8× that.
func TestBodiesAtTheLimits(t *testing.T) {
	const items = "/v1/carts/c1/items"
	const adjust = "/v1/inventory/a/adjust"
	// A reason of MaxReasonLen astral characters, each escaped as a
	// surrogate pair: the longest string any body needs.
	var longest strings.Builder
	for range MaxReasonLen {
		r1, r2 := utf16.EncodeRune('😀')
		fmt.Fprintf(&longest, `\u%04x\u%04x`, r1, r2)
	}
	digits := strings.Repeat("9", MaxBodyTokenBytes)
	str := `"` + escaped(MaxBodyTokenBytes) + `"`
	names := make([]string, 14)
	for i := range names {
		names[i] = `"` + escaped(MaxBodyTokenBytes-1) + string(rune('a'+i)) + `":0`
	}
	keys := strings.Join(names, ",")
	cases := []struct {
		name, path, body string
		status           int
		field            string // of the problem, if status is not 200
	}{
		{"objects 32 deep", items, nest(MaxBodyDepth, "{}"), 400, "a"},
		{"arrays 32 deep", items, `{"sku":` + strings.Repeat("[", MaxBodyDepth-1) + strings.Repeat("]", MaxBodyDepth-1) + `,"qty":1}`, 400, "sku"},
		// The unknown outer name is refused before the decoder reaches the
		// repeated one (TestDecodeStrict names deep repeats).
		{"repeated key 32 deep", items, nest(MaxBodyDepth, `{"b":1,"b":2}`), 400, "a"},
		{"128 numbers", items, `{"sku":` + array("0", MaxBodyTokens-3) + `}`, 400, "sku"},
		{"128 strings", items, `{"sku":` + array(`""`, MaxBodyTokens-3) + `}`, 400, "sku"},
		{"128 keys", items, `{"sku":{` + members((MaxBodyTokens-3)/2, "0") + `}}`, 400, "sku"},
		{"long escaped strings", items, `{"qty":1,"sku":` + array(str, 14) + `}`, 400, "sku"},
		{"long escaped keys", items, `{"sku":{` + keys + `}}`, 400, "sku"},
		{"long escaped sku", items, `{"sku":` + str + `,"qty":1}`, 400, "sku"},
		{"long numbers", items, `{"sku":"a","qty":` + array(digits, 14) + `}`, 400, "qty"},
		{"long number", items, `{"sku":"a","qty":` + digits + `}`, 400, "qty"},
		{"long unknown key", items, `{"` + strings.Repeat("<", MaxBodyTokenBytes) + `":1}`, 400, strings.Repeat("<", maxEcho) + "…"},
		{"longest valid reason", adjust, `{"delta":1,"reason":"` + longest.String() + `"}`, 200, ""},
		{"valid, strict path", items, `{"sku":"\u0061","qty":1}`, 200, ""},
		{"valid, fast path", items, `{"sku":"a","qty":1}`, 200, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if err := checkLimits([]byte(tc.body)); err != nil {
				t.Fatalf("the body is over the limits: %v", err)
			}
			e, f := newTestAPI(t)
			bytes, allocs, w := servingCost(t, e, req{method: http.MethodPost, path: tc.path, body: tc.body}, false)
			if tc.status == http.StatusOK {
				if w.Code != http.StatusOK || len(f.Calls()) == 0 {
					t.Fatalf("status %d, %d calls: %s", w.Code, len(f.Calls()), w.Body)
				}
			} else {
				assertProblem(t, w, tc.status, region.CodeInvalidRequest, tc.field)
			}
			budget := 8*uint64(len(tc.body)) + 32<<10
			t.Logf("%d-byte body: %d bytes, %.0f allocations a request; budget %d", len(tc.body), bytes, allocs, budget)
			if bytes > budget {
				t.Errorf("serving a %d-byte body allocates %d bytes; want at most %d (8× + 32 KiB)", len(tc.body), bytes, budget)
			}
		})
	}
}

// TestLimitsKeepStringsApart checks that brackets, braces and quotes in
// strings, escaped or not, count for nothing, through the handler.
func TestLimitsKeepStringsApart(t *testing.T) {
	deep := strings.Repeat("[{", 100)
	for _, reason := range []string{
		deep,
		`\"` + deep + `\"`,
		`\\` + deep,
		`\\\"` + deep + `\\\\`,
		`\u0022` + deep,
		strings.Repeat(`\"`, 120),
	} {
		e, f := newTestAPI(t)
		body := `{"delta":1,"reason":"` + reason + `"}`
		w := req{method: "POST", path: "/v1/inventory/a/adjust", body: body}.do(t, e)
		if w.Code != http.StatusOK {
			t.Fatalf("%s: %d %s", body, w.Code, w.Body)
		}
		var want string
		if err := json.Unmarshal([]byte(`"`+reason+`"`), &want); err != nil {
			t.Fatal(err)
		}
		if calls := f.Calls(); len(calls) != 1 || calls[0].Args[2] != want {
			t.Errorf("%s: calls %+v, want reason %q", body, calls, want)
		}
	}
}

// nested is a body type that nests: decodeStrict is not bound to the flat
// bodies of the handlers.
type nested struct {
	A *nested `json:"a"`
	V *int64  `json:"v"`
}

func (n *nested) depth() int {
	if n == nil {
		return 0
	}
	return 1 + n.A.depth()
}

// TestDepthLimitInDecoding checks, on a body type that nests, that a body
// MaxBodyDepth deep decodes and one level more is refused.
func TestDepthLimitInDecoding(t *testing.T) {
	for depth := MaxBodyDepth - 1; depth <= MaxBodyDepth+1; depth++ {
		b := []byte(nest(depth, `{"v":7}`))
		err := checkLimits(b)
		if depth > MaxBodyDepth {
			var re *region.Error
			if !errors.As(err, &re) || re.Code != region.CodeInvalidRequest || re.Field != "body" || !strings.Contains(re.Detail, nestsDeeper) {
				t.Errorf("depth %d: %v", depth, err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("depth %d: %v", depth, err)
		}
		var n nested
		if err := decodeStrict(b, &n); err != nil {
			t.Fatalf("depth %d: %v", depth, err)
		}
		if n.depth() != depth {
			t.Errorf("depth %d decoded %d deep", depth, n.depth())
		}
	}
}

func TestBodyShape(t *testing.T) {
	for _, tc := range []struct {
		in                     string
		depth, tokens, longest int
	}{
		{``, 0, 0, 0},
		{`{}`, 1, 1, 0},
		{` { } `, 1, 1, 0},
		{`{"sku":"book","qty":12}`, 1, 5, 4},
		{`{"a":[1,[true,{"b":null}]],"cc":-1.5e+3}`, 4, 11, 7},
		{`"[[[{{{"`, 0, 1, 6},
		{`["\"[[[\"", "\\", "\\\"]"]`, 1, 4, 7},
		{`{"\\":[]}`, 2, 3, 2},
		{`{"\u0022[":{}}`, 2, 3, 7},
		{"[\"a\"\t,\r\n\"b\"]", 1, 3, 1},
		{`[[[[`, 4, 4, 0},
		{`]]]][[`, 0, 2, 0}, // malformed: the decoder stops at the first ]
		{`["abc`, 1, 2, 3},  // an unterminated string runs to the end
		{`[1"a"2]`, 1, 4, 1},
		{`[tru e]`, 1, 3, 3},
	} {
		depth, tokens, longest := bodyShape([]byte(tc.in))
		if depth != tc.depth || tokens != tc.tokens || longest != tc.longest {
			t.Errorf("bodyShape(%s) = %d, %d, %d; want %d, %d, %d", tc.in, depth, tokens, longest, tc.depth, tc.tokens, tc.longest)
		}
	}
}

// jsonValue draws a JSON value: a tree of objects and arrays whose names
// and strings are arbitrary Unicode, so that they hold quotes, backslashes,
// brackets and characters encoding/json escapes.
func jsonValue(t *rapid.T, depth int) any {
	kinds := 5
	if depth >= 6 {
		kinds = 3
	}
	str := rapid.OneOf(rapid.String(), rapid.SampledFrom([]string{`"`, `\`, `\"`, `[`, `{"a":1}`, `]}`, "<&>", "\x00\u2028"}))
	switch rapid.IntRange(0, kinds-1).Draw(t, "kind") {
	case 0:
		return str.Draw(t, "string")
	case 1:
		return rapid.OneOf(rapid.Float64Range(-1e300, 1e300).AsAny(), rapid.Int64().AsAny(), rapid.SampledFrom([]any{true, false, nil})).Draw(t, "scalar")
	case 2:
		return json.RawMessage(rapid.SampledFrom([]string{"-0", "1e-7", "1E+10", "0.5", "12345678901234567890123"}).Draw(t, "number"))
	case 3:
		m := map[string]any{}
		for range rapid.IntRange(0, 4).Draw(t, "members") {
			m[str.Draw(t, "name")] = jsonValue(t, depth+1)
		}
		return m
	default:
		a := []any{}
		for range rapid.IntRange(0, 4).Draw(t, "elements") {
			a = append(a, jsonValue(t, depth+1))
		}
		return a
	}
}

// shapeOf measures the value v as encoding/json writes it, as bodyShape
// should.
func shapeOf(t *rapid.T, v any) (depth, tokens, longest int) {
	written := func(v any) int {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := v.(string); ok {
			return len(b) - 2
		}
		return len(b)
	}
	switch v := v.(type) {
	case map[string]any:
		depth, tokens = 1, 1
		for k, x := range v {
			d, n, l := shapeOf(t, x)
			depth = max(depth, 1+d)
			tokens += 1 + n
			longest = max(longest, written(k), l)
		}
		return depth, tokens, longest
	case []any:
		depth, tokens = 1, 1
		for _, x := range v {
			d, n, l := shapeOf(t, x)
			depth = max(depth, 1+d)
			tokens += n
			longest = max(longest, l)
		}
		return depth, tokens, longest
	}
	return 0, 1, written(v)
}

// TestBodyShapeMatchesEncodingJSON checks bodyShape against the value
// encoding/json wrote, compact and indented.
func TestBodyShapeMatchesEncodingJSON(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		v := jsonValue(t, 0)
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		if rapid.Bool().Draw(t, "indent") {
			if b, err = json.MarshalIndent(v, " ", "\t \r\n"); err != nil {
				t.Fatal(err)
			}
		}
		depth, tokens, longest := shapeOf(t, v)
		gd, gt, gl := bodyShape(b)
		if gd != depth || gt != tokens || gl != longest {
			t.Fatalf("bodyShape(%s) = %d, %d, %d; want %d, %d, %d", b, gd, gt, gl, depth, tokens, longest)
		}
	})
}

// TestCheckLimitsBoundaries checks each limit at its value and one over.
func TestCheckLimitsBoundaries(t *testing.T) {
	long := strings.Repeat("x", MaxBodyTokenBytes)
	for _, tc := range []struct {
		name, ok, over, detail string
	}{
		{"depth", nest(MaxBodyDepth, "{}"), nest(MaxBodyDepth+1, "{}"), nestsDeeper},
		{"array depth", strings.Repeat("[", MaxBodyDepth), strings.Repeat("[", MaxBodyDepth+1), nestsDeeper},
		{"tokens", array("1", MaxBodyTokens-1), array("1", MaxBodyTokens), tooMany},
		{"string", `["` + long + `"]`, `["` + long + `x"]`, tooLong},
		{"escaped string", `["` + escaped(MaxBodyTokenBytes) + `"]`, `["` + escaped(MaxBodyTokenBytes) + `\n"]`, tooLong},
		{"name", `{"` + long + `":1}`, `{"` + long + `x":1}`, tooLong},
		{"number", `[` + strings.Repeat("1", MaxBodyTokenBytes) + `]`, `[` + strings.Repeat("1", MaxBodyTokenBytes+1) + `]`, tooLong},
	} {
		if err := checkLimits([]byte(tc.ok)); err != nil {
			t.Errorf("%s at the limit: %v", tc.name, err)
		}
		err := checkLimits([]byte(tc.over))
		var re *region.Error
		if !errors.As(err, &re) || re.Code != region.CodeInvalidRequest || re.Field != "body" || !strings.Contains(re.Detail, tc.detail) {
			t.Errorf("%s over the limit: %v, want invalid_request on body saying %q", tc.name, err, tc.detail)
		}
	}
}

// TestCheckLimitsAllocatesNothing checks that the scan that guards the
// decoder allocates nothing for a body it passes, however large.
func TestCheckLimitsAllocatesNothing(t *testing.T) {
	for _, body := range []string{
		`{"sku":"a","qty":1}`,
		nest(MaxBodyDepth, `{"b":"\"[{\\"}`),
		`{"a":` + array(`"`+escaped(MaxBodyTokenBytes)+`"`, 15) + `}`,
		`{"sku":"a","qty":1}` + strings.Repeat(" ", MaxBodyBytes-19),
	} {
		b := []byte(body)
		if allocs := testing.AllocsPerRun(20, func() {
			if checkLimits(b) != nil {
				t.Fatal("refused")
			}
		}); allocs != 0 {
			t.Errorf("checkLimits of a %d-byte body: %.0f allocations", len(b), allocs)
		}
	}
}

// TestErrorsClipWhatTheyRepeat checks that a problem repeats at most
// maxEcho bytes of a name or value of the body.
func TestErrorsClipWhatTheyRepeat(t *testing.T) {
	long := strings.Repeat("é", 100) // 200 bytes: the clip falls inside none
	clipped := strings.Repeat("é", maxEcho/2) + "…"
	for _, tc := range []struct{ body, field, detail string }{
		{`{"` + long + `":1}`, clipped, `unknown field "` + clipped + `"`},
		{`{"sku":"a","qty":1,"` + long + `":1,"` + long + `":2}`, clipped, `unknown field "` + clipped + `"`},
		{`{"sku":"a","sku":"b","qty":1}`, "sku", "sku is given more than once"},
		{`{"sku":"a","qty":1` + strings.Repeat("0", 100) + `}`, "qty", "qty must be an integer, not number 1" + strings.Repeat("0", maxEcho-len("number 1")) + "…"},
	} {
		e, _ := newTestAPI(t)
		w := req{method: "POST", path: "/v1/carts/c1/items", body: tc.body}.do(t, e)
		m := assertProblem(t, w, http.StatusBadRequest, region.CodeInvalidRequest, tc.field)
		if m["detail"] != tc.detail {
			t.Errorf("detail %q, want %q", m["detail"], tc.detail)
		}
	}
	if got := clip("a" + strings.Repeat("é", 40)); got != "a"+strings.Repeat("é", 31)+"…" {
		t.Errorf("clip cut inside a character: %q", got)
	}
}
