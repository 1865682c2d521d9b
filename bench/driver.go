package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/latticedb/lattice/region"
)

// Outcome is what became of one request.
type Outcome uint8

// Outcomes of a request.
const (
	// NotRun is a request never sent (the run was stopped first).
	NotRun Outcome = iota
	// OK is a 2xx answer: the operation happened.
	OK
	// Refused is a 4xx answer: the operation was decided against
	// (insufficient_stock, say) and changed nothing.
	Refused
	// Unknown is any other end (a 5xx such as home_unavailable, a
	// timeout, a broken connection): the operation may or may not have
	// happened.
	Unknown
)

var outcomeNames = [...]string{"not_run", "ok", "refused", "unknown"}

// String names the outcome.
func (o Outcome) String() string {
	if int(o) < len(outcomeNames) {
		return outcomeNames[o]
	}
	return fmt.Sprintf("outcome(%d)", uint8(o))
}

// call is the result of one HTTP request.
type call struct {
	Outcome Outcome
	Status  int
	// Code is the problem's code of an error answer, or the transport
	// error's kind ("transport").
	Code    string
	Latency time.Duration
	// Available is the problem's available, when it has one (an
	// insufficient_stock refusal of one sku: what its home had available
	// when it decided).
	Available *int64
	// Token is the answer's causal token (Lattice-Token), when it is 2xx.
	Token string
}

// reservationTTL is the ttl of the benchmark's holds.
const reservationTTL = 15 * time.Second

// opResult is the result of one operation. A reservation has two calls:
// the hold and, when it was granted, its commit or release.
type opResult struct {
	Sent   time.Time // when the first request was sent
	Done   time.Time // when the last answer was read
	First  call
	Second call
	// ID is the reservation id of a granted hold.
	ID string
	// Stock is what a read right after a hold refused with
	// insufficient_stock found (client.probeRefusals), nil if none ran.
	Stock *stockProbe
}

// stockProbe is the stock of a sku read right after a hold of it was
// refused with insufficient_stock: at its home, with ?consistent=true,
// then the unused rights of every other region (escrow skus), each read
// there.
type stockProbe struct {
	// OK says whether the home answered; Available and Granted are its
	// item's (available leaves out the rights other regions hold,
	// which granted counts, used by holds or not).
	OK                 bool
	Available, Granted int64
	// RightsOK says whether every other region answered, Rights is the
	// sum of their rights (what each may still reserve alone).
	RightsOK bool
	Rights   int64
}

// client sends the benchmark's requests. A request for a region goes to
// its nodes in turn (round robin), as through a load balancer in front
// of them: any node answers for every partition, forwarding to the
// partition's owner in its region when that is another node.
type client struct {
	http *http.Client
	// urls are the base URLs of each region's nodes; next counts the
	// requests sent to each region.
	urls [][]string
	next []atomic.Uint64
	// ttl is the ttl_ms of reservations.
	ttl int64
	// names are the regions' names, by index: an escrow hold's commit or
	// release goes to the region its id names.
	names []string
	// probeRefusals makes run read the sku's stock right after a hold is
	// refused with insufficient_stock (opResult.Stock).
	probeRefusals bool
	// done counts the operations drive has finished, failed those whose
	// first request ended Unknown (a 5xx or no answer), for the progress
	// lines.
	done, failed atomic.Int64
}

func newClient(urls [][]string, concurrency int, timeout time.Duration) *client {
	nodes := 0
	for _, u := range urls {
		nodes += len(u)
	}
	tr := &http.Transport{
		MaxIdleConns:        concurrency * nodes,
		MaxIdleConnsPerHost: concurrency,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
	}
	return &client{http: &http.Client{Transport: tr, Timeout: timeout}, urls: urls, next: make([]atomic.Uint64, len(urls)), ttl: reservationTTL.Milliseconds()}
}

// url returns the base URL of the node of region the next request goes
// to.
func (c *client) url(region int) string {
	u := c.urls[region]
	if len(u) == 1 {
		return u[0]
	}
	return u[(c.next[region].Add(1)-1)%uint64(len(u))]
}

func (c *client) close() { c.http.CloseIdleConnections() }

// do sends one request to region and decodes a 2xx JSON answer into out.
func (c *client) do(ctx context.Context, region int, method, path string, body, out any) call {
	return c.doHeader(ctx, region, method, path, nil, body, out)
}

// doHeader is do with the request headers hdr.
func (c *client) doHeader(ctx context.Context, region int, method, path string, hdr http.Header, body, out any) call {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return call{Outcome: Unknown, Code: "encode"}
		}
		rd = bytes.NewReader(b)
	}
	start := time.Now()
	base := c.url(region)
	req, err := http.NewRequestWithContext(ctx, method, base+path, rd)
	if err != nil {
		return call{Outcome: Unknown, Code: "request"}
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return call{Outcome: Unknown, Code: "transport", Latency: time.Since(start)}
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
	cl := call{Status: resp.StatusCode, Latency: time.Since(start)}
	switch {
	case err != nil:
		cl.Outcome, cl.Code = Unknown, "transport"
	case resp.StatusCode/100 == 2:
		cl.Outcome = OK
		cl.Token = resp.Header.Get("Lattice-Token")
		if out != nil {
			if err := json.Unmarshal(b, out); err != nil {
				cl.Code = "bad_json"
			}
		}
	default:
		cl.Outcome = Unknown
		if resp.StatusCode/100 == 4 {
			cl.Outcome = Refused
		}
		var p struct {
			Code      string `json:"code"`
			Available *int64 `json:"available"`
		}
		if json.Unmarshal(b, &p) == nil && p.Code != "" {
			cl.Code, cl.Available = p.Code, p.Available
		} else {
			cl.Code = fmt.Sprintf("http_%d", resp.StatusCode)
		}
	}
	return cl
}

