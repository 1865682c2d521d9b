package protocol_test

import (
	"fmt"
	"runtime"
	"testing"

	"github.com/latticedb/lattice/crdt"
	"github.com/latticedb/lattice/sync/protocol"
)

// TestExhaust19ManySmallKeysStayWithinMaxBufferBytes: MaxBufferBytes
// "bounds its memory: each delta counts its encoding and the group it
// keeps decoded (estimated, entryMem)", estimated at 1,536 bytes and six
// times the encoding. A group of many small keys decodes to far more: an
// item of one replica record, some 16 bytes of encoding, is an Item and
// two maps of one entry each (a map's first group of slots), about 600
// bytes. A peer's delta of 16,384 such items (MaxGroupKeys), relayed to
// a region that never acknowledges, must still keep the buffer near
// MaxBufferBytes (a quarter more allowed).
func TestExhaust19ManySmallKeysStayWithinMaxBufferBytes(t *testing.T) {
	const deltas = 40
	cfg := protocol.DefaultConfig()
	cfg.MaxBufferBytes = 16 << 20
	g := &crdt.Group{Items: map[string]*crdt.Item{}}
	for i := range crdt.MaxGroupKeys {
		g.Items[fmt.Sprintf("%04x", i)] = &crdt.Item{Stock: crdt.PNCounter{
			P: map[crdt.ReplicaID]uint64{"a": 1}, N: map[crdt.ReplicaID]uint64{"a": 1}}}
	}
	enc := len(crdt.EncodeGroup(g))
	held, st := exRelayHeld(t, cfg, deltas, func(tag int) []byte {
		b, err := protocol.Encode(&protocol.Message{Kind: protocol.KindDelta, Tag: uint64(tag), Group: g,
			DotRuns: []protocol.DotRun{{From: uint64(tag)}}})
		if err != nil {
			t.Fatal(err)
		}
		return b
	})
	t.Logf("a group of %d keys, %d bytes; pending for ap-south: %d deltas; live heap %.1f MiB",
		crdt.MaxGroupKeys, enc, st.PendingDeltas, float64(held)/(1<<20))
	if held > uint64(cfg.MaxBufferBytes)*5/4 {
		t.Errorf("with MaxBufferBytes %d MiB the buffer of a peer that never acknowledges holds %.1f MiB of live heap (%d relayed deltas of %d keys, %d bytes encoded each)",
			cfg.MaxBufferBytes>>20, float64(held)/(1<<20), st.PendingDeltas, crdt.MaxGroupKeys, enc)
	}
	runtime.KeepAlive(g)
}
