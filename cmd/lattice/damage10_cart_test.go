package main

import (
	"maps"
	"strings"
	"testing"
	"time"
)

// TestDamagedCartsHeldBackUntilEveryPeer: us-east writes cart dc-1 (apple
// and pear, replicated everywhere), then, while eu-west is stopped, adds
// kiwi and removes apple (both reach ap-south only); then, while ap-south
// is stopped too, adds fig to cart dc-2 (reaches no peer). us-east stops
// cleanly; the stored head of dc-1 and the line of fig in dc-2 are
// damaged. us-east starts while ap-south is still down and eu-west
// (which holds dc-1 as apple and pear) runs. operations.md:
// the carts are held back (reads and writes 503, also after a clean
// restart and after a kill: the list is in the store) until every peer
// has sent its state; then dc-1 is pear and kiwi at every region (the
// replicated add kept, the replicated removal not undone), dc-2 — held
// by no peer — is served empty, and it takes writes again.
func TestDamagedCartsHeldBackUntilEveryPeer(t *testing.T) {
	regions := []string{"us-east", "eu-west", "ap-south"}
	c := newReconfCluster(t, regions...)
	c.configure("", regions...)
	for _, r := range regions {
		c.start(r)
	}
	for _, r := range regions {
		c.rollingWait(r)
	}
	c.post("us-east", "/v1/carts/dc-1/items", `{"sku":"apple","qty":1}`)
	c.post("us-east", "/v1/carts/dc-1/items", `{"sku":"pear","qty":1}`)
	base := map[string]int{"apple": 1, "pear": 1}
	c.everyRegion("every region to hold dc-1", func(r string) bool { return maps.Equal(c.cart(r, "dc-1"), base) })

	c.stop("eu-west")
	c.post("us-east", "/v1/carts/dc-1/items", `{"sku":"kiwi","qty":1}`)
	if status, _, body := c.callOf("us-east", "DELETE", "/v1/carts/dc-1/items/apple", ""); status != 200 {
		t.Fatalf("remove apple from dc-1 at us-east: %d %s", status, body)
	}
	want := map[string]int{"pear": 1, "kiwi": 1}
	pollUntil(t, 20*time.Second, "ap-south to hold us-east's add and removal", func() bool { return maps.Equal(c.cart("ap-south", "dc-1"), want) })
	c.stop("ap-south")
	c.post("us-east", "/v1/carts/dc-2/items", `{"sku":"fig","qty":2}`)
	c.post("us-east", "/v1/carts/dc-3/items", `{"sku":"plum","qty":1}`) // the damaged values are not in the last transaction
	c.stop("us-east")
	c.start("eu-west")
	if got := c.cart("eu-west", "dc-1"); !maps.Equal(got, base) {
		t.Fatalf("eu-west, stopped during us-east's add and removal, shows dc-1 as %v; want %v", got, base)
	}
	flipLastValueByte(t, c.storePath("us-east"), "c/dc-1")
	flipLastValueByte(t, c.storePath("us-east"), "e/dc-2/fig")

	c.start("us-east")
	c.waitConnected("us-east", "eu-west")
	if !strings.Contains(c.logOf("us-east"), "stored values failed their checksums") {
		t.Errorf("us-east's log lacks the new incarnation's reason after damaged carts")
	}
	st := c.damageStatus("us-east")
	t.Logf("us-east after the start: replica %s, catching_up %v, corrupt_keys %v", st.Replica, st.CatchingUp, st.Store.CorruptKeys)
	if !st.CatchingUp {
		t.Errorf("us-east started on damaged carts is not catching up")
	}
	heldBack := func(when string) {
		t.Helper()
		for _, id := range []string{"dc-1", "dc-2"} {
			if got, status, body := c.cartOf("us-east", id); status != 503 {
				t.Errorf("%s: read of %s at us-east, held back until ap-south has sent its state: %d %v %s; want 503", when, id, status, got, body)
			}
			if status, _, body := c.callOf("us-east", "POST", "/v1/carts/"+id+"/items", `{"sku":"lime","qty":1}`); status != 503 {
				t.Errorf("%s: add to %s at us-east, held back: %d %s; want 503", when, id, status, body)
			}
		}
		if status, _, body := c.callOf("us-east", "POST", "/v1/carts/dc-1/checkout", ""); status != 503 {
			t.Errorf("%s: checkout of dc-1 at us-east, held back: %d %s; want 503", when, status, body)
		}
	}
	// eu-west's state (apple and pear) repairs dc-1 first.
	pollUntil(t, 20*time.Second, "eu-west's state to repair us-east's dc-1", func() bool {
		for _, k := range c.damageStatus("us-east").Store.CorruptKeys {
			if k == "c/dc-1" {
				return false
			}
		}
		return true
	})
	// A damaged line damages its whole cart: both are listed (no peer
	// holds dc-2, so it stays damaged).
	if ck := strings.Join(c.damageStatus("us-east").Store.CorruptKeys, " "); !strings.Contains(ck, "c/dc-2") || !strings.Contains(ck, "e/dc-2/fig") {
		t.Errorf("us-east's store.corrupt_keys with the line e/dc-2/fig damaged: [%s]; want c/dc-2 and e/dc-2/fig listed", ck)
	}
	heldBack("after eu-west's round")

	c.stop("us-east")
	c.start("us-east")
	if st := c.damageStatus("us-east"); !st.CatchingUp {
		t.Errorf("us-east restarted cleanly before catching up is not catching up")
	}
	heldBack("after a clean restart")

	c.children["us-east"].kill(t)
	c.start("us-east")
	heldBack("after a kill and a start")

	c.start("ap-south")
	c.caughtUp("us-east")
	pollUntil(t, 20*time.Second, "us-east to serve dc-1 and dc-2 again", func() bool {
		_, s1, _ := c.cartOf("us-east", "dc-1")
		_, s2, _ := c.cartOf("us-east", "dc-2")
		return s1 == 200 && s2 == 200
	})
	for _, r := range regions {
		pollUntil(t, 20*time.Second, r+" to show dc-1 as pear and kiwi", func() bool {
			got, status, _ := c.cartOf(r, "dc-1")
			return status == 200 && maps.Equal(got, want)
		})
	}
	if got, _, body := c.cartOf("us-east", "dc-2"); len(got) != 0 {
		t.Errorf("dc-2, held by no peer, at us-east caught up: %s; want it empty", body)
	}
	c.post("us-east", "/v1/carts/dc-2/items", `{"sku":"lime","qty":1}`)
	c.everyRegion("every region to hold the new add to dc-2", func(r string) bool {
		return maps.Equal(c.cart(r, "dc-2"), map[string]int{"lime": 1})
	})
	for _, r := range regions {
		st := c.damageStatus(r)
		if len(st.DivergentKeys) != 0 || len(st.Store.CorruptKeys) != 0 {
			t.Errorf("%s after the repair: divergent_keys %v, corrupt_keys %v; want none", r, st.DivergentKeys, st.Store.CorruptKeys)
		}
	}
	if code, out := c.backup("us-east", "repaired.snapshot"); code != 0 {
		t.Errorf("lattice backup of us-east after the repair: exit %d: %s", code, out)
	}
}
