package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/latticedb/lattice/region/regiontest"
)

// syncBuffer is a log sink safe for concurrent writers.
type syncBuffer = regiontest.LogBuffer

// runCLI runs the command line in-process and returns its exit status
// and output.
func runCLI(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr syncBuffer
	code := run(context.Background(), args, &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

func TestUsage(t *testing.T) {
	cases := []struct {
		name     string
		args     []string
		code     int
		stdout   string
		stderr   string
		noStdout bool
	}{
		{name: "no command", args: nil, code: 2, stderr: "Usage:", noStdout: true},
		{name: "help", args: []string{"help"}, code: 0, stdout: "lattice serve --config FILE --region NAME"},
		{name: "-h", args: []string{"-h"}, code: 0, stdout: "Commands:"},
		{name: "--help", args: []string{"--help"}, code: 0, stdout: "lattice certs --dir DIR"},
		{name: "unknown command", args: []string{"deploy"}, code: 2, stderr: `unknown command "deploy"`, noStdout: true},
		{name: "unknown command shows usage", args: []string{"deploy"}, code: 2, stderr: "Usage:", noStdout: true},
		{name: "help serve", args: []string{"help", "serve"}, code: 0, stdout: "-log-level"},
		{name: "help certs", args: []string{"help", "certs"}, code: 0, stdout: "-force"},
		{name: "help unknown", args: []string{"help", "deploy"}, code: 2, stderr: `unknown command "deploy"`},
		{name: "serve -h", args: []string{"serve", "-h"}, code: 0, stderr: "-region NAME"},
		{name: "dev with an argument", args: []string{"dev", "extra"}, code: 2, stderr: `unexpected argument "extra"`},
		{name: "dev with a bad latency", args: []string{"dev", "--latency", "slow"}, code: 2, stderr: "--latency"},
		{name: "dev with a bad loss", args: []string{"dev", "--loss", "150"}, code: 2, stderr: "loss_pct"},
		{name: "bench -h", args: []string{"bench", "-h"}, code: 0, stderr: "-partition REGION@START+DUR"},
		{name: "help bench", args: []string{"help", "bench"}, code: 0, stdout: "Usage: lattice bench"},
		{name: "bench with an argument", args: []string{"bench", "extra"}, code: 2, stderr: `unexpected argument "extra"`},
		{name: "bench with a bad rate", args: []string{"bench", "--rate", "0"}, code: 2, stderr: "--rate 0"},
		{name: "bench with a negative probe", args: []string{"bench", "--probe", "-1s"}, code: 2, stderr: "--probe -1s, want ≥ 0"},
		{name: "bench with too many regions", args: []string{"bench", "--regions", "17"}, code: 2, stderr: "--regions 17"},
		{name: "bench with partitions not a power of two", args: []string{"bench", "--partitions", "6"}, code: 2, stderr: "--partitions 6"},
		{name: "bench with more nodes than partitions", args: []string{"bench", "--partitions", "2", "--nodes", "4"}, code: 2, stderr: "--nodes 4"},
		{name: "bench with a bad latency", args: []string{"bench", "--latency", "slow"}, code: 2, stderr: "--latency"},
		{name: "bench with a bad partition", args: []string{"bench", "--partition", "ap-south"}, code: 2, stderr: "REGION@START+DUR"},
		{name: "bench partitioning an unknown region", args: []string{"bench", "--partition", "mars@1s+1s"}, code: 2, stderr: `region "mars"`},
		{name: "bench with a bad log level", args: []string{"bench", "--log-level", "loud"}, code: 2, stderr: "--log-level"},
		{name: "dev -h", args: []string{"dev", "-h"}, code: 0, stderr: "Usage: lattice dev"},
		{name: "serve without flags", args: []string{"serve"}, code: 2, stderr: "--config is required"},
		{name: "serve without region", args: []string{"serve", "--config", "x.yaml"}, code: 2, stderr: "--region is required"},
		{name: "serve with an unknown flag", args: []string{"serve", "--port", "1"}, code: 2, stderr: "flag provided but not defined: -port"},
		{name: "serve with an argument", args: []string{"serve", "--config", "x", "--region", "a", "extra"}, code: 2, stderr: `unexpected argument "extra"`},
		{name: "serve with a bad log level", args: []string{"serve", "--config", "x", "--region", "a", "--log-level", "loud"}, code: 2, stderr: "--log-level"},
		{name: "serve with a bad log format", args: []string{"serve", "--config", "x", "--region", "a", "--log-format", "xml"}, code: 2, stderr: "--log-format"},
		{name: "serve a missing file", args: []string{"serve", "--config", "/nonexistent/lattice.yaml", "--region", "a"}, code: 1, stderr: "no such file"},
		{name: "certs without dir", args: []string{"certs", "us-east"}, code: 2, stderr: "--dir is required"},
		{name: "certs without regions", args: []string{"certs", "--dir", "x"}, code: 2, stderr: "name at least one region"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, stdout, stderr := runCLI(t, tc.args...)
			if code != tc.code {
				t.Errorf("exit %d, want %d\nstdout: %s\nstderr: %s", code, tc.code, stdout, stderr)
			}
			if !strings.Contains(stdout, tc.stdout) {
				t.Errorf("stdout %q lacks %q", stdout, tc.stdout)
			}
			if !strings.Contains(stderr, tc.stderr) {
				t.Errorf("stderr %q lacks %q", stderr, tc.stderr)
			}
			if tc.noStdout && stdout != "" {
				t.Errorf("stdout %q, want nothing", stdout)
			}
		})
	}
}

func TestServeRefusesBadConfig(t *testing.T) {
	dir := t.TempDir()
	cases := []struct {
		name, yaml, region string
		want               []string
	}{
		{"unknown key", "cluster: c\nregions:\n  - name: a\n    api: 127.0.0.1:7101\n    peer: 127.0.0.1:7201\nreplicas: 3\n", "a",
			[]string{`config: unknown key "replicas" at line 6`}},
		{"bad addresses", "cluster: c\nregions:\n  - name: a\n    api: 127.0.0.1:99999\n    peer: :7201\n", "a",
			[]string{"regions[0].api", "regions[0].peer"}},
		{"bad durability", "cluster: c\ndurability: sometimes\nregions:\n  - name: a\n    api: 127.0.0.1:7101\n    peer: 127.0.0.1:7201\n", "a",
			[]string{"durability"}},
		{"home rule for an unknown region", "cluster: c\nregions:\n  - name: a\n    api: 127.0.0.1:7101\n    peer: 127.0.0.1:7201\nhomes:\n  - prefix: x\n    region: b\n", "a",
			[]string{"homes[0].region"}},
		{"unknown region", "cluster: c\nregions:\n  - name: a\n    api: 127.0.0.1:7101\n    peer: 127.0.0.1:7201\n", "b",
			[]string{`region "b" is not in`, "regions: a"}},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, fmt.Sprintf("c%d.yaml", i))
			if err := os.WriteFile(path, []byte(tc.yaml), 0o644); err != nil {
				t.Fatal(err)
			}
			code, _, stderr := runCLI(t, "serve", "--config", path, "--region", tc.region)
			if code != 1 {
				t.Errorf("exit %d, want 1; stderr %s", code, stderr)
			}
			for _, w := range tc.want {
				if !strings.Contains(stderr, w) {
					t.Errorf("stderr %q does not name %q", stderr, w)
				}
			}
			if _, err := os.Stat(filepath.Join(dir, "data")); err == nil {
				t.Errorf("a refused config created a data directory")
			}
		})
	}
}

