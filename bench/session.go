package bench

import (
	"context"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/latticedb/lattice/region"
)

// The session probe checks what a causal token promises a client that
// moves between regions: read-your-writes. It runs after the concern
// probe, on the settled cluster; each region starts a session every
// SessionInterval, and a session, on a cart of its own:
//
//  1. adds a unit of a sku at its region A;
//  2. reads the cart at the next region B with the add's token: the add
//     must show (B waits until it has applied what the token covers);
//  3. removes the sku at the region after, C, with the read's token;
//  4. reads the cart back at A with the removal's token: the sku must
//     not show.
//
// The moves go to other regions at once, before replication could have
// brought the writes there: a read answered without them, or with a
// removed line, is a violation of the token's promise, counted in
// Correctness.ReadYourWrites. A request refused with causal_timeout (the
// region did not get the writes within the wait) is counted apart: the
// token's promise holds (the region refused rather than answer without
// them), but it should not happen on a settled cluster.

// Session probe defaults.
const (
	// SessionProbe is how long the session probe runs.
	SessionProbe = 2 * time.Second
	// SessionInterval is the time between two sessions' starts at one
	// region.
	SessionInterval = 50 * time.Millisecond
)

// SessionResult is what the session probe measured.
type SessionResult struct {
	DurationS float64 `json:"duration_s"`
	// Sessions counts the sessions whose four requests were answered 2xx.
	Sessions int `json:"sessions"`
	// Violations counts the reads with a token that did not show the
	// session's own writes (an add missing, a removed line shown).
	Violations int `json:"violations"`
	// Errors counts the requests not answered 2xx, by code.
	Errors map[string]int `json:"errors,omitempty"`
	// MovedRead is the latency of step 2: a read at the next region,
	// which waits for the add to arrive there. OneWayMS is the mean
	// emulated one-way delay of those moves: the least such a read can
	// take.
	MovedRead Summary `json:"moved_read"`
	OneWayMS  float64 `json:"one_way_ms"`
}

// probeSessions runs the session probe for d over every region of names
// (at least two).
func probeSessions(ctx context.Context, cl *client, names []string, latency map[string]int, d time.Duration) *SessionResult {
	n := len(names)
	res := &SessionResult{}
	if n < 2 {
		return res
	}
	var mu sync.Mutex
	var reads []float64
	var oneWay float64
	fail := func(code string) {
		mu.Lock()
		defer mu.Unlock()
		if res.Errors == nil {
			res.Errors = map[string]int{}
		}
		res.Errors[code]++
	}
	has := func(c *region.Cart, sku string) bool {
		for _, it := range c.Items {
			if it.SKU == sku && it.Qty > 0 {
				return true
			}
		}
		return false
	}
	session := func(a, i int) {
		b, c := (a+1)%n, (a+2)%n
		cart := "/v1/carts/" + url.PathEscape("session-"+names[a]+"-"+strconv.Itoa(i))
		const sku = "session"
		tok := func(t string) http.Header { return http.Header{"Lattice-Token": {t}} }
		add := cl.do(ctx, a, "POST", cart+"/items", map[string]any{"sku": sku, "qty": 1}, nil)
		if add.Outcome != OK {
			fail(add.Code)
			return
		}
		var seen region.Cart
		read := cl.doHeader(ctx, b, "GET", cart, tok(add.Token), nil, &seen)
		if read.Outcome != OK {
			fail(read.Code)
			return
		}
		mu.Lock()
		reads = append(reads, ms(read.Latency))
		oneWay += float64(oneWayMS(latency, names[a], names[b]))
		if !has(&seen, sku) {
			res.Violations++
		}
		mu.Unlock()
		rm := cl.doHeader(ctx, c, "DELETE", cart+"/items/"+sku, tok(read.Token), nil, nil)
		if rm.Outcome != OK {
			fail(rm.Code)
			return
		}
		var back region.Cart
		again := cl.doHeader(ctx, a, "GET", cart, tok(rm.Token), nil, &back)
		if again.Outcome != OK {
			fail(again.Code)
			return
		}
		mu.Lock()
		if has(&back, sku) {
			res.Violations++
		}
		res.Sessions++
		mu.Unlock()
	}
	var wg sync.WaitGroup
	start := time.Now()
	for a := range names {
		wg.Go(func() {
			tick := time.NewTicker(SessionInterval)
			defer tick.Stop()
			for i := 0; time.Since(start) < d; i++ {
				wg.Go(func() { session(a, i) })
				select {
				case <-tick.C:
				case <-ctx.Done():
					return
				}
			}
		})
	}
	wg.Wait()
	res.DurationS = time.Since(start).Seconds()
	res.MovedRead = Summarize(reads)
	if len(reads) > 0 {
		res.OneWayMS = oneWay / float64(len(reads))
	}
	return res
}

// oneWayMS is the emulated one-way delay between regions a and b, ms.
func oneWayMS(latency map[string]int, a, b string) int {
	if ms, ok := latency[a+"/"+b]; ok {
		return ms
	}
	return latency[b+"/"+a]
}
