package api

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	jsonv2 "github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"
	"github.com/labstack/echo/v4"

	"github.com/latticedb/lattice/crdt"
	"github.com/latticedb/lattice/region"
)

const idRule = "1–128 characters of [A-Za-z0-9._:-]"

// pathID returns the path parameter name, which must be a valid identifier
// (crdt.ValidID).
func pathID(c echo.Context, name string) (string, error) {
	v, ok := unescapedParam(c, name)
	if !ok || !crdt.ValidID(v) {
		return "", region.InvalidField(name, "path parameter %s must be %s", name, idRule)
	}
	return v, nil
}

// unescapedParam returns the path parameter name, unescaped; ok is false if
// it is malformed (a bad escape). echo matches the escaped path when the
// request's path has escapes (URL.RawPath), and its parameters are then
// escaped.
func unescapedParam(c echo.Context, name string) (v string, ok bool) {
	v = c.Param(name)
	if c.Request().URL.RawPath == "" {
		return v, true
	}
	u, err := url.PathUnescape(v)
	return u, err == nil
}

// checkQuery refuses every query parameter but the allowed ones, any
// parameter given more than once, and a query url.ParseQuery would not
// parse whole (a bad escape or a semicolon, pairs it would drop). It
// reads the raw query pair by pair and stops at the first fault, so a
// long query costs no more than its own bytes (url.Values would hold
// every pair of it first).
func checkQuery(c echo.Context, allowed ...string) error {
	raw := c.Request().URL.RawQuery
	var seen uint64 // bit i: allowed[i] given
	for raw != "" {
		var pair string
		pair, raw, _ = strings.Cut(raw, "&")
		if pair == "" {
			continue // "a&&b", a trailing "&": nothing, as for url.ParseQuery
		}
		rawName, rawValue, _ := strings.Cut(pair, "=")
		name, err := url.QueryUnescape(rawName)
		if err != nil || strings.Contains(pair, ";") {
			return region.InvalidField(queryField(rawName), "query parameter %q is malformed (percent-encode '%%' and ';')", truncate(pair, 64))
		}
		i := slices.Index(allowed, name)
		if i < 0 {
			return region.InvalidField(queryField(name), "unknown query parameter %q", truncate(name, 64))
		}
		if _, err := url.QueryUnescape(rawValue); err != nil {
			return region.InvalidField(name, "query parameter %s has a malformed value (percent-encode '%%')", name)
		}
		if i < 64 && seen&(1<<i) != 0 {
			return region.InvalidField(name, "query parameter %s given more than once", name)
		}
		seen |= 1 << i
	}
	return nil
}

// queryField names a query parameter in a problem's field: the empty
// name as "(empty)", a long one cut short.
func queryField(name string) string {
	if name == "" {
		return "(empty)"
	}
	return truncate(name, 64)
}

// truncate cuts s to at most n bytes, on a rune boundary, marking the cut.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}

// queryBool parses an optional query parameter that is exactly true or
// false.
func queryBool(c echo.Context, name string) (bool, error) {
	vals, ok := c.QueryParams()[name]
	if !ok {
		return false, nil
	}
	switch vals[0] {
	case "true":
		return true, nil
	case "false":
		return false, nil
	}
	return false, region.InvalidField(name, "query parameter %s must be true or false", name)
}

// parseWait reads Lattice-Wait: a decimal number of milliseconds
// 0..MaxWait, DefaultWait when absent.
func parseWait(hdr http.Header) (time.Duration, error) {
	vals, ok := hdr[HeaderWait]
	if !ok {
		return DefaultWait, nil
	}
	bad := region.InvalidField(HeaderWait, "%s must be one decimal number of milliseconds 0..%d", HeaderWait, MaxWait.Milliseconds())
	if len(vals) != 1 || vals[0] == "" || len(vals[0]) > 5 {
		return 0, bad
	}
	for i := 0; i < len(vals[0]); i++ {
		if vals[0][i] < '0' || vals[0][i] > '9' {
			return 0, bad
		}
	}
	ms, err := strconv.Atoi(vals[0])
	if err != nil || time.Duration(ms)*time.Millisecond > MaxWait {
		return 0, bad
	}
	return time.Duration(ms) * time.Millisecond, nil
}

// idempotencyKey reads the Idempotency-Key header: absent (""), or 1 to
// MaxIdempotencyKeyLen printable ASCII characters.
func idempotencyKey(hdr http.Header) (string, error) {
	vals, ok := hdr[HeaderIdempotencyKey]
	if !ok {
		return "", nil
	}
	bad := region.InvalidField(HeaderIdempotencyKey, "%s must be 1–%d printable ASCII characters", HeaderIdempotencyKey, MaxIdempotencyKeyLen)
	if len(vals) != 1 {
		return "", bad
	}
	k := vals[0]
	if k == "" || len(k) > MaxIdempotencyKeyLen {
		return "", bad
	}
	for i := 0; i < len(k); i++ {
		if k[i] < 0x20 || k[i] > 0x7e {
			return "", bad
		}
	}
	return k, nil
}

