package region

import (
	"fmt"
	"testing"

	"github.com/latticedb/lattice/crdt"
)

// TestRemoteGroupLargerThanATransaction applies, as one remote group (an
// anti-entropy repair would), 70 carts of 1,000 lines each: more line
// keys than one store transaction may set. It must apply whole, with its
// dots claimed, and every line must be there.
func TestRemoteGroupLargerThanATransaction(t *testing.T) {
	n := newNode(t)
	g := &crdt.Group{}
	for i := range 70 {
		var c crdt.Cart
		for k := range 1000 {
			c.Join(c.Add("eu-west", fmt.Sprintf("sku-%04d", k), 1))
		}
		g.AddCart(fmt.Sprintf("big-%02d", i), &c)
	}
	dots := crdt.Context{VV: map[crdt.ReplicaID]uint64{"eu-west": 1}}
	if err := n.ApplyRemote(&dots, g); err != nil {
		t.Fatalf("applying %d carts of 1,000 lines: %v", g.Len(), err)
	}
	if got := n.Applied(); !got.Covers(&dots) {
		t.Fatalf("applied context %v does not claim the group's dots", got)
	}
	for _, id := range []string{"big-00", "big-35", "big-69"} {
		c := must[Cart](t)(n.GetCart(bg, id))
		if len(c.Items) != 1000 {
			t.Fatalf("cart %s has %d lines after the apply, want 1000", id, len(c.Items))
		}
	}
}
