// Package client is a typed Go client of Lattice's REST API (docs/api.md)
// for app backends.
//
// A Client is given the base URLs of one or more regions. It tries the
// first (its preferred region) and, for the operations that are safe to
// move, fails over to the next on a transport error or a 503: every read,
// and the operations decided at a home with an Idempotency-Key (reserve,
// commit, release, checkout; the key makes a repeat return the first
// outcome). Cart writes (carts are OR-Sets, written at any region) move
// only when the request was never sent or a region's 503 applied nothing
// (see AddItem); restocks and adjustments only when never sent.
//
// A Client keeps the causal token (Lattice-Token) of the answers it gets,
// joined so that it only moves forward, and sends it with every request,
// so that what it wrote at one region is seen by its reads at any other
// (read-your-writes, monotonic reads). A token a region refuses as
// malformed (400 invalid_token) guarantees nothing: the client drops it
// and sends that request again, once, without a token (see Token).
// Errors the API answers are *Problem values, usable with errors.As.
//
// A context made with WithReplicas asks its writes to reach several
// regions before they are answered, one made with WithQuorum asks its
// cart and stock reads to join several regions' states
// (ErrReplicationTimeout, ErrQuorumUnavailable when not met).
//
// A Client is safe for concurrent use.
package client

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/latticedb/lattice/crdt"
	"github.com/latticedb/lattice/region"
)

// Header names of the API.
const (
	headerToken = "Lattice-Token"
	headerWait  = "Lattice-Wait"
	headerKey   = "Idempotency-Key"
)

// maxWait is the largest Lattice-Wait the API takes.
const maxWait = 10 * time.Second

// Options configures a Client. Start from DefaultOptions.
type Options struct {
	// HTTPClient sends the requests. Its Timeout, if any, bounds each
	// attempt; the context of a call bounds the whole call.
	HTTPClient *http.Client
	// MaxAttempts bounds the attempts of one call, over every region it
	// tries (1 means no retry and no failover).
	MaxAttempts int
	// Backoff is the pause before trying a region again after a transport
	// error, doubled at each round over the regions (a 503's Retry-After
	// is honoured instead).
	Backoff time.Duration
	// MaxBackoff caps a pause, Retry-After included.
	MaxBackoff time.Duration
	// UserAgent is sent with every request when not empty.
	UserAgent string
	// BearerToken, when not empty, is sent with every request as
	// Authorization: Bearer TOKEN, for regions configured with tokens
	// (api_auth). A read-only token serves only the reads.
	BearerToken string
	// RootCAs, when set and HTTPClient is not, are the CAs an https
	// region's certificate is verified against instead of the system's
	// (see LoadCertPool).
	RootCAs *x509.CertPool
}

// LoadCertPool reads the PEM certificates of file, for Options.RootCAs.
func LoadCertPool(file string) (*x509.CertPool, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("lattice client: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("lattice client: %s holds no PEM certificate", file)
	}
	return pool, nil
}

// DefaultOptions returns the options New uses when given none:
// http.DefaultClient, 4 attempts, a 100 ms backoff, pauses of at most 10 s.
func DefaultOptions() Options {
	return Options{HTTPClient: http.DefaultClient, MaxAttempts: 4, Backoff: 100 * time.Millisecond,
		MaxBackoff: 10 * time.Second, UserAgent: "lattice-go-client"}
}

// Client calls the API of a Lattice cluster. Make one with New.
type Client struct {
	urls []string
	opts Options
	tok  *tokenState
}

// tokenState is the causal token a Client and the Clients made from it
// by Prefer share.
type tokenState struct {
	mu    sync.Mutex
	token string
}