func TestCerts(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "certs")
	code, stdout, stderr := runCLI(t, "certs", "--dir", dir, "--cluster", "prod", "us-east", "eu-west")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	for _, f := range []string{"ca.crt", "ca.key", "us-east.crt", "us-east.key", "eu-west.crt", "eu-west.key"} {
		fi, err := os.Stat(filepath.Join(dir, f))
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if strings.HasSuffix(f, ".key") && fi.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %v", f, fi.Mode().Perm())
		}
	}
	if !strings.Contains(stdout, filepath.Join(dir, "us-east.key")) {
		t.Errorf("stdout %q does not say what it wrote", stdout)
	}
	key, _ := os.ReadFile(filepath.Join(dir, "us-east.key"))

	// Existing keys are not replaced without --force.
	code, _, stderr = runCLI(t, "certs", "--dir", dir, "--cluster", "prod", "us-east")
	if code != 1 || !strings.Contains(stderr, "us-east.key already exists") || !strings.Contains(stderr, "--force") {
		t.Errorf("exit %d, stderr %q; want a refusal naming the key and --force", code, stderr)
	}
	if now, _ := os.ReadFile(filepath.Join(dir, "us-east.key")); !bytes.Equal(now, key) {
		t.Errorf("a refused run replaced the key")
	}
	// A new region joins the existing CA; flags may follow the regions.
	if code, _, stderr := runCLI(t, "certs", "ap-south", "--dir", dir, "--cluster", "prod"); code != 0 {
		t.Errorf("adding a region: exit %d: %s", code, stderr)
	}
	// The CA belongs to cluster prod.
	if code, _, stderr := runCLI(t, "certs", "--dir", dir, "--cluster", "other", "sa-east"); code != 1 || !strings.Contains(stderr, `"prod"`) {
		t.Errorf("another cluster's CA: exit %d, stderr %q", code, stderr)
	}
	if code, _, stderr := runCLI(t, "certs", "--dir", dir, "--cluster", "prod", "--force", "us-east"); code != 0 {
		t.Errorf("--force: exit %d: %s", code, stderr)
	}
	if now, _ := os.ReadFile(filepath.Join(dir, "us-east.key")); bytes.Equal(now, key) {
		t.Errorf("--force did not replace the key")
	}
	if code, _, stderr := runCLI(t, "certs", "--dir", dir, "US_East"); code != 1 || !strings.Contains(stderr, "US_East") {
		t.Errorf("bad region name: exit %d, stderr %q", code, stderr)
	}
}