// noIdempotencyKey refuses an Idempotency-Key on a route that does not
// honour it, so that a client never believes a retry is safe when it is
// not.
func noIdempotencyKey(hdr http.Header) error {
	if _, ok := hdr[HeaderIdempotencyKey]; ok {
		return region.InvalidField(HeaderIdempotencyKey, "this route does not accept %s", HeaderIdempotencyKey)
	}
	return nil
}

// fingerprint identifies a request for idempotency: SHA-256 over the
// method, the route pattern, each path parameter's name and value, and
// the canonical JSON encoding of the decoded, defaulted body (its fields
// in a fixed order, no whitespace), each part prefixed by its length as a
// uvarint. Two requests that mean the same get the same fingerprint,
// whatever their key order, whitespace or omitted defaults.
func fingerprint(method, route string, params []string, body any) [32]byte {
	h := sha256.New()
	var n [binary.MaxVarintLen64]byte
	write := func(s []byte) {
		h.Write(n[:binary.PutUvarint(n[:], uint64(len(s)))])
		h.Write(s)
	}
	write([]byte(method))
	write([]byte(route))
	for _, p := range params {
		write([]byte(p))
	}
	canon, err := json.Marshal(body)
	if err != nil {
		panic("api: encoding a request body: " + err.Error()) // bodies are plain structs
	}
	write(canon)
	var sum [32]byte
	h.Sum(sum[:0])
	return sum
}

// idem validates the Idempotency-Key of c and fingerprints the request.
func idem(c echo.Context, params []string, body any) (region.Idem, error) {
	key, err := idempotencyKey(c.Request().Header)
	if err != nil {
		return region.Idem{}, err
	}
	return region.Idem{Key: key, Fingerprint: fingerprint(c.Request().Method, routeLabel(c.Path()), params, body)}, nil
}

// readBody appends the request body, at most MaxBodyBytes of it, to buf.
// With a Content-Length it makes room at once for the whole body, up to
// bodyPrealloc bytes (what a client declares is not what it sends: 64 KiB
// held per connection for a few bytes of headers); past that, and without
// one, readAll doubles buf as it fills, so that the buffers it allocates
// add up to at most about 4× the body.
func readBody(c echo.Context, buf []byte) ([]byte, error) {
	req := c.Request()
	if req.ContentLength > MaxBodyBytes {
		return buf, &http.MaxBytesError{Limit: MaxBodyBytes}
	}
	if req.ContentLength > 0 {
		// One byte more, for the read that finds the end.
		buf = grow(buf, min(int(req.ContentLength)+1, bodyPrealloc))
	}
	// The reader yields at most MaxBodyBytes+1 bytes: one over is an error.
	b, err := readAll(http.MaxBytesReader(c.Response().Writer, req.Body, MaxBodyBytes), buf, MaxBodyBytes+1)
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return b, err
		}
		return b, region.InvalidField("body", "reading the request body: %v", err)
	}
	return b, nil
}

// bodyPrealloc bounds the room readBody makes for a body before it
// arrives.
const bodyPrealloc = 4 << 10

// readAll is io.ReadAll appending to b, for a reader that yields at most
// limit bytes: whenever b is full it doubles its room (by 512 bytes at
// least) but grows no further than those limit bytes need.
func readAll(r io.Reader, b []byte, limit int) ([]byte, error) {
	start := len(b)
	for {
		if len(b) == cap(b) {
			n := max(cap(b), 512)
			if rest := start + limit - len(b); rest > 0 {
				n = min(n, rest)
			}
			b = grow(b, n)
		}
		n, err := r.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if err != nil {
			if err == io.EOF {
				err = nil
			}
			return b, err
		}
	}
}

// grow returns b with room for n more bytes: b itself if it has it, else
// a copy of exactly len(b)+n bytes of capacity.
func grow(b []byte, n int) []byte {
	if cap(b)-len(b) >= n {
		return b
	}
	nb := make([]byte, len(b), len(b)+n)
	copy(nb, b)
	return nb
}

