package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/latticedb/lattice/cmd/server"
	"github.com/latticedb/lattice/region/config"
	"github.com/latticedb/lattice/region/regiontest"
	"github.com/latticedb/lattice/sync/certs"
)

// TestBackupRefusesOutAtStoreRewriteFile checks the documented refusal of
// `lattice backup --out` naming one of the store's files
// (configuration.md: "not the store or one of its files"). data.db.prev is
// such a file (operations.md, "A region's files"): the next start takes
// it for the file an interrupted rewrite was replacing and renames it over
// data.db. A snapshot written there therefore silently rolls the region
// back to the snapshot at its next start, losing every write made after
// it (for good in a cluster of one region).
func TestBackupRefusesOutAtStoreRewriteFile(t *testing.T) {
	dir := t.TempDir()
	addr := freeAddr(t)
	cfg := writeConfig(t, dir, addr)
	store := filepath.Join(dir, "data", "us-east", "data.db")
	r := serveInProcess(t, cfg, addr)
	r.add(t, "rb", "before")

	code, stdout, stderr := runCLI(t, "backup", "--config", cfg, "--region", "us-east", "--out", store+".prev")
	if code == 1 && strings.Contains(stderr, "is a file of the region's store") {
		return
	}
	// Not refused: show what it costs.
	r.add(t, "rb", "after")
	r.stop(t)
	r = serveInProcess(t, cfg, addr)
	got := r.skus(t, "rb")
	t.Errorf("backup --out %s.prev: exit %d (stdout %q, stderr %q), want exit 1 refusing a file of the store; "+
		"after a restart the cart holds %v (acknowledged add \"after\" kept: %v)",
		store, code, strings.TrimSpace(stdout), strings.TrimSpace(stderr), got, slices.Contains(got, "after"))
}

// TestRestoreFromStagingNameKeepsSnapshot checks that `lattice restore`
// either restores from, or refuses, a snapshot placed at
// data_dir/NAME/data.db.restore — the name configuration.md's "Files on
// disk" gives to "the snapshot being put in place" — or at data.db.prev,
// and in no case destroys it (a restore copies the snapshot and leaves
// the --from file as it was, as TestBackupAndRestore checks). A refused restore must write nothing (SPEC: bad input is
// rejected with a clear error and writes nothing); the snapshot may be an
// operator's only copy of a region that lost its data.
func TestRestoreFromStagingNameKeepsSnapshot(t *testing.T) {
	dir := t.TempDir()
	addr := freeAddr(t)
	cfg := writeConfig(t, dir, addr)
	store := filepath.Join(dir, "data", "us-east", "data.db")
	r := serveInProcess(t, cfg, addr)
	r.add(t, "st", "kept")
	snap := filepath.Join(dir, "snap.db")
	if code, _, stderr := runCLI(t, "backup", "--config", cfg, "--region", "us-east", "--out", snap); code != 0 {
		t.Fatalf("backup: exit %d: %s", code, stderr)
	}
	r.stop(t)
	snapBytes, err := os.ReadFile(snap)
	if err != nil {
		t.Fatal(err)
	}
	// Both names of files the store keeps beside data.db (configuration.md
	// "Files on disk", operations.md "A region's files").
	for _, staged := range []string{store + ".restore", store + ".prev"} {
		if err := os.WriteFile(staged, snapBytes, 0o644); err != nil {
			t.Fatal(err)
		}
		code, stdout, stderr := runCLI(t, "restore", "--config", cfg, "--region", "us-east", "--from", staged)
		b, err := os.ReadFile(staged)
		if err != nil || !bytes.Equal(b, snapBytes) {
			t.Errorf("restore --from %s: exit %d (stdout %q, stderr %q); want a restore, or a refusal, that leaves the snapshot; "+
				"the snapshot is now %d bytes (read error %v), was %d",
				staged, code, strings.TrimSpace(stdout), strings.TrimSpace(stderr), len(b), err, len(snapBytes))
		}
		os.Remove(staged)
		if code == 0 {
			r = serveInProcess(t, cfg, addr)
			if got := r.skus(t, "st"); !slices.Equal(got, []string{"kept"}) {
				t.Errorf("restore --from %s succeeded but the cart holds %v, want [kept]", staged, got)
			}
			r.stop(t)
		}
	}
}

