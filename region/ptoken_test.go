package region

import (
	"encoding/base64"
	"strings"
	"testing"
	"time"

	"github.com/latticedb/lattice/crdt"
)

// regionCtx is a context of a three-region cluster whose regions each
// went through an incarnation after a restart, with seq writes each.
func regionCtx(seq uint64) crdt.Context {
	var c crdt.Context
	k := uint64(time.Date(2026, 12, 5, 0, 0, 0, 0, time.UTC).Unix())
	for i, r := range []string{"us-east", "eu-west", "ap-south"} {
		for d := uint64(1); d <= seq; d++ {
			c.Insert(crdt.Dot{Replica: crdt.Incarnation(r, k+uint64(i)), Counter: d})
		}
	}
	return c
}

// TestPartitionTokenBounds checks the stated size of a partitioned token
// and what happens past its bounds.
func TestPartitionTokenBounds(t *testing.T) {
	var tok partToken
	for p := range 32 {
		c := regionCtx(uint64(1000 + p))
		tok.touch(p, &c)
	}
	s := tok.format()
	t.Logf("32 partitions of 3 regions: %d characters (%d per partition)", len(s), len(s)/32)
	if len(s) > 1<<10 {
		t.Errorf("a token of 32 partitions is %d characters, more than the 1 KiB docs/api.md states", len(s))
	}
	back, err := parsePartitionToken(s, 64)
	if err != nil {
		t.Fatal(err)
	}
	if len(back.parts) != 32 || back.parts[0] != 31 {
		t.Fatalf("parsed %d partitions, first %d", len(back.parts), back.parts[0])
	}
	for i, p := range back.parts {
		want := regionCtx(uint64(1000 + p))
		if !back.ctxs[i].Covers(&want) || !want.Covers(&back.ctxs[i]) {
			t.Fatalf("partition %d's context changed on the way", p)
		}
	}

	// Past 64 partitions, those touched longest ago are dropped.
	for p := 32; p < 100; p++ {
		c := regionCtx(5)
		tok.touch(p, &c)
	}
	back, err = parsePartitionToken(tok.format(), 128)
	if err != nil {
		t.Fatal(err)
	}
	if len(back.parts) != MaxTokenPartitions || back.parts[0] != 99 || back.get(36) == nil || back.get(35) != nil {
		t.Fatalf("after 100 partitions: %d kept, first %d", len(back.parts), back.parts[0])
	}

	// Contexts with many out-of-order dots are compressed, or reduced to
	// their ceilings, before any partition is dropped.
	var big partToken
	var c crdt.Context
	for d := uint64(2); d < 600; d += 2 {
		c.Insert(crdt.Dot{Replica: "us-east", Counter: d})
	}
	for p := range 8 {
		big.touch(p, &c)
	}
	s = big.format()
	back, err = parsePartitionToken(s, 8)
	if err != nil {
		t.Fatal(err)
	}
	if len(s) > MaxPartitionTokenChars || len(back.parts) != 8 {
		t.Fatalf("a token of 8 large contexts: %d characters, %d partitions", len(s), len(back.parts))
	}
	if got := back.get(3); !got.Covers(&c) {
		t.Fatalf("the token's context of partition 3 does not cover its dots: %v", got.VV)
	}
}

// TestPartitionTokenRejects checks that malformed partitioned tokens are
// refused with a reason.
func TestPartitionTokenRejects(t *testing.T) {
	var one partToken
	c := regionCtx(3)
	one.touch(5, &c)
	good := one.format()
	for _, tc := range []struct{ name, tok, want string }{
		{"unpartitioned token", crdt.FormatToken(&c), "unpartitioned"},
		{"not base64", "p.!!!", "token"},
		{"partition out of range", good, "partition 5 of a cluster of 4"},
		{"too long", "p." + strings.Repeat("A", MaxPartitionTokenChars), "longer"},
		{"compressed past the bound", "p.z." + base64.RawURLEncoding.EncodeToString(crdt.Deflate(make([]byte, 1<<20))), "inflates past"},
		{"compressed, not DEFLATE", "p.z.AAAA", "token"},
	} {
		_, err := parsePartitionToken(tc.tok, 4)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error containing %q", tc.name, err, tc.want)
		}
	}
}
