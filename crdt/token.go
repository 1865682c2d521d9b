package crdt

import (
	"bytes"
	"compress/flate"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
)

// MaxTokenBytes bounds an encoded causal token: the bytes its base64
// stands for, whichever its form.
const MaxTokenBytes = 8 << 10

// MaxTokenContextBytes bounds the encoded context a compressed token
// inflates to: room for MaxReplicas replica ids of the longest region
// names, with their version vector entries and out-of-order dots.
const MaxTokenContextBytes = 64 << 10

// compressedTokenPrefix starts a compressed token. A plain token is the
// base64 of a context's encoding, which starts with an array header (a
// byte 0x80–0x9f), so its first character is one of g–n, and base64 has
// no '.'.
const compressedTokenPrefix = "z."

// EncodeContext returns the canonical encoding of a causal context (the
// encoding of a cart with no entries).
func EncodeContext(c *Context) []byte { return AppendContext(nil, c) }

// MaxTokenCloudDots bounds the out-of-order dots (a context's cloud) a
// parsed token keeps one by one: a token of 64 KiB of context can name
// tens of thousands of them, which as a set take 40 times that in memory
// for as long as the request waits with it. Past the bound ParseToken
// returns the context's ceiling (Context.Ceil), which covers it, and
// FormatToken makes the ceiling's token itself.
const MaxTokenCloudDots = 1024

// DecodeContext decodes a causal context encoded by EncodeContext.
func DecodeContext(b []byte) (Context, error) {
	c, err := DecodeCart(b)
	if err != nil {
		return Context{}, err
	}
	if len(c.Entries) > 0 {
		return Context{}, errors.New("crdt: context holds entries")
	}
	return c.Ctx, nil
}

// FormatToken encodes a context as an opaque, URL-safe causal token: the
// base64 of its encoding, or, when that would exceed MaxTokenBytes (the
// replica ids of a cluster that had many incarnations of long region
// names), "z." and the base64 of its encoding compressed with DEFLATE:
// the ids share their regions' names, which compress well. A context of
// more than MaxTokenCloudDots cloud dots is formatted as its ceiling. A
// context that
// does not fit even so gives a token ParseToken refuses; callers that must
// answer with one use its ceiling (Context.Ceil) then.
func FormatToken(c *Context) string {
	if len(c.Cloud) > MaxTokenCloudDots {
		ceil := c.Ceil()
		c = &ceil
	}
	b := EncodeContext(c)
	if len(b) <= MaxTokenBytes {
		return base64.RawURLEncoding.EncodeToString(b)
	}
	var buf bytes.Buffer
	w, err := flate.NewWriter(&buf, flate.BestCompression)
	if err == nil {
		_, err = w.Write(b)
	}
	if err == nil {
		err = w.Close()
	}
	if err != nil {
		// Writes to a bytes.Buffer do not fail; a token too long to parse
		// is what a context too large gives anyway.
		return base64.RawURLEncoding.EncodeToString(b)
	}
	return compressedTokenPrefix + base64.RawURLEncoding.EncodeToString(buf.Bytes())
}

// Deflate returns b compressed with DEFLATE, as a compressed token's
// bytes are.
func Deflate(b []byte) []byte {
	var buf bytes.Buffer
	w, _ := flate.NewWriter(&buf, flate.BestCompression) // the level is valid
	w.Write(b)                                           // a bytes.Buffer takes every write
	w.Close()
	return buf.Bytes()
}

// InflateToken inflates b, DEFLATE as Deflate makes it, into a copy of at
// most limit bytes (at most MaxTokenContextBytes), refusing more; it uses
// the inflaters ParseToken reuses, so that it costs what it stands for.
func InflateToken(b []byte, limit int) ([]byte, error) {
	limit = min(limit, MaxTokenContextBytes)
	inf := inflaters.Get().(*inflater)
	defer inflaters.Put(inf)
	if err := inf.r.(flate.Resetter).Reset(bytes.NewReader(b), nil); err != nil {
		return nil, fmt.Errorf("crdt: token: %w", err)
	}
	n, err := io.ReadFull(inf.r, inf.buf[:])
	if err != nil && err != io.ErrUnexpectedEOF && err != io.EOF {
		return nil, fmt.Errorf("crdt: token: %w", err)
	}
	if n > limit {
		return nil, fmt.Errorf("crdt: token inflates past %d bytes", limit)
	}
	return bytes.Clone(inf.buf[:n]), nil
}

