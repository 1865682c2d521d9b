package protocol_test

import (
	"runtime"
	"testing"
	"time"

	"github.com/latticedb/lattice/crdt"
	"github.com/latticedb/lattice/sync/protocol"
)

// TestExhaust19RelayedDotRangesStayWithinDocumentedMemory: a delta from a
// peer is kept in the buffer to be relayed to the regions that have not
// reported it, with its dot ranges (entry.dots, a copy of the message's).
// A range is a few bytes on the wire (DotRuns: an empty origin, a
// counter, a span of 0 and an age of 0) and a 40-byte DotRange kept; a
// delta may carry 4,096 of them (MaxDotRanges) around a group of a few
// dozen bytes. entryMem counts the group's encoding only, so such relays
// are counted at about 1.7 KB each and hold some 160 KB each. The buffer
// for a third region that never acknowledges must still hold about 64
// MiB (docs/operations.md: "65,536 deltas, or 64 MiB of memory counting
// each delta decoded"; docs/capacity.md), a quarter more allowed.
func TestExhaust19RelayedDotRangesStayWithinDocumentedMemory(t *testing.T) {
	const documented = 64 << 20
	const deltas, ranges = 1_000, protocol.MaxDotRanges
	cfg := protocol.DefaultConfig()
	var c crdt.Cart
	g := &crdt.Group{}
	g.AddCart("cart-1", c.Add("eu-west", "sku-1", 1))
	var wire int
	next := uint64(1)
	held, st := exRelayHeld(t, cfg, deltas, func(tag int) []byte {
		// The dots of eu-west's writes, each a range of its own:
		// contiguous, so that every one extends the version vector.
		m := &protocol.Message{Kind: protocol.KindDelta, Tag: uint64(tag), Group: g}
		for range ranges {
			m.DotRuns = append(m.DotRuns, protocol.DotRun{From: next})
			next++
		}
		b, err := protocol.Encode(m)
		if err != nil {
			t.Fatal(err)
		}
		wire = len(b)
		return b
	})
	t.Logf("a delta of %d bytes on the wire; pending for ap-south: %d deltas, %d bytes; live heap %.1f MiB",
		wire, st.PendingDeltas, st.PendingBytes, float64(held)/(1<<20))
	if held > documented*5/4 {
		t.Errorf("the buffer of a peer that never acknowledges holds %.1f MiB of live heap (%d relayed deltas of %d bytes on the wire, counted as %.1f MiB); documented: at most 64 MiB",
			float64(held)/(1<<20), st.PendingDeltas, wire, float64(st.PendingBytes)/(1<<20))
	}
}

// exRelayHeld starts us-east in a cluster with eu-west and ap-south (which
// is connected and never answers), steps n deltas from eu-west into it
// (msg(tag) encodes the tag-th), so that us-east applies them and keeps
// them to relay to ap-south, and returns the live heap it then holds
// beyond what it held before, and ap-south's status.
func exRelayHeld(t *testing.T, cfg protocol.Config, n int, msg func(tag int) []byte) (uint64, protocol.PeerStatus) {
	t.Helper()
	ids := []crdt.ReplicaID{"us-east", "eu-west", "ap-south"}
	now := time.Unix(1_800_000_000, 0)
	base := exLiveHeap()
	p := protocol.New("us-east", ids, crdt.Context{}, nullStorage{}, cfg)
	p.PeerUp("eu-west", now)
	p.PeerUp("ap-south", now) // connected, and never answers
	for tag := 1; tag <= n; tag++ {
		m, err := protocol.Decode(msg(tag), cfg.Buckets)
		if err != nil {
			t.Fatal(err)
		}
		now = now.Add(time.Millisecond)
		p.Step("eu-west", m, now)
		p.Ready() // applied here; the relays to ap-south leave (and are lost)
	}
	held := uint64(max(int64(exLiveHeap())-int64(base), 0))
	var st protocol.PeerStatus
	for _, s := range p.Status() {
		if s.Region == "ap-south" {
			st = s
		}
	}
	runtime.KeepAlive(p)
	return held, st
}
