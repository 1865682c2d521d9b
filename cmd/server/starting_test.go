package server

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/latticedb/lattice/region/config"
	"github.com/latticedb/lattice/region/regiontest"
)

// startAsync starts region name of cfg on 127.0.0.1:0 in the background
// and returns its base URL and a channel that yields the started Server
// (closed when the test ends) or the error of Start.
func startAsync(t *testing.T, cfg *config.Config, name string, opts Options) (string, <-chan error, func() *Server) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	opts.Listener = ln
	if opts.Logger == nil {
		opts.Logger = testLogger(t)
	}
	done := make(chan error, 1)
	var mu sync.Mutex
	var srv *Server
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		s, err := Start(ctx, cfg, name, opts)
		mu.Lock()
		srv = s
		mu.Unlock()
		done <- err
	}()
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		if srv != nil {
			srv.Close()
		}
	})
	return "http://" + ln.Addr().String(), done, func() *Server {
		mu.Lock()
		defer mu.Unlock()
		return srv
	}
}

// TestStartingAnswers checks what a region answers while its stores are
// being opened (held open by the test): GET /healthz 200, /readyz and
// every other route 503 starting with Retry-After and a problem body,
// never a refused connection; and that it serves once they are open. For
// a region of one store and for a node of a partitioned region, which
// opens several.
func TestStartingAnswers(t *testing.T) {
	for _, partitions := range []int{1, 4} {
		t.Run(fmt.Sprintf("partitions=%d", partitions), func(t *testing.T) {
			cfg := testConfig(t.TempDir(), config.DurabilityEverySec)
			cfg.Partitions = partitions
			entered := make(chan struct{}, 2*partitions)
			release := make(chan struct{})
			opts := Options{openHook: func(stage string) {
				entered <- struct{}{}
				<-release
			}}
			base, done, _ := startAsync(t, cfg, "us-east", opts)
			select {
			case <-entered:
			case err := <-done:
				t.Fatalf("Start returned before opening a store: %v", err)
			case <-time.After(10 * time.Second):
				t.Fatal("the store was not opened within 10 s")
			}
			c := newClient(t, base)
			if r := c.do("GET", "/healthz", ""); r.status != http.StatusOK || !strings.Contains(string(r.body), `"status":"ok"`) {
				t.Fatalf("healthz while opening: %v", r)
			}
			for _, rq := range []struct{ method, path, body string }{
				{"GET", "/readyz", ""},
				{"GET", "/v1/carts/x", ""},
				{"POST", "/v1/carts/x/items", `{"sku":"us-1","qty":1}`},
				{"GET", "/v1/cluster", ""},
				{"GET", "/metrics", ""},
			} {
				r := c.do(rq.method, rq.path, rq.body)
				if r.status != http.StatusServiceUnavailable || r.header.Get("Retry-After") != "5" ||
					r.header.Get("Content-Type") != "application/problem+json" {
					t.Fatalf("%s %s while opening: %v", rq.method, rq.path, r)
				}
				var p map[string]any
				if err := json.Unmarshal(r.body, &p); err != nil {
					t.Fatalf("%s %s: body %q: %v", rq.method, rq.path, r.body, err)
				}
				if p["code"] != "starting" || p["status"] != float64(503) || p["type"] != "urn:lattice:problem:starting" ||
					!strings.Contains(fmt.Sprint(p["detail"]), "opening its store") || p["request_id"] == "" {
					t.Fatalf("%s %s while opening: problem %v", rq.method, rq.path, p)
				}
			}
			close(release)
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			if r := c.do("GET", "/readyz", ""); r.status != http.StatusOK {
				t.Fatalf("readyz once open: %v", r)
			}
			c.ok(200, "POST", "/v1/carts/x/items", `{"sku":"us-1","qty":1}`)
			c.ok(200, "GET", "/v1/carts/x", "")
		})
	}
}

// TestOpenProgressLogged reopens a region whose store the test holds
// open until the store has logged its progress, with the thresholds
// lowered so that a small store reports: a line when the open starts
// (path and size), lines while it goes on (phase, keys read, percent) and
// one when it is done (how long, MB/s).
func TestOpenProgressLogged(t *testing.T) {
	cfg := testConfig(t.TempDir(), config.DurabilityEverySec)
	r := startRegion(t, cfg, "us-east", Options{})
	for i := range 50 {
		r.ok(200, "POST", fmt.Sprintf("/v1/carts/c%d/items", i), `{"sku":"us-1","qty":1}`)
	}
	if err := r.srv.Close(); err != nil {
		t.Fatal(err)
	}

	var log regiontest.LogBuffer
	release := make(chan struct{})
	opts := Options{
		Logger:        slog.New(slog.NewTextHandler(&log, &slog.HandlerOptions{Level: slog.LevelInfo})),
		progressBytes: 1,
		progressEvery: time.Millisecond,
		openHook: func(stage string) {
			if stage == "node" {
				<-release
			}
		},
	}
	_, done, _ := startAsync(t, cfg, "us-east", opts)
	defer func() {
		if t.Failed() {
			t.Log(log.String())
		}
	}()
	regiontest.WaitFor(t, 10*time.Second, "a progress line while the region rebuilds its state", func() bool {
		return strings.Contains(log.String(), `msg="opening the store" region=us-east path=`) && strings.Contains(log.String(), `phase="rebuilding the region's state"`)
	})
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	out := log.String()
	for _, want := range []string{
		`msg="opening the store: nothing is served until it is open"`, "size_bytes=",
		"keys_read=", "percent=",
		`msg="store opened"`, "took=", "mb_per_s=",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("the log has no %q:\n%s", want, out)
		}
	}
	if i, j := strings.Index(out, `msg="store opened"`), strings.Index(out, `msg="region serving"`); i < 0 || j < i {
		t.Errorf("the store is not reported open before the region serves:\n%s", out)
	}
}
