package client_test

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/latticedb/lattice/api/client"
	"github.com/latticedb/lattice/cmd/server"
	"github.com/latticedb/lattice/region/config"
)

// TestAddNotRepeatedAfterLostForwardAnswer: in a region of two nodes, a
// cart add sent to n1 for a cart of n2's partition is forwarded to n2,
// which applies it; the answer is then lost on its way back to n1 (the
// connection between the nodes drops), so n1 cannot tell whether the add
// was applied. A cart add must not be silently repeated when it may have
// been applied: one AddItem call of 1 unit leaves the cart at 1 unit.
func TestAddNotRepeatedAfterLostForwardAnswer(t *testing.T) {
	dir := t.TempDir()
	ln1, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln2, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	n2URL := "http://" + ln2.Addr().String()

	// The link from n1 to n2: it passes every request on to n2, and drops
	// the connection instead of relaying n2's answer to the first add.
	var adds, dropped atomic.Int32
	link := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		out, err := http.NewRequestWithContext(r.Context(), r.Method, n2URL+r.URL.RequestURI(), r.Body)
		if err != nil {
			panic(http.ErrAbortHandler)
		}
		out.Header = r.Header.Clone()
		out.ContentLength = r.ContentLength
		resp, err := http.DefaultTransport.RoundTrip(out)
		if err != nil {
			panic(http.ErrAbortHandler)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if r.Method == http.MethodPost && resp.StatusCode == http.StatusOK {
			adds.Add(1)
			if dropped.CompareAndSwap(0, 1) {
				panic(http.ErrAbortHandler) // n2 applied it; n1 never hears
			}
		}
		for k, v := range resp.Header {
			w.Header()[k] = v
		}
		w.WriteHeader(resp.StatusCode)
		w.Write(body)
	}))
	link.Start()
	defer link.Close()

	cfg := config.DefaultConfig()
	cfg.DataDir = filepath.Join(dir, "data")
	cfg.TLSDir = filepath.Join(dir, "certs")
	cfg.Emulate.LatencyMS = nil
	cfg.Partitions = 2
	cfg.Regions[0] = config.RegionConfig{Name: "us-east", Nodes: []config.NodeConfig{
		{Name: "n1", API: ln1.Addr().String(), Peer: "127.0.0.1:7211", Partitions: config.PartitionSet{"0"}},
		{Name: "n2", API: link.Listener.Addr().String(), Peer: "127.0.0.1:7213", Partitions: config.PartitionSet{"1"}},
	}}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, n := range []struct {
		name string
		ln   net.Listener
	}{{"n1", ln1}, {"n2", ln2}} {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		s, err := server.Start(ctx, cfg, "us-east", server.Options{Listener: n.ln, Node: n.name, Logger: slog.New(slog.DiscardHandler)})
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
	}

	cart := ""
	for i := 0; cart == ""; i++ {
		if id := "cart" + strconv.Itoa(i); config.PartitionOf(id, 2) == 1 {
			cart = id
		}
	}
	cl, err := client.New([]string{"http://" + ln1.Addr().String()}, client.Options{MaxAttempts: 4, Backoff: 10 * time.Millisecond, MaxBackoff: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx := ctxT(t, 20*time.Second)
	_, addErr := cl.AddItem(ctx, cart, "book", 1)
	got, err := cl.Cart(ctx, cart)
	if err != nil {
		t.Fatal(err)
	}
	if items(got) != "book=1 " {
		t.Fatalf("one AddItem of 1 unit (returned %v) was applied %d times: cart %s, want book=1", addErr, adds.Load(), items(got))
	}
}

// TestRetryAfterHonouredWhenOtherRegionUnreachable: the preferred region
// refuses a read with 503 and Retry-After: 1, the other region cannot be
// reached. Once every region was tried the client waits the 503's
// Retry-After before asking the preferred region again, rather than the
// short transport backoff.
func TestRetryAfterHonouredWhenOtherRegionUnreachable(t *testing.T) {
	var mu sync.Mutex
	var hits []time.Time
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		hits = append(hits, time.Now())
		n := len(hits)
		mu.Unlock()
		if n == 1 {
			w.Header().Set("Content-Type", "application/problem+json")
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusServiceUnavailable)
			io.WriteString(w, `{"type":"urn:lattice:problem:starting","title":"Starting","status":503,"code":"starting","detail":"the region is starting"}`)
			return
		}
		hostileCart(w, "gQ", "c1")
	}))
	defer srv.Close()
	cl, err := client.New([]string{srv.URL, deadURL(t)}, client.Options{MaxAttempts: 4, Backoff: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cl.Cart(ctxT(t, 10*time.Second), "c1"); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(hits) < 2 {
		t.Fatalf("%d attempts at the preferred region", len(hits))
	}
	if gap := hits[1].Sub(hits[0]); gap < 900*time.Millisecond {
		t.Fatalf("the preferred region answered 503 with Retry-After: 1 and was asked again %v later", gap)
	}
}

// TestOwnReplayInProgressWaits: a Reserve's request reaches the home over
// a kept-alive connection, which then drops before any answer; the HTTP
// transport sends the request again, with the same Idempotency-Key, on a
// new connection, and the home answers 409 request_in_progress while the
// first still runs. That is the call's own earlier request under a key
// the client made: the call waits and asks again, and returns the
// reservation, rather than a 409 about a key the caller never saw.
func TestOwnReplayInProgressWaits(t *testing.T) {
	var mu sync.Mutex
	decided := map[string]time.Time{} // key -> when its decision is made
	var dropped atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		if r.Method == http.MethodGet {
			hostileCart(w, "gQ", "warm")
			return
		}
		key := r.Header.Get("Idempotency-Key")
		mu.Lock()
		at, seen := decided[key]
		if !seen {
			at = time.Now().Add(500 * time.Millisecond)
			decided[key] = at
		}
		mu.Unlock()
		if !seen && dropped.CompareAndSwap(false, true) {
			panic(http.ErrAbortHandler) // the connection drops before the answer
		}
		if time.Now().Before(at) {
			w.Header().Set("Content-Type", "application/problem+json")
			w.WriteHeader(http.StatusConflict)
			io.WriteString(w, `{"type":"urn:lattice:problem:request_in_progress","title":"Request in progress","status":409,"code":"request_in_progress","detail":"a request with this Idempotency-Key is running"}`)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Lattice-Token", "gQ")
		w.WriteHeader(http.StatusCreated)
		io.WriteString(w, `{"reservation_id":"us-east:1","sku":"book","qty":1,"home":"us-east","state":"held","expires_at":"2030-01-01T00:00:00Z"}`)
	}))
	defer srv.Close()
	tr := &http.Transport{MaxConnsPerHost: 1}
	defer tr.CloseIdleConnections()
	cl, err := client.New([]string{srv.URL}, client.Options{HTTPClient: &http.Client{Transport: tr}, MaxAttempts: 8, Backoff: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx := ctxT(t, 10*time.Second)
	if _, err := cl.Cart(ctx, "warm"); err != nil { // leaves a kept-alive connection
		t.Fatal(err)
	}
	res, err := cl.Reserve(ctx, "book", 1, client.KeyOptions{})
	if err != nil {
		t.Fatalf("Reserve (one call, its request decided once at the home) failed with %v", err)
	}
	if res.ID != "us-east:1" {
		t.Fatalf("got %+v", res)
	}
}
