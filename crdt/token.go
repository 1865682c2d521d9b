package crdt

import (
	"encoding/base64"
	"errors"
	"fmt"
)

// MaxTokenBytes bounds an encoded causal token.
const MaxTokenBytes = 8 << 10

// EncodeContext returns the canonical encoding of a causal context (the
// encoding of a cart with no entries).
func EncodeContext(c *Context) []byte { return AppendContext(nil, c) }

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

// FormatToken encodes a context as an opaque, URL-safe causal token.
func FormatToken(c *Context) string {
	return base64.RawURLEncoding.EncodeToString(EncodeContext(c))
}

// ParseToken decodes a causal token made by FormatToken.
func ParseToken(s string) (Context, error) {
	if len(s) > base64.RawURLEncoding.EncodedLen(MaxTokenBytes) {
		return Context{}, fmt.Errorf("crdt: token longer than %d bytes", MaxTokenBytes)
	}
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return Context{}, fmt.Errorf("crdt: token: %w", err)
	}
	return DecodeContext(b)
}