// New returns a Client of the regions at baseURLs (for example
// http://127.0.0.1:7101), the first being the preferred one. Zero fields
// of opts take their DefaultOptions value.
func New(baseURLs []string, opts Options) (*Client, error) {
	if len(baseURLs) == 0 {
		return nil, errors.New("lattice client: no region URL")
	}
	def := DefaultOptions()
	switch {
	case opts.HTTPClient == nil && opts.RootCAs != nil:
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.TLSClientConfig = &tls.Config{RootCAs: opts.RootCAs, MinVersion: tls.VersionTLS12}
		opts.HTTPClient = &http.Client{Transport: tr}
	case opts.HTTPClient == nil:
		opts.HTTPClient = def.HTTPClient
	}
	// A region never redirects: a 3xx comes from a proxy, a hijacked
	// address or a mistake, and following it would send the request, its
	// bearer token, causal token and Idempotency-Key to a host the client
	// was not given. It is answered as it is (a Problem without a code).
	// A copy, so that a caller's own client is left as it was.
	hc := *opts.HTTPClient
	hc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	opts.HTTPClient = &hc
	if strings.ContainsAny(opts.BearerToken, " \t\r\n") {
		return nil, errors.New("lattice client: the bearer token holds a blank or a line break")
	}
	if opts.MaxAttempts <= 0 {
		opts.MaxAttempts = def.MaxAttempts
	}
	if opts.Backoff <= 0 {
		opts.Backoff = def.Backoff
	}
	if opts.MaxBackoff <= 0 {
		opts.MaxBackoff = def.MaxBackoff
	}
	urls := make([]string, len(baseURLs))
	for i, u := range baseURLs {
		p, err := url.Parse(u)
		if err != nil || (p.Scheme != "http" && p.Scheme != "https") || p.Host == "" {
			return nil, fmt.Errorf("lattice client: %q is not an http or https base URL", u)
		}
		if p.RawQuery != "" || p.ForceQuery || p.Fragment != "" || strings.Contains(u, "#") {
			// Paths are appended to the base URL: a query or fragment
			// would swallow them (every request would go to the base).
			return nil, fmt.Errorf("lattice client: base URL %q has a query or fragment; give scheme, host and an optional path prefix", u)
		}
		urls[i] = strings.TrimSuffix(u, "/")
	}
	return &Client{urls: urls, opts: opts, tok: &tokenState{}}, nil
}

// Regions returns the base URLs of the client's regions, the preferred
// one first.
func (c *Client) Regions() []string { return append([]string(nil), c.urls...) }

// Prefer returns a Client that tries the region at baseURL first, then
// c's other regions, and shares c's causal token: a write made through
// either is seen by reads through the other, wherever they go.
func (c *Client) Prefer(baseURL string) *Client {
	baseURL = strings.TrimSuffix(baseURL, "/")
	urls := []string{baseURL}
	for _, u := range c.urls {
		if u != baseURL {
			urls = append(urls, u)
		}
	}
	return &Client{urls: urls, opts: c.opts, tok: c.tok}
}

// Token returns the causal token the client sends: it covers every
// answer the client has received. When a region answers a request 400
// invalid_token (it cannot parse the token sent: garbage a server or
// SetToken gave, or a form the cluster does not take), the client drops
// that token, unless it has moved on from it meanwhile, and sends the
// request again, once, without it (the region refused it before doing
// anything, so even an add or a restock is sent again): the client is
// never stuck on a token no region takes. Dropping it gives up the
// guarantee it stood for, which the refusing region could not keep
// anyway; later answers give the client a token again.
func (c *Client) Token() string {
	c.tok.mu.Lock()
	defer c.tok.mu.Unlock()
	return c.tok.token
}

// SetToken joins tok, a causal token of an earlier answer (for example
// one a web session kept), into the client's token. A token that could
// not be sent in a header (a byte other than printable ASCII) is ignored;
// one a region refuses as malformed is dropped (see Client.Token).
func (c *Client) SetToken(tok string) { c.tok.observe(tok) }

