package replication

import (
	"fmt"
	"testing"

	"github.com/latticedb/lattice/crdt"
	"github.com/latticedb/lattice/sync/protocol"
)

// mem19ManyItemsPush returns an anti-entropy push of 16,000 items of one
// replica record each, within a quarter of the default MaxMessageBytes.
func mem19ManyItemsPush(t *testing.T) []byte {
	g := &crdt.Group{Items: map[string]*crdt.Item{}}
	for i := range 16_000 {
		g.Items[fmt.Sprintf("%04x", i)] = &crdt.Item{Stock: crdt.PNCounter{
			P: map[crdt.ReplicaID]uint64{"a": 1}, N: map[crdt.ReplicaID]uint64{"a": 1}}}
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
