package protocol_test

import (
	"fmt"
	"testing"

	"github.com/latticedb/lattice/crdt"
	"github.com/latticedb/lattice/region"
	"github.com/latticedb/lattice/sync/protocol"
	"github.com/latticedb/lattice/sync/replication"
)

// TestAntiEntropyCarriesLargestAcceptedCart: a region whose cart's
// removals lag behind its adds holds a join of more than
// crdt.JoinCartEntries entries; the crdt codec accepts a peer's cart of
// up to crdt.MaxCartEntries (docs/api.md: "a peer's cart of up to 65,536
// entries is accepted") so that such a state still travels. An
// anti-entropy message carrying that state (a push, or the answer to a
// pull) must then decode at the peer; a message refused for its size
// leaves the cart, and every other key the message carries, unrepaired
// at every round.
func TestAntiEntropyCarriesLargestAcceptedCart(t *testing.T) {
	for _, n := range []int{crdt.JoinCartEntries + 1, 20000, crdt.MaxCartEntries} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			c := &crdt.Cart{Entries: make(map[crdt.Dot]crdt.Line, n)}
			for i := range n {
				d := crdt.Dot{Replica: "us-east", Counter: uint64(i + 1)}
				c.Entries[d] = crdt.Line{SKU: fmt.Sprintf("s%03d", i%64), Kind: crdt.KindAdd, N: 1}
				c.Ctx.Insert(d)
			}
			g := &crdt.Group{Carts: map[string]*crdt.Cart{"big": c}}
			if _, err := crdt.DecodeGroup(crdt.EncodeGroup(g)); err != nil {
				t.Fatalf("the crdt codec refuses a cart of %d entries: %v", n, err)
			}
			m := &protocol.Message{Kind: protocol.KindObjects, Round: 1, Step: 1, Group: g}
			b, err := protocol.Encode(m)
			if err != nil {
				t.Fatal(err)
			}
			got, err := protocol.Decode(b, protocol.DefaultConfig().Buckets)
			if err != nil {
				t.Fatalf("an anti-entropy message with a cart of %d entries (%d bytes; the group alone decodes) is refused: %v", n, len(b), err)
			}
			if gc := got.Group.Carts["big"]; gc == nil || len(gc.Entries) != n {
				t.Fatalf("the cart arrived with %v entries, want %d", gc, n)
			}
		})
	}
}

// TestQuorumReadCarriesLargestAcceptedCart: the same state as a peer's
// answer to a quorum read (region.HomeResponse, decoded as the
// replicator decodes a call's answer) and as a read repair
// (region.HomeRequest): both must decode, or a quorum read of the cart
// fails (quorum_unavailable) and the repair is refused.
func TestQuorumReadCarriesLargestAcceptedCart(t *testing.T) {
	for _, n := range []int{crdt.JoinCartEntries + 1, crdt.MaxCartEntries} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			c := &crdt.Cart{Entries: make(map[crdt.Dot]crdt.Line, n)}
			for i := range n {
				d := crdt.Dot{Replica: "us-east", Counter: uint64(i + 1)}
				c.Entries[d] = crdt.Line{SKU: fmt.Sprintf("s%03d", i%64), Kind: crdt.KindAdd, N: 1}
				c.Ctx.Insert(d)
			}
			g := &crdt.Group{Carts: map[string]*crdt.Cart{"big": c}}
			b, err := crdt.Marshal(&region.HomeResponse{State: g})
			if err != nil {
				t.Fatal(err)
			}
			var resp region.HomeResponse
			if err := crdt.UnmarshalCarrier(b, &resp, replication.MaxCallBytes); err != nil {
				t.Errorf("a quorum read's answer with a cart of %d entries (%d bytes) is refused: %v", n, len(b), err)
			}
			b, err = crdt.Marshal(&region.HomeRequest{Op: region.OpRepair, Keys: []string{"c/big"}, State: g})
			if err != nil {
				t.Fatal(err)
			}
			var req region.HomeRequest
			if err := crdt.UnmarshalCarrier(b, &req, replication.MaxCallBytes); err != nil {
				t.Errorf("a read repair with a cart of %d entries (%d bytes) is refused: %v", n, len(b), err)
			}
		})
	}
}
