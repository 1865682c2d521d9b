package main

import (
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/latticedb/lattice/cmd/server"
	"github.com/latticedb/lattice/region"
	"github.com/latticedb/lattice/region/config"
	"github.com/latticedb/lattice/region/regiontest"
	"github.com/latticedb/lattice/sync/certs"
)

func TestClientCommandsUsage(t *testing.T) {
	const u = "http://127.0.0.1:1"
	cases := []struct {
		name   string
		args   []string
		code   int
		stderr string
	}{
		{"status without config", []string{"status"}, 2, "--config is required"},
		{"status with an argument", []string{"status", "--config", "x", "extra"}, 2, `unexpected argument "extra"`},
		{"status with a bad timeout", []string{"status", "--config", "x", "--timeout", "0s"}, 2, "--timeout must be positive"},
		{"status with a missing config", []string{"status", "--config", "/nonexistent/lattice.yaml"}, 1, "config"},
		{"help status", []string{"status", "-h"}, 0, "Usage: lattice status"},
		{"status with a bad output", []string{"status", "--config", "x", "--output", "xml"}, 2, `--output must be table or json, not "xml"`},
		{"cart with a bad output", []string{"cart", "get", "c1", "--url", u, "--output", "xml"}, 2, `--output must be table or json, not "xml"`},
		{"cart without a target", []string{"cart", "get", "c1"}, 2, "--url, or --config and --region, is required"},
		{"cart with both targets", []string{"cart", "get", "c1", "--url", u, "--config", "x"}, 2, "not both"},
		{"cart with config and no region", []string{"cart", "get", "c1", "--config", "x"}, 2, "--region is required with --config"},
		{"cart without an action", []string{"cart", "--url", u}, 2, "missing action"},
		{"cart with an unknown action", []string{"cart", "buy", "c1", "--url", u}, 2, `unknown action "buy"`},
		{"cart add without qty", []string{"cart", "add", "c1", "book", "--url", u}, 2, "missing QTY"},
		{"cart add with a bad qty", []string{"cart", "add", "c1", "book", "two", "--url", u}, 2, `QTY must be an integer, not "two"`},
		{"cart get with too many", []string{"cart", "get", "c1", "c2", "--url", u}, 2, `unexpected argument "c2"`},
		{"cart with an unknown flag", []string{"cart", "get", "c1", "--url", u, "--port", "1"}, 2, "flag provided but not defined: -port"},
		{"cart with a bad url", []string{"cart", "get", "c1", "--url", "ftp://x"}, 1, "not an http or https base URL"},
		{"cart with an unknown region", []string{"cart", "get", "c1", "--config", "/nonexistent.yaml", "--region", "mars"}, 1, "config"},
		{"stock adjust without delta", []string{"stock", "adjust", "book", "--url", u}, 2, "missing DELTA"},
		{"stock with an unknown action", []string{"stock", "count", "book", "--url", u}, 2, `unknown action "count"`},
		{"stock restock with --consistent", []string{"stock", "restock", "book", "3", "--consistent", "--url", u}, 2, "--consistent is for stock get, not stock restock"},
		{"stock get with --reason", []string{"stock", "get", "book", "--reason", "audit", "--url", u}, 2, "--reason is for stock adjust, not stock get"},
		{"reserve without qty", []string{"reserve", "book", "--url", u}, 2, "missing QTY"},
		{"reserve with a negative ttl", []string{"reserve", "book", "1", "--ttl", "-1s", "--url", u}, 2, "--ttl -1s is outside 1s..24h"},
		{"commit without id", []string{"commit", "--url", u}, 2, "missing ID"},
		{"release with two ids", []string{"release", "a", "b", "--url", u}, 2, `unexpected argument "b"`},
		{"reservation without id", []string{"reservation", "--url", u}, 2, "missing ID"},
		{"unreachable region", []string{"cart", "get", "c1", "--url", u, "--timeout", "2s"}, 1, "lattice cart: GET http://127.0.0.1:1/v1/carts/c1"},
		{"help cart", []string{"help", "cart"}, 0, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, stdout, stderr := runCLI(t, tc.args...)
			if code != tc.code {
				t.Fatalf("exit %d, want %d\nstdout: %s\nstderr: %s", code, tc.code, stdout, stderr)
			}
			if !strings.Contains(stderr, tc.stderr) {
				t.Fatalf("stderr %q does not contain %q", stderr, tc.stderr)
			}
			if tc.code == 2 && stdout != "" {
				t.Fatalf("stdout on a usage error: %q", stdout)
			}
		})
	}
	if code, stdout, _ := runCLI(t, "help", "cart"); code != 0 || !strings.Contains(stdout, "-region NAME") || !strings.Contains(stdout, "-url URL") {
		t.Fatalf("help cart: %d %s", code, stdout)
	}
}

