package region

import (
	"fmt"
	"testing"

	"github.com/latticedb/lattice/crdt"
)

// TestPartitionTokenVVBudgetFormatParsesBack: a session that touched 64
// partitions whose contexts each name 100 replica ids (6,400 version
// vector entries, past MaxTokenVVEntries) gets a token that keeps the
// partitions it touched last within the budget, and that a parse takes
// back whole.
func TestPartitionTokenVVBudgetFormatParsesBack(t *testing.T) {
	var tok partToken
	for p := range 64 {
		var c crdt.Context
		c.VV = map[crdt.ReplicaID]uint64{}
		for r := range 100 {
			c.VV[crdt.ReplicaID(fmt.Sprintf("r%d", r))] = uint64(1000 + p)
		}
		// A few out-of-order dots of a replica the version vector does
		// not name.
		c.Cloud = map[crdt.Dot]struct{}{{Replica: "x", Counter: 5}: {}}
		tok.touch(p, &c)
	}
	s := tok.format()
	back, err := parsePartitionToken(s, 64)
	if err != nil {
		t.Fatalf("format made a token that parse refuses: %v", err)
	}
	want := MaxTokenVVEntries / 100
	if len(back.parts) != want || back.parts[0] != 63 {
		t.Fatalf("the token kept partitions %v; want the %d touched last, 63 first", back.parts, want)
	}
	entries := 0
	for i, p := range back.parts {
		entries += len(back.ctxs[i].VV)
		if !back.ctxs[i].Contains(crdt.Dot{Replica: "x", Counter: 5}) || back.ctxs[i].VV["r7"] != uint64(1000+p) {
			t.Errorf("partition %d's context changed on the way", p)
		}
	}
	if entries > MaxTokenVVEntries {
		t.Errorf("the parsed token holds %d version vector entries, past %d", entries, MaxTokenVVEntries)
	}
}
