package replication

import (
	"fmt"
	"testing"

	"github.com/latticedb/lattice/crdt"
	"github.com/latticedb/lattice/sync/protocol"
)

// mem19CloudPush returns an anti-entropy push of 40 carts emptied by a
// checkout of 1,000 lines each (their states: contexts of 1,000 dots
// apart), within a quarter of the default MaxMessageBytes.
func mem19CloudPush(t *testing.T) []byte {
	g := &crdt.Group{}
	for i := range 40 {
		var c crdt.Cart
		dots := make([]crdt.Dot, 1000)
		for k := range dots {
			dots[k] = crdt.Dot{Replica: "eu-west", Counter: uint64(300 + i%7 + 7*k)}
		}
		g.AddCart(fmt.Sprintf("cart-%08d", i), c.RemoveObserved(dots))
	}
	b, err := protocol.Encode(&protocol.Message{Kind: protocol.KindObjects, Round: 7, Step: 3, Of: 12345, Group: g})
	if err != nil {
		t.Fatal(err)
	}
	if len(b) > protocol.DefaultConfig().MaxMessageBytes/4 {
		t.Fatalf("push of %d bytes: larger than a region sends", len(b))
	}
	return b
}
