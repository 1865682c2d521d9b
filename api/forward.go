package api

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/labstack/echo/v4"

	"github.com/latticedb/lattice/crdt"
	"github.com/latticedb/lattice/region"
	"github.com/latticedb/lattice/region/config"
)

// HeaderForwarded marks a request one node of a partitioned region
// forwarded to the node that owns its partition; its value names the
// forwarding node (REGION/NODE). A node never forwards such a request
// again.
const HeaderForwarded = "Lattice-Forwarded"

// Partitioning places the requests of a partitioned region (SPEC §10):
// any node answers any request, serving its own partitions and forwarding
// the others to the node of the region that owns them, within the
// request's deadline.
type Partitioning struct {
	// Partitions is the cluster's number of partitions.
	Partitions int
	// Self names this node (REGION/NODE) in HeaderForwarded.
	Self string
	// Owner returns the base URL (http://host:port or https://…) of the
	// node of this region that owns partition p, or "" when this node
	// does.
	Owner func(p int) string
	// Client carries forwarded requests (nil: a client with no timeout
	// of its own; the request's deadline bounds each forward).
	Client *http.Client
}

// partitionOf returns the partition of the request c is routed to, and
// whether it names one: a cart's, a sku's, the one a reservation id names,
// or, for a new reservation, its body's sku. A request whose key is
// malformed names none; it is served here, and refused as malformed.
func (h *handler) partitionOf(c echo.Context) (int, bool, error) {
	p := h.part.Partitions
	route := c.Path()
	switch {
	case strings.HasPrefix(route, "/v1/carts/"):
		id, ok := unescapedParam(c, "cart_id")
		return config.PartitionOf(id, p), ok && crdt.ValidID(id), nil
	case strings.HasPrefix(route, "/v1/inventory/"):
		sku, ok := unescapedParam(c, "sku")
		return config.PartitionOf(sku, p), ok && crdt.ValidID(sku), nil
	case strings.HasPrefix(route, "/v1/reservations/"):
		id, ok := unescapedParam(c, "id")
		if !ok {
			return 0, false, nil
		}
		part, ok := region.ReservationPartition(id)
		return part, ok && part < p, nil
	case route == "/v1/reservations":
		req := c.Request()
		if req.Body == nil || req.Method != http.MethodPost {
			return 0, false, nil
		}
		// Read as the handler would (400 for a broken body, 413 past the
		// limit), and parsed only within the handler's limits: a body past
		// them names no partition and is refused here as the handler does.
		b, err := readBody(c, nil)
		if err != nil {
			return 0, false, err
		}
		req.Body = io.NopCloser(bytes.NewReader(b))
		if checkLimits(b) != nil {
			return 0, false, nil
		}
		// Decoded as the handler decodes it (exact, case-sensitive names,
		// no unknown or repeated ones): a body the handler would refuse,
		// or one whose sku is malformed, names no partition and is served
		// here, where it is refused at once (400), not forwarded to an
		// owner that may be down (503, which says "retry").
		var body reserveBody
		if !decodeFast(b, &body) && decodeStrict(b, &body) != nil {
			return 0, false, nil
		}
		if body.SKU == nil || !crdt.ValidID(*body.SKU) {
			return 0, false, nil
		}
		if _, err := requireInt("qty", body.Qty, 1, MaxQty); err != nil {
			return 0, false, nil
		}
		if _, err := optionalTTL(body.TTLMS); err != nil {
			return 0, false, nil
		}
		return config.PartitionOf(*body.SKU, p), true, nil
	}
	return 0, false, nil
}

// route serves c here, with its partition in the request's context, when
// this node owns the partition; else it forwards c to the owner.
func (h *handler) route(c echo.Context, next echo.HandlerFunc) error {
	part, ok, err := h.partitionOf(c)
	if err != nil {
		return err
	}
	if !ok {
		return next(c)
	}
	req := c.Request()
	owner := h.part.Owner(part)
	if owner == "" {
		c.SetRequest(req.WithContext(region.WithPartition(req.Context(), part)))
		return next(c)
	}
	if from := req.Header.Get(HeaderForwarded); from != "" {
		return &region.Error{Code: region.CodePartitionUnavailable, RetryAfter: 1,
			Detail: fmt.Sprintf("%s forwarded partition %d here, but %s does not own it (do the nodes' configs differ?)", from, part, h.part.Self)}
	}
	return h.forward(c, part, owner)
}

// forwardedKey marks, in the echo context, a request this node forwarded
// and whose owner answered it.
const forwardedKey = "lattice.forwarded"

// clientBody is a forwarded request's body as the client sends it, with
// the error, other than its end, that reading it met.
type clientBody struct {
	r   io.Reader
	mu  sync.Mutex // the transport reads on a goroutine of its own
	err error
}

func (b *clientBody) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if err != nil && err != io.EOF {
		b.mu.Lock()
		b.err = err
		b.mu.Unlock()
	}
	return n, err
}