// TestServeInProcess runs `lattice serve` in-process until its context
// ends, and checks that it served and stopped cleanly.
func TestServeInProcess(t *testing.T) {
	dir := t.TempDir()
	addr := freeAddr(t)
	cfg := writeConfig(t, dir, addr)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stdout, stderr syncBuffer
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"serve", "--config", cfg, "--region", "us-east", "--log-format", "json", "--log-level", "debug"}, &stdout, &stderr)
	}()
	base := "http://" + addr
	waitReady(t, base, done)
	res, err := http.Post(base+"/v1/carts/c/items", "application/json", strings.NewReader(`{"sku":"a","qty":1}`))
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 200 {
		t.Errorf("add: %d", res.StatusCode)
	}
	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Errorf("exit %d; stderr %s", code, stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("serve did not stop")
	}
	log := stderr.String()
	for _, want := range []string{`"msg":"region serving"`, `"region":"us-east"`, `"msg":"api: request"`, `"msg":"region stopped"`} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %s:\n%s", want, log)
		}
	}
}

// freeAddr returns a loopback address whose port was free a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	return regiontest.FreePort(t, "tcp")
}

// writeConfig writes a one-region cluster config into dir with its API on
// addr and returns its path.
func writeConfig(t *testing.T, dir, addr string) string {
	t.Helper()
	path := filepath.Join(dir, "lattice.yaml")
	cfg := fmt.Sprintf(`cluster: crash
data_dir: ./data
tls_dir: ./certs
durability: always
regions:
  - name: us-east
    api: %s
    peer: 127.0.0.1:7201
`, addr)
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// waitReady polls /readyz until it answers 200, failing if exited
// delivers first or the deadline passes.
// waitCaughtUp waits until the region (or node) at base is out of
// catch-up, which a new store of a region of several starts in: until it
// has completed anti-entropy with every peer it decides nothing as a
// home. /readyz warns meanwhile.
func waitCaughtUp(t *testing.T, base string) {
	t.Helper()
	client := &http.Client{Timeout: time.Second}
	pollUntil(t, 30*time.Second, base+" to catch up with its peers", func() bool {
		res, err := client.Get(base + "/readyz")
		if err != nil {
			return false
		}
		defer res.Body.Close()
		b, err := io.ReadAll(res.Body)
		return err == nil && res.StatusCode == 200 && !bytes.Contains(b, []byte("catching up with its peers"))
	})
}

func waitReady(t *testing.T, base string, exited <-chan int) {
	t.Helper()
	if err := readyErr(base, exited); err != nil {
		t.Fatal(err)
	}
}

// readyErr waits until base answers /readyz with 200, or the server
// exits, or 30 s pass.
func readyErr(base string, exited <-chan int) error {
	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(30 * time.Second)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		res, err := client.Get(base + "/readyz")
		if err == nil {
			res.Body.Close()
			if res.StatusCode == 200 {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready after 30s (last error %v)", base, err)
		}
		select {
		case code := <-exited:
			return fmt.Errorf("the server exited with status %d before it was ready", code)
		case <-tick.C:
		}
	}
}
