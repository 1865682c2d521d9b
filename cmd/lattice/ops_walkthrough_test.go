package main

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// TestHelpCommandTakesHelpFlag checks docs/configuration.md's "`lattice
// COMMAND -h` prints the command's flags on stderr" (exit 0, "-h" in the
// exit status table) for the help command itself: an operator who types
// `lattice help -h` asked for help, not for a command named "-h".
func TestHelpCommandTakesHelpFlag(t *testing.T) {
	for _, flag := range []string{"-h", "--help"} {
		code, stdout, stderr := runCLI(t, "help", flag)
		if code != exitOK {
			t.Errorf("lattice help %s: exit %d, want 0\nstdout: %s\nstderr: %s", flag, code, stdout, firstLine(stderr))
		}
		if strings.Contains(stderr, "unknown command") {
			t.Errorf("lattice help %s: %s", flag, firstLine(stderr))
		}
		if !strings.Contains(stdout+stderr, "Usage") {
			t.Errorf("lattice help %s printed no usage", flag)
		}
	}
}

// TestServeNamesTheKeyOfAWrongType checks docs/configuration.md's "A file
// that fails validation is reported with every problem on a line of its
// own, each naming its key" (README: "a bad config exits 1 naming each
// bad key") for values of the wrong type, which the same section lists
// among the errors.
func TestServeNamesTheKeyOfAWrongType(t *testing.T) {
	dir := t.TempDir()
	const head = "cluster: c\nregions:\n  - name: a\n    api: 127.0.0.1:7101\n    peer: 127.0.0.1:7201\n"
	cases := []struct {
		name, extra, key string
	}{
		{"bool", "access_log: maybe\n", "access_log"},
		{"integer", "partitions: four\n", "partitions"},
		{"nested number", "emulate:\n  loss_pct: lots\n", "loss_pct"},
		{"list for a string", "durability: [always]\n", "durability"},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, fmt.Sprintf("w%d.yaml", i))
			if err := os.WriteFile(path, []byte(head+tc.extra), 0o644); err != nil {
				t.Fatal(err)
			}
			code, _, stderr := runCLI(t, "serve", "--config", path, "--region", "a")
			if code != exitFail {
				t.Fatalf("exit %d, want 1; stderr %s", code, stderr)
			}
			if !strings.Contains(stderr, tc.key) {
				t.Errorf("%q: the refusal does not name the key %q:\n%s", strings.TrimSpace(tc.extra), tc.key, stderr)
			}
		})
	}
}

// TestReserveRefusesZeroTTL checks lattice reserve's --ttl against its
// help ("how long to hold, 1s..24h"): --ttl 0s is outside that range and
// must be refused like --ttl -1s, not sent as a reservation without a
// ttl, which the home holds for the API's default of 10 minutes.
func TestReserveRefusesZeroTTL(t *testing.T) {
	var mu sync.Mutex
	var bodies []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		bodies = append(bodies, r.Method+" "+r.URL.Path+" "+string(b))
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		fmt.Fprint(w, `{"reservation_id":"us-east:1","sku":"book","qty":1,"home":"us-east","state":"held","expires_at":"2026-01-01T00:10:00.000Z"}`)
	}))
	defer srv.Close()

	code, stdout, stderr := runCLI(t, "reserve", "book", "1", "--ttl", "0s", "--url", srv.URL)
	mu.Lock()
	sent := append([]string(nil), bodies...)
	mu.Unlock()
	if code != exitUsage || len(sent) != 0 {
		t.Fatalf("lattice reserve --ttl 0s: exit %d (want 2, a ttl outside 1s..24h), sent %q\nstdout: %s\nstderr: %s",
			code, sent, stdout, stderr)
	}
	if !strings.Contains(stderr, "--ttl") {
		t.Fatalf("the refusal does not name --ttl: %s", stderr)
	}
}
