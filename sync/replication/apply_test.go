package replication_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/latticedb/lattice/crdt"
	"github.com/latticedb/lattice/region"
	"github.com/latticedb/lattice/region/store"
	"github.com/latticedb/lattice/sync/protocol"
	"github.com/latticedb/lattice/sync/replication"
	"github.com/latticedb/lattice/sync/transport"
)

// silentTransport connects to nobody.
type silentTransport struct{}

func (silentTransport) Send(string, []byte) error { return transport.ErrNotConnected }
func (silentTransport) Call(context.Context, string, []byte) ([]byte, error) {
	return nil, transport.ErrNotConnected
}
func (silentTransport) Connected(string) bool { return false }
func (silentTransport) Close() error          { return nil }

var _ transport.Transport = silentTransport{}

// TestLargeBatchOfDeltasIsApplied hands the replicator, in one batch,
// four delta messages of the largest group a message may carry: together
// they set more keys than one store transaction can, so the driver must
// apply them in several. Every delta must be applied, and the store's digest
// must never claim dots its state does not hold.
func TestLargeBatchOfDeltasIsApplied(t *testing.T) {
	st, err := region.OpenStore(":memory:", store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	node, err := region.NewNode(region.Options{Name: "us-east", Store: st, ExpiryInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer node.Close()
	r := replication.New(replication.Options{Region: "us-east", Peers: []string{"eu-west"}})
	defer r.Close()

	var want crdt.Context
	per := uint64(crdt.MaxGroupKeys)
	for m := range uint64(4) {
		g := &crdt.Group{}
		for k := range per / 2 {
			var c crdt.Cart
			g.AddCart(fmt.Sprintf("c-%d-%d", m, k), c.Add("eu-west", "sku", 1))
			var it crdt.Item
			g.AddItem(fmt.Sprintf("s-%d-%d", m, k), it.Restock("eu-west", 1))
		}
		from := m*per + 1
		b, err := protocol.Encode(&protocol.Message{Kind: protocol.KindDelta, Tag: m + 1, Group: g,
			Dots: []protocol.DotRange{{From: from, To: from + per - 1}}})
		if err != nil {
			t.Fatal(err)
		}
		r.OnMessage("eu-west", b) // queued: the loop takes both at once
		for k := from; k < from+per; k++ {
			want.Insert(crdt.Dot{Replica: "eu-west", Counter: k})
		}
	}
	r.Start(node, silentTransport{})

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := node.WaitToken(ctx, crdt.FormatToken(&want)); err != nil {
		snap, _ := node.Snapshot(nil)
		applied := node.Applied()
		t.Fatalf("deltas not applied: %v (applied %v, digest claims %v)", err, applied.VV, snap.Applied.VV)
	}
	r.Close()
	snap, err := node.Snapshot(nil)
	if err != nil {
		t.Fatal(err)
	}
	if applied := node.Applied(); !applied.Covers(&snap.Applied) {
		t.Fatalf("the digest claims %v, the store holds %v", snap.Applied.VV, applied.VV)
	}
	g, err := node.ReadObjects([]string{"c-0-0", fmt.Sprintf("c-3-%d", per/2-1)}, []string{"s-2-0"})
	if err != nil {
		t.Fatal(err)
	}
	if g.Len() != 3 {
		t.Fatalf("read back %d of 3 objects", g.Len())
	}
}
