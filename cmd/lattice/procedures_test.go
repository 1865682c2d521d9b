package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/latticedb/lattice/region/config"
)

// TestBackupPartitionZeroOnOnePartitionCluster: `lattice backup
// --partition N` is refused for a cluster of one partition, 0 included.
func TestBackupPartitionZeroOnOnePartitionCluster(t *testing.T) {
	dir := t.TempDir()
	addr := freeAddr(t)
	cfg := filepath.Join(dir, "lattice.yaml")
	body := fmt.Sprintf("cluster: procedures\ndata_dir: %s\ndurability: always\nregions:\n  - {name: us-east, api: %q, peer: \"127.0.0.1:1\"}\n", filepath.Join(dir, "data"), addr)
	if err := os.WriteFile(cfg, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	r := serveInProcess(t, cfg, addr)
	r.add(t, "c1", "book")
	r.stop(t)
	out := filepath.Join(dir, "snap")
	code, stdout, stderr := runCLI(t, "backup", "--config", cfg, "--region", "us-east", "--partition", "0", "--out", out)
	if code == 0 {
		t.Errorf("backup --partition 0 of a cluster of one partition: exit 0 (%q); configuration.md says --partition is refused for a cluster of one partition", strings.TrimSpace(stdout))
	}
	if _, err := os.Stat(out); err == nil {
		t.Errorf("the refused backup wrote %s", out)
	}
	if !strings.Contains(stderr, "--partition") {
		t.Errorf("stderr %q does not name --partition", stderr)
	}
}

// TestStatusSeesEveryNode: `lattice status` of a region of two nodes asks
// each node: with the second down (step 1 of moving a partition off it),
// half the region's partitions unavailable, it names that node and exits
// 1.
func TestStatusSeesEveryNode(t *testing.T) {
	dir := t.TempDir()
	if code, _, stderr := runCLI(t, "certs", "--dir", filepath.Join(dir, "certs"), "--cluster", "procedures", "us-east"); code != 0 {
		t.Fatalf("certs: %s", stderr)
	}
	api0, api1 := freeAddr(t), freeAddr(t)
	peer0, peer1 := freeUDPAddr(t), freeUDPAddr(t)
	cfg := filepath.Join(dir, "lattice.yaml")
	body := fmt.Sprintf("cluster: procedures\ndata_dir: %s\ntls_dir: %s\ndurability: always\npartitions: 2\nregions:\n  - name: us-east\n    nodes:\n      - {name: n-0, api: %q, peer: %q, partitions: \"0\"}\n      - {name: n-1, api: %q, peer: %q, partitions: \"1\"}\n",
		filepath.Join(dir, "data"), filepath.Join(dir, "certs"), api0, peer0, api1, peer1)
	if err := os.WriteFile(cfg, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	errs := &syncBuffer{}
	go func() {
		done <- run(ctx, []string{"serve", "--config", cfg, "--region", "us-east", "--node", "n-0"}, &syncBuffer{}, errs)
	}()
	t.Cleanup(func() { cancel(); <-done })
	waitReady(t, "http://"+api0, done)
	// n-1 is down: a cart of partition 1 is unavailable in us-east.
	var cart1 string
	for i := 0; ; i++ {
		if id := fmt.Sprintf("st-%d", i); config.PartitionOf(id, 2) == 1 {
			cart1 = id
			break
		}
	}
	status, _, b, err := newAPI("http://"+api0).call("GET", "/v1/carts/"+cart1, "")
	if err != nil || status != 503 {
		t.Fatalf("cart of n-1's partition: %d %s %v; want 503", status, b, err)
	}
	code, stdout, stderr := runCLI(t, "status", "--config", cfg, "--timeout", "2s")
	if code == 0 && !strings.Contains(stdout+stderr, "n-1") {
		t.Errorf("lattice status exits 0 and never mentions node n-1, which is down (its partition answers 503 partition_unavailable):\n%s%s", stdout, stderr)
	}
}