// TokenFits reports whether a token FormatToken made is short enough for
// ParseToken (what it stands for may still be refused).
func TokenFits(t string) bool {
	return len(strings.TrimPrefix(t, compressedTokenPrefix)) <= base64.RawURLEncoding.EncodedLen(MaxTokenBytes)
}

// ParseToken decodes a causal token made by FormatToken.
func ParseToken(s string) (Context, error) {
	compressed := strings.HasPrefix(s, compressedTokenPrefix)
	if compressed {
		s = s[len(compressedTokenPrefix):]
	}
	if len(s) > base64.RawURLEncoding.EncodedLen(MaxTokenBytes) {
		return Context{}, fmt.Errorf("crdt: token longer than %d bytes", MaxTokenBytes)
	}
	if err := CheckTokenAlphabet(s); err != nil {
		return Context{}, fmt.Errorf("crdt: token: %w", err)
	}
	b, err := base64.RawURLEncoding.Strict().DecodeString(s)
	if err != nil {
		return Context{}, fmt.Errorf("crdt: token: %w", err)
	}
	if compressed {
		// An inflater's state is about 40 KB: it and the buffer it
		// inflates into are reused, so that a token costs in memory what
		// it stands for, not an inflater each (decodeTokenContext keeps no
		// reference to the buffer).
		inf := inflaters.Get().(*inflater)
		defer inflaters.Put(inf)
		if err := inf.r.(flate.Resetter).Reset(bytes.NewReader(b), nil); err != nil {
			return Context{}, fmt.Errorf("crdt: token: %w", err)
		}
		n, err := io.ReadFull(inf.r, inf.buf[:])
		if err != nil && err != io.ErrUnexpectedEOF && err != io.EOF {
			return Context{}, fmt.Errorf("crdt: token: %w", err)
		}
		if n > MaxTokenContextBytes { // the buffer is full: too much
			return Context{}, fmt.Errorf("crdt: token inflates past %d bytes", MaxTokenContextBytes)
		}
		if n <= MaxTokenBytes {
			// FormatToken compresses only what does not fit plain: one
			// context, one token.
			return Context{}, errors.New("crdt: token: compressed though it fits plain")
		}
		return decodeTokenContext(inf.buf[:n])
	}
	return decodeTokenContext(b)
}

// CheckTokenAlphabet refuses s unless it is made of the alphabet of
// base64.RawURLEncoding alone. The decoder skips '\r' and '\n' even
// when strict, so it alone would give two spellings of one token.
func CheckTokenAlphabet(s string) error {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return fmt.Errorf("illegal character %q at offset %d", c, i)
		}
	}
	return nil
}

// inflater is a reusable inflater of compressed tokens and the buffer it
// inflates into: one byte past the most a token may stand for, so that a
// full buffer means too much.
type inflater struct {
	r   io.ReadCloser
	buf [MaxTokenContextBytes + 1]byte
}

var inflaters = sync.Pool{New: func() any {
	return &inflater{r: flate.NewReader(bytes.NewReader(nil))}
}}

// decodeTokenContext is DecodeContext that keeps at most
// MaxTokenCloudDots cloud dots: a context with more is decoded as its
// ceiling, without building its cloud.
func decodeTokenContext(b []byte) (Context, error) {
	if err := checkSize(b, MaxObjectBytes); err != nil {
		return Context{}, err
	}
	p := parser{b: b, cloudCap: MaxTokenCloudDots}
	c, err := p.cart()
	if err == nil {
		err = p.end()
	}
	if err != nil {
		return Context{}, err
	}
	if len(c.Entries) > 0 {
		return Context{}, errors.New("crdt: context holds entries")
	}
	if len(p.ceil) == 0 {
		// Not capped: as strict as DecodeContext.
		if !bytes.Equal(AppendCart(make([]byte, 0, len(b)), c), b) {
			return Context{}, ErrNonCanonical
		}
		return c.Ctx, nil
	}
	ceil := c.Ctx.Ceil()
	for _, d := range p.ceil {
		if d.Counter > ceil.VV[d.Replica] {
			ceil.VV[d.Replica] = d.Counter
		}
	}
	return ceil, nil
}