// observe joins tok into the token: the token only moves forward. Two
// tokens neither of which covers the other (answers to concurrent
// requests) are joined, a partitioned cluster's ("p." form) partition by
// partition. A token that cannot be parsed does not replace one that
// can (a server's garbage would otherwise be sent on, and refused, for
// good); one of a form this client does not know replaces one it does not
// know either, and is taken when the client has none (a later version's
// form, which its regions take). Such a token that a region refuses as
// malformed (400 invalid_token) is dropped again by forget, so that it
// never wedges the client. A token with a byte that is not printable
// ASCII is ignored: no region could be sent it.
func (s *tokenState) observe(tok string) {
	if tok == "" || !sendableToken(tok) {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.token == "" || s.token == tok {
		s.token = tok
		return
	}
	if j, ok := region.JoinPartitionTokens(s.token, tok); ok {
		s.token = j
		return
	}
	cur, err1 := crdt.ParseToken(s.token)
	next, err2 := crdt.ParseToken(tok)
	curOK := err1 == nil || region.IsPartitionToken(s.token)
	nextOK := err2 == nil || region.IsPartitionToken(tok)
	switch {
	case err1 != nil || err2 != nil:
		if nextOK || !curOK {
			s.token = tok
		}
	case cur.Covers(&next):
	case next.Covers(&cur):
		s.token = tok
	default:
		cur.Join(&next)
		t := crdt.FormatToken(&cur)
		if !crdt.TokenFits(t) {
			ceil := cur.Ceil()
			t = crdt.FormatToken(&ceil)
		}
		s.token = t
	}
}

// forget drops tok, a token a region refused as malformed (400
// invalid_token), unless the client's token has moved on from it since it
// was sent: the region cannot wait on it, so it guarantees nothing there,
// and sending it again would be refused again, on every call.
func (s *tokenState) forget(tok string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.token == tok {
		s.token = ""
	}
}

// sendableToken reports whether tok can be sent as a header value: every
// byte printable ASCII, as in every token form (base64url and dots).
func sendableToken(tok string) bool {
	for i := 0; i < len(tok); i++ {
		if tok[i] <= ' ' || tok[i] >= 0x7f {
			return false
		}
	}
	return true
}

// NewIdempotencyKey returns a fresh random Idempotency-Key (128 bits from
// crypto/rand, in hex). Make one yourself when you need to know a
// checkout's key, to read its status with CheckoutStatus or to retry it
// later.
func NewIdempotencyKey() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic("lattice client: crypto/rand: " + err.Error())
	}
	return hex.EncodeToString(b[:])
}

// retry says which failures a call may be repeated after, at the same
// region or another.
type retry int

const (
	// retryNever repeats a request only when it was never sent (the
	// connection could not be made): restock, adjust.
	retryNever retry = iota
	// retryRefused also repeats a request a region refused with 503: a
	// cart add, which a repeat after an ambiguous transport error could
	// apply twice.
	retryRefused
	// retrySafe repeats on any transport error and on 503: reads, cart
	// sets and removals, and keyed operations. Whatever the retry, a
	// replication_timeout (the write was applied) is never repeated.
	retrySafe
)

// call is one API operation.
type call struct {
	method, path string
	query        url.Values
	body         any
	key          string // Idempotency-Key, if any
	retry        retry
	pinned       bool // ask only the preferred region (it describes that region)
	causal       bool // send the causal token and take the answer's
	quorum       bool // takes a read concern (?quorum=)
	want         int  // the success status
	replicas     Concern
	cartWrite    bool // a cart write, which WithoutCart answers 204
	minimal      bool // send Prefer: return=minimal (want is then 204)
}