// TestStockAdjustTakesNegativeDelta checks that `lattice stock adjust SKU
// DELTA` (README "Other commands", api.md's command list) takes a
// negative DELTA as written, `lattice stock adjust book -2`: lowering
// stock (a count correction, shrinkage) is what an adjustment is mostly
// for, and the usage line gives no other way to write one.
func TestStockAdjustTakesNegativeDelta(t *testing.T) {
	dir := t.TempDir()
	addr := freeAddr(t)
	cfg := writeConfig(t, dir, addr)
	r := serveInProcess(t, cfg, addr)
	if code, _, stderr := runCLI(t, "stock", "restock", "book", "5", "--url", r.base); code != 0 {
		t.Fatalf("stock restock book 5: exit %d: %s", code, stderr)
	}
	code, stdout, stderr := runCLI(t, "stock", "adjust", "book", "-2", "--reason", "count", "--url", r.base)
	if code != 0 {
		t.Errorf("stock adjust book -2: exit %d (stdout %q, stderr %q), want 0 and stock lowered by 2",
			code, strings.TrimSpace(stdout), firstLine(stderr))
	}
}

// firstLine returns the first line of s.
func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}

// TestReservationsMetricOpsAsDocumented checks the label values of
// lattice_reservations_total that operations.md's metrics table lists —
// op one of reserve, commit, release, return, adjust — at an escrow sku's
// home, which answers other regions' requests for rights: a dashboard or
// alert written from the table (by op) must see every series a region
// serves.
func TestReservationsMetricOpsAsDocumented(t *testing.T) {
	dir := t.TempDir()
	apis := map[string]string{"us-east": freeAddr(t), "eu-west": freeAddr(t)}
	body := fmt.Sprintf(`cluster: escm
data_dir: ./data
tls_dir: ./certs
regions:
  - {name: us-east, api: %q, peer: %q}
  - {name: eu-west, api: %q, peer: %q}
homes:
  - {prefix: es-, region: us-east, escrow: true}
`, apis["us-east"], freeUDPAddr(t), apis["eu-west"], freeUDPAddr(t))
	path := filepath.Join(dir, "lattice.yaml")
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(path)
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
	t.Cleanup(func() {
		for _, s := range servers {
			s.Close()
		}
	})
	home, eu := newAPI("http://"+apis["us-east"]), newAPI("http://"+apis["eu-west"])
	if status, _, b, err := home.call("POST", "/v1/inventory/es-1/restock", `{"qty":40}`); err != nil || status != 200 {
		t.Fatalf("restock: %d %s %v", status, b, err)
	}
	regiontest.WaitFor(t, 20*time.Second, "eu-west reserves es-1", func() bool {
		status, _, _, err := eu.call("POST", "/v1/reservations", `{"sku":"es-1","qty":1,"ttl_ms":60000}`)
		return err == nil && status == 201
	})
	// The op values operations.md's metrics table lists for the metric.
	doc, err := os.ReadFile(filepath.Join("..", "..", "docs", "operations.md"))
	if err != nil {
		t.Fatal(err)
	}
	documented := map[string]bool{}
	for line := range strings.SplitSeq(string(doc), "\n") {
		if !strings.HasPrefix(line, "| `lattice_reservations_total` |") {
			continue
		}
		_, labels, _ := strings.Cut(line, "`op` (")
		labels, _, _ = strings.Cut(labels, "), `result`")
		for i, part := range strings.Split(labels, "`") {
			if i%2 == 1 {
				documented[part] = true
			}
		}
	}
	if len(documented) == 0 {
		t.Fatal("operations.md lists no op values for lattice_reservations_total")
	}
	res, err := http.Get("http://" + apis["us-east"] + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	var extra []string
	for line := range strings.SplitSeq(string(raw), "\n") {
		if !strings.HasPrefix(line, "lattice_reservations_total{") {
			continue
		}
		_, rest, _ := strings.Cut(line, `op="`)
		op, _, _ := strings.Cut(rest, `"`)
		if !documented[op] {
			extra = append(extra, line)
		}
	}
	if len(extra) > 0 {
		t.Errorf("lattice_reservations_total serves op values operations.md does not list (%v):\n%s",
			slices.Sorted(maps.Keys(documented)), strings.Join(extra, "\n"))
	}
}

// TestServeRefusesPartitionsRaisedUnderItsData checks configuration.md's
// "A region refuses to start on a data directory written with another
// count" of partitions when the count is raised from 2 to 4: the stores
// p0000 and p0001 are both below the new count, but a key of p0000 may
// now belong to p0002. Started anyway, the region answers for such a key
// from an empty store, and an acknowledged write is no longer seen.
func TestServeRefusesPartitionsRaisedUnderItsData(t *testing.T) {
	cart := ""
	for i := 0; cart == ""; i++ {
		if k := fmt.Sprintf("moved-%d", i); config.PartitionOf(k, 2) == 0 && config.PartitionOf(k, 4) == 2 {
			cart = k
		}
	}
	dir := t.TempDir()
	addr := freeAddr(t)
	cfg := writeConfig(t, dir, addr)
	b, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	withP := func(p int) {
		t.Helper()
		doc := strings.Replace(string(b), "durability: always\n", fmt.Sprintf("durability: always\npartitions: %d\n", p), 1)
		if err := os.WriteFile(cfg, []byte(doc), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	withP(2)
	r := serveInProcess(t, cfg, addr)
	r.add(t, cart, "book")
	r.stop(t)

	withP(4)
	stop, exited, code, stderr := serveOnce(t, cfg, addr)
	if exited {
		if code == 0 {
			t.Fatalf("serve exited 0 without serving:\n%s", stderr)
		}
		return // refused to start
	}
	defer stop()
	st, _, body, err := newAPI("http://"+addr).call("GET", "/v1/carts/"+cart, "")
	if err != nil {
		t.Fatal(err)
	}
	if st != 200 || !strings.Contains(string(body), `"book"`) {
		t.Errorf("after raising partitions from 2 to 4 the region started and answers GET /v1/carts/%s %d %s: "+
			"the acknowledged add of book (in p0000) is not seen; want a refusal to start or the cart", cart, st, strings.TrimSpace(string(body)))
	}
}

// TestServeEveryLogRecordCarriesRegion checks configuration.md's
// `--log-format` row, "every record carries region=NAME" (and
// operations.md's Logs: "Records go to stderr …, each with region=NAME"),
// over a whole start and clean stop: log pipelines route and alert by
// that field, the record of a start that failed included.
func TestServeEveryLogRecordCarriesRegion(t *testing.T) {
	dir := t.TempDir()
	addr := freeAddr(t)
	cfg := writeConfig(t, dir, addr)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan int, 1)
	stderr := &syncBuffer{}
	go func() {
		done <- run(ctx, []string{"serve", "--config", cfg, "--region", "us-east", "--log-format", "json"}, &syncBuffer{}, stderr)
	}()
	waitReady(t, "http://"+addr, done)
	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Fatalf("serve exited %d:\n%s", code, stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("serve did not stop")
	}
	// A start that fails (the API address is taken) logs why at ERROR.
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if code := run(context.Background(), []string{"serve", "--config", cfg, "--region", "us-east", "--log-format", "json"}, &syncBuffer{}, stderr); code != 1 {
		t.Errorf("serve on a taken address exited %d, want 1", code)
	}
	var without []string
	for line := range strings.SplitSeq(strings.TrimSpace(stderr.String()), "\n") {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("log line %q is not JSON: %v", line, err)
		}
		if rec["region"] != "us-east" {
			without = append(without, line)
		}
	}
	if len(without) > 0 {
		t.Errorf("%d log records of lattice serve --region us-east lack region=us-east:\n%s", len(without), strings.Join(without, "\n"))
	}
}
