package main

import (
	"strings"
	"testing"
	"time"
)

// damagedHome runs the first part of the tests below: a cluster of
// us-east, eu-west and ap-south where us-east is the home of dm-1 (a
// homes rule), 10 units restocked, 6 sold at us-east while eu-west is
// stopped (the commit reaches ap-south only), then us-east stopped
// cleanly and the stored value of i/dm-1 in its file damaged. ap-south
// is paused (SIGSTOP) and eu-west, started again, still shows 10. It
// returns the cluster, us-east's replica id before the damage and a
// function that continues ap-south.
func damagedHome(t *testing.T) (c *reconfCluster, before string, resumeAP func()) {
	t.Helper()
	regions := []string{"us-east", "eu-west", "ap-south"}
	c = newReconfCluster(t, regions...)
	c.configure("homes:\n  - prefix: dm-\n    region: us-east\n", regions...)
	for _, r := range regions {
		c.start(r)
	}
	for _, r := range regions {
		c.rollingWait(r)
	}
	c.post("us-east", "/v1/inventory/dm-1/restock", `{"qty":10}`)
	c.everyRegion("every region to hold the restock", func(r string) bool { return c.stock(r, "dm-1") == 10 })
	before = c.damageStatus("us-east").Replica

	c.stop("eu-west")
	c.sell("us-east", "dm-1", 6)
	pollUntil(t, 20*time.Second, "ap-south to hold the sale", func() bool { return c.stock("ap-south", "dm-1") == 4 })
	c.post("us-east", "/v1/inventory/dm-other/restock", `{"qty":1}`) // the damaged value is not in the last transaction
	pollUntil(t, 20*time.Second, "ap-south to hold the second restock", func() bool { return c.stock("ap-south", "dm-other") == 1 })
	c.stop("us-east")
	resumeAP = c.pause("ap-south")
	c.start("eu-west")
	if s := c.stock("eu-west", "dm-1"); s != 10 {
		t.Fatalf("eu-west, stopped during the sale, shows stock %d of dm-1; want 10", s)
	}
	flipLastValueByte(t, c.storePath("us-east"), "i/dm-1")
	return c, before, resumeAP
}

// startHeldBack starts the damaged us-east and waits until eu-west's
// (older) state of dm-1 has repaired its damaged value.
func startHeldBack(c *reconfCluster) {
	c.t.Helper()
	c.start("us-east")
	c.waitConnected("us-east", "eu-west")
	// eu-west's state repairs the damaged value: it is no longer
	// listed as damaged (held back still).
	pollUntil(c.t, 20*time.Second, "eu-west's state to repair us-east's damaged dm-1", func() bool {
		return len(c.damageStatus("us-east").Store.CorruptKeys) == 0
	})
}

