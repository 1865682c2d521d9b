package client_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/latticedb/lattice/api/client"
	"github.com/latticedb/lattice/region"
	"github.com/latticedb/lattice/region/regiontest"
)

// dropFirstCheckout is a link in front of a region: it passes every
// request on, except that the first checkout it sees is passed on and its
// connection dropped at once, before any answer (a load balancer's reset,
// a flaky network): the region runs the checkout to its end all the same.
func dropFirstCheckout(t *testing.T, upstream string) (url string, checkouts *atomic.Int32) {
	t.Helper()
	checkouts = &atomic.Int32{}
	var dropped atomic.Bool
	relay := func(ctx context.Context, r *http.Request, body []byte) (*http.Response, error) {
		out, err := http.NewRequestWithContext(ctx, r.Method, upstream+r.URL.RequestURI(), bytes.NewReader(body))
		if err != nil {
			return nil, err
		}
		out.Header = r.Header.Clone()
		return http.DefaultTransport.RoundTrip(out)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/checkout") {
			checkouts.Add(1)
			if dropped.CompareAndSwap(false, true) {
				// Passed on to the region, which runs it; once the
				// request is written there, the client's connection drops.
				sent := make(chan struct{})
				go func() {
					var once sync.Once
					trace := &httptrace.ClientTrace{WroteRequest: func(httptrace.WroteRequestInfo) { once.Do(func() { close(sent) }) }}
					ctx, cancel := context.WithTimeout(httptrace.WithClientTrace(context.Background(), trace), 30*time.Second)
					defer cancel()
					if resp, err := relay(ctx, r, body); err == nil {
						io.Copy(io.Discard, resp.Body)
						resp.Body.Close()
					}
					once.Do(func() { close(sent) })
				}()
				<-sent
				panic(http.ErrAbortHandler)
			}
		}
		resp, err := relay(r.Context(), r, body)
		if err != nil {
			panic(http.ErrAbortHandler)
		}
		defer resp.Body.Close()
		for k, v := range resp.Header {
			w.Header()[k] = v
		}
		w.WriteHeader(resp.StatusCode)
		io.Copy(w, resp.Body)
	}))
	t.Cleanup(srv.Close)
	return srv.URL, checkouts
}

// TestCheckoutCallOutlastsItsOwnRunningAttempt: a shopper's app checks a
// cart out with the client's default options and no key of its own (the
// client makes one). The cart is coordinated by us-east, where the client
// sends it; its one line is homed at eu-west, 300 ms away, so the saga
// (reserve, then commit, at eu-west) holds the key at us-east for more
// than a second, well within the 2 s request deadline. The first
// attempt's connection drops before any answer; the client retries under
// its key and is answered 409 request_in_progress while the first attempt
// runs. That is the call's own attempt (docs/api.md: "is waited for and
// asked again"): Checkout returns the order the region made, not an error
// about a key the caller never saw, after which the caller can neither
// learn the order nor retry it.
func TestCheckoutCallOutlastsItsOwnRunningAttempt(t *testing.T) {
	c := newCluster(t, map[string]int{"us-east/eu-west": 300, "us-east/ap-south": 300, "eu-west/ap-south": 300})
	ctx := ctxT(t, 60*time.Second)
	sku := c.skuAt("far", "eu-west")
	cart := c.skuAt("cart", "us-east") // carts are coordinated where a sku of their id would be homed
	must[*region.Item](t)(c.client(client.DefaultOptions(), "eu-west").Restock(ctx, sku, 5))
	direct := c.client(client.DefaultOptions(), "us-east")
	must[*region.Cart](t)(direct.AddItem(ctx, cart, sku, 1))

	link, checkouts := dropFirstCheckout(t, c.url("us-east"))
	// The defaults, on a transport of its own (no connection kept from
	// other tests, so that the drop reaches the client as it happens).
	cl, err := client.New([]string{link}, client.Options{HTTPClient: &http.Client{Transport: &http.Transport{}}})
	if err != nil {
		t.Fatal(err)
	}
	cl.SetToken(direct.Token())
	start := time.Now()
	order, err := cl.Checkout(ctx, cart, client.KeyOptions{})
	took := time.Since(start)

	// What the region did with the call: the cart is bought once.
	var after *region.Cart
	regiontest.WaitFor(t, 10*time.Second, "the checkout to settle at us-east", func() bool {
		after, _ = direct.Cart(ctx, cart)
		return after != nil && len(after.Items) == 0
	})
	it := must[*region.Item](t)(direct.Item(ctx, sku, true))
	t.Logf("Checkout returned %+v, %v after %v and %d requests; the cart is now %v, the sku %+v", order, err, took.Round(time.Millisecond), checkouts.Load(), after.Items, it)
	if it.Stock != 4 {
		t.Fatalf("stock %d after one checkout of 1 unit of 5; want 4", it.Stock)
	}
	var p *client.Problem
	if errors.As(err, &p) && p.Code == region.CodeRequestInProgress {
		t.Fatalf("Checkout returned 409 request_in_progress after %v (%d requests) for its own attempt, under a key the caller never saw, while the region bought the cart (stock 5 -> %d)",
			took.Round(time.Millisecond), checkouts.Load(), it.Stock)
	}
	if err != nil || order == nil || len(order.Lines) != 1 {
		t.Fatalf("Checkout: %+v, %v; want the order of the cart", order, err)
	}
}

