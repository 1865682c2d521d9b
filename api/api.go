package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"runtime/debug"
	"strings"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/latticedb/lattice/crdt"
	"github.com/latticedb/lattice/region"
)

// Header names of SPEC §5 and §6.
const (
	// HeaderToken carries a causal token, on requests and on every
	// successful response.
	HeaderToken = "Lattice-Token"
	// HeaderWait bounds, in milliseconds, how long a request carrying a
	// causal token waits for the region to catch up.
	HeaderWait = "Lattice-Wait"
	// HeaderReplicas is a write's write concern: the number of regions
	// (1..R, majority or all; this one included) that must hold it
	// durably before it is answered.
	HeaderReplicas = "Lattice-Replicas"
	// QueryQuorum is a cart or stock read's read concern: the number of
	// regions (1..R, majority or all) whose states the answer joins.
	QueryQuorum = "quorum"
	// HeaderIdempotencyKey names a retryable POST.
	HeaderIdempotencyKey = "Idempotency-Key"
)

// Limits and defaults of the API. Where SPEC §6 leaves a range open, the
// range chosen is stated here.
const (
	// MaxBodyBytes bounds a request body; a larger one is 413.
	MaxBodyBytes = 64 << 10
	// MaxBodyDepth bounds how deeply the objects and arrays of a request
	// body nest (a flat object is depth 1), MaxBodyTokens how many member
	// names and values it holds in all, at any depth (an object or array
	// counting as one value besides what it holds), and MaxBodyTokenBytes
	// the bytes of one name, string, number or literal as written. A body
	// over any of them is 400 invalid_request, refused by a scan of its
	// bytes before anything decodes it. The limits keep what serving a
	// body allocates within 8× its size plus a fixed 32 KiB, and are far
	// above what the API takes: every body it accepts is one flat object
	// of at most 7 names and values, none longer than 3,072 bytes (a
	// reason of 256 astral characters, each escaped as a surrogate pair).
	MaxBodyDepth      = 32
	MaxBodyTokens     = 128
	MaxBodyTokenBytes = 4096
	// MaxQty bounds the qty of an add, a set, a restock and a
	// reservation (crdt.MaxQty, the bound the cart itself keeps). An add,
	// a restock and a reservation take 1..MaxQty, a set 0..MaxQty.
	MaxQty = crdt.MaxQty
	// MaxAdjust bounds the delta of an adjustment: a nonzero integer in
	// -MaxAdjust..MaxAdjust.
	MaxAdjust = 1_000_000
	// MaxReasonLen bounds the optional reason of an adjustment, in
	// Unicode code points.
	MaxReasonLen = 256
	// MinTTL, MaxTTL and DefaultTTL bound the ttl_ms of a reservation and
	// of a checkout's reservations: 1 s to 24 h, 10 min when left out.
	MinTTL     = time.Second
	MaxTTL     = 24 * time.Hour
	DefaultTTL = 10 * time.Minute
	// MaxIdempotencyKeyLen bounds an Idempotency-Key: 1 to 255 printable
	// ASCII characters (0x20–0x7E).
	MaxIdempotencyKeyLen = 255
	// DefaultWait and MaxWait bound a causal wait: Lattice-Wait is a
	// decimal number of milliseconds 0..10000, 1000 when left out.
	DefaultWait = time.Second
	MaxWait     = 10 * time.Second
	// DefaultRequestTimeout is the deadline of one service operation,
	// counted after any causal wait.
	DefaultRequestTimeout = 2 * time.Second
)

// Options configures the handler New returns. The zero value is usable.
type Options struct {
	// Logger receives a debug record per request, an error record per
	// internal error or recovered panic. Defaults to slog.Default().
	Logger *slog.Logger
	// Registerer receives the HTTP metrics, labelled with region=the
	// service's region so that several regions may share one registry.
	// When nil, a new registry holding the Go runtime and process
	// collectors is made for it, and Gatherer defaults to that registry.
	Registerer prometheus.Registerer
	// Gatherer is what GET /metrics serves. Defaults to Registerer when it
	// is also a Gatherer (a *prometheus.Registry), else to
	// prometheus.DefaultGatherer. Other packages register their own
	// metrics (replication, storage) with a registry this gathers.
	Gatherer prometheus.Gatherer
	// RequestTimeout is the deadline of each service operation.
	// Defaults to DefaultRequestTimeout.
	RequestTimeout time.Duration
	// Tokens, when set, makes every request need a bearer token of it
	// (Authorization: Bearer TOKEN): GET and HEAD a read-only or
	// read-write one, every other method a read-write one. A request
	// without a valid token is 401 unauthorized, one whose token may only
	// read is 403 forbidden; neither reaches the service. When nil, the
	// API asks for no token.
	Tokens *Tokens
	// ProtectProbes makes /healthz, /readyz and /metrics need a token
	// too. By default they stay open to probes and scrapers.
	ProtectProbes bool
	// Partitioning, when set, makes this the API of one node of a
	// partitioned region: requests for partitions other nodes own are
	// forwarded to them (see Partitioning).
	Partitioning *Partitioning
	// AccessLog logs every request at INFO (method, path, route, status,
	// bytes, duration, request id, remote address; the logger adds the
	// region). Without it the same record is logged at DEBUG.
	AccessLog bool
}

