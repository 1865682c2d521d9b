package replication_test

import (
	"fmt"
	"testing"
)

// TestWriteConcernAfterCleanRestart: a region that made more than
// MaxCloudDots/regions (about 170) writes and then restarted cleanly
// (same incarnation: its dots go on from there) meets Lattice-Replicas: 2
// with every region connected, from its first writes on. Its view of each
// peer's applied context starts empty after the restart, so the first
// acknowledgements are far past it; they count all the same, and the
// first round of anti-entropy brings the peer's applied context.
func TestWriteConcernAfterCleanRestart(t *testing.T) {
	c := newCluster(t, nil)
	replica := func() string {
		var st struct {
			Replica string `json:"replica"`
		}
		c.do("us-east", "GET", "/v1/cluster", nil, nil, &st)
		return st.Replica
	}
	for i := range 200 {
		c.mustDo("us-east", "POST", fmt.Sprintf("/v1/carts/pre-%d/items", i%7), map[string]any{"sku": fmt.Sprintf("s%d", i), "qty": 1})
	}
	before := replica()
	out := map[string]any{}
	if code, _ := c.do("us-east", "POST", "/v1/carts/wc-before/items", map[string]any{"sku": "book", "qty": 1},
		map[string]string{"Lattice-Replicas": "2"}, &out); code != 200 {
		t.Fatalf("before the restart: Lattice-Replicas: 2 answered %d %v", code, out)
	}
	c.stop("us-east")
	c.start("us-east")
	for _, r := range regions {
		c.waitConnected(r)
	}
	if after := replica(); after != before {
		t.Fatalf("the clean restart changed the incarnation %s -> %s; the test needs the same", before, after)
	}
	for try := range 3 {
		cart := fmt.Sprintf("wc-after-%d", try)
		out := map[string]any{}
		code, _ := c.do("us-east", "POST", "/v1/carts/"+cart+"/items", map[string]any{"sku": "book", "qty": 1},
			map[string]string{"Lattice-Replicas": "2"}, &out)
		if code != 200 {
			t.Errorf("after a clean restart, all regions connected: Lattice-Replicas: 2 (try %d) answered %d %v; eu-west shows the cart as %q",
				try, code, out["code"], c.cart("eu-west", cart).String())
		}
	}
}
