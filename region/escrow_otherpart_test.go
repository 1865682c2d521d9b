package region

import (
	"strings"
	"testing"
	"time"

	"github.com/latticedb/lattice/region/config"
)

// TestEscrowReserveAtNodeOfOtherPartitionGoesHome: a reservation of an
// escrow sku that reaches a node not holding the sku's partition (routed
// past the partitions) is decided at the sku's home, as a reservation of
// any sku that node does not hold, instead of being refused
// home_unavailable for want of rights that only the node of the sku's
// partition could hold (a refusal no retry to that node could change).
// Asked at the home region's own node of the other partition, too.
func TestEscrowReserveAtNodeOfOtherPartitionGoesHome(t *testing.T) {
	r := newPartRig(t, partRigSpec{regions: []string{"us-east", "eu-west"}, parts: 2,
		home:   prefixHome("es", "us-east", "eu-west"),
		escrow: func(sku string) bool { return strings.HasPrefix(sku, "es") },
		peers:  true})
	sku := r.key("es", 1)
	if _, err := r.parts["us-east"].Restock(bg, sku, 10); err != nil {
		t.Fatal(err)
	}
	r.deliver()
	for _, at := range []string{"eu-west", "us-east"} {
		other := r.nodes[at][0]
		if config.PartitionOf(sku, 2) == other.Partition() {
			t.Fatalf("test setup: %s is in partition %d", sku, other.Partition())
		}
		ctx, cancel := r.request(0, 5*time.Second)
		res, err := other.Reserve(ctx, sku, 1, time.Minute, Idem{})
		cancel()
		if err != nil {
			t.Fatalf("a reservation of %s (partition 1) at %s's node of partition 0: %v; want it decided at the home", sku, at, err)
		}
		if !strings.HasPrefix(res.ID, "us-east:") {
			t.Fatalf("the reservation at %s's node of partition 0 was decided as %s; want the home's (us-east)", at, res.ID)
		}
	}
}
