package api

import (
	"context"
	"net/http"
	"strconv"
	"strings"
	"sync"

	"github.com/labstack/echo/v4"

	"github.com/latticedb/lattice/region"
)

// HeaderPrefer is the request header (RFC 7240) by which a cart write
// asks for no cart in its answer: Prefer: return=minimal.
const HeaderPrefer = "Prefer"

// ctxMinimal is the echo context key set on a cart write that asked for
// a minimal answer.
const ctxMinimal = "lattice.minimal"

// beginCartWrite is begin for a cart write: with Prefer: return=minimal,
// the operation does not list the cart's items (region.WithoutCartItems)
// and okCart answers 204 without a body.
func (h *handler) beginCartWrite(c echo.Context) (context.Context, context.CancelFunc, error) {
	ctx, cancel, err := h.begin(c)
	if err != nil || !preferMinimal(c.Request().Header) {
		return ctx, cancel, err
	}
	c.Set(ctxMinimal, true)
	return region.WithoutCartItems(ctx), cancel, nil
}

// preferMinimal reports whether the request's Prefer headers hold the
// preference return=minimal (token and value in any case, the value
// possibly quoted, with or without parameters). As RFC 7240 §2 has it,
// only the first instance of a preference counts (return=representation
// then return=minimal keeps the cart), and a comma inside a quoted value
// separates nothing. Other preferences leave the answer as it is: a
// server ignores what it does not apply.
func preferMinimal(h http.Header) bool {
	for _, v := range h.Values(HeaderPrefer) {
		for len(v) > 0 {
			var pref string
			pref, v = nextPreference(v)
			name, val, _ := strings.Cut(pref, "=")
			if !strings.EqualFold(strings.TrimSpace(name), "return") {
				continue
			}
			val = strings.TrimSpace(val)
			if len(val) >= 2 && val[0] == '"' && val[len(val)-1] == '"' {
				val = val[1 : len(val)-1]
			}
			return strings.EqualFold(val, "minimal") // the first return counts
		}
	}
	return false
}

// nextPreference splits v at its first comma outside a quoted string and
// returns the preference before it, without its parameters (from the
// first semicolon outside quotes), and the rest after the comma.
func nextPreference(v string) (pref, rest string) {
	quoted, escaped := false, false
	end, cut := len(v), -1
	for i := 0; i < len(v); i++ {
		c := v[i]
		switch {
		case escaped:
			escaped = false
		case quoted && c == '\\':
			escaped = true
		case c == '"':
			quoted = !quoted
		case !quoted && c == ';' && cut < 0:
			cut = i
		case !quoted && c == ',':
			end = i
			i = len(v)
		}
	}
	if cut < 0 || cut > end {
		cut = end
	}
	if end < len(v) {
		return v[:cut], v[end+1:]
	}
	return v[:cut], ""
}

// okCart writes a cart as h.ok does, encoding it without reflection when
// appendCartJSON can; after a cart write that asked for a minimal answer
// (beginCartWrite), 204 with Preference-Applied and no body.
func (h *handler) okCart(c echo.Context, cart region.Cart) error {
	if minimal, _ := c.Get(ctxMinimal).(bool); minimal {
		if tok := h.svc.TokenFor(c.Request().Context()); tok != "" {
			c.Response().Header().Set(HeaderToken, tok)
		}
		if err := h.await(c); err != nil {
			return err
		}
		c.Response().Header().Set("Preference-Applied", "return=minimal")
		return c.NoContent(http.StatusNoContent)
	}
	cart = cartView(cart)
	bp := getBuffer()
	b, ok := appendCartJSON(*bp, cart)
	defer putBuffer(bp, b)
	if !ok {
		return h.ok(c, http.StatusOK, cart)
	}
	if tok := h.svc.TokenFor(c.Request().Context()); tok != "" {
		c.Response().Header().Set(HeaderToken, tok)
	}
	if err := h.await(c); err != nil {
		return err
	}
	return c.JSONBlob(http.StatusOK, b)
}

// maxPooledBuffer bounds the capacity of the buffers buffers keeps.
const maxPooledBuffer = 16 << 10

// buffers holds buffers for request and response bodies.
var buffers = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

// getBuffer returns an empty buffer from buffers.
func getBuffer() *[]byte { return buffers.Get().(*[]byte) }

// putBuffer puts bp back into buffers once nothing refers to it any more,
// keeping b, what it grew into, if it is not too large.
func putBuffer(bp *[]byte, b []byte) {
	if cap(b) <= maxPooledBuffer {
		*bp = b[:0]
	} else {
		*bp = (*bp)[:0]
	}
	buffers.Put(bp)
}

// appendCartJSON appends the JSON encoding of c to b, byte for byte what
// encoding/json.Marshal writes, and reports whether it did: it does not if
// a string of c needs escaping, and b is then to be discarded.
func appendCartJSON(b []byte, c region.Cart) ([]byte, bool) {
	b = append(b, `{"cart_id":`...)
	b, ok := appendPlainString(b, c.CartID)
	if !ok {
		return b, false
	}
	b = append(b, `,"region":`...)
	if b, ok = appendPlainString(b, c.Region); !ok {
		return b, false
	}
	if c.Items == nil {
		return append(b, `,"items":null}`...), true
	}
	b = append(b, `,"items":[`...)
	for i, it := range c.Items {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"sku":`...)
		if b, ok = appendPlainString(b, it.SKU); !ok {
			return b, false
		}
		b = append(b, `,"qty":`...)
		b = strconv.AppendInt(b, it.Qty, 10)
		b = append(b, '}')
	}
	return append(b, "]}"...), true
}

// appendPlainString appends s as a JSON string if encoding/json writes it
// unchanged between quotes: printable ASCII other than the quote, the
// backslash and the characters it escapes for HTML (<, > and &).
func appendPlainString(b []byte, s string) ([]byte, bool) {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c > 0x7e || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			return b, false
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"'), true
}
