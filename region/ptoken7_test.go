package region

import (
	"testing"

	"github.com/latticedb/lattice/crdt"
)

// TestPartitionTokenFormatParsesBack: the token of a session that touched
// 20 partitions, each of whose contexts holds 1,000 dots out of order
// (fewer than the crdt.MaxTokenCloudDots a region's own token keeps one
// by one). docs/api.md: a partitioned token keeps at most 64 partitions
// and 6 KiB, "past that, the array is first compressed ..., then entries
// are reduced to their version vectors ..., then the partitions touched
// longest ago are dropped". Whatever format keeps, the token it makes
// must be one the cluster takes back (parsePartitionToken), covering what
// it kept. format checks only the compressed token's length: this one is
// under 4 KiB but inflates past the 64 KiB parse allows, so every region
// refuses the answer's token (400 invalid_token).
func TestPartitionTokenFormatParsesBack(t *testing.T) {
	var c crdt.Context
	c.Cloud = map[crdt.Dot]struct{}{}
	for d := uint64(2); d <= 2000; d += 2 {
		c.Cloud[crdt.Dot{Replica: "us-east", Counter: d}] = struct{}{}
	}
	var tok partToken
	for p := range 20 {
		cc := c.Clone()
		tok.touch(p, &cc)
	}
	s := tok.format()
	if len(s) > MaxPartitionTokenChars {
		t.Fatalf("format made a token of %d characters", len(s))
	}
	back, err := parsePartitionToken(s, 64)
	if err != nil {
		t.Fatalf("format made a token of %d characters (%.4s…) that parse refuses: %v", len(s), s, err)
	}
	if len(back.parts) == 0 || back.parts[0] != 19 {
		t.Fatalf("the token kept partitions %v; want the one touched last (19) first", back.parts)
	}
	for i, p := range back.parts {
		if !back.ctxs[i].Covers(&c) {
			t.Errorf("partition %d's context in the token does not cover its dots", p)
		}
	}
}
