package api

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/http"

	"github.com/labstack/echo/v4"
)

// HeaderRequestID names a request: taken from the request when valid (see
// ValidRequestID), else generated, and echoed on every answer. Problem
// bodies carry it as request_id, and the access log records it.
const HeaderRequestID = "X-Request-Id"

// MaxRequestIDLen bounds an X-Request-Id the API takes from a request.
const MaxRequestIDLen = 128

// ValidRequestID reports whether id may be taken from a request as its
// request id: 1 to MaxRequestIDLen characters of [A-Za-z0-9._:/+=@-],
// nothing that could break a log line or a header.
func ValidRequestID(id string) bool {
	if id == "" || len(id) > MaxRequestIDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		switch c := id[i]; {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case c == '.', c == '_', c == ':', c == '/', c == '+', c == '=', c == '@', c == '-':
		default:
			return false
		}
	}
	return true
}

// NewRequestID returns a fresh request id: 128 random bits in hex.
func NewRequestID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails
	return hex.EncodeToString(b[:])
}

// requestIDOf returns the request id of r: its one valid X-Request-Id,
// else a new one.
func requestIDOf(r *http.Request) string {
	if ids := r.Header.Values(HeaderRequestID); len(ids) == 1 && ValidRequestID(ids[0]) {
		return ids[0]
	}
	return NewRequestID()
}

type requestIDKey struct{}

// withRequestID returns ctx carrying the request id id.
func withRequestID(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, requestIDKey{}, id)
}

// RequestID returns the request id the API gave the request whose context
// is ctx, or "" outside a request.
func RequestID(ctx context.Context) string {
	id, _ := ctx.Value(requestIDKey{}).(string)
	return id
}

// requestIDFrom returns the request id the API gave the request of c,
// which observe set on its answer first of all.
func requestIDFrom(c echo.Context) string {
	if ids := c.Response().Header()[HeaderRequestID]; len(ids) > 0 {
		return ids[0]
	}
	return ""
}