// TestDamagedHomeStockCatchesUpWithEveryPeer: us-east is the home of dm-1
// (a homes rule). 10 units are restocked, then 6 sold at us-east while
// eu-west does not answer (SIGSTOP): the commit reaches ap-south only.
// us-east stops cleanly, the stored value of i/dm-1 in its file is
// damaged, and it starts again while ap-south does not answer and eu-west
// (which still shows 10) does. operations.md: the start is a new
// incarnation (reason "stored values failed their checksums"), `lattice
// backup` of the damaged file is refused naming the damaged values, the
// region catches up (catching_up, a /readyz warning) and, until every
// peer has sent its state, refuses local reads of dm-1 and every
// reservation. Once ap-south answers, the damaged key is served again
// with the commit counted: 5 units are refused, the last 4 sold, every
// region shows stock 0, and a backup succeeds.
func TestDamagedHomeStockCatchesUpWithEveryPeer(t *testing.T) {
	c, before, resumeAP := damagedHome(t)
	if code, out := c.backup("us-east", "damaged.snapshot"); code == 0 || !strings.Contains(out, "fail their checksums") {
		t.Errorf("lattice backup of us-east's store with a damaged value: exit %d: %s; want it refused, naming the values that fail their checksums", code, out)
	}

	startHeldBack(c)
	log := c.logOf("us-east")
	for _, want := range []string{
		"stored value failed its checksum; it will not be served",
		"the region goes on as a new incarnation",
		"stored values failed their checksums",
		"damaged keys are refused until every peer has sent its state of them",
	} {
		if !strings.Contains(log, want) {
			t.Errorf("us-east's log after a start on a damaged value lacks %q", want)
		}
	}
	st := c.damageStatus("us-east")
	if !st.CatchingUp || st.Replica == before {
		t.Errorf("us-east started on a damaged value: catching_up %v, replica %q (was %q); want a new incarnation catching up", st.CatchingUp, st.Replica, before)
	}
	t.Logf("us-east after the start: replica %s, corrupt_keys %v", st.Replica, st.Store.CorruptKeys)
	if b := readyzBody(c, "us-east"); !strings.Contains(b, "a damaged file") || !strings.Contains(b, "catching up with its peers") {
		t.Errorf("us-east's /readyz while catching up after damage: %s", b)
	}
	if n := c.metric("us-east", "lattice_store_new_incarnations_total"); n < 1 {
		t.Errorf("lattice_store_new_incarnations_total at us-east is %v after a start on a damaged value", n)
	}
	if n := c.metric("us-east", "lattice_store_checksum_failures_total"); n < 1 {
		t.Errorf("lattice_store_checksum_failures_total at us-east is %v after a start on a damaged value", n)
	}
	if status, ra, body := c.callOf("us-east", "GET", "/v1/inventory/dm-1", ""); status != 503 || ra != "5" {
		t.Errorf("read of dm-1 at us-east, held back until ap-south has sent its state: %d (Retry-After %q) %s; want 503 with Retry-After 5", status, ra, body)
	}
	if status, ra, body := c.callOf("us-east", "GET", "/v1/inventory/dm-1?consistent=true", ""); status != 503 {
		t.Errorf("consistent read of dm-1 at its home us-east, held back: %d (Retry-After %q) %s; want 503", status, ra, body)
	}
	for _, qty := range []int{5, 4} {
		status, _, _, body := c.reserveOnce("us-east", "dm-1", qty)
		if status != 503 {
			t.Errorf("reserve %d of dm-1 at us-east while it catches up: %d %s; want 503", qty, status, body)
		}
	}

	resumeAP()
	c.caughtUp("us-east")
	pollUntil(t, 20*time.Second, "us-east to serve dm-1 again", func() bool {
		status, _, _ := c.callOf("us-east", "GET", "/v1/inventory/dm-1", "")
		return status == 200
	})
	pollUntil(t, 10*time.Second, "us-east to log the release of the held-back keys", func() bool {
		return strings.Contains(c.logOf("us-east"), "the damaged keys held back while catching up are served again")
	})
	if s := c.stock("us-east", "dm-1"); s != 4 {
		t.Errorf("us-east caught up shows stock %d of dm-1, want 4 (10 restocked, 6 sold)", s)
	}
	if status, _, id, body := c.reserveOnce("us-east", "dm-1", 5); status != 409 || !strings.Contains(body, "insufficient_stock") {
		t.Errorf("reserve 5 of dm-1 at us-east after its catch-up, 4 left: %d %s %s; want 409 insufficient_stock", status, id, body)
	}
	status, home, id, body := c.reserveOnce("eu-west", "dm-1", 4)
	if status != 201 || home != "us-east" {
		t.Fatalf("reserve the last 4 of dm-1 after the catch-up: %d %s %s", status, id, body)
	}
	c.post("eu-west", "/v1/reservations/"+id+"/commit", "")
	c.everyRegion("every region to show dm-1 sold out", func(r string) bool {
		s, res := c.inventory(r, "dm-1")
		return s == 0 && res == 0
	})
	st = c.damageStatus("us-east")
	if len(st.Store.CorruptKeys) != 0 || len(st.DivergentKeys) != 0 || st.CatchingUp {
		t.Errorf("us-east after the repair: corrupt_keys %v, divergent_keys %v, catching_up %v; want none", st.Store.CorruptKeys, st.DivergentKeys, st.CatchingUp)
	}
	if code, out := c.backup("us-east", "repaired.snapshot"); code != 0 {
		t.Errorf("lattice backup of us-east after the repair: exit %d: %s", code, out)
	}
}

