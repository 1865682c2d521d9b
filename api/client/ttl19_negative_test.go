package client

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"
)

// TestReserve19NegativeTTLNotDefaulted: KeyOptions.TTL is documented as
// 1 s..24 h, with 0 the API's default of 10 minutes. A negative TTL (a
// caller's deadline.Sub(now) that has already passed) is neither: the
// client leaves ttl_ms out of the body, so the home holds the units for
// the default 10 minutes instead of refusing the call, while a TTL past
// 24 h, or a positive one under a millisecond, is refused (400). Either
// the call fails before anything is sent, or ttl_ms is sent for the API
// to refuse.
func TestReserve19NegativeTTLNotDefaulted(t *testing.T) {
	var sent atomic.Value
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		b, _ := io.ReadAll(r.Body)
		sent.Store(string(b))
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		_, _ = io.WriteString(w, `{"reservation_id":"us-east:1","sku":"book","qty":1,"home":"us-east","state":"held","expires_at":"2026-01-01T00:10:00.000Z"}`)
	}))
	defer srv.Close()
	c, err := New([]string{srv.URL}, DefaultOptions())
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Reserve(context.Background(), "book", 1, KeyOptions{TTL: -time.Minute})
	if err != nil {
		return // refused: fine
	}
	if calls.Load() > 0 {
		body, _ := sent.Load().(string)
		var m map[string]any
		if err := json.Unmarshal([]byte(body), &m); err != nil {
			t.Fatalf("body %q: %v", body, err)
		}
		if _, ok := m["ttl_ms"]; !ok {
			t.Fatalf("Reserve with TTL −1m sent %s: the home holds the units for its default 10 minutes; want the call refused", body)
		}
	}
}