// run executes op and returns its result.
func (c *client) run(ctx context.Context, op Op) opResult {
	r := opResult{Sent: time.Now()}
	p := url.PathEscape
	switch op.Kind {
	case CartAdd, CartMixAdd:
		r.First = c.do(ctx, op.Region, "POST", "/v1/carts/"+p(op.Cart)+"/items", map[string]any{"sku": op.SKU, "qty": op.Qty}, nil)
	case CartSet:
		r.First = c.do(ctx, op.Region, "PUT", "/v1/carts/"+p(op.Cart)+"/items/"+p(op.SKU), map[string]any{"qty": op.Qty}, nil)
	case CartRemove:
		r.First = c.do(ctx, op.Region, "DELETE", "/v1/carts/"+p(op.Cart)+"/items/"+p(op.SKU), nil, nil)
	case Restock:
		r.First = c.do(ctx, op.Region, "POST", "/v1/inventory/"+p(op.SKU)+"/restock", map[string]any{"qty": op.Qty}, nil)
	case Reserve:
		var res struct {
			ID string `json:"reservation_id"`
		}
		r.First = c.do(ctx, op.Region, "POST", "/v1/reservations", map[string]any{"sku": op.SKU, "qty": op.Qty, "ttl_ms": c.ttl}, &res)
		if r.First.Outcome == OK && res.ID != "" {
			r.ID = res.ID
			step := "release"
			if op.Commit {
				step = "commit"
			}
			// An escrow hold's commit or release goes to the region
			// that decided it, which its id names (the region the hold
			// was sent to, or the home it escalated to); a home-decided
			// one's to the region the hold was sent to, which forwards
			// it to the home.
			to := op.Region
			if i := slices.Index(c.names, decider(res.ID)); op.Escrow && i >= 0 {
				to = i
			}
			r.Second = c.do(ctx, to, "POST", "/v1/reservations/"+p(res.ID)+"/"+step, nil, nil)
		}
	}
	r.Done = time.Now()
	if c.probeRefusals && op.Kind == Reserve && r.First.Code == "insufficient_stock" {
		r.Stock = c.probeStock(ctx, op)
	}
	return r
}

// decider returns the region a reservation id names: the region that
// decided the hold, and where its commit or release is decided.
func decider(id string) string {
	r, _, _ := strings.Cut(id, ":")
	return r
}

// probeStock reads op's sku at its home (?consistent=true) and, for an
// escrow sku, the rights of every other region, each at that region.
func (c *client) probeStock(ctx context.Context, op Op) *stockProbe {
	path := "/v1/inventory/" + url.PathEscape(op.SKU)
	var home region.Item
	pr := &stockProbe{}
	if c.do(ctx, op.Home, "GET", path+"?consistent=true", nil, &home).Outcome != OK {
		return pr
	}
	pr.OK, pr.Available = true, home.Available
	if home.Granted != nil {
		pr.Granted = *home.Granted
	}
	pr.RightsOK = true
	if !op.Escrow {
		return pr
	}
	for r := range c.urls {
		if r == op.Home {
			continue
		}
		var it region.Item
		if c.do(ctx, r, "GET", path, nil, &it).Outcome != OK || it.Rights == nil {
			pr.RightsOK = false
			continue
		}
		pr.Rights += *it.Rights
	}
	return pr
}

// get reads path at region into out; it fails on anything but 200.
func (c *client) get(ctx context.Context, region int, path string, out any) error {
	cl := c.do(ctx, region, "GET", path, nil, out)
	if cl.Status != http.StatusOK || cl.Code != "" {
		return fmt.Errorf("bench: GET %s at %s: status %d %s", path, strings.Join(c.urls[region], " or "), cl.Status, cl.Code)
	}
	return nil
}

// drive runs the schedule open-loop: each operation starts at start +
// its target time, or as soon after as one of concurrency slots is free;
// a slow answer never delays the schedule of the others beyond that
// bound. It returns one result per operation (NotRun for those not
// started when ctx ended).
func (c *client) drive(ctx context.Context, ops []Op, start time.Time, concurrency int) []opResult {
	results := make([]opResult, len(ops))
	sem := make(chan struct{}, concurrency)
	var wg sync.WaitGroup
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
loop:
	for i, op := range ops {
		if d := time.Until(start.Add(op.At)); d > 0 {
			timer.Reset(d)
			select {
			case <-timer.C:
			case <-ctx.Done():
				break loop
			}
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			break loop
		}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			results[i] = c.run(ctx, op)
			if results[i].First.Outcome == Unknown {
				c.failed.Add(1)
			}
			c.done.Add(1)
		}()
	}
	wg.Wait()
	return results
}