// do runs cl and decodes the answer into out (a pointer, or a *[]byte
// for the raw body).
func (c *Client) do(ctx context.Context, cl call, out any) error {
	cl, err := applyConcerns(ctx, cl)
	if err != nil {
		return err
	}
	var payload []byte
	if cl.body != nil {
		b, err := json.Marshal(cl.body)
		if err != nil {
			return fmt.Errorf("lattice client: encoding the request: %w", err)
		}
		payload = b
	}
	urls := c.urls
	if cl.pinned {
		urls = urls[:1]
	}
	var last error
	var pause time.Duration
	var waited time.Duration // waiting on this call's own running attempt
	// mayRun is set once a request of this call may have reached a region
	// and be running there still: only then can a 409 request_in_progress
	// under the call's key be the call's own attempt.
	mayRun := false
	tokenRetried := false // a request refused for its token was sent again
	for attempt := 0; attempt < c.opts.MaxAttempts; attempt++ {
		base := urls[attempt%len(urls)]
		if attempt > 0 && attempt%len(urls) == 0 {
			// Every region has been tried in this round: pause first.
			if err := c.sleep(ctx, pause); err != nil {
				return last
			}
			pause = 0
		}
		var tok string
		if cl.causal {
			tok = c.Token()
		}
		status, hdr, body, tries, err := c.send(ctx, base, cl, payload, tok)
		if err != nil {
			if tries > 0 || !notSent(err) {
				mayRun = true
			}
			last = fmt.Errorf("lattice client: %s %s%s: %w", cl.method, base, cl.path, err)
			if ctx.Err() != nil || !(cl.retry == retrySafe || notSent(err)) {
				return last
			}
			// The round's pause is the longest any region asked for.
			pause = max(pause, c.backoff(attempt/len(urls)))
			continue
		}
		if status == cl.want || cl.minimal && status == http.StatusOK {
			// A minimal cart write may be answered with the cart anyway
			// (a server or proxy may ignore Prefer).
			if cl.causal {
				c.tok.observe(hdr.Get(headerToken))
			}
			switch o := out.(type) {
			case nil:
				return nil
			case *region.Cart:
				if cl.minimal && status == http.StatusNoContent {
					*o = region.Cart{} // 204: no body
					return errNoCart
				}
				if err := json.Unmarshal(body, out); err != nil {
					return fmt.Errorf("lattice client: %s %s%s: decoding the answer: %w", cl.method, base, cl.path, err)
				}
				return nil
			case *[]byte:
				*o = body
				return nil
			default:
				if err := json.Unmarshal(body, out); err != nil {
					return fmt.Errorf("lattice client: %s %s%s: decoding the answer: %w", cl.method, base, cl.path, err)
				}
				return nil
			}
		}
		p := decodeProblem(status, hdr, body)
		p.Region = base
		last = p
		if tries != 1 {
			// The transport sent the request more than once (net/http
			// sends a request with an Idempotency-Key again, within one
			// attempt, when a kept-alive connection drops under it), or
			// the HTTPClient's transport does not say (no httptrace
			// GotConn): an earlier copy may be running.
			mayRun = true
		}
		if status == http.StatusBadRequest && p.Code == region.CodeInvalidToken && tok != "" {
			// The region refused the client's token as malformed, before
			// doing anything: it cannot serve any request carrying it,
			// so the client drops it (keeping a newer one) and asks
			// again, once, without it.
			c.tok.forget(tok)
			if tokenRetried {
				return p
			}
			tokenRetried = true
			attempt--
			continue
		}
		if status == http.StatusConflict && p.Code == region.CodeRequestInProgress && cl.key != "" {
			if !mayRun {
				// No earlier request of this call can be running: the
				// key (or the cart, for a checkout) is held by another
				// request, perhaps another process's with the caller's
				// key. Waiting would pass the region's answer off as the
				// call's own attempt.
				return p
			}
			// This call's own earlier attempt, under the same key, may
			// still be running (its answer was lost or late, or it was
			// answered 503 and its saga still settles): wait for it and
			// ask again; the caller could not, not knowing the key, and
			// a new call would make a second request. The wait does not
			// count as an attempt: the attempt runs, for as long as its
			// saga takes (a checkout's reservations at far homes, their
			// compensation), up to the context's deadline or maxOwnWait
			// in all.
			d := min(max(p.RetryAfter, c.opts.Backoff<<min(waited/time.Second, 3)), time.Second)
			if waited+d > maxOwnWait {
				return p
			}
			if err := c.sleep(ctx, d); err != nil {
				return p
			}
			waited += d
			attempt--
			continue
		}
		if status != http.StatusServiceUnavailable || cl.retry == retryNever {
			return p
		}
		// A region that answered 503 may still settle what it started
		// (a checkout's compensation).
		mayRun = true
		if cl.retry == retryRefused && p.Code == "" {
			// A 503 that is not one of the API's problems (a proxy's page)
			// does not say that nothing was applied.
			return p
		}
		if p.Code == region.CodeReplicationTimeout {
			// The write was applied: never repeated (see
			// ErrReplicationTimeout).
			return p
		}
		if cl.retry == retryRefused && p.Code == region.CodePartitionUnanswered {
			// The owning node may have applied it: an add is not repeated.
			return p
		}
		wait := min(p.RetryAfter, c.opts.MaxBackoff)
		if wait <= 0 {
			wait = c.backoff(attempt / len(urls))
		}
		pause = max(pause, wait)
	}
	return last
}

