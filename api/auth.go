package api

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync/atomic"

	"github.com/labstack/echo/v4"

	"github.com/latticedb/lattice/region"
)

// Codes of refused authentication and authorization.
const (
	// CodeUnauthorized answers a request without a bearer token, or with
	// one that is not valid (401, with WWW-Authenticate: Bearer).
	CodeUnauthorized = "unauthorized"
	// CodeForbidden answers a write made with a read-only token (403).
	CodeForbidden = "forbidden"
)

// Scope is what a bearer token allows.
type Scope int

// Scopes, each allowing what the one before allows.
const (
	// ScopeNone allows nothing: the token is unknown.
	ScopeNone Scope = iota
	// ScopeRead allows GET and HEAD requests.
	ScopeRead
	// ScopeWrite allows every request.
	ScopeWrite
)

// String returns "none", "read" or "write".
func (s Scope) String() string {
	switch s {
	case ScopeRead:
		return "read"
	case ScopeWrite:
		return "write"
	}
	return "none"
}

// Limits of bearer tokens and of the files holding them.
const (
	// MinTokenLen and MaxTokenLen bound a token, in characters.
	MinTokenLen = 16
	MaxTokenLen = 512
	// MaxTokensPerScope bounds the tokens of one scope.
	MaxTokensPerScope = 1024
	// MaxTokenFileBytes bounds a token file.
	MaxTokenFileBytes = 1 << 20
)

// Tokens holds the bearer tokens an API accepts, by scope. The set is
// swapped atomically by Set and Load, so tokens can be rotated while
// requests are served. Only SHA-256 digests of the tokens are kept, and a
// token is compared with every digest of the set in constant time. The
// zero value accepts no token; its methods are safe for concurrent use.
type Tokens struct {
	cur atomic.Pointer[tokenSet]
}

type tokenSet struct {
	read, write [][sha256.Size]byte
}

// NewTokens returns a set that accepts no token until Set or Load.
func NewTokens() *Tokens { return &Tokens{} }

// Set replaces the accepted tokens: read holds the read-only tokens, write
// the read-write ones. Every token must pass ValidToken; on an error
// nothing changes. A token in both lists is a read-write token.
func (t *Tokens) Set(read, write []string) error {
	s := &tokenSet{}
	for _, l := range []struct {
		scope  string
		tokens []string
		into   *[][sha256.Size]byte
	}{{"read", read, &s.read}, {"write", write, &s.write}} {
		if len(l.tokens) > MaxTokensPerScope {
			return fmt.Errorf("api: %d %s tokens, at most %d", len(l.tokens), l.scope, MaxTokensPerScope)
		}
		for i, tok := range l.tokens {
			if err := ValidToken(tok); err != nil {
				return fmt.Errorf("api: %s token %d: %w", l.scope, i+1, err)
			}
			*l.into = append(*l.into, sha256.Sum256([]byte(tok)))
		}
	}
	t.cur.Store(s)
	return nil
}

// Load reads the read-only tokens from readFile and the read-write ones
// from writeFile (either may be "" for none; see ParseTokens for the
// format) and replaces the accepted tokens with them. A named file must
// hold at least one token. On an error nothing changes.
func (t *Tokens) Load(readFile, writeFile string) error {
	read, err := readTokenFile(readFile)
	if err != nil {
		return err
	}
	write, err := readTokenFile(writeFile)
	if err != nil {
		return err
	}
	return t.Set(read, write)
}