// handler holds what the route handlers share.
type handler struct {
	svc     Service
	log     *slog.Logger
	timeout time.Duration
	metrics *metrics
	openapi []byte

	tokens        *Tokens
	protectProbes bool
	accessLevel   slog.Level
	part          *Partitioning
	// routes holds "METHOD pattern" of every route (guard).
	routes map[string]bool
}

// New returns the REST API of SPEC §6 over svc: every route of the table,
// /v1/openapi.json, health, readiness and metrics, strict request
// validation, problem details for every error, causal tokens and the
// request deadline. Serve it with NewServer.
func New(svc Service, opts Options) *echo.Echo {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.RequestTimeout <= 0 {
		opts.RequestTimeout = DefaultRequestTimeout
	}
	if opts.Registerer == nil {
		reg := prometheus.NewRegistry()
		reg.MustRegister(prometheusDefaultCollectors()...)
		opts.Registerer = reg
		if opts.Gatherer == nil {
			opts.Gatherer = reg
		}
	}
	if opts.Gatherer == nil {
		if g, ok := opts.Registerer.(prometheus.Gatherer); ok {
			opts.Gatherer = g
		} else {
			opts.Gatherer = prometheus.DefaultGatherer
		}
	}
	doc, err := json.Marshal(OpenAPI())
	if err != nil {
		panic(fmt.Sprintf("api: encoding the OpenAPI document: %v", err))
	}
	h := &handler{
		svc:     svc,
		log:     opts.Logger,
		timeout: opts.RequestTimeout,
		metrics: newMetrics(prometheus.WrapRegistererWith(prometheus.Labels{"region": svc.Region()}, opts.Registerer)),
		openapi: doc,

		tokens:        opts.Tokens,
		protectProbes: opts.ProtectProbes,
		part:          opts.Partitioning,
		accessLevel:   slog.LevelDebug,
	}
	if opts.AccessLog {
		h.accessLevel = slog.LevelInfo
	}

	e := echo.New()
	e.HideBanner = true
	e.HidePort = true
	e.HTTPErrorHandler = h.writeError
	// One middleware: echo composes the chain anew for every request,
	// one closure per middleware.
	e.Use(h.observe)

	e.GET("/v1/carts/:cart_id", h.getCart)
	e.DELETE("/v1/carts/:cart_id", h.clearCart)
	e.POST("/v1/carts/:cart_id/items", h.addItem)
	e.PUT("/v1/carts/:cart_id/items/:sku", h.setItem)
	e.DELETE("/v1/carts/:cart_id/items/:sku", h.removeItem)
	e.POST("/v1/carts/:cart_id/checkout", h.checkout)
	e.GET("/v1/carts/:cart_id/checkout", h.checkoutStatus)

	e.GET("/v1/inventory/:sku", h.getItem)
	e.POST("/v1/inventory/:sku/restock", h.restock)
	e.POST("/v1/inventory/:sku/adjust", h.adjust)

	e.POST("/v1/reservations", h.reserve)
	e.GET("/v1/reservations/:id", h.getReservation)
	e.POST("/v1/reservations/:id/commit", h.commit)
	e.POST("/v1/reservations/:id/release", h.release)

	e.GET("/v1/cluster", h.cluster)
	e.GET("/v1/openapi.json", h.openAPI)
	e.GET("/healthz", h.healthz)
	e.GET("/readyz", h.readyz)
	e.GET("/metrics", echo.WrapHandler(h.metrics.handler(opts.Gatherer)))
	h.routes = make(map[string]bool)
	for _, r := range e.Routes() {
		h.routes[r.Method+" "+r.Path] = true
	}
	return e
}