// TestAddNotRepeatedAfterAttemptTimeout: the client's HTTP client bounds
// each attempt (Options.HTTPClient.Timeout) below the time the region
// takes to answer; the region applies the add all the same. An add is not
// repeated after such a timeout, at this region or another: one AddItem
// call is applied once.
func TestAddNotRepeatedAfterAttemptTimeout(t *testing.T) {
	var applied atomic.Int32
	slow := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		applied.Add(1) // the add is applied before the answer is late
		select {
		case <-r.Context().Done():
		case <-time.After(2 * time.Second):
		}
		hostileCart(w, "gQ", "c1")
	})
	a, b := httptest.NewServer(slow), httptest.NewServer(slow)
	defer a.Close()
	defer b.Close()
	cl, err := client.New([]string{a.URL, b.URL}, client.Options{HTTPClient: &http.Client{Timeout: 100 * time.Millisecond}, MaxAttempts: 4, Backoff: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	_, err = cl.AddItem(ctxT(t, 10*time.Second), "c1", "book", 1)
	if n := applied.Load(); n != 1 {
		t.Fatalf("one AddItem call (returned %v) was applied %d times", err, n)
	}
	if err == nil {
		t.Fatal("AddItem returned no error although no answer came back in time")
	}
}

// TestCanceledCallLeavesNoConnection: a call whose context is canceled
// while the region has not answered returns at once, and its connection
// is closed (the region sees the request canceled): nothing of the call
// outlives it.
func TestCanceledCallLeavesNoConnection(t *testing.T) {
	var open atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		open.Add(1)
		defer open.Add(-1)
		select {
		case <-r.Context().Done():
		case <-time.After(20 * time.Second):
		}
	}))
	defer srv.Close()
	cl, err := client.New([]string{srv.URL}, client.Options{HTTPClient: &http.Client{Transport: &http.Transport{}}})
	if err != nil {
		t.Fatal(err)
	}
	for _, call := range []func(ctx context.Context) error{
		func(ctx context.Context) error { _, err := cl.Reserve(ctx, "w", 1, client.KeyOptions{}); return err },
		func(ctx context.Context) error { _, err := cl.Checkout(ctx, "c1", client.KeyOptions{}); return err },
		func(ctx context.Context) error { _, err := cl.AddItem(ctx, "c1", "w", 1); return err },
		func(ctx context.Context) error { _, err := cl.Cart(ctx, "c1"); return err },
	} {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- call(ctx) }()
		regiontest.WaitFor(t, 5*time.Second, "the request at the region", func() bool { return open.Load() == 1 })
		cancel()
		select {
		case err := <-done:
			if err == nil {
				t.Fatal("a canceled call returned no error")
			}
		case <-time.After(5 * time.Second):
			t.Fatal("a canceled call did not return")
		}
		regiontest.WaitFor(t, 5*time.Second, "the region to see the request canceled", func() bool { return open.Load() == 0 })
	}
}
