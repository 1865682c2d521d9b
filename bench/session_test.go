package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestSessionProbeCountsMissedWrites runs the session probe against
// three regions that never replicate and ignore tokens: every read at
// another region misses the session's add, and the read back at the
// first still shows the line removed elsewhere. The probe must count both
// (a checker that cannot fail checks nothing).
func TestSessionProbeCountsMissedWrites(t *testing.T) {
	names := RegionNames(3)
	var urls [][]string
	for range names {
		var mu sync.Mutex
		carts := map[string]map[string]int64{}
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			defer mu.Unlock()
			rest := strings.TrimPrefix(r.URL.Path, "/v1/carts/")
			id, tail, _ := strings.Cut(rest, "/")
			if carts[id] == nil {
				carts[id] = map[string]int64{}
			}
			switch {
			case r.Method == "POST":
				var body struct {
					SKU string `json:"sku"`
					Qty int64  `json:"qty"`
				}
				json.NewDecoder(r.Body).Decode(&body)
				carts[id][body.SKU] += body.Qty
			case r.Method == "DELETE":
				delete(carts[id], strings.TrimPrefix(tail, "items/"))
			}
			type item struct {
				SKU string `json:"sku"`
				Qty int64  `json:"qty"`
			}
			out := struct {
				CartID string `json:"cart_id"`
				Items  []item `json:"items"`
			}{CartID: id, Items: []item{}}
			for sku, q := range carts[id] {
				out.Items = append(out.Items, item{sku, q})
			}
			w.Header().Set("Lattice-Token", "ignored")
			json.NewEncoder(w).Encode(out)
		}))
		t.Cleanup(srv.Close)
		urls = append(urls, []string{srv.URL})
	}
	cl := newClient(urls, 8, 2*time.Second)
	defer cl.close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res := probeSessions(ctx, cl, names, LatencyMatrix(names), 200*time.Millisecond)
	if res.Sessions == 0 || res.Violations != 2*res.Sessions || len(res.Errors) != 0 {
		t.Fatalf("%d sessions, %d reads that missed their writes (want 2 a session), errors %v", res.Sessions, res.Violations, res.Errors)
	}
}

// TestSampleHomesSeesAnOversellInForce: a home whose answers once show
// 2 units held and 1 granted against a stock of 2 (an oversell of 1, in
// force only then) is reported as 1 unit oversold.
func TestSampleHomesSeesAnOversellInForce(t *testing.T) {
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("consistent") != "true" {
			t.Errorf("a sample read %s, not at the home's own ledger", r.URL)
		}
		reserved := int64(0)
		if n.Add(1) == 3 {
			reserved = 2
		}
		fmt.Fprintf(w, `{"sku":"hot-0","stock":2,"reserved":%d,"granted":1,"available":0}`, reserved)
	}))
	defer srv.Close()
	names := RegionNames(1)
	cl := newClient([][]string{{srv.URL}}, 2, 2*time.Second)
	defer cl.close()
	ctx, cancel := context.WithCancel(context.Background())
	got := make(chan int64, 1)
	go func() { got <- sampleHomes(ctx, cl, names, []string{"hot-0"}, func(string) string { return names[0] }) }()
	if !pollUntil(context.Background(), time.Now().Add(10*time.Second), func() bool { return n.Load() >= 6 }) {
		t.Fatalf("the sampler read %d times in 10 s", n.Load())
	}
	cancel()
	if over := <-got; over != 1 {
		t.Fatalf("sampled oversell %d, want 1", over)
	}
}