// decodeBody reads the body into dst, a pointer to a struct of pointer
// fields, strictly: exactly one JSON object, no repeated keys, no key that
// is not exactly (case included) one of dst's JSON names, every value of
// its field's type. An empty body is an error unless optional is set, in
// which case dst is left as it is.
func decodeBody(c echo.Context, dst any, optional bool) error {
	bp := getBuffer()
	b, err := readBody(c, *bp)
	defer putBuffer(bp, b) // decoding keeps no reference to b
	if err != nil {
		return err
	}
	if skipSpace(b, 0) == len(b) { // JSON's white space only
		if optional {
			return nil
		}
		return region.InvalidField("body", "the request body must be a JSON object; it is empty")
	}
	// Before anything decodes b, a scan that allocates nothing refuses a
	// body whose decoding could cost more than a small multiple of its
	// size.
	if err := checkLimits(b); err != nil {
		return err
	}
	if fb, ok := dst.(fastBody); ok && decodeFast(b, fb) {
		return nil
	}
	return decodeStrict(b, dst)
}

// decodeStrict decodes the non-empty body b, which checkLimits has
// passed, into dst as decodeBody describes, and words the error of a body
// it refuses. No error repeats more than maxEcho bytes of the body.
//
// It is JSON v2 (github.com/go-json-experiment/json, the code behind Go's
// encoding/json/v2), which refuses unknown and repeated names itself,
// names case-sensitively and invalid UTF-8: one decoder checks the
// structure and the types, where a scan of the body's structure used to
// run before encoding/json (7× slower than this together). The plain
// bodies clients send take decodeFast first, which is 4× faster again
// (body_test.go, BenchmarkDecodeBody).
func decodeStrict(b []byte, dst any) error {
	if i := skipSpace(b, 0); i == len(b) || b[i] != '{' {
		return region.InvalidField("body", "the request body must be a JSON object")
	}
	if err := jsonv2.Unmarshal(b, dst, jsonv2.RejectUnknownMembers(true)); err != nil {
		// An error after a whole first value is what follows it.
		var se *jsontext.SyntacticError
		if errors.As(err, &se) && se.ByteOffset > 0 && se.ByteOffset < int64(len(b)) && jsontext.Value(b[:se.ByteOffset]).IsValid() {
			return region.InvalidField("body", "the request body must hold exactly one JSON value")
		}
		return decodeError(err)
	}
	return nil
}

// noBody accepts an empty body, or an empty JSON object, for a route that
// takes none.
func noBody(c echo.Context) error {
	var none struct{}
	return decodeBody(c, &none, true)
}

// checkLimits refuses a body that nests deeper than MaxBodyDepth, holds
// more than MaxBodyTokens names and values, or holds a name, string,
// number or literal longer than MaxBodyTokenBytes. It allocates nothing
// unless it refuses b.
func checkLimits(b []byte) error {
	depth, tokens, longest := bodyShape(b)
	switch {
	case depth > MaxBodyDepth:
		return region.InvalidField("body", "the request body nests deeper than %d levels of objects and arrays", MaxBodyDepth)
	case tokens > MaxBodyTokens:
		return region.InvalidField("body", "the request body holds more than %d names and values", MaxBodyTokens)
	case longest > MaxBodyTokenBytes:
		return region.InvalidField("body", "the request body holds a name or value longer than %d bytes", MaxBodyTokenBytes)
	}
	return nil
}

// bodyShape measures the JSON text b without decoding it: how deeply its
// objects and arrays nest, how many names and values it holds (an object
// or array counting as one value besides what it holds), and the bytes of
// its longest name, string, number or literal as written (a string's
// without its quotes). Outside strings, which it skips (escaped quotes
// included), '{' and '[' open a level and '}' and ']' close one, and every
// run of bytes other than those, '"', ',', ':' and white space is one
// value. On valid JSON the measures are exact; on any other they are
// exact up to the first error, where the decoder stops.
func bodyShape(b []byte) (maxDepth, tokens, longest int) {
	var (
		depth    int
		n        int // bytes so far of the string or scalar being read; 0 between tokens
		inString bool
		escaped  bool
	)
	for _, c := range b {
		if inString {
			switch {
			case escaped:
				escaped = false
			case c == '\\':
				escaped = true
			case c == '"':
				inString, n = false, 0
				continue
			}
			n++
			longest = max(longest, n)
			continue
		}
		switch c {
		case '"':
			inString, n = true, 0
			tokens++
		case '{', '[':
			depth++
			maxDepth = max(maxDepth, depth)
			tokens++
			n = 0
		case '}', ']':
			depth--
			n = 0
		case ',', ':', ' ', '\t', '\n', '\r':
			n = 0
		default:
			if n == 0 {
				tokens++
			}
			n++
			longest = max(longest, n)
		}
	}
	return maxDepth, tokens, longest
}

// maxEcho bounds the bytes of a name or value of the body that an error
// repeats, so that the problem refusing a body stays small.
const maxEcho = 64

// clip returns s, or if it is longer than maxEcho bytes, its first
// maxEcho bytes at most (whole UTF-8 sequences) followed by "…".
func clip(s string) string {
	if len(s) <= maxEcho {
		return s
	}
	i := maxEcho
	for i > 0 && !utf8.RuneStart(s[i]) {
		i--
	}
	return s[:i] + "…"
}