// observe is the outermost middleware: it gives the request its request
// id (echoed in X-Request-Id), turns a returned error into its problem
// response, then counts, times and logs the request.
func (h *handler) observe(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		start := time.Now()
		id := requestIDOf(c.Request())
		// The operation's context gets the id in begin; until then the
		// answer's header is where it is found (requestIDFrom).
		c.Response().Header()[HeaderRequestID] = []string{id}
		var err error
		if p := c.Path(); p != "" && !matchesPattern(p, echo.GetPath(c.Request())) {
			// echo's router falls back to the longest matching route, so
			// /v1/carts/c1/items/a/b would be a 405 of the route
			// /v1/carts/:cart_id/items/:sku: it is an unknown path.
			c.SetPath("")
			err = echo.ErrNotFound
		} else {
			err = h.guard(c, next)
		}
		if err != nil {
			c.Error(err)
		}
		elapsed := time.Since(start)
		req, res := c.Request(), c.Response()
		route := routeLabel(c.Path())
		if fw, _ := c.Get(forwardedKey).(bool); !fw {
			// A request this node forwarded and the owner answered is
			// counted there, where it was served: counted here too, a
			// region's request rate would count it twice. (Whether a
			// request came from another node is not taken from its
			// headers, which a client could send: the node that forwards
			// knows it did.)
			h.metrics.observe(req.Method, route, res.Status, elapsed)
		}
		if h.log.Enabled(req.Context(), h.accessLevel) {
			h.log.LogAttrs(req.Context(), h.accessLevel, "api: request",
				slog.String("method", req.Method),
				slog.String("route", route),
				slog.String("path", req.URL.Path),
				slog.Int("status", res.Status),
				slog.Int64("bytes", res.Size),
				slog.Duration("duration", elapsed),
				slog.String("request_id", id),
				slog.String("remote", req.RemoteAddr))
		}
		return nil
	}
}

// matchesPattern reports whether path has the segments of the echo route
// pattern: the same number, static ones equal.
func matchesPattern(pattern, path string) bool {
	for {
		p, prest, pmore := strings.Cut(pattern, "/")
		x, xrest, xmore := strings.Cut(path, "/")
		if pmore != xmore || !strings.HasPrefix(p, ":") && p != x {
			return false
		}
		if !pmore {
			return true
		}
		pattern, path = prest, xrest
	}
}

// guard runs next for c once the request is authorized (see authorize,
// only when the API has tokens), and turns a panic in it into an internal
// error (a 500 problem) after logging it with its stack; it re-panics
// http.ErrAbortHandler, which net/http handles.
func (h *handler) guard(c echo.Context, next echo.HandlerFunc) (err error) {
	defer func() {
		r := recover()
		if r == nil {
			return
		}
		if r == http.ErrAbortHandler {
			panic(r)
		}
		h.log.LogAttrs(c.Request().Context(), slog.LevelError, "api: panic serving request",
			slog.String("method", c.Request().Method),
			slog.String("path", c.Request().URL.Path),
			slog.Any("panic", r),
			slog.String("stack", string(debug.Stack())))
		err = fmt.Errorf("api: panic: %v", r)
	}()
	if h.part != nil && h.part.Partitions > 1 && h.routes[c.Request().Method+" "+c.Path()] {
		// Only a route's own methods go to a partition's owner: a method
		// the path lacks (405) and OPTIONS are answered here.
		inner := next
		next = func(c echo.Context) error { return h.route(c, inner) }
	}
	if r := c.Request(); r.Method == http.MethodOptions && strings.HasPrefix(r.URL.Path, "/v1/") && r.URL.Path != "/v1/openapi.json" {
		// OPTIONS is answered by the router (204 with Allow), not by a
		// handler: its token is the region's, like every successful /v1
		// answer's (an error answer drops it).
		inner := next
		next = func(c echo.Context) error {
			c.Response().Header().Set(HeaderToken, h.svc.TokenFor(c.Request().Context()))
			return inner(c)
		}
	}
	if h.tokens != nil {
		return h.authorize(next)(c)
	}
	return next(c)
}

// MaxHeaderFields bounds the header fields of a request that waits (for
// a causal token, a home, a write concern): Go's server takes up to
// MaxHeaderBytes of them, and parsed they take about 11 times their
// bytes, which a waiting request holds for up to 10 s.
const MaxHeaderFields = 100

// checkHeaderFields refuses a request with more than MaxHeaderFields
// header fields. A request forwarded by another node of the region was
// checked there, and the forward added up to two fields of its own
// (Lattice-Forwarded and X-Request-Id), which are not held against the
// client.
func checkHeaderFields(h http.Header) error {
	n := 0
	for _, v := range h {
		n += len(v)
	}
	if _, ok := h[HeaderForwarded]; ok {
		n = max(0, n-2)
	}
	if n > MaxHeaderFields {
		return region.InvalidField("headers", "%d header fields; at most %d", n, MaxHeaderFields)
	}
	return nil
}

