package protocol_test

import (
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/latticedb/lattice/crdt"
	"github.com/latticedb/lattice/sync/protocol"
)

// TestToday18FirstNodeUnloadedBucketSplitClaimsEmpty: a region of 4,112
// digest buckets (over MaxRangeBuckets: rounds walk the tree) holds 9,000
// keys in each of buckets 0..15 (144,000 keys, more than one snapshot's
// budget of 131,072). A peer's digest asks for the split of the node
// [bucket 0, bucket 16), whose children are those 16 buckets, all
// differing. Since the responder's budget became partial for the first
// node, buckets 14 and 15 are not loaded; their answer must not be a
// split that claims the responder holds no keys there (fingerprints 0,
// counts 0): an initiator holding no keys in those slots sees them equal
// and pulls nothing, one holding some pushes all and pulls nothing, and
// the round ends final (the peer's context adopted) with 18,000 keys
// never repaired. An unloaded bucket must be answered as not loaded
// (asked again, the round not final), as listNode does.
func TestToday18FirstNodeUnloadedBucketSplitClaimsEmpty(t *testing.T) {
	const buckets, perBucket, full = 4112, 9000, 16
	ms := newMemStore(buckets)
	n := 0
	for b := range full {
		for range perBucket {
			k := fmt.Sprintf("%sk-%d", crdt.CartPrefix, n)
			n++
			h := uint64(n)*0x9e3779b97f4a7c15 | 1
			ms.keys[b][k] = h
			ms.digest[b] ^= h
		}
	}
	cfg := protocol.DefaultConfig()
	cfg.Buckets = buckets
	now := time.Unix(1_800_000_000, 0)
	names := []crdt.ReplicaID{"us-east", "eu-west"}
	p := protocol.New(names[0], names, crdt.Context{}, ms, cfg)
	p.PeerUp(names[1], now)
	p.Ready()
	// The initiator's split of the node: 100 keys in each child bucket,
	// each fingerprint different from ours.
	split := protocol.RangeNode{Lo: 0, Hi: uint64(full) << 32, Hashes: make([]uint64, full), Counts: make([]uint32, full)}
	for i := range full {
		split.Hashes[i], split.Counts[i] = uint64(i)+7, 100
	}
	m := &protocol.Message{Kind: protocol.KindDigest, Round: 1, Step: 1, Nodes: []protocol.RangeNode{split}}
	b, err := protocol.Encode(m)
	if err != nil {
		t.Fatal(err)
	}
	d, err := protocol.Decode(b, buckets)
	if err != nil {
		t.Fatal(err)
	}
	p.Step(names[1], d, now)
	var diff *protocol.Message
	for _, env := range p.Ready().Messages {
		if env.Msg.Kind == protocol.KindDiff {
			diff = env.Msg
		}
	}
	if diff == nil {
		t.Fatal("no answer to the digest")
	}
	if diff.Next != 1 {
		t.Fatalf("answer's Next = %d, want 1", diff.Next)
	}
	for _, a := range diff.Nodes {
		bk := a.Lo >> 32
		if a.List && len(a.Counts) == 1 && a.Counts[0] == math.MaxUint32 {
			continue // not loaded: asked again
		}
		var sum uint64
		for _, c := range a.Counts {
			sum += uint64(c)
		}
		if sum == 0 && len(ms.keys[bk]) > 0 {
			t.Errorf("bucket %d answered as %s node [%#x,%#x) with %d children of count 0 (fingerprints %v), but the region holds %d keys there: the initiator will pull none of them and end the round final",
				bk, map[bool]string{true: "list", false: "split"}[a.List], a.Lo, a.Hi, len(a.Counts), a.Hashes[:min(3, len(a.Hashes))], len(ms.keys[bk]))
		}
	}
}
