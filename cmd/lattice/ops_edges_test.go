package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/latticedb/lattice/cmd/server"
	"github.com/latticedb/lattice/region/config"
	"github.com/latticedb/lattice/sync/certs"
	"github.com/latticedb/lattice/sync/replication"
)

// serveOnce runs `lattice serve` in-process for region us-east of cfg and
// returns, once it is ready, a function that stops it; or, when it exits
// before it is ready, its exit status and stderr.
func serveOnce(t *testing.T, cfg, addr string) (stop func(), exited bool, code int, stderr string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	var errBuf syncBuffer
	go func() {
		done <- run(ctx, []string{"serve", "--config", cfg, "--region", "us-east"}, &syncBuffer{}, &errBuf)
	}()
	base := "http://" + addr
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case c := <-done:
			cancel()
			return nil, true, c, errBuf.String()
		default:
		}
		if st, _, _, err := newAPI(base).call("GET", "/readyz", ""); err == nil && st == 200 {
			break
		}
		if time.Now().After(deadline) {
			cancel()
			t.Fatalf("serve not ready within 30 s:\n%s", errBuf.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case <-done:
			case <-time.After(30 * time.Second):
				t.Error("serve did not stop")
			}
		})
	}
	t.Cleanup(stop)
	return stop, false, 0, ""
}

// TestServeRefusesPartitionsChangedUnderItsData writes to a region of a
// one-partition cluster, stops it cleanly, and starts it again from a
// config that says partitions: 4 over the same data_dir. The region must
// either refuse to start (partitions is fixed when the cluster is
// created) or still serve what it acknowledged; it must not come up on
// new, empty partition stores beside the old one as if it were a new
// region, answering as if the acknowledged write never happened.
func TestServeRefusesPartitionsChangedUnderItsData(t *testing.T) {
	dir := t.TempDir()
	addr := freeAddr(t)
	cfg := writeConfig(t, dir, addr)
	r := serveInProcess(t, cfg, addr)
	r.add(t, "kept-cart", "book")
	r.stop(t)

	b, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	changed := strings.Replace(string(b), "durability: always\n", "durability: always\npartitions: 4\n", 1)
	if err := os.WriteFile(cfg, []byte(changed), 0o644); err != nil {
		t.Fatal(err)
	}
	stop, exited, code, stderr := serveOnce(t, cfg, addr)
	if exited {
		if code == 0 {
			t.Fatalf("serve exited 0 without serving:\n%s", stderr)
		}
		return // refused to start
	}
	defer stop()
	st, _, body, err := newAPI("http://"+addr).call("GET", "/v1/carts/kept-cart", "")
	if err != nil {
		t.Fatal(err)
	}
	if st != 200 || !strings.Contains(string(body), `"book"`) {
		t.Errorf("after changing partitions from 1 to 4 the region started and answers GET /v1/carts/kept-cart %d %s: the acknowledged add of book is gone (its store %s/data/us-east/data.db is left unread); want a refusal to start or the cart", st, body, dir)
	}
}

// TestPeersWithDifferentPartitionsDoNotSplitSilently runs two regions
// whose copies of the config differ only in partitions (2 at us-east, 4
// at eu-west). Either a region refuses the other (at start or on
// connecting, saying why in its log), or what one region acknowledges
// reaches the other; a cart written at us-east must not stay missing at
// eu-west while both run, connected, and say nothing.
func TestPeersWithDifferentPartitionsDoNotSplitSilently(t *testing.T) {
	dir := t.TempDir()
	if err := certs.Generate(filepath.Join(dir, "certs"), "split", []string{"us-east", "eu-west"}); err != nil {
		t.Fatal(err)
	}
	apiA, apiB := freeAddr(t), freeAddr(t)
	peerA, peerB := freeUDPAddr(t), freeUDPAddr(t)
	cfgOf := func(p int) *config.Config {
		doc := fmt.Sprintf("cluster: split\ndata_dir: %s\ntls_dir: %s\npartitions: %d\nregions:\n  - {name: us-east, api: %q, peer: %q}\n  - {name: eu-west, api: %q, peer: %q}\n",
			filepath.Join(dir, "data"), filepath.Join(dir, "certs"), p, apiA, peerA, apiB, peerB)
		c, err := config.Parse([]byte(doc))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	logs := map[string]*syncBuffer{"us-east": {}, "eu-west": {}}
	ctx := context.Background()
	var started []*server.Server
	t.Cleanup(func() {
		for _, s := range started {
			s.Close()
		}
	})
	for _, rc := range []struct {
		name string
		p    int
	}{{"us-east", 2}, {"eu-west", 4}} {
		s, err := server.Start(ctx, cfgOf(rc.p), rc.name, server.Options{
			Logger:                 slog.New(slog.NewTextHandler(logs[rc.name], &slog.HandlerOptions{Level: slog.LevelDebug})),
			Replication:            server.QUIC(replication.AttachOptions{WANSeed: 1}),
			PartitionedReplication: server.QUICPartitioned(replication.AttachOptions{WANSeed: 1}),
		})
		if err != nil {
			return // refused at start, saying why
		}
		started = append(started, s)
	}
	a, b := newAPI("http://"+apiA), newAPI("http://"+apiB)
	// A cart whose partition differs between the two counts.
	cart := ""
	for i := 0; cart == ""; i++ {
		id := fmt.Sprintf("split-%d", i)
		if config.PartitionOf(id, 2) != config.PartitionOf(id, 4) {
			cart = id
		}
	}
	if st, _, body, err := a.call("POST", "/v1/carts/"+cart+"/items", `{"sku":"book","qty":1}`); err != nil || st != 200 {
		t.Fatalf("add at us-east: %d %s %v", st, body, err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if st, _, body, err := b.call("GET", "/v1/carts/"+cart, ""); err == nil && st == 200 && strings.Contains(string(body), `"book"`) {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	for name, l := range logs {
		if strings.Contains(strings.ToLower(l.String()), "partitions") && strings.Contains(l.String(), "level=ERROR") {
			t.Logf("%s logged:\n%s", name, l.String())
			return
		}
	}
	_, _, cl, _ := a.call("GET", "/v1/cluster", "")
	t.Errorf("us-east (partitions: 2) and eu-west (partitions: 4) both run; cart %s written at us-east is still missing at eu-west after 5 s and neither region refused the other or logged an error about partitions; us-east /v1/cluster: %s", cart, cl)
	for name, l := range logs {
		t.Logf("%s log:\n%s", name, l.String())
	}
}
