package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestServeNodes runs real `lattice serve` processes: a region's single
// node, listed or implicit, runs when --node names it (or is left out);
// a node the region lacks, a region with several nodes and a cluster of
// several partitions are refused at start with an error that says so,
// and nothing is written to the data directory.
func TestServeNodes(t *testing.T) {
	bin := buildLattice(t)

	type refusal struct {
		name, cfg string
		args      []string
		want      string
	}
	refusals := []refusal{
		{"partitions", "partitions: 8\nregions:\n  - {name: us-east, api: \"127.0.0.1:1\", peer: \"127.0.0.1:2\"}\n",
			[]string{"--region", "us-east"}, "lattice serve: partitions: 8: multi-node regions are not available in this version"},
		{"partitions with --node", "partitions: 2\nregions:\n  - {name: us-east, api: \"127.0.0.1:1\", peer: \"127.0.0.1:2\"}\n",
			[]string{"--region", "us-east", "--node", "us-east"}, "lattice serve: partitions: 2: multi-node regions are not available in this version"},
		{"several nodes", "partitions: 2\nregions:\n  - name: us-east\n    nodes:\n" +
			"      - {name: n-0, api: \"127.0.0.1:1\", peer: \"127.0.0.1:2\", partitions: 0}\n" +
			"      - {name: n-1, api: \"127.0.0.1:3\", peer: \"127.0.0.1:4\", partitions: 1}\n",
			[]string{"--region", "us-east", "--node", "n-1"}, "lattice serve: region us-east lists 2 nodes (n-0, n-1): multi-node regions are not available in this version"},
		{"unknown node", "regions:\n  - name: us-east\n    nodes:\n      - {name: n-0, api: \"127.0.0.1:1\", peer: \"127.0.0.1:2\"}\n",
			[]string{"--region", "us-east", "--node", "n-9"}, `lattice serve: node "n-9" is not a node of region us-east (nodes: n-0)`},
		{"region name for a listed node", "regions:\n  - name: us-east\n    nodes:\n      - {name: n-0, api: \"127.0.0.1:1\", peer: \"127.0.0.1:2\"}\n",
			[]string{"--region", "us-east", "--node", "us-east"}, `lattice serve: node "us-east" is not a node of region us-east (nodes: n-0)`},
		{"bad node config", "regions:\n  - name: us-east\n    nodes:\n      - {name: N_0, api: \"127.0.0.1:1\", peer: \"127.0.0.1:2\"}\n",
			[]string{"--region", "us-east"}, `lattice serve: config: regions[0].nodes[0].name: "N_0" must be a DNS label`},
	}
	for _, tc := range refusals {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			cfg := filepath.Join(dir, "lattice.yaml")
			if err := os.WriteFile(cfg, []byte("cluster: c\ndata_dir: ./data\n"+tc.cfg), 0o644); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			out, err := exec.CommandContext(ctx, bin, append([]string{"serve", "--config", cfg}, tc.args...)...).CombinedOutput()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != exitFail {
				t.Fatalf("exit %v, want %d; output:\n%s", err, exitFail, out)
			}
			if !strings.Contains(string(out), tc.want) {
				t.Fatalf("output:\n%s\nwant it to contain %q", out, tc.want)
			}
			if _, err := os.Stat(filepath.Join(dir, "data")); !os.IsNotExist(err) {
				t.Errorf("a refused start wrote its data directory (%v)", err)
			}
		})
	}

	runs := []struct {
		name, regions string
		node          []string
	}{
		{"listed node", "  - name: us-east\n    nodes:\n      - {name: us-east-0, api: %q, peer: \"127.0.0.1:7201\"}\n", []string{"--node", "us-east-0"}},
		{"listed node, --node left out", "  - name: us-east\n    nodes:\n      - {name: us-east-0, api: %q, peer: \"127.0.0.1:7201\", partitions: 0}\n", nil},
		{"implicit node", "  - {name: us-east, api: %q, peer: \"127.0.0.1:7201\"}\n", []string{"--node", "us-east"}},
	}
	for _, tc := range runs {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			addr := freeAddr(t)
			cfg := filepath.Join(dir, "lattice.yaml")
			doc := "cluster: c\ndata_dir: ./data\npartitions: 1\nregions:\n" + fmt.Sprintf(tc.regions, addr)
			if err := os.WriteFile(cfg, []byte(doc), 0o644); err != nil {
				t.Fatal(err)
			}
			logPath := filepath.Join(dir, "serve.log")
			logf, err := os.Create(logPath)
			if err != nil {
				t.Fatal(err)
			}
			defer logf.Close()
			cmd := exec.Command(bin, append([]string{"serve", "--config", cfg, "--region", "us-east"}, tc.node...)...)
			cmd.Stdout, cmd.Stderr = logf, logf
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			exited := make(chan int, 1)
			done := make(chan struct{})
			go func() {
				_ = cmd.Wait()
				exited <- cmd.ProcessState.ExitCode()
				close(done)
			}()
			t.Cleanup(func() {
				select {
				case <-done:
				default:
					_ = cmd.Process.Kill()
					<-done
				}
			})
			base := "http://" + addr
			waitReady(t, base, exited)
			res, err := http.Post(base+"/v1/carts/c1/items", "application/json", strings.NewReader(`{"sku":"book","qty":2}`))
			if err != nil {
				t.Fatal(err)
			}
			res.Body.Close()
			if res.StatusCode/100 != 2 {
				t.Fatalf("add: status %d", res.StatusCode)
			}
			if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			select {
			case code := <-exited:
				if code != 0 {
					b, _ := os.ReadFile(logPath)
					t.Fatalf("exit %d after SIGTERM:\n%s", code, b)
				}
			case <-time.After(30 * time.Second):
				t.Fatal("no exit 30 s after SIGTERM")
			}
			if _, err := os.Stat(filepath.Join(dir, "data", "us-east", "data.db")); err != nil {
				t.Errorf("the node keeps its store in data_dir/REGION: %v", err)
			}
		})
	}
}
