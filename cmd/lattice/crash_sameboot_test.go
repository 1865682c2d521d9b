package main

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestKilledHomeDecidesAtOnceWhilePeerDown: a home region killed with
// SIGKILL (a process crash, the machine still up) while a peer is down
// comes back as the same incarnation, without catching up, and decides
// its skus' reservations at once: its file holds every write of the
// killed run. Before, it began a new incarnation whose catch-up waited
// for every peer, so its homes stayed closed (503) until the down peer
// came back. Its ledger is whole: the hold made before the kill commits.
func TestKilledHomeDecidesAtOnceWhilePeerDown(t *testing.T) {
	bin := buildLattice(t)
	dir, cfg, apis := writeWANCluster(t, bin, "sameboot", "homes:\n  - {prefix: hk-, region: us-east}\n")
	children := map[string]*child{}
	for _, r := range clusterRegions {
		children[r] = startRegion(t, bin, cfg, r, "http://"+apis[r], filepath.Join(dir, r+".log"))
	}
	defer func() {
		if t.Failed() {
			for _, r := range clusterRegions {
				t.Logf("%s log:\n%s", r, children[r].logTail())
			}
		}
	}()
	for _, r := range clusterRegions {
		waitCaughtUp(t, "http://"+apis[r])
	}
	east := newAPI("http://" + apis["us-east"])
	type cluster struct {
		Replica    string `json:"replica"`
		CatchingUp bool   `json:"catching_up"`
	}
	status := func() cluster {
		var st cluster
		east.get(t, "/v1/cluster", &st)
		return st
	}
	if code, _, body, err := east.call("POST", "/v1/inventory/hk-1/restock", `{"qty":5}`); err != nil || code != 200 {
		t.Fatalf("restock: %d %s %v", code, body, err)
	}
	code, _, body, err := east.call("POST", "/v1/reservations", `{"sku":"hk-1","qty":2,"ttl_ms":600000}`)
	if err != nil || code != 201 {
		t.Fatalf("reserve before the kill: %d %s %v", code, body, err)
	}
	var held struct {
		ID string `json:"reservation_id"`
	}
	if err := json.Unmarshal(body, &held); err != nil || held.ID == "" {
		t.Fatalf("reserve answer %s: %v", body, err)
	}
	before := status().Replica

	children["ap-south"].kill(t)
	children["us-east"].kill(t)
	children["us-east"] = startRegion(t, bin, cfg, "us-east", "http://"+apis["us-east"], filepath.Join(dir, "us-east.log"))
	if st := status(); st.Replica != before || st.CatchingUp {
		t.Fatalf("after SIGKILL on the same boot, ap-south down: replica %q (was %q), catching_up %v; want the same replica, not catching up",
			st.Replica, before, st.CatchingUp)
	}
	if !strings.Contains(children["us-east"].logTail(), "keeps its incarnation") {
		t.Errorf("us-east's log does not say it kept its incarnation")
	}
	// Decided at once, ap-south still down (within the request's
	// deadline; a home catching up would answer 503 unavailable).
	deadline := time.Now().Add(10 * time.Second)
	for {
		code, _, body, err = east.call("POST", "/v1/reservations", `{"sku":"hk-1","qty":1}`)
		if err == nil && code == 201 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("reserve at the restarted home, ap-south down: %d %s %v; want 201", code, body, err)
		}
		time.Sleep(100 * time.Millisecond) // poll interval of a wait with a deadline
	}
	if code, _, body, err := east.call("POST", "/v1/reservations/"+held.ID+"/commit", ""); err != nil || code != 200 {
		t.Fatalf("commit of the hold made before the kill: %d %s %v", code, body, err)
	}
	var it struct {
		Stock     int64 `json:"stock"`
		Available int64 `json:"available"`
	}
	east.get(t, "/v1/inventory/hk-1", &it)
	if it.Stock != 3 || it.Available != 2 {
		t.Fatalf("hk-1 after the commit of 2 and a hold of 1: stock %d, available %d; want 3 and 2", it.Stock, it.Available)
	}

	// The same kill on an earlier boot (a power loss) is a new
	// incarnation that catches up: ap-south down, its homes stay closed.
	children["us-east"].kill(t)
	emulateReboot(t, filepath.Join(dir, "data"), "us-east")
	children["us-east"] = startRegion(t, bin, cfg, "us-east", "http://"+apis["us-east"], filepath.Join(dir, "us-east.log"))
	if st := status(); st.Replica == before || !st.CatchingUp {
		t.Fatalf("after a kill on an earlier boot: replica %q (was %q), catching_up %v; want a new incarnation catching up", st.Replica, before, st.CatchingUp)
	}
	if code, _, body, err := east.call("POST", "/v1/reservations", `{"sku":"hk-1","qty":1}`); err != nil || code != 503 {
		t.Fatalf("reserve at a home catching up, ap-south down: %d %s %v; want 503", code, body, err)
	}
}