// TestStatusAndCartEndToEnd runs lattice status and the cart, stock and
// reservation commands against a real three-region cluster started in
// this process from a config file.
func TestStatusAndCartEndToEnd(t *testing.T) {
	dir := t.TempDir()
	cfgPath, apis := writeClusterConfig(t, dir)
	cfg, err := config.Load(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := certs.Generate(cfg.TLSDir, cfg.Cluster, cfg.RegionNames()); err != nil {
		t.Fatal(err)
	}
	servers, err := startCluster(context.Background(), cfg, server.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	stopped := map[string]bool{}
	t.Cleanup(func() {
		for _, s := range servers {
			if !stopped[s.Region()] {
				s.Close()
			}
		}
	})

	var out string
	regiontest.WaitFor(t, 30*time.Second, "every region ready and connected", func() bool {
		code, stdout, _ := runCLI(t, "status", "--config", cfgPath)
		out = stdout
		return code == 0 && strings.Count(stdout, " 2/2 ") == 3
	})
	for _, want := range []string{"REGION", "us-east", "eu-west", "ap-south", apis["eu-west"], "FROM", "CONNECTED"} {
		if !strings.Contains(out, want) {
			t.Fatalf("status lacks %q:\n%s", want, out)
		}
	}

	code, stdout, stderr := runCLI(t, "cart", "add", "c1", "book", "2", "--config", cfgPath, "--region", "eu-west", "--output", "json")
	if code != 0 {
		t.Fatalf("cart add: %d %s", code, stderr)
	}
	var cart region.Cart
	if err := json.Unmarshal([]byte(stdout), &cart); err != nil || cart.Region != "eu-west" || len(cart.Items) != 1 ||
		cart.Items[0].SKU != "book" || cart.Items[0].Qty != 2 {
		t.Fatalf("cart add printed %q (%v)", stdout, err)
	}
	// The default is a table: the scalar members, then the items.
	code, stdout, stderr = runCLI(t, "cart", "get", "c1", "--url", "http://"+apis["eu-west"])
	if want := "cart_id:  c1\nregion:   eu-west\n\nitems:\n  SKU   QTY\n  book  2\n"; code != 0 || stdout != want {
		t.Fatalf("cart get: %d %q %s\nwant %q", code, stdout, stderr, want)
	}
	if code, stdout, stderr = runCLI(t, "stock", "restock", "book", "3", "--url", "http://"+apis["us-east"], "--output", "json"); code != 0 || !strings.Contains(stdout, `"stock": 3`) {
		t.Fatalf("stock restock: %d %s %s", code, stdout, stderr)
	}
	if code, stdout, stderr = runCLI(t, "stock", "get", "book", "--url", "http://"+apis["us-east"], "--output=table"); code != 0 ||
		!strings.Contains(stdout, "sku:        book\n") || !strings.Contains(stdout, "stock:      3\n") || strings.Contains(stdout, "{") {
		t.Fatalf("stock get as a table: %d %q %s", code, stdout, stderr)
	}
	code, stdout, stderr = runCLI(t, "reserve", "book", "1", "--url", "http://"+apis["us-east"])
	if code != 0 || !strings.Contains(stdout, "reservation_id:") || !strings.Contains(stdout, "state:           held") {
		t.Fatalf("reserve as a table: %d %q %s", code, stdout, stderr)
	}
	if code, stdout, stderr = runCLI(t, "cart", "get", "c1", "--url", "http://"+apis["eu-west"], "--output", "yaml"); code != 2 ||
		!strings.Contains(stderr, `--output must be table or json, not "yaml"`) || stdout != "" {
		t.Fatalf("--output yaml: %d %q %q", code, stdout, stderr)
	}

	// status --output json: every region's /readyz and /v1/cluster answers.
	code, stdout, stderr = runCLI(t, "status", "--config", cfgPath, "--output", "json")
	var sts []struct {
		Region  string         `json:"region"`
		Ready   bool           `json:"ready"`
		Health  map[string]any `json:"health"`
		Cluster struct {
			Region string           `json:"region"`
			Peers  []map[string]any `json:"peers"`
		} `json:"cluster"`
	}
	if err := json.Unmarshal([]byte(stdout), &sts); code != 0 || err != nil || len(sts) != 3 {
		t.Fatalf("status --output json: %d %v %q %s", code, err, stdout, stderr)
	}
	for _, st := range sts {
		if !st.Ready || st.Health["region"] != st.Region || st.Cluster.Region != st.Region || len(st.Cluster.Peers) != 2 {
			t.Errorf("status --output json of %s: %+v", st.Region, st)
		}
	}
	code, _, stderr = runCLI(t, "reservation", "us-east:zzzz", "--url", "http://"+apis["us-east"])
	if code != 1 || !strings.HasPrefix(stderr, "not_found: ") {
		t.Fatalf("reservation of an unknown id: %d %q", code, stderr)
	}

	// A stopped region: status says so and fails.
	for _, s := range servers {
		if s.Region() == "ap-south" {
			s.Close()
			stopped["ap-south"] = true
		}
	}
	code, stdout, _ = runCLI(t, "status", "--config", cfgPath, "--timeout", "3s")
	if code != 1 || !strings.Contains(stdout, "ap-south: unreachable") {
		t.Fatalf("status with ap-south stopped: %d\n%s", code, stdout)
	}
	if !strings.Contains(stdout, "eu-west  ") || strings.Contains(stdout, "eu-west: unreachable") {
		t.Fatalf("status of the other regions:\n%s", stdout)
	}
	t.Logf("lattice status with ap-south stopped:\n%s", stdout)
}