// decodeError words a JSON v2 error as an invalid_request naming the
// field.
func decodeError(err error) error {
	var se *jsontext.SyntacticError
	if errors.As(err, &se) {
		field := pointerPath(se.JSONPointer)
		switch {
		case errors.Is(se.Err, jsontext.ErrDuplicateName):
			field = clip(field)
			return region.InvalidField(field, "%s is given more than once", field)
		case errors.Is(se.Err, io.ErrUnexpectedEOF):
			return region.InvalidField("body", "malformed JSON in the request body: it ends early")
		}
		return region.InvalidField("body", "malformed JSON in the request body at byte %d: %v", se.ByteOffset, se.Err)
	}
	var sem *jsonv2.SemanticError
	if errors.As(err, &sem) {
		field := clip(pointerPath(sem.JSONPointer))
		switch {
		case errors.Is(sem.Err, jsonv2.ErrUnknownName):
			if field == "" {
				return region.InvalidField("(empty)", "unknown field \"\"")
			}
			return region.InvalidField(field, "unknown field %q", field)
		case field == "":
			return region.InvalidField("body", "the request body must be a JSON object")
		case sem.GoType != nil:
			return region.InvalidField(field, "%s must be %s, not %s", field, describeType(sem.GoType), clip(describeValue(sem)))
		}
	}
	return region.InvalidField("body", "malformed JSON in the request body: %v", err)
}

// pointerPath turns a JSON pointer (RFC 6901) into the dotted path errors
// name a field by: "/a/b" is a.b.
func pointerPath(p jsontext.Pointer) string {
	path := ""
	for _, tok := range strings.Split(string(p), "/")[1:] {
		tok = strings.ReplaceAll(strings.ReplaceAll(tok, "~1", "/"), "~0", "~")
		path = joinPath(path, tok)
	}
	return path
}

// describeValue says what kind of JSON value a type error found: the
// kind, and for a number that does not fit, the number.
func describeValue(sem *jsonv2.SemanticError) string {
	switch sem.JSONKind {
	case '"':
		return "string"
	case '0':
		if sem.Err != nil && len(sem.JSONValue) > 0 {
			return "number " + string(sem.JSONValue)
		}
		return "number"
	case 't', 'f':
		return "bool"
	case '[':
		return "array"
	case '{':
		return "object"
	case 'n':
		return "null"
	}
	return "a value of another kind"
}

func describeType(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return "an integer"
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "a boolean"
	}
	return "a " + t.Kind().String()
}

func joinPath(parent, key string) string {
	if parent == "" {
		return key
	}
	return parent + "." + key
}

// The checks below each return an invalid_request naming field.

func requireID(field string, v *string) (string, error) {
	if v == nil {
		return "", region.InvalidField(field, "%s is required", field)
	}
	if !crdt.ValidID(*v) {
		return "", region.InvalidField(field, "%s must be %s", field, idRule)
	}
	return *v, nil
}

func requireInt(field string, v *int64, lo, hi int64) (int64, error) {
	if v == nil {
		return 0, region.InvalidField(field, "%s is required", field)
	}
	return intInRange(field, *v, lo, hi)
}

func intInRange(field string, v, lo, hi int64) (int64, error) {
	if v < lo || v > hi {
		return 0, region.InvalidField(field, "%s must be an integer in %d..%d, not %d", field, lo, hi, v)
	}
	return v, nil
}

// optionalTTL returns ttl_ms as a duration: DefaultTTL when nil, else
// MinTTL..MaxTTL.
func optionalTTL(v *int64) (time.Duration, error) {
	if v == nil {
		return DefaultTTL, nil
	}
	ms, err := intInRange("ttl_ms", *v, MinTTL.Milliseconds(), MaxTTL.Milliseconds())
	return time.Duration(ms) * time.Millisecond, err
}

func checkDelta(v *int64) (int64, error) {
	if v == nil {
		return 0, region.InvalidField("delta", "delta is required")
	}
	if *v == 0 || *v < -MaxAdjust || *v > MaxAdjust {
		return 0, region.InvalidField("delta", "delta must be a nonzero integer in %d..%d, not %d", -MaxAdjust, MaxAdjust, *v)
	}
	return *v, nil
}

func checkReason(v *string) (string, error) {
	if v == nil {
		return "", nil
	}
	if n := utf8.RuneCountInString(*v); n > MaxReasonLen {
		return "", region.InvalidField("reason", "reason must be at most %d characters, not %d", MaxReasonLen, n)
	}
	for _, r := range *v {
		if r < 0x20 || r == 0x7f {
			return "", region.InvalidField("reason", "reason must not hold control characters")
		}
	}
	return *v, nil
}