// TestConsistentReadElsewhereOfHeldBackStock: as above, us-east (the home
// of dm-1) starts on a damaged value of dm-1 while ap-south, the only
// peer that holds its commit of 6 of 10 units, does not answer; eu-west's
// older state (stock 10) repairs the value. us-east holds dm-1 back:
// its own reads, consistent or not, answer 503. A consistent read at
// eu-west reads the item at its home (api.md: "reads the item at its
// home"), so it must not answer with stock 10 and 10 available as the
// home's view of a sku whose home acknowledged the sale of 6.
func TestConsistentReadElsewhereOfHeldBackStock(t *testing.T) {
	c, _, resumeAP := damagedHome(t)
	startHeldBack(c)
	if status, ra, body := c.callOf("us-east", "GET", "/v1/inventory/dm-1?consistent=true", ""); status != 503 {
		t.Errorf("consistent read of dm-1 at its home us-east, held back: %d (Retry-After %q) %s; want 503", status, ra, body)
	}
	if status, _, body := c.callOf("eu-west", "GET", "/v1/inventory/dm-1?consistent=true", ""); status == 200 && !strings.Contains(body, `"stock":4`) {
		t.Errorf("consistent read of dm-1 at eu-west while its home us-east holds it back after damage: %d %s; want 503 or the home's stock of 4 (6 of 10 sold and acknowledged)", status, body)
	}
	resumeAP()
	c.caughtUp("us-east")
	pollUntil(t, 10*time.Second, "a consistent read of dm-1 at eu-west to show stock 4 once us-east caught up", func() bool {
		status, _, body := c.callOf("eu-west", "GET", "/v1/inventory/dm-1?consistent=true", "")
		return status == 200 && strings.Contains(body, `"stock":4`)
	})
}

// TestRestockAnswerOfHeldBackStock: as above, us-east (the home of dm-1)
// starts on a damaged value of dm-1 while ap-south, the only peer that
// holds its sale of 6 of 10 units, does not answer; eu-west's older
// state repairs the value and us-east holds dm-1 back, refusing reads of
// it (operations.md: "stock to reads") because that state may lack its
// own writes. A restock is not refused, but its answer is the item: it
// must not show the older state either (10 + 1 in stock, 11 available,
// after the home acknowledged the sale of 6), or the hold is read
// around by any restock.
func TestRestockAnswerOfHeldBackStock(t *testing.T) {
	c, _, resumeAP := damagedHome(t)
	startHeldBack(c)
	if status, _, body := c.callOf("us-east", "GET", "/v1/inventory/dm-1", ""); status != 503 {
		t.Errorf("read of dm-1 at us-east, held back: %d %s; want 503", status, body)
	}
	status, _, body := c.callOf("us-east", "POST", "/v1/inventory/dm-1/restock", `{"qty":1}`)
	if status == 200 && !strings.Contains(body, `"stock":5`) {
		t.Errorf("restock of 1 unit of dm-1 at its home us-east, which holds dm-1 back: %d %s; want 503, or stock 5 (10 restocked, 6 sold, 1 restocked)", status, body)
	}
	resumeAP()
	c.caughtUp("us-east")
	want := int64(4)
	if status == 200 {
		want = 5
	}
	c.everyRegion("every region to show the stock of dm-1", func(r string) bool {
		st, _, _ := c.callOf(r, "GET", "/v1/inventory/dm-1", "")
		return st == 200 && c.stock(r, "dm-1") == want
	})
}
