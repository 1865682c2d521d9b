package api

// Request bodies that decodeBody can read without the JSON decoder: the
// plain form in which clients send them. Anything else (escapes, non-ASCII,
// null, fractions, exponents, unknown or repeated keys, malformed JSON)
// goes to the strict decoder, which also words every error, so the fast
// path changes no outcome.

// fastBody is a request body whose fields are all *string or *int64. field
// returns where the value of the JSON member name goes (one of the two is
// non-nil), or nil, nil for a name that is not a field.
type fastBody interface {
	field(name []byte) (s **string, n **int64)
}

func (b *addItemBody) field(name []byte) (**string, **int64) {
	switch string(name) {
	case "sku":
		return &b.SKU, nil
	case "qty":
		return nil, &b.Qty
	}
	return nil, nil
}

func (b *qtyBody) field(name []byte) (**string, **int64) {
	if string(name) == "qty" {
		return nil, &b.Qty
	}
	return nil, nil
}

func (b *adjustBody) field(name []byte) (**string, **int64) {
	switch string(name) {
	case "delta":
		return nil, &b.Delta
	case "reason":
		return &b.Reason, nil
	}
	return nil, nil
}

func (b *reserveBody) field(name []byte) (**string, **int64) {
	switch string(name) {
	case "sku":
		return &b.SKU, nil
	case "qty":
		return nil, &b.Qty
	case "ttl_ms":
		return nil, &b.TTLMS
	}
	return nil, nil
}

func (b *checkoutBody) field(name []byte) (**string, **int64) {
	if string(name) == "ttl_ms" {
		return nil, &b.TTLMS
	}
	return nil, nil
}

// maxFastFields bounds the members decodeFast takes; a body with more goes
// to the strict decoder.
const maxFastFields = 4

// maxFastDigits bounds the digits of an integer decodeFast takes, so that
// it cannot overflow an int64.
const maxFastDigits = 18

// decodeFast decodes b into dst if b is one JSON object whose members are
// distinct field names of dst, written exactly, each with a value of its
// field's type: a string of printable ASCII without escapes, or an integer
// of at most maxFastDigits digits. It reports whether it did; if not, dst
// is unchanged. What it accepts, the strict decoder (decodeStrict) decodes
// to the same values.
func decodeFast(b []byte, dst fastBody) bool {
	type member struct {
		s  **string
		n  **int64
		sv string
		nv int64
	}
	var (
		ms  [maxFastFields]member
		cnt int
	)
	i := skipSpace(b, 0)
	if i == len(b) || b[i] != '{' {
		return false
	}
	i = skipSpace(b, i+1)
	if i < len(b) && b[i] == '}' {
		i++
	} else {
		for {
			name, j, ok := plainString(b, i)
			if !ok || cnt == maxFastFields {
				return false
			}
			s, n := dst.field(name)
			if s == nil && n == nil {
				return false
			}
			for _, m := range ms[:cnt] {
				if s != nil && m.s == s || n != nil && m.n == n {
					return false
				}
			}
			i = skipSpace(b, j)
			if i == len(b) || b[i] != ':' {
				return false
			}
			i = skipSpace(b, i+1)
			m := member{s: s, n: n}
			if s != nil {
				var sv []byte
				sv, i, ok = plainString(b, i)
				m.sv = string(sv)
			} else {
				m.nv, i, ok = plainInt(b, i)
			}
			if !ok {
				return false
			}
			ms[cnt] = m
			cnt++
			i = skipSpace(b, i)
			if i == len(b) {
				return false
			}
			if b[i] == '}' {
				i++
				break
			}
			if b[i] != ',' {
				return false
			}
			i = skipSpace(b, i+1)
		}
	}
	if skipSpace(b, i) != len(b) {
		return false
	}
	for _, m := range ms[:cnt] {
		if m.s != nil {
			v := m.sv
			*m.s = &v
		} else {
			v := m.nv
			*m.n = &v
		}
	}
	return true
}

// skipSpace returns the index of the first byte of b at or after i that is
// not JSON whitespace.
func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// plainString reads a JSON string at b[i] made only of printable ASCII
// other than the quote and the backslash, and returns its bytes (in b,
// not copied) and the index after its closing quote.
func plainString(b []byte, i int) ([]byte, int, bool) {
	if i == len(b) || b[i] != '"' {
		return nil, 0, false
	}
	for j := i + 1; j < len(b); j++ {
		switch c := b[j]; {
		case c == '"':
			return b[i+1 : j], j + 1, true
		case c < 0x20 || c > 0x7e || c == '\\':
			return nil, 0, false
		}
	}
	return nil, 0, false
}

// plainInt reads a JSON integer at b[i] (an optional minus, then 0 or a
// digit 1–9 followed by digits, at most maxFastDigits in all) that is not
// followed by a fraction or an exponent, and returns it and the index after
// it.
func plainInt(b []byte, i int) (int64, int, bool) {
	neg := i < len(b) && b[i] == '-'
	if neg {
		i++
	}
	start := i
	var v int64
	for i < len(b) && b[i] >= '0' && b[i] <= '9' {
		v = v*10 + int64(b[i]-'0')
		i++
	}
	switch n := i - start; {
	case n == 0 || n > maxFastDigits:
		return 0, 0, false
	case n > 1 && b[start] == '0':
		return 0, 0, false
	}
	if i < len(b) && (b[i] == '.' || b[i] == 'e' || b[i] == 'E') {
		return 0, 0, false
	}
	if neg {
		v = -v
	}
	return v, i, true
}
