package main

import (
	"strings"
	"testing"
	"time"
)

// TestDamagedStockAwayFromItsHome: us-east is the home of dn-1 (a homes
// rule); eu-west's stored value of dn-1 is damaged while it is stopped
// (10 units restocked; then 3 sold while eu-west was paused, so the sale
// reached ap-south and us-east only). eu-west starts while ap-south does
// not answer. operations.md: until it has caught up, eu-west refuses
// reads of dn-1 ("stock to reads"), while writes of stock are not
// refused and "requests it forwards to other homes are served as usual".
// So a restock of dn-1 at eu-west, and a reservation of dn-1 forwarded
// to us-east, succeed; and once ap-south answers, every region shows
// stock 10 − 3 + 5 − 2 = 10.
func TestDamagedStockAwayFromItsHome(t *testing.T) {
	regions := []string{"us-east", "eu-west", "ap-south"}
	c := newReconfCluster(t, regions...)
	c.configure("homes:\n  - prefix: dn-\n    region: us-east\n", regions...)
	for _, r := range regions {
		c.start(r)
	}
	for _, r := range regions {
		c.rollingWait(r)
	}
	c.post("us-east", "/v1/inventory/dn-1/restock", `{"qty":10}`)
	c.everyRegion("every region to hold the restock", func(r string) bool { return c.stock(r, "dn-1") == 10 })
	c.post("eu-west", "/v1/inventory/dn-other/restock", `{"qty":1}`) // the damaged value is not in the last transaction
	c.stop("eu-west")
	c.sell("us-east", "dn-1", 3)
	pollUntil(t, 20*time.Second, "ap-south to hold the sale", func() bool { return c.stock("ap-south", "dn-1") == 7 })
	flipLastValueByte(t, c.storePath("eu-west"), "i/dn-1")
	resumeAP := c.pause("ap-south")
	c.start("eu-west")
	c.waitConnected("eu-west", "us-east")
	if !c.damageStatus("eu-west").CatchingUp {
		t.Errorf("eu-west started on a damaged value is not catching up")
	}
	if status, _, body := c.callOf("eu-west", "GET", "/v1/inventory/dn-1", ""); status != 503 {
		t.Errorf("read of dn-1 at eu-west, held back: %d %s; want 503", status, body)
	}
	// us-east's state repairs the damaged value first.
	pollUntil(t, 20*time.Second, "us-east's state to repair eu-west's dn-1", func() bool {
		return len(c.damageStatus("eu-west").Store.CorruptKeys) == 0
	})
	if status, _, body := c.callOf("eu-west", "GET", "/v1/inventory/dn-1", ""); status != 503 {
		t.Errorf("read of dn-1 at eu-west, repaired by us-east but held back until ap-south's round: %d %s; want 503", status, body)
	}
	// A restock of a held-back item is refused too (its answer would
	// show the stock before every peer's state), and writes nothing.
	restocked := 0
	if status, _, body := c.callOf("eu-west", "POST", "/v1/inventory/dn-1/restock", `{"qty":5}`); status != 503 {
		t.Errorf("restock of dn-1 at eu-west while it holds dn-1 back: %d %s; want 503", status, body)
		if status == 200 {
			restocked = 5
		}
	}
	sold := 0
	if status, _, id, body := c.reserveOnce("eu-west", "dn-1", 2); status != 201 {
		t.Errorf("reservation of dn-1 at eu-west, forwarded to its home us-east, while eu-west holds dn-1 back: %d %s %s; want 201", status, id, body)
	} else {
		c.post("eu-west", "/v1/reservations/"+id+"/commit", "")
		sold = 2
	}
	resumeAP()
	c.caughtUp("eu-west")
	want := int64(10 - 3 + restocked - sold)
	c.everyRegion("every region to show the same stock of dn-1", func(r string) bool {
		status, _, _ := c.callOf(r, "GET", "/v1/inventory/dn-1", "")
		return status == 200 && c.stock(r, "dn-1") == want
	})
	for _, r := range regions {
		if st := c.damageStatus(r); len(st.Store.CorruptKeys) != 0 || st.CatchingUp {
			t.Errorf("%s after the repair: corrupt_keys %v, catching_up %v", r, st.Store.CorruptKeys, st.CatchingUp)
		}
	}
	if !strings.Contains(c.logOf("eu-west"), "stored values failed their checksums") {
		t.Errorf("eu-west's log lacks the new incarnation's reason")
	}
}