// maxOwnWait bounds how long one call waits, in all, on its own attempt
// still running at a region (409 request_in_progress under the call's
// key) when its context has no earlier deadline.
const maxOwnWait = time.Minute

// maxAnswerBytes bounds an answer the client reads; a longer one is an
// error, not cut short.
const maxAnswerBytes = 64 << 20

// errNoCart is what do returns for a cart write answered without the
// cart (WithoutCart): the write was applied; cartRet turns it into a nil
// cart and no error.
var errNoCart = errors.New("lattice client: answered without the cart")

// cartRet is ret for the cart writes.
func cartRet(out *region.Cart, err error) (*region.Cart, error) {
	if err == errNoCart {
		return nil, nil
	}
	return ret(out, err)
}

// backoff is the pause after round transport errors.
func (c *Client) backoff(round int) time.Duration {
	d := c.opts.Backoff << min(round, 16)
	return min(d, c.opts.MaxBackoff)
}

// sleep pauses for d, unless the context ends first or would end before
// d has passed (then waiting is in vain): it returns an error then.
func (c *Client) sleep(ctx context.Context, d time.Duration) error {
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) < d {
		return context.DeadlineExceeded
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// notSent reports whether err means the request never reached a server:
// the connection could not be made.
func notSent(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// send makes one attempt at base, with tok as its causal token if not
// empty. tries is, for a keyed call, the connections the transport got
// for it (net/http reports each with httptrace's GotConn): more than one
// when it sent the request again, none when it does not report them.
func (c *Client) send(ctx context.Context, base string, cl call, payload []byte, tok string) (status int, hdr http.Header, body []byte, tries int, err error) {
	var conns atomic.Int32
	if cl.key != "" {
		ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{GotConn: func(httptrace.GotConnInfo) { conns.Add(1) }})
	}
	defer func() { tries = int(conns.Load()) }()
	u := base + cl.path
	if len(cl.query) > 0 {
		u += "?" + cl.query.Encode()
	}
	var rd io.Reader
	if payload != nil {
		rd = bytes.NewReader(payload)
	}
	req, err := http.NewRequestWithContext(ctx, cl.method, u, rd)
	if err != nil {
		return 0, nil, nil, 0, err
	}
	if payload != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json, application/problem+json")
	if c.opts.UserAgent != "" {
		req.Header.Set("User-Agent", c.opts.UserAgent)
	}
	if c.opts.BearerToken != "" {
		req.Header.Set("Authorization", "Bearer "+c.opts.BearerToken)
	}
	if cl.key != "" {
		req.Header.Set(headerKey, cl.key)
	}
	if cl.replicas != "" {
		req.Header.Set(headerReplicas, string(cl.replicas))
	}
	if cl.minimal {
		req.Header.Set("Prefer", "return=minimal")
	}
	if cl.causal {
		if tok != "" {
			req.Header.Set(headerToken, tok)
			if dl, ok := ctx.Deadline(); ok {
				wait := min(max(time.Until(dl), 0), maxWait)
				req.Header.Set(headerWait, strconv.FormatInt(wait.Milliseconds(), 10))
			}
		}
	}
	resp, err := c.opts.HTTPClient.Do(req)
	if err != nil {
		return 0, nil, nil, 0, err
	}
	defer resp.Body.Close()
	body, err = io.ReadAll(io.LimitReader(resp.Body, maxAnswerBytes+1))
	if err != nil {
		return 0, nil, nil, 0, err
	}
	if len(body) > maxAnswerBytes {
		return 0, nil, nil, 0, fmt.Errorf("the answer is larger than %d bytes", maxAnswerBytes)
	}
	return resp.StatusCode, resp.Header, body, 0, nil
}

// Problem is an error the API answered: an RFC 9457 problem details
// object with Lattice's members (docs/api.md, "Problems"). Use errors.As
// to get it from an error a Client method returned:
//
//	var p *client.Problem
//	if errors.As(err, &p) && p.Code == "insufficient_stock" { … p.Available … }
type Problem struct {
	// Type is urn:lattice:problem: followed by Code.
	Type string `json:"type"`
	// Title is fixed per code.
	Title string `json:"title"`
	// Status is the HTTP status.
	Status int `json:"status"`
	// Detail says what happened, in words; do not parse it.
	Detail string `json:"detail,omitempty"`
	// Code is the stable code, for example not_found or
	// insufficient_stock; empty if the answer was not a problem.
	Code string `json:"code"`
	// Field names the offending body member, parameter or header of an
	// invalid_request or body_too_large.
	Field string `json:"field,omitempty"`
	// Available is, on insufficient_stock for one sku, the units
	// available at its home when it decided.
	Available *int64 `json:"available,omitempty"`
	// Lines lists, on a checkout's insufficient_stock, every line that
	// could not be reserved.
	Lines []region.SkuAvailable `json:"lines,omitempty"`
	// RequestID is the X-Request-Id the region gave the request.
	RequestID string `json:"request_id,omitempty"`
	// RetryAfter is the Retry-After of a 503 (0 if none).
	RetryAfter time.Duration `json:"-"`
	// Region is the base URL of the region that answered.
	Region string `json:"-"`
}

// Error returns "code: detail".
func (p *Problem) Error() string {
	code := p.Code
	if code == "" {
		code = strconv.Itoa(p.Status)
	}
	if p.Detail == "" {
		return code + ": " + p.Title
	}
	return code + ": " + p.Detail
}

// Temporary reports whether the problem is a 503 that decided nothing
// (or, for a keyed request, may be retried with its key). A
// replication_timeout is a 503 too, but its write was applied; a
// partition_unanswered one, or a 503 that is not the region's (a proxy's,
// without a code), may have been applied: neither is Temporary (see
// ErrReplicationTimeout), since repeating an add that was applied would
// add its units twice.
func (p *Problem) Temporary() bool {
	return p.Status == http.StatusServiceUnavailable && p.Code != "" &&
		p.Code != region.CodeReplicationTimeout && p.Code != region.CodePartitionUnanswered
}

// decodeProblem makes the Problem of a failed answer. A body that is not
// a problem (a proxy's page) becomes a Problem with its status and no
// code.
func decodeProblem(status int, hdr http.Header, body []byte) *Problem {
	p := &Problem{}
	if err := json.Unmarshal(body, p); err != nil || p.Status == 0 {
		p = &Problem{Status: status, Title: http.StatusText(status), Detail: snippet(body)}
	}
	p.Status = status
	p.RetryAfter = parseRetryAfter(hdr.Get("Retry-After"))
	return p
}

func snippet(b []byte) string {
	s := strings.TrimSpace(string(b))
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return s
}

// parseRetryAfter reads a Retry-After of delay seconds or an HTTP date.
func parseRetryAfter(v string) time.Duration {
	if v == "" {
		return 0
	}
	if n, err := strconv.ParseUint(v, 10, 64); err == nil || errors.Is(err, strconv.ErrRange) {
		// A delay past what a Duration holds (292 years), or past what
		// the parse holds (ParseUint then gives its largest value),
		// waits as long as the longest one: it must not wrap to a
		// negative pause, nor count as none.
		return time.Duration(min(n, uint64(math.MaxInt64/time.Second))) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(time.Until(t), 0)
	}
	return 0
}
