package region

import (
	"fmt"
	"testing"

	"github.com/latticedb/lattice/crdt"
)

// TestPartitionedClusterStatusKeepsListBounds: docs/api.md, GET
// /v1/cluster: divergent_keys holds at most 64 keys, and on a node of a
// partitioned region the top level gathers its partitions' lists. Each
// partition keeps at most 64; gathered, the list must keep the bound too
// (a node of many partitions would otherwise list up to 64 per
// partition).
func TestPartitionedClusterStatusKeepsListBounds(t *testing.T) {
	r := newPartRig(t, partRigSpec{regions: []string{"us-east"}, parts: 2, home: func(string) string { return "us-east" }})
	for p := range 2 {
		n := r.nodes["us-east"][p]
		for i := range maxDivergent {
			n.noteDivergent(fmt.Sprintf("c/p%d-%03d", p, i), []crdt.Dot{{Replica: "eu-west", Counter: 1}})
		}
		if got := len(n.Cluster().DivergentKeys); got != maxDivergent {
			t.Fatalf("test setup: partition %d lists %d divergent keys, want %d", p, got, maxDivergent)
		}
	}
	st := r.parts["us-east"].Cluster()
	if got := len(st.DivergentKeys); got > maxDivergent {
		t.Fatalf("the node's status lists %d divergent keys, at most %d documented", got, maxDivergent)
	}
}
