package protocol

import (
	"slices"
	"testing"
	"time"

	"github.com/latticedb/lattice/crdt"
)

// TestPeerNamingOwnFutureDotsHoldsNone: a peer's delta that names dots of
// this region's own incarnation not yet issued (a buggy or hostile
// peer's) must not count that peer as holding them once they are issued:
// the write concern would report a write held by a region that never
// received it.
func TestPeerNamingOwnFutureDotsHoldsNone(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	p := New("us-east", []crdt.ReplicaID{"eu-west", "ap-south"}, crdt.Context{}, emptyStorage{}, DefaultConfig())
	p.Local(LocalDelta{Seq: 1, Group: &crdt.Group{}, At: now}, now)
	forged := &Message{Kind: KindDelta, Tag: 1 << 33, Group: &crdt.Group{},
		Dots: []DotRange{{Origin: "us-east", From: 1, To: 3}, {Origin: "eu-west", From: 1, To: 1}}}
	p.Step("eu-west", forged, now)
	p.Local(LocalDelta{Seq: 2, Group: &crdt.Group{}, At: now}, now)
	p.Local(LocalDelta{Seq: 3, Group: &crdt.Group{}, At: now}, now)
	for _, seq := range []uint64{2, 3} {
		if h := p.Holders(crdt.Dot{Replica: "us-east", Counter: seq}); slices.Contains(h, "eu-west") {
			t.Errorf("eu-west counts as holding us-east:%d, issued after its delta named it: holders %v", seq, h)
		}
	}
	if h := p.Holders(crdt.Dot{Replica: "us-east", Counter: 1}); !slices.Contains(h, "eu-west") {
		t.Errorf("eu-west's delta named us-east:1, issued before it; holders %v", h)
	}
	if s := p.Seen(); s.VV["us-east"] != 3 || len(s.Cloud) != 0 {
		t.Errorf("us-east's own dots in seen: %v, want 1..3 in order", s)
	}
}
