package main

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"

	"github.com/latticedb/lattice/cmd/server"
)

// TestDevServesOnlyLoopbackHosts: lattice dev's regions answer requests
// addressed to 127.0.0.1 or localhost, and refuse (403, nothing written)
// one whose Host is another name, as a web page's own DNS name pointed at
// 127.0.0.1 would send.
func TestDevServesOnlyLoopbackHosts(t *testing.T) {
	cfg, _, cerr := devConfig(t.TempDir(), "none", 0, freeRun(t, "tcp"), freeRun(t, "udp"), devLayout{partitions: 1, nodes: 1})
	if cerr != nil {
		t.Fatal(cerr)
	}
	servers, _, err := startDevCluster(context.Background(), cfg, server.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, s := range servers {
			s.Close()
		}
	})
	base := servers[0].URL()
	do := func(host, method, path, body string) (int, string) {
		t.Helper()
		req, err := http.NewRequest(method, base+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		if host != "" {
			req.Host = host
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := do("rebound.example:7101", "POST", "/v1/carts/c1/items", `{"sku":"book","qty":1}`); code != http.StatusForbidden {
		t.Fatalf("an add addressed to rebound.example: %d %s, want 403", code, body)
	}
	if code, body := do("", "GET", "/v1/carts/c1", ""); code != 200 || strings.Contains(body, "book") {
		t.Fatalf("the cart at 127.0.0.1: %d %s, want 200 and empty", code, body)
	}
	if code, body := do("localhost", "POST", "/v1/carts/c1/items", `{"sku":"book","qty":1}`); code != 200 {
		t.Fatalf("an add addressed to localhost: %d %s", code, body)
	}
}
