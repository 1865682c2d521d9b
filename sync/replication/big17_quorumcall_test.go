package replication_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/latticedb/lattice/crdt"
	"github.com/latticedb/lattice/region"
	"github.com/latticedb/lattice/sync/replication"
)

// joinOfConcurrentFills returns the cart that regions make when each
// fills it to its own limit before it sees the others' adds
// (docs/api.md: "every region may fill a cart before it sees the others'
// adds, and their join must stay a cart every region can read"): in a
// cluster of len(regs) regions each region adds min(4,096, 16,384 / R)
// entries over 1,000 distinct skus of 128 characters (the longest a sku
// may be), each line within the per-line limit ⌊524,288 / ((L + 45) ×
// R)⌋, every add of one unit.
func joinOfConcurrentFills(t *testing.T, regs []string) *crdt.Cart {
	t.Helper()
	longest := 0
	for _, r := range regs {
		longest = max(longest, len(r))
	}
	perRegion := min(region.MaxCartEntries, crdt.JoinCartEntries/len(regs))
	perLine := min(perRegion, 524288/((longest+45)*len(regs)))
	skus := make([]string, region.MaxCartSKUs)
	for i := range skus {
		s := fmt.Sprintf("sku-%04d-", i)
		skus[i] = s + strings.Repeat("x", crdt.MaxIDLen-len(s))
	}
	join := &crdt.Cart{}
	for _, r := range regs {
		c := &crdt.Cart{}
		perSKU := map[string]int{}
		for i := range perRegion {
			sku := skus[i%len(skus)]
			if perSKU[sku] >= perLine {
				t.Fatalf("the fill passes the line limit %d", perLine)
			}
			perSKU[sku]++
			c.Join(c.Add(crdt.ReplicaID(r), sku, 1))
		}
		if len(c.Entries) != perRegion || len(perSKU) > region.MaxCartSKUs {
			t.Fatalf("region %s filled %d entries over %d skus", r, len(c.Entries), len(perSKU))
		}
		join.Join(c)
	}
	return join
}

// TestQuorumReadCarriesJoinOfConcurrentFills: a quorum read asks each
// peer for its state of the cart (region.HomeResponse.State, decoded by
// the replicator within MaxCallBytes), and a read repair sends a state
// to a peer (region.HomeRequest, decoded by OnCall within MaxCallBytes).
// The cart that a cluster of four or more regions makes when every
// region fills it to its limit concurrently is a legal cart (every
// region accepted every write, docs/api.md "Carts"); its state must
// travel in both, or a quorum read of it answers 503 quorum_unavailable
// for as long as it exists and its read repair is refused.
func TestQuorumReadCarriesJoinOfConcurrentFills(t *testing.T) {
	for _, regs := range [][]string{
		{"us-east", "eu-west", "ap-south", "sa-east"},
		{"us-east", "eu-west", "ap-south", "sa-east", "af-south", "me-central"},
	} {
		t.Run(fmt.Sprint(len(regs)), func(t *testing.T) {
			c := joinOfConcurrentFills(t, regs)
			g := &crdt.Group{Carts: map[string]*crdt.Cart{"big": c}}
			if _, err := crdt.DecodeGroup(crdt.EncodeGroup(g)); err != nil {
				t.Fatalf("the group of the cart (%d entries) does not decode: %v", len(c.Entries), err)
			}
			b, err := crdt.Marshal(&region.HomeResponse{State: g})
			if err != nil {
				t.Fatal(err)
			}
			var resp region.HomeResponse
			if err := crdt.UnmarshalCarrier(b, &resp, replication.MaxCallBytes); err != nil {
				t.Errorf("a quorum read's answer with the cart of %d entries (%d bytes) is refused: %v", len(c.Entries), len(b), err)
			}
			b, err = crdt.Marshal(&region.HomeRequest{Op: region.OpRepair, Keys: []string{"c/big"}, State: g})
			if err != nil {
				t.Fatal(err)
			}
			var req region.HomeRequest
			if err := crdt.UnmarshalCarrier(b, &req, replication.MaxCallBytes); err != nil {
				t.Errorf("a read repair with the cart of %d entries (%d bytes) is refused: %v", len(c.Entries), len(b), err)
			}
		})
	}
}