func readTokenFile(path string) ([]string, error) {
	if path == "" {
		return nil, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("api: token file: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, MaxTokenFileBytes+1))
	if err != nil {
		return nil, fmt.Errorf("api: token file %s: %w", path, err)
	}
	if len(b) > MaxTokenFileBytes {
		return nil, fmt.Errorf("api: token file %s: larger than %d bytes", path, MaxTokenFileBytes)
	}
	toks, err := ParseTokens(b)
	if err != nil {
		return nil, fmt.Errorf("api: token file %s: %w", path, err)
	}
	if len(toks) == 0 {
		return nil, fmt.Errorf("api: token file %s: holds no token", path)
	}
	return toks, nil
}

// ParseTokens reads a token file: one token per line, surrounding blanks
// trimmed; empty lines and lines starting with # are ignored. A file of
// one token with or without a final newline (a Kubernetes Secret key
// mounted as a file) is one token. The error of a bad line gives its
// number, never its text.
func ParseTokens(b []byte) ([]string, error) {
	var toks []string
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(nil, MaxTokenFileBytes+1)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if err := ValidToken(line); err != nil {
			return nil, fmt.Errorf("line %d: %w", n, err)
		}
		toks = append(toks, line)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return toks, nil
}

// ValidToken checks a bearer token: MinTokenLen to MaxTokenLen characters
// in all, the RFC 6750 token alphabet [A-Za-z0-9._~+/-], then any '='. The
// error does not repeat the token.
func ValidToken(tok string) error {
	if len(tok) < MinTokenLen || len(tok) > MaxTokenLen {
		return fmt.Errorf("a token must be %d to %d characters", MinTokenLen, MaxTokenLen)
	}
	body := strings.TrimRight(tok, "=")
	if body == "" {
		return errors.New("a token must not be only '='")
	}
	for i := 0; i < len(body); i++ {
		switch c := body[i]; {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case c == '-', c == '.', c == '_', c == '~', c == '+', c == '/':
		default:
			return errors.New("a token must be characters of [A-Za-z0-9._~+/-], then any '='")
		}
	}
	return nil
}

// Scope returns what tok allows. tok is compared with every token of the
// set, in constant time whatever it matches.
func (t *Tokens) Scope(tok string) Scope {
	s := t.cur.Load()
	if s == nil {
		return ScopeNone
	}
	d := sha256.Sum256([]byte(tok))
	var read, write int
	for i := range s.read {
		read |= subtle.ConstantTimeCompare(d[:], s.read[i][:])
	}
	for i := range s.write {
		write |= subtle.ConstantTimeCompare(d[:], s.write[i][:])
	}
	switch {
	case write == 1:
		return ScopeWrite
	case read == 1:
		return ScopeRead
	}
	return ScopeNone
}

// probePaths are the routes that stay open without a token unless
// Options.ProtectProbes is set.
var probePaths = map[string]bool{"/healthz": true, "/readyz": true, "/metrics": true}

// bearerRealm is the realm of the WWW-Authenticate challenges.
const bearerRealm = `Bearer realm="lattice"`

// authorize refuses, before anything is read or written, a request
// without a valid bearer token (401) or whose token's scope does not
// allow its method (403): GET and HEAD need a read or read-write token,
// every other method a read-write one. With no Tokens it lets everything
// through.
func (h *handler) authorize(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		if err := checkToken(h.tokens, h.protectProbes, c.Request(), c.Response().Header()); err != nil {
			return err
		}
		return next(c)
	}
}

// checkToken is authorize's check of req: nil if req may go on, else the
// refusal, with its WWW-Authenticate challenge set on hdr. With no
// Tokens it lets everything through.
func checkToken(tokens *Tokens, protectProbes bool, req *http.Request, hdr http.Header) *region.Error {
	if tokens == nil || (!protectProbes && probePaths[req.URL.Path]) {
		return nil
	}
	need := ScopeWrite
	if req.Method == http.MethodGet || req.Method == http.MethodHead {
		need = ScopeRead
	}
	tok, ok := BearerToken(req.Header)
	if !ok {
		hdr.Set(echo.HeaderWWWAuthenticate, bearerRealm)
		return region.Errorf(CodeUnauthorized, "a bearer token is required: Authorization: Bearer TOKEN")
	}
	got := tokens.Scope(tok)
	switch {
	case got == ScopeNone:
		hdr.Set(echo.HeaderWWWAuthenticate, bearerRealm+`, error="invalid_token"`)
		return region.Errorf(CodeUnauthorized, "the bearer token is not valid")
	case got < need:
		hdr.Set(echo.HeaderWWWAuthenticate, bearerRealm+`, error="insufficient_scope", scope="write"`)
		return region.Errorf(CodeForbidden, "the bearer token may only read; %s needs a read-write token", req.Method)
	}
	return nil
}

// BearerToken returns the token of the request's one Authorization
// header of scheme Bearer (the scheme compared without regard to case).
func BearerToken(h http.Header) (string, bool) {
	vals := h.Values(echo.HeaderAuthorization)
	if len(vals) != 1 {
		return "", false
	}
	scheme, tok, ok := strings.Cut(vals[0], " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	tok = strings.TrimSpace(tok)
	return tok, tok != ""
}
