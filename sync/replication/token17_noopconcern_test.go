package replication_test

import (
	"testing"
	"time"
)

// TestNoOpRemoveWriteConcernAllThenStaleRead: a client removes a cart
// line at eu-west with Lattice-Replicas: all while eu-west cannot reach
// ap-south (503 replication_timeout: applied, not yet everywhere), then
// retries the remove at us-east, which has eu-west's removal, again with
// Lattice-Replicas: all. docs/api.md: the answer waits "until N regions
// including the answering one hold the write durably", and with W + Q > R
// "a quorum read sees every write acknowledged (with W) before the read
// began". us-east answers 200 at once (the remove changes nothing there
// and us-east has made no write of its own to wait for), while ap-south
// lacks the removal: a read there with quorum=1 (W + Q = 4 > 3) still
// shows the line. The retry must wait for the removal it shows to reach
// every region, or answer 503 replication_timeout.
func TestNoOpRemoveWriteConcernAllThenStaleRead(t *testing.T) {
	c := newClusterWith(t, specLatency, quietRelays)
	for _, r := range regions {
		c.waitConnected(r)
	}
	var out map[string]any
	if code, _ := c.do("eu-west", "POST", "/v1/carts/nc1/items", map[string]any{"sku": "book", "qty": 1},
		map[string]string{"Lattice-Replicas": "all"}, &out); code != 200 {
		t.Fatalf("test setup: add with Lattice-Replicas: all answered %d %v", code, out)
	}
	c.waitCart("nc1", "book=1 ")

	// ap-south hears nothing more from eu-west (no relays, no anti-entropy).
	c.cut("eu-west", "ap-south", true)
	var p problemBody
	if code, _ := c.do("eu-west", "DELETE", "/v1/carts/nc1/items/book", nil,
		map[string]string{"Lattice-Replicas": "all"}, &p); code != 503 || p.Code != "replication_timeout" {
		t.Fatalf("test setup: remove at eu-west cut off from ap-south answered %d %+v, want 503 replication_timeout", code, p)
	}
	waitFor(t, 10*time.Second, "us-east has eu-west's removal", func() bool { return c.cart("us-east", "nc1").String() == "" })
	if got := c.cart("ap-south", "nc1").String(); got != "book=1 " {
		t.Fatalf("test setup: ap-south has %q, want it without the removal", got)
	}

	code, _ := c.do("us-east", "DELETE", "/v1/carts/nc1/items/book", nil, map[string]string{"Lattice-Replicas": "all"}, &out)
	if code == 200 {
		var v cartView
		c.do("ap-south", "GET", "/v1/carts/nc1?quorum=1", nil, nil, &v)
		t.Fatalf("the remove at us-east with Lattice-Replicas: all answered 200, yet ap-south (quorum=1) still reads %q", v.String())
	}
	if code != 503 {
		t.Fatalf("the remove at us-east with Lattice-Replicas: all answered %d %v, want 503 replication_timeout", code, out)
	}
}
