package protocol_test

import (
	"testing"
	"time"

	"github.com/latticedb/lattice/crdt"
	"github.com/latticedb/lattice/region"
	"github.com/latticedb/lattice/region/store"
	"github.com/latticedb/lattice/sync/protocol"
)

// TestPeerDeltaOfManyIncarnationsKeepsContextDecodable: a delta from a
// peer whose dots name more incarnations of a cluster region than a
// causal context holds (crdt.MaxReplicas; a buggy or compromised peer —
// a real cluster's lifetime budget of replica ids is 256) must not make
// the receiving region claim them all. The package doc promises that
// every context the protocol keeps, stores or sends stays bounded and
// decodable; claimed, they reach the store's applied context, which then
// no longer decodes: the region's anti-entropy answers are refused by
// its peers and the region cannot open its store again.
func TestPeerDeltaOfManyIncarnationsKeepsContextDecodable(t *testing.T) {
	m := newEdgeMesh(t)
	us, eu := m.index("us-east"), m.index("eu-west")
	if _, err := m.regions[us].node.AddItem(bg, "cart-0", "apple", 1); err != nil {
		t.Fatal(err)
	}
	m.run(time.Second)

	// eu-west sends us-east one delta naming the first dot of 300
	// incarnations of eu-west.
	var dots []protocol.DotRange
	for k := uint64(1); k <= 300; k++ {
		dots = append(dots, protocol.DotRange{Origin: string(crdt.Incarnation("eu-west", 1_000_000+k)), From: 1, To: 1})
	}
	forged := &protocol.Message{Kind: protocol.KindDelta, Tag: 1 << 33, Dots: dots, Group: &crdt.Group{}}
	b, err := protocol.Encode(forged)
	if err != nil {
		t.Fatal(err)
	}
	msg, err := protocol.Decode(b, m.cfg.Buckets)
	if err != nil {
		t.Fatalf("the delta does not decode: %v", err)
	}
	m.regions[us].proto.Step(names[eu], msg, m.clock.t)
	m.process(us)
	m.run(time.Second)

	applied := m.regions[us].node.Applied()
	if n := len(applied.Replicas()); n > crdt.MaxReplicas {
		t.Errorf("us-east's applied context names %d replicas after one delta of a peer, more than a context holds (%d)", n, crdt.MaxReplicas)
	}
	if _, err := crdt.DecodeContext(crdt.EncodeContext(&applied)); err != nil {
		t.Errorf("us-east's applied context no longer decodes: %v", err)
	}

	// us-east starts again from its store.
	m.stop(us)
	st, err := region.OpenStore(m.regions[us].path, store.Options{})
	if err != nil {
		t.Fatalf("us-east does not reopen its store after a peer's delta: %v", err)
	}
	m.regions[us].store = st
	n, err := region.NewNode(region.Options{Name: "us-east", Store: st, DigestBuckets: m.cfg.Buckets, ExpiryInterval: time.Hour, PeerRegions: peersOf(us)})
	if err != nil {
		t.Fatalf("us-east does not start again after a peer's delta: %v", err)
	}
	m.regions[us].node = n
}
