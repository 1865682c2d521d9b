package api

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/latticedb/lattice/region"
)

// Codes of the API itself, besides the domain codes of package region.
const (
	// CodeMethodNotAllowed answers a known path with a method it lacks
	// (405, with an Allow header).
	CodeMethodNotAllowed = "method_not_allowed"
	// CodeBodyTooLarge answers a request body over MaxBodyBytes (413).
	CodeBodyTooLarge = "body_too_large"
	// CodeStarting answers every request but GET /healthz while the
	// region's process opens its store (503, see Starting).
	CodeStarting = "starting"
)

// ProblemContentType is the media type of every error response.
const ProblemContentType = "application/problem+json"

// ProblemTypePrefix prefixes the code to make a problem's type URI, for
// example urn:lattice:problem:insufficient_stock. The URIs identify; they
// are not meant to be dereferenced.
const ProblemTypePrefix = "urn:lattice:problem:"

// Problem is an RFC 9457 problem details object with Lattice's members:
// code always, field on invalid_request, available on a single-sku
// insufficient_stock, lines on a checkout's insufficient_stock.
type Problem struct {
	Type   string `json:"type"`
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail,omitempty"`
	Code   string `json:"code"`
	// Field names the offending request field, path parameter, query
	// parameter or header.
	Field     string                `json:"field,omitempty"`
	Available *int64                `json:"available,omitempty"`
	Lines     []region.SkuAvailable `json:"lines,omitempty"`
	// RequestID is the request's X-Request-Id, set on every problem the
	// API answers.
	RequestID string `json:"request_id,omitempty"`
	// RetryAfter, in seconds, becomes the Retry-After header of a 503.
	RetryAfter int `json:"-"`
}

type codeInfo struct {
	status int
	title  string
}

// codes maps every code to its status and title. A code not listed maps
// to a 500 internal error, except reservation_* codes (409).
var codes = map[string]codeInfo{
	region.CodeInvalidRequest:       {http.StatusBadRequest, "Invalid request"},
	region.CodeInvalidToken:         {http.StatusBadRequest, "Invalid causal token"},
	region.CodeNotFound:             {http.StatusNotFound, "Not found"},
	CodeMethodNotAllowed:            {http.StatusMethodNotAllowed, "Method not allowed"},
	CodeBodyTooLarge:                {http.StatusRequestEntityTooLarge, "Request body too large"},
	CodeUnauthorized:                {http.StatusUnauthorized, "Unauthorized"},
	CodeForbidden:                   {http.StatusForbidden, "Forbidden"},
	region.CodeInsufficientStock:    {http.StatusConflict, "Insufficient stock"},
	region.CodeCartEmpty:            {http.StatusConflict, "Cart is empty"},
	region.CodeReservationExpired:   {http.StatusConflict, "Reservation expired"},
	region.CodeReservationReleased:  {http.StatusConflict, "Reservation released"},
	region.CodeReservationCommit:    {http.StatusConflict, "Reservation committed"},
	region.CodeRequestInProgress:    {http.StatusConflict, "Request in progress"},
	region.CodeCartFull:             {http.StatusUnprocessableEntity, "Cart full"},
	region.CodeIdempotencyMismatch:  {http.StatusUnprocessableEntity, "Idempotency key reused with another request"},
	region.CodeHomeUnavailable:      {http.StatusServiceUnavailable, "Home region unavailable"},
	region.CodeCausalTimeout:        {http.StatusServiceUnavailable, "Causal wait timed out"},
	region.CodeReplicationTimeout:   {http.StatusServiceUnavailable, "Write not yet at enough regions"},
	region.CodeQuorumUnavailable:    {http.StatusServiceUnavailable, "Too few regions answered"},
	region.CodePartitionUnavailable: {http.StatusServiceUnavailable, "Partition unavailable"},
	region.CodePartitionUnanswered:  {http.StatusServiceUnavailable, "Partition did not answer"},
	region.CodeUnavailable:          {http.StatusServiceUnavailable, "Service unavailable"},
	CodeStarting:                    {http.StatusServiceUnavailable, "Region starting"},
	region.CodeInternal:             {http.StatusInternalServerError, "Internal error"},
}

// defaultRetryAfter is the Retry-After, in seconds, of a 503 whose error
// suggests none.
const defaultRetryAfter = 1

