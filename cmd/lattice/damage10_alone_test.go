package main

import (
	"maps"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestDamagedRegionAloneRefusesOnlyDamagedKeys: a cluster of one region,
// us-east, home of every sku. It restocks sa-1 and sa-2, holds 1 unit of
// sa-1 (a ledger of sa-1), writes cart ca-1 and is backed up; then it
// adds to ca-1, stops cleanly, and the stored item of sa-1 and the head
// of ca-1 are damaged. `lattice backup` refuses the damaged store.
// operations.md: a new incarnation, but "a cluster of one region catches
// up at once"; "a region without peers keeps them [the damaged keys]
// refused until it is restored from a backup". So sa-1 and ca-1 answer
// 503 while sa-2 is decided as ever; once restored from the backup, the
// region serves both as the backup holds them.
func TestDamagedRegionAloneRefusesOnlyDamagedKeys(t *testing.T) {
	c := newReconfCluster(t, "us-east")
	c.configure("", "us-east")
	c.start("us-east")
	c.caughtUp("us-east")
	c.post("us-east", "/v1/inventory/sa-1/restock", `{"qty":10}`)
	c.post("us-east", "/v1/inventory/sa-2/restock", `{"qty":10}`)
	if status, _, id, body := c.reserveOnce("us-east", "sa-1", 1); status != 201 {
		t.Fatalf("reserve 1 of sa-1: %d %s %s", status, id, body)
	}
	c.post("us-east", "/v1/carts/ca-1/items", `{"sku":"apple","qty":1}`)
	if code, out := c.backup("us-east", "before.snapshot"); code != 0 {
		t.Fatalf("backup: %s", out)
	}
	c.post("us-east", "/v1/carts/ca-1/items", `{"sku":"pear","qty":1}`)
	c.post("us-east", "/v1/carts/ca-2/items", `{"sku":"plum","qty":1}`) // the damaged values are not in the last transaction
	c.stop("us-east")
	flipLastValueByte(t, c.storePath("us-east"), "i/sa-1")
	flipLastValueByte(t, c.storePath("us-east"), "c/ca-1")
	if code, out := c.backup("us-east", "damaged.snapshot"); code == 0 || !strings.Contains(out, "2 of the") {
		t.Errorf("lattice backup of a store with 2 damaged values: exit %d: %s; want it refused, naming 2 values", code, out)
	}

	c.start("us-east")
	if !strings.Contains(c.logOf("us-east"), "stored values failed their checksums") {
		t.Errorf("us-east's log lacks the new incarnation's reason")
	}
	if _, status, body := c.cartOf("us-east", "ca-1"); status != 503 {
		t.Errorf("read of the damaged cart ca-1 at a region alone: %d %s; want 503", status, body)
	}
	if status, _, body := c.callOf("us-east", "GET", "/v1/inventory/sa-1", ""); status != 503 {
		t.Errorf("read of the damaged item sa-1 at a region alone: %d %s; want 503", status, body)
	}
	var status int
	var id, body string
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if status, _, id, body = c.reserveOnce("us-east", "sa-2", 1); status == 201 {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if status != 201 {
		t.Errorf("reserve 1 of sa-2, whose item and ledger are whole, at a region alone whose sa-1 is damaged, for 10 s: %d %s %s (catching_up %v); want 201",
			status, id, body, c.damageStatus("us-east").CatchingUp)
	}

	c.stop("us-east")
	if code, stdout, stderr := runCLI(t, "restore", "--config", c.cfg, "--region", "us-east", "--from", filepath.Join(c.dir, "before.snapshot")); code != 0 {
		t.Fatalf("restore: %s %s", stdout, stderr)
	}
	c.start("us-east")
	c.caughtUp("us-east")
	if got, status, body := c.cartOf("us-east", "ca-1"); status != 200 || !maps.Equal(got, map[string]int{"apple": 1}) {
		t.Errorf("ca-1 after the restore: %d %s; want apple alone", status, body)
	}
	if status, _, id, body := c.reserveOnce("us-east", "sa-1", 9); status != 201 {
		t.Errorf("reserve the 9 free units of sa-1 after the restore: %d %s %s", status, id, body)
	}
}
