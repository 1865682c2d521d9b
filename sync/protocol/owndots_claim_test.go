package protocol_test

import (
	"testing"
	"time"

	"github.com/latticedb/lattice/crdt"
	"github.com/latticedb/lattice/region"
	"github.com/latticedb/lattice/region/store"
	"github.com/latticedb/lattice/sync/protocol"
)

// TestPeerDeltaClaimsNoOwnUnissuedDot: a delta from a peer that names a
// dot of the receiving region's own current incarnation which the region
// has not issued yet (a buggy or compromised peer; no honest region holds
// such a dot) must not make the region claim it. Claimed, it sits in the
// region's applied context ahead of its version vector: the next local
// write is numbered past it, the dots in between are never issued, and
// every later write of the region stays out of order in its own applied
// context for good, which then grows past protocol.MaxCloudDots with the
// region's writes (the bound the package doc promises for every context
// the protocol keeps or stores) until the store's context no longer
// decodes.
func TestPeerDeltaClaimsNoOwnUnissuedDot(t *testing.T) {
	m := newEdgeMesh(t)
	us, eu := m.index("us-east"), m.index("eu-west")
	victim := m.regions[us].node.Self()
	if _, err := m.regions[us].node.AddItem(bg, "cart-0", "apple", 1); err != nil {
		t.Fatal(err)
	}
	m.run(time.Second)
	before := m.regions[us].node.Applied()
	issued := before.Max(victim)
	if issued != 1 {
		t.Fatalf("us-east made 1 write, its applied context has %d of its own dots", issued)
	}

	// eu-west sends us-east a delta naming us-east's own dot 21, well
	// within the window of out-of-order dots, which us-east never issued.
	forged := &protocol.Message{Kind: protocol.KindDelta, Tag: 1 << 33,
		Dots:  []protocol.DotRange{{Origin: string(victim), From: issued + 20, To: issued + 20}},
		Group: &crdt.Group{}}
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

	after := m.regions[us].node.Applied()
	if v := after.Max(victim); v != issued {
		t.Errorf("us-east issued its own dots up to %d, but after a peer's delta named dot %d its applied context claims them up to %d",
			issued, issued+20, v)
	}

	// us-east goes on writing: each write must extend its version
	// vector, and its applied context must stay within MaxCloudDots.
	writes := protocol.MaxCloudDots + 50
	for i := range writes {
		if _, err := m.regions[us].node.AddItem(bg, "cart-1", "sku-"+string(rune('a'+i%26)), 1); err != nil {
			t.Fatal(err)
		}
		if i%64 == 0 {
			m.run(20 * time.Millisecond)
		}
	}
	m.run(time.Second)
	applied := m.regions[us].node.Applied()
	if n := len(applied.Cloud); n > protocol.MaxCloudDots {
		t.Errorf("after %d more writes us-east's own applied context holds %d dots out of order (version vector %d of its own), above MaxCloudDots %d",
			writes, n, applied.VV[victim], protocol.MaxCloudDots)
	}

	// And us-east starts again from its store.
	m.stop(us)
	st, err := region.OpenStore(m.regions[us].path, store.Options{})
	if err != nil {
		t.Fatalf("us-east does not reopen its store: %v", err)
	}
	m.regions[us].store = st
	n, err := region.NewNode(region.Options{Name: "us-east", Store: st, DigestBuckets: m.cfg.Buckets, ExpiryInterval: time.Hour, PeerRegions: peersOf(us)})
	if err != nil {
		t.Fatalf("us-east does not start again: %v", err)
	}
	m.regions[us].node = n
}