// ProblemFor is the one mapping from errors to problem details. A
// *region.Error (possibly wrapped) maps by its code; echo's routing errors
// map to not_found, method_not_allowed and body_too_large; a request
// deadline that ran out maps to 503 unavailable; anything else is a 500
// internal error whose detail says nothing of the cause. Every 503 carries
// a RetryAfter (the error's, else 1 s).
func ProblemFor(err error) Problem {
	var re *region.Error
	var he *echo.HTTPError
	var mbe *http.MaxBytesError
	var p Problem
	switch {
	case errors.As(err, &re):
		info, ok := codes[re.Code]
		switch {
		case ok:
		case strings.HasPrefix(re.Code, "reservation_"):
			info = codeInfo{http.StatusConflict, "Reservation in another state"}
		default:
			return internalProblem()
		}
		if info.status == http.StatusInternalServerError {
			return internalProblem()
		}
		p = Problem{Code: re.Code, Status: info.status, Title: info.title, Detail: re.Detail,
			Field: re.Field, Available: re.Available, Lines: re.Lines, RetryAfter: re.RetryAfter}
	case errors.As(err, &mbe):
		p = problem(CodeBodyTooLarge, "the request body is larger than "+strconv.Itoa(MaxBodyBytes)+" bytes")
		p.Field = "body"
	case errors.As(err, &he):
		switch he.Code {
		case http.StatusNotFound:
			p = problem(region.CodeNotFound, "no such route")
		case http.StatusMethodNotAllowed:
			p = problem(CodeMethodNotAllowed, "this path does not support the request method")
		case http.StatusRequestEntityTooLarge:
			p = problem(CodeBodyTooLarge, "the request body is larger than "+strconv.Itoa(MaxBodyBytes)+" bytes")
			p.Field = "body"
		default:
			return internalProblem()
		}
	case errors.Is(err, context.DeadlineExceeded):
		p = problem(region.CodeUnavailable, "the request did not finish within its deadline")
	case errors.Is(err, context.Canceled):
		p = problem(region.CodeUnavailable, "the request was canceled")
	default:
		return internalProblem()
	}
	p.Type = ProblemTypePrefix + p.Code
	if p.Status == http.StatusServiceUnavailable && p.RetryAfter <= 0 {
		p.RetryAfter = defaultRetryAfter
	}
	if p.Status != http.StatusServiceUnavailable {
		p.RetryAfter = 0
	}
	return p
}

func problem(code, detail string) Problem {
	info := codes[code]
	return Problem{Type: ProblemTypePrefix + code, Code: code, Status: info.status, Title: info.title, Detail: detail}
}

func internalProblem() Problem {
	return problem(region.CodeInternal, "the server failed to handle the request")
}

// writeError is echo's HTTPErrorHandler: it writes err as a problem
// response and logs internal errors.
func (h *handler) writeError(err error, c echo.Context) {
	req := c.Request()
	p := ProblemFor(err)
	p.RequestID = requestIDFrom(c)
	if p.Status >= http.StatusInternalServerError && p.Code == region.CodeInternal {
		h.log.LogAttrs(req.Context(), slog.LevelError, "api: internal error",
			slog.String("method", req.Method), slog.String("path", req.URL.Path),
			slog.String("request_id", p.RequestID), slog.Any("error", err))
	}
	if c.Response().Committed {
		return
	}
	hdr := c.Response().Header()
	hdr.Del(HeaderToken)
	if p.RetryAfter > 0 {
		hdr.Set("Retry-After", strconv.Itoa(p.RetryAfter))
	}
	b, merr := json.Marshal(p)
	if merr != nil { // cannot happen: Problem always encodes
		b = []byte(`{"type":"` + ProblemTypePrefix + `internal","title":"Internal error","status":500,"code":"internal"}`)
		p.Status = http.StatusInternalServerError
	}
	if req.Method == http.MethodHead {
		hdr.Set(echo.HeaderContentType, ProblemContentType)
		_ = c.NoContent(p.Status)
		return
	}
	if werr := c.Blob(p.Status, ProblemContentType, b); werr != nil {
		h.log.LogAttrs(req.Context(), slog.LevelDebug, "api: writing problem", slog.Any("error", werr))
	}
}