func (b *clientBody) readErr() error {
	if b == nil {
		return nil
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.err
}

// hopHeaders are the hop-by-hop headers a forward does not pass on.
var hopHeaders = []string{"Connection", "Keep-Alive", "Proxy-Connection", "Te", "Trailer", "Transfer-Encoding", "Upgrade"}

// forward sends c's request to the node at base and copies its answer
// back. A node that cannot be reached makes the answer 503
// partition_unavailable (nothing was sent: nothing was applied); one that
// was sent the request but whose answer did not come back (the connection
// dropped, the deadline passed) makes it 503 partition_unanswered (the
// owner may have applied it).
func (h *handler) forward(c echo.Context, part int, base string) error {
	req := c.Request()
	// The limit on header fields holds where the client sent the
	// request; the owner does not count the fields the forward adds.
	if err := checkHeaderFields(req.Header); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(req.Context(), h.timeout+MaxWait)
	defer cancel()
	var body io.Reader = req.Body
	var client *clientBody // the client's body, whose read errors are the client's
	if req.Body != nil && req.Body != http.NoBody {
		client = &clientBody{r: req.Body}
		body = client
	}
	out, err := http.NewRequestWithContext(ctx, req.Method, base+req.URL.RequestURI(), body)
	if err != nil {
		return err
	}
	if out.Body == http.NoBody && req.Method != http.MethodGet && req.Method != http.MethodHead {
		// A write is forwarded once. net/http sends a request again on a new
		// connection when a kept-alive one drops under it, if it can
		// rewind the body (an empty one it can) and the request carries
		// an Idempotency-Key. The owner would then find
		// the first copy of a keyed commit or release still running and
		// answer the second 409 request_in_progress, which the client
		// cannot tell from another request's under its key. An empty
		// body net/http cannot rewind keeps it from sending again: the
		// forward fails as unanswered (503 partition_unanswered), and
		// the client's retry under the key finds the outcome.
		out.Body = io.NopCloser(strings.NewReader(""))
	}
	out.Header = req.Header.Clone()
	for _, k := range hopHeaders {
		out.Header.Del(k)
	}
	out.Header.Set(HeaderForwarded, h.part.Self)
	out.Header[HeaderRequestID] = []string{requestIDFrom(c)}
	out.ContentLength = req.ContentLength
	hc := h.part.Client
	if hc == nil {
		hc = http.DefaultClient
	}
	// Sent is the whole request written: the owner applies a request only
	// once it has read all of it, so one whose writing failed (a broken
	// pipe to a node that is gone) was not applied.
	var wrote atomic.Bool
	out = out.WithContext(httptrace.WithClientTrace(out.Context(), &httptrace.ClientTrace{
		WroteRequest: func(info httptrace.WroteRequestInfo) {
			if info.Err == nil {
				wrote.Store(true)
			}
		},
	}))
	h.metrics.forwards.Inc() // every forward; the failures among them below
	resp, err := hc.Do(out)
	if berr := client.readErr(); err != nil && berr != nil {
		// The client's body broke off (a Content-Length it did not send
		// in full): its fault, answered as a node of a region of one
		// answers it, not the owner's (not a forward failure).
		return region.InvalidField("body", "reading the request body: %v", berr)
	}
	if err != nil {
		h.metrics.forwardFailures.Inc()
		why := err.Error()
		if errors.Is(err, context.DeadlineExceeded) {
			why = "no answer within the request's deadline"
		}
		if wrote.Load() {
			// Sent (at least in part), perhaps applied: a client must
			// not take this for a refusal.
			return &region.Error{Code: region.CodePartitionUnanswered, RetryAfter: 1,
				Detail: fmt.Sprintf("the node owning partition %d was sent the request but its answer did not come back (%s): it may have been applied", part, why)}
		}
		return &region.Error{Code: region.CodePartitionUnavailable, RetryAfter: 1,
			Detail: fmt.Sprintf("the node owning partition %d cannot be reached: %s", part, why)}
	}
	defer resp.Body.Close()
	c.Set(forwardedKey, true) // counted by the owner, which answered it
	hdr := c.Response().Header()
	for k, v := range resp.Header {
		hdr[k] = v
	}
	for _, k := range hopHeaders {
		hdr.Del(k)
	}
	hdr.Set(HeaderPartition, strconv.Itoa(part))
	c.Response().WriteHeader(resp.StatusCode)
	_, err = io.Copy(c.Response(), resp.Body)
	if err != nil {
		// The status is sent; all that is left is to cut the answer.
		h.log.Warn("api: forwarded answer cut short", "partition", part, "err", err)
		panic(http.ErrAbortHandler)
	}
	return nil
}

// HeaderPartition, on an answer, names the partition whose owning node
// (another node of the region) answered it.
const HeaderPartition = "Lattice-Partition"
