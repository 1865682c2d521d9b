package main

import (
	"path/filepath"
	"testing"
	"time"
)

// TestKilledIdleRegionKeepsIncarnation writes a cart, stock and an open
// hold to a region, SIGKILLs it, then starts it and SIGKILLs it again,
// once it has caught up, several times with no client request in
// between: the idle runs must not begin a new incarnation (operations.md:
// an unclean stop of a run that wrote nothing keeps the incarnation, as
// does, with durability always, a crash on the same boot). Each
// incarnation spends one of the cluster's lifetime budget of 256 replica
// ids.
func TestKilledIdleRegionKeepsIncarnation(t *testing.T) {
	bin := buildLattice(t)
	dir := t.TempDir()
	addr := freeAddr(t)
	cfg := writeConfig(t, dir, addr)
	if code, _, stderr := runCLI(t, "certs", "--dir", filepath.Join(dir, "certs"), "--cluster", "crash", "us-east"); code != 0 {
		t.Fatalf("certs: %s", stderr)
	}
	base := "http://" + addr
	logPath := filepath.Join(dir, "serve.log")
	a := newAPI(base)
	type status struct {
		Replica       string         `json:"replica"`
		CatchingUp    bool           `json:"catching_up"`
		VersionVector map[string]int `json:"version_vector"`
	}
	start := func() (*child, status) {
		c := startChild(t, bin, cfg, logPath)
		waitReady(t, base, c.exited)
		var st status
		pollUntil(t, 10*time.Second, "the region caught up", func() bool {
			a.get(t, "/v1/cluster", &st)
			return !st.CatchingUp
		})
		return c, st
	}
	c, _ := start()
	for _, w := range []struct{ path, body string }{
		{"/v1/carts/idle-1/items", `{"sku":"a","qty":1}`},
		{"/v1/inventory/idle-sku/restock", `{"qty":10}`},
		{"/v1/reservations", `{"sku":"idle-sku","qty":2,"ttl_ms":600000}`},
	} {
		if status, _, b, err := a.call("POST", w.path, w.body); err != nil || (status != 200 && status != 201) {
			t.Fatalf("POST %s: %d %s %v", w.path, status, b, err)
		}
	}
	c.kill(t)
	c, first := start()
	t.Logf("after the kill of the run that wrote: replica %s, version vector %v", first.Replica, first.VersionVector)
	for i := range 3 {
		c.kill(t)
		var st status
		c, st = start()
		if st.Replica != first.Replica || len(st.VersionVector) != len(first.VersionVector) {
			t.Errorf("SIGKILL %d of an idle run (no client request since the last start): replica %s, version vector %v; want replica %s kept, version vector of %d replicas", i+1, st.Replica, st.VersionVector, first.Replica, len(first.VersionVector))
		}
	}
}

// TestKilledRunOfRefusalsKeepsIncarnation SIGKILLs a region after a run
// whose only requests changed nothing (a refused reservation, a removal
// of a line the cart does not hold, a replay of a keyed reservation
// refused earlier): an unclean stop of a run that wrote nothing keeps
// the incarnation (operations.md), so the replica id must not change.
func TestKilledRunOfRefusalsKeepsIncarnation(t *testing.T) {
	bin := buildLattice(t)
	dir := t.TempDir()
	addr := freeAddr(t)
	cfg := writeConfig(t, dir, addr)
	if code, _, stderr := runCLI(t, "certs", "--dir", filepath.Join(dir, "certs"), "--cluster", "crash", "us-east"); code != 0 {
		t.Fatalf("certs: %s", stderr)
	}
	base := "http://" + addr
	logPath := filepath.Join(dir, "serve.log")
	a := newAPI(base)
	replica := func() string {
		var st struct {
			Replica string `json:"replica"`
		}
		a.get(t, "/v1/cluster", &st)
		return st.Replica
	}
	c := startChild(t, bin, cfg, logPath)
	waitReady(t, base, c.exited)
	for _, w := range []struct{ path, body, key string }{
		{"/v1/carts/ref-1/items", `{"sku":"a","qty":1}`, ""},
		{"/v1/inventory/ref-sku/restock", `{"qty":1}`, ""},
		{"/v1/reservations", `{"sku":"ref-sku","qty":5}`, "ref-key"},
	} {
		var hdr []string
		if w.key != "" {
			hdr = []string{"Idempotency-Key", w.key}
		}
		status, _, b, err := a.call("POST", w.path, w.body, hdr...)
		if err != nil || (status != 200 && status != 409) {
			t.Fatalf("POST %s: %d %s %v", w.path, status, b, err)
		}
	}
	c.kill(t)
	c = startChild(t, bin, cfg, logPath)
	waitReady(t, base, c.exited)
	first := replica()
	for _, rq := range []struct {
		method, path, body, key string
		want                    int
	}{
		{"POST", "/v1/reservations", `{"sku":"ref-sku","qty":5}`, "", 409},
		{"DELETE", "/v1/carts/ref-1/items/zzz", "", "", 200},
		{"POST", "/v1/reservations", `{"sku":"ref-sku","qty":5}`, "ref-key", 409},
	} {
		var hdr []string
		if rq.key != "" {
			hdr = []string{"Idempotency-Key", rq.key}
		}
		status, _, b, err := a.call(rq.method, rq.path, rq.body, hdr...)
		if err != nil || status != rq.want {
			t.Fatalf("%s %s: %d %s %v; want %d", rq.method, rq.path, status, b, err, rq.want)
		}
	}
	c.kill(t)
	c = startChild(t, bin, cfg, logPath)
	waitReady(t, base, c.exited)
	if got := replica(); got != first {
		t.Errorf("SIGKILL of a run whose requests changed nothing: replica %s; want %s kept", got, first)
	}
}
