package client_test

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/latticedb/lattice/api/client"
	"github.com/latticedb/lattice/region"
)

// busyKeyRegion fakes a region at which another request holds every
// Idempotency-Key: it answers each keyed POST 409 request_in_progress,
// and counts them.
func busyKeyRegion(t *testing.T) (url string, posts *atomic.Int32) {
	t.Helper()
	posts = &atomic.Int32{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		if r.Method != http.MethodPost || r.Header.Get("Idempotency-Key") == "" {
			hostileCart(w, "gQ", "c1")
			return
		}
		posts.Add(1)
		w.Header().Set("Content-Type", "application/problem+json")
		w.WriteHeader(http.StatusConflict)
		io.WriteString(w, `{"type":"urn:lattice:problem:request_in_progress","title":"Request in progress","status":409,"code":"request_in_progress","detail":"a request with this Idempotency-Key is still running"}`)
	}))
	t.Cleanup(srv.Close)
	return srv.URL, posts
}

// wantInProgress fails t unless err is the region's 409
// request_in_progress, returned after the one request that got it.
func wantInProgress(t *testing.T, what string, err error, took time.Duration, posts int32) {
	t.Helper()
	var p *client.Problem
	if !errors.As(err, &p) || p.Code != region.CodeRequestInProgress || p.Status != http.StatusConflict {
		t.Fatalf("%s: %v after %v; want the region's 409 request_in_progress", what, err, took.Round(time.Millisecond))
	}
	if posts != 1 {
		t.Fatalf("%s: asked %d times in %v, waiting on a request_in_progress that cannot be its own; want the answer to its one request returned",
			what, posts, took.Round(time.Millisecond))
	}
}

// TestOthersCheckoutInProgressReturned: a caller checks a cart out with
// an Idempotency-Key of its own that another process is using at the same
// moment: the region answers the call's first request 409
// request_in_progress. Nothing of this call was sent before, so it cannot
// be its own attempt still running: Checkout returns the region's answer
// at once rather than asking again for up to a minute as if it were.
func TestOthersCheckoutInProgressReturned(t *testing.T) {
	url, posts := busyKeyRegion(t)
	cl, err := client.New([]string{url}, client.Options{MaxAttempts: 4, Backoff: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err = cl.Checkout(ctxT(t, 5*time.Second), "c1", client.KeyOptions{IdempotencyKey: "shared-key"})
	wantInProgress(t, "Checkout", err, time.Since(start), posts.Load())
}

// TestInProgressAfterUnsentAttemptReturned: the preferred region cannot
// be reached (the connection is refused, nothing is sent); the client
// fails over, and the next region answers the checkout 409
// request_in_progress. The call's only earlier attempt never reached a
// region, so that is not its own attempt: Checkout returns it. The same
// holds for Reserve.
func TestInProgressAfterUnsentAttemptReturned(t *testing.T) {
	url, posts := busyKeyRegion(t)
	cl, err := client.New([]string{deadURL(t), url}, client.Options{MaxAttempts: 4, Backoff: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err = cl.Checkout(ctxT(t, 5*time.Second), "c1", client.KeyOptions{IdempotencyKey: "shared-key"})
	wantInProgress(t, "Checkout", err, time.Since(start), posts.Load())

	posts.Store(0)
	start = time.Now()
	_, err = cl.Reserve(ctxT(t, 5*time.Second), "book", 1, client.KeyOptions{})
	wantInProgress(t, "Reserve", err, time.Since(start), posts.Load())
}

// TestInProgressAfterLostAnswerWaits: the first attempt of a checkout
// reaches the region, which drops the connection before answering (the
// checkout may be running there); the next attempt, at another region,
// is answered 409 request_in_progress until the first is decided. That
// one may be the call's own: the call waits and asks again, and returns
// the order.
func TestInProgressAfterLostAnswerWaits(t *testing.T) {
	var posts atomic.Int32
	lost := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		posts.Add(1)
		panic(http.ErrAbortHandler) // received, never answered
	}))
	defer lost.Close()
	var asked atomic.Int32
	busy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		posts.Add(1)
		if asked.Add(1) < 3 {
			w.Header().Set("Content-Type", "application/problem+json")
			w.WriteHeader(http.StatusConflict)
			io.WriteString(w, `{"type":"urn:lattice:problem:request_in_progress","title":"Request in progress","status":409,"code":"request_in_progress"}`)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Lattice-Token", "gQ")
		w.WriteHeader(http.StatusCreated)
		io.WriteString(w, `{"order_id":"o1","cart_id":"c1","lines":[{"sku":"book","qty":1,"home":"us-east"}]}`)
	}))
	defer busy.Close()
	cl, err := client.New([]string{lost.URL, busy.URL}, client.Options{HTTPClient: &http.Client{Transport: &http.Transport{}}, MaxAttempts: 2, Backoff: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	order, err := cl.Checkout(ctxT(t, 10*time.Second), "c1", client.KeyOptions{IdempotencyKey: "mine"})
	if err != nil {
		t.Fatalf("Checkout (%d requests): %v; want the order, waiting on its own attempt", posts.Load(), err)
	}
	if order.OrderID != "o1" || asked.Load() != 3 {
		t.Fatalf("Checkout: %+v after %d requests at the second region; want order o1 after 3", order, asked.Load())
	}
}