// begin is called once a request is validated and before the service
// works on it. It honours a Lattice-Token (waiting up to Lattice-Wait for
// the region to apply what the token covers) and returns the context of
// the operation, bounded by the request deadline. The request's context
// then carries the operation's region.Answer, from which h.ok takes the
// answer's token.
func (h *handler) begin(c echo.Context) (context.Context, context.CancelFunc, error) {
	req := c.Request()
	req = req.WithContext(region.WithAnswer(withRequestID(req.Context(), requestIDFrom(c))))
	c.SetRequest(req)
	if err := checkHeaderFields(req.Header); err != nil {
		return nil, nil, err
	}
	wait, err := parseWait(req.Header)
	if err != nil {
		return nil, nil, err
	}
	// The concerns are checked before the causal wait: a request that
	// asks for what can never be is refused at once, not after waiting.
	if err := h.concerns(c); err != nil {
		return nil, nil, err
	}
	req = c.Request()
	if tokens, ok := req.Header[HeaderToken]; ok {
		if len(tokens) != 1 || tokens[0] == "" {
			return nil, nil, region.Errorf(region.CodeInvalidToken, "%s must be one non-empty causal token", HeaderToken)
		}
		wctx, cancel := context.WithTimeout(req.Context(), wait)
		err := h.svc.WaitToken(wctx, tokens[0])
		cancel()
		if err != nil {
			if errors.Is(err, context.DeadlineExceeded) {
				return nil, nil, region.Errorf(region.CodeCausalTimeout, "this region did not apply what the causal token covers within %v", wait)
			}
			return nil, nil, err
		}
	}
	ctx, cancel := withDeadline(c.Request().Context(), time.Now().Add(h.timeout))
	if region.ReplicasAsked(ctx) > 1 {
		dl, _ := ctx.Deadline()
		c.Set(ctxDeadline, dl)
	}
	return ctx, cancel, nil
}

// ctxDeadline is the echo context key of the operation's deadline, which
// a write concern's wait shares.
const ctxDeadline = "lattice.deadline"

// concerns parses the request's write concern (Lattice-Replicas, on
// writes) and read concern (?quorum=, on the reads whose handlers let it
// through checkQuery) into its context.
func (h *handler) concerns(c echo.Context) error {
	req := c.Request()
	ctx := req.Context()
	if vals, ok := req.Header[HeaderReplicas]; ok {
		if req.Method == http.MethodGet || req.Method == http.MethodHead {
			return region.InvalidField(HeaderReplicas, "%s applies to writes; a read asks for regions with ?%s=", HeaderReplicas, QueryQuorum)
		}
		if len(vals) != 1 {
			return region.InvalidField(HeaderReplicas, "%s given %d times", HeaderReplicas, len(vals))
		}
		n, err := h.svc.ConcernCount(HeaderReplicas, vals[0])
		if err != nil {
			return err
		}
		ctx = region.WithReplicas(ctx, n)
	}
	if req.URL.RawQuery != "" && c.QueryParams().Has(QueryQuorum) {
		n, err := h.svc.ConcernCount(QueryQuorum, c.QueryParam(QueryQuorum))
		if err != nil {
			return err
		}
		ctx = region.WithQuorum(ctx, n)
	}
	if ctx != req.Context() {
		c.SetRequest(req.WithContext(ctx))
	}
	return nil
}

// await waits for the operation's write concern (Service.AwaitReplicas)
// within the operation's deadline. A write that is not acknowledged in
// time stays applied: the answer is replication_timeout (as every error,
// without a token; docs/api.md).
func (h *handler) await(c echo.Context) error {
	ctx := c.Request().Context()
	if region.ReplicasAsked(ctx) <= 1 {
		return nil
	}
	if dl, ok := c.Get(ctxDeadline).(time.Time); ok && !dl.IsZero() {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, dl)
		defer cancel()
	}
	return h.svc.AwaitReplicas(ctx)
}

// ok writes a successful JSON response carrying the causal token of the
// answer (Service.TokenFor), taken now, after the operation.
func (h *handler) ok(c echo.Context, status int, v any) error {
	if tok := h.svc.TokenFor(c.Request().Context()); tok != "" {
		c.Response().Header().Set(HeaderToken, tok)
	}
	if err := h.await(c); err != nil {
		return err
	}
	return writeJSON(c, status, v)
}

func writeJSON(c echo.Context, status int, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("api: encoding response: %w", err)
	}
	return c.JSONBlob(status, b)
}
