package api

import (
	"bytes"
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

	"github.com/labstack/echo/v4"

	"github.com/latticedb/lattice/crdt"
	"github.com/latticedb/lattice/region"
)

const idRule = "1–128 characters of [A-Za-z0-9._:-]"

// pathID returns the path parameter name, which must be a valid identifier
// (crdt.ValidID).
func pathID(c echo.Context, name string) (string, error) {
	v := c.Param(name)
	if c.Request().URL.RawPath != "" {
		// echo matched the escaped path, so its parameters are escaped.
		u, err := url.PathUnescape(v)
		if err != nil {
			return "", region.InvalidField(name, "path parameter %s must be %s", name, idRule)
		}
		v = u
	}
	if !crdt.ValidID(v) {
		return "", region.InvalidField(name, "path parameter %s must be %s", name, idRule)
	}
	return v, nil
}

// checkQuery refuses every query parameter but the allowed ones, and any
// parameter given more than once.
func checkQuery(c echo.Context, allowed ...string) error {
	if c.Request().URL.RawQuery == "" {
		return nil // no parameter: nothing to parse
	}
	for name, vals := range c.QueryParams() {
		ok := false
		for _, a := range allowed {
			ok = ok || name == a
		}
		if !ok {
			return region.InvalidField(name, "unknown query parameter %q", name)
		}
		if len(vals) != 1 {
			return region.InvalidField(name, "query parameter %s given %d times", name, len(vals))
		}
	}
	return nil
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
// With a Content-Length it makes room for the whole body at once; without
// one, readAll doubles buf as it fills, so that the buffers it allocates
// add up to at most about 4× the body.
func readBody(c echo.Context, buf []byte) ([]byte, error) {
	req := c.Request()
	if req.ContentLength > MaxBodyBytes {
		return buf, &http.MaxBytesError{Limit: MaxBodyBytes}
	}
	if req.ContentLength > 0 {
		// One byte more, for the read that finds the end.
		buf = grow(buf, int(req.ContentLength)+1)
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
	if len(bytes.TrimSpace(b)) == 0 {
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
func decodeStrict(b []byte, dst any) error {
	keys, err := scanObject(b)
	if err != nil {
		return err
	}
	names := jsonNames(dst)
	for _, k := range keys {
		if !names[k] {
			k = clip(k)
			return region.InvalidField(k, "unknown field %q", k)
		}
	}
	// The scan has checked the structure, that b holds exactly one value
	// and every key of the object; encoding/json checks the types. (It
	// decodes b where it is: a json.Decoder would copy it first.)
	if err := json.Unmarshal(b, dst); err != nil {
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

// scanObject checks that b holds exactly one JSON value, that it is an
// object, and that no object in it repeats a key; it returns the keys of
// the outer object. b must have passed checkLimits: the decoder allocates
// for every token, and scanObject keeps a frame for every open level.
func scanObject(b []byte) ([]string, error) {
	// The names of the members of every open object are in keys,
	// outermost first; the path to a member is only joined for an error.
	var (
		frames  [MaxBodyDepth]scanFrame
		stack   = frames[:0]
		keys    []string
		top     []string
		lastKey string
	)
	path := func(name string) string {
		p := ""
		for _, f := range stack {
			if f.named {
				p = joinPath(p, f.name)
			}
		}
		return joinPath(p, name)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	for first := true; first || len(stack) > 0; first = false {
		tok, err := dec.Token()
		if err != nil {
			return nil, syntaxError(err)
		}
		if first && tok != json.Delim('{') {
			return nil, region.InvalidField("body", "the request body must be a JSON object")
		}
		var cur *scanFrame
		if n := len(stack); n > 0 {
			cur = &stack[n-1]
		}
		switch t := tok.(type) {
		case json.Delim:
			switch t {
			case '{', '[':
				named := cur != nil && cur.object
				f := scanFrame{object: t == '{', wantKey: true, named: named, keys: len(keys)}
				if named {
					f.name = lastKey
				}
				stack = append(stack, f)
			case '}', ']':
				keys = keys[:cur.keys]
				stack = stack[:len(stack)-1]
				valueDone(stack)
			}
		case string:
			if cur != nil && cur.object && cur.wantKey {
				if slices.Contains(keys[cur.keys:], t) {
					key := clip(path(t))
					return nil, region.InvalidField(key, "%s is given more than once", key)
				}
				keys = append(keys, t)
				cur.wantKey = false
				lastKey = t
				if len(stack) == 1 {
					top = append(top, t)
				}
				continue
			}
			valueDone(stack)
		default:
			valueDone(stack)
		}
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, region.InvalidField("body", "the request body must hold exactly one JSON value")
	}
	return top, nil
}

// scanFrame is an object or array that scanObject is reading.
type scanFrame struct {
	object  bool
	wantKey bool
	named   bool   // it is the value of an object member,
	name    string // of this name
	keys    int    // where the names of its members start in scanObject's keys
}

// valueDone notes that a value in the innermost open object or array of
// stack has been read: an object then wants a key.
func valueDone(stack []scanFrame) {
	if n := len(stack); n > 0 && stack[n-1].object {
		stack[n-1].wantKey = true
	}
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

func syntaxError(err error) error {
	var se *json.SyntaxError
	switch {
	case errors.As(err, &se):
		return region.InvalidField("body", "malformed JSON in the request body at byte %d: %v", se.Offset, se)
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return region.InvalidField("body", "malformed JSON in the request body: it ends early")
	}
	return region.InvalidField("body", "malformed JSON in the request body: %v", err)
}

// jsonNames returns the JSON names of the fields of the struct dst points
// to.
func jsonNames(dst any) map[string]bool {
	t := reflect.TypeOf(dst).Elem()
	names := make(map[string]bool, t.NumField())
	for i := range t.NumField() {
		if name, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ","); name != "" && name != "-" {
			names[name] = true
		}
	}
	return names
}

// decodeError turns an encoding/json error into an invalid_request naming
// the field.
func decodeError(err error) error {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		if te.Field == "" {
			return region.InvalidField("body", "the request body must be a JSON object")
		}
		return region.InvalidField(te.Field, "%s must be %s, not %s", te.Field, describeType(te.Type), clip(te.Value))
	}
	return syntaxError(err)
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
