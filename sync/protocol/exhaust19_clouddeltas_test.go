package protocol_test

import (
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/latticedb/lattice/crdt"
	"github.com/latticedb/lattice/sync/protocol"
)

// TestExhaust19RemovalDeltasStayWithinDocumentedMemory: as
// TestUnacknowledgedDeltasStayWithinDocumentedMemory, with the deltas a
// checkout or a clear of a cart makes: the removal of its lines, a delta
// whose context lists the lines' dots (a cloud: a region's counters are
// shared by all its keys, so a cart's dots are never a prefix). Such a
// dot is 3 bytes of encoding (a counter below 65,536) but an entry of a
// map of dots when decoded, some 90 bytes: far more than the 6 bytes a
// byte of encoding that entryMem counts. The buffer of a peer that never
// acknowledges must still hold about 64 MiB (a quarter more allowed), as
// documented (docs/operations.md, docs/capacity.md).
func TestExhaust19RemovalDeltasStayWithinDocumentedMemory(t *testing.T) {
	const documented = 64 << 20
	const lines, writes = 1000, 20_000
	cfg := protocol.DefaultConfig()
	ids := []crdt.ReplicaID{"us-east", "eu-west"}
	now := time.Unix(1_800_000_000, 0)
	base := exLiveHeap()
	p := protocol.New("us-east", ids, crdt.Context{}, nullStorage{}, cfg)
	p.PeerUp("eu-west", now) // connected, and never answers
	var enc int
	for seq := 1; seq <= writes; seq++ {
		// A cart of 1,000 lines added while the region was young
		// (counters below 65,536, far apart), and its checkout: the
		// delta that removes them.
		var c crdt.Cart
		dots := make([]crdt.Dot, lines)
		for k := range dots {
			dots[k] = crdt.Dot{Replica: "us-east", Counter: uint64(300 + seq%7 + k*7)}
		}
		g := &crdt.Group{}
		g.AddCart(fmt.Sprintf("cart-%08d", seq), c.RemoveObserved(dots))
		if seq == 1 {
			enc = len(crdt.EncodeGroup(g))
		}
		now = now.Add(10 * time.Microsecond)
		p.Local(protocol.LocalDelta{Seq: uint64(seq), Group: g, At: now}, now)
		p.Ready() // the messages leave (and are lost)
	}
	held := exLiveHeap() - base
	st := p.Status()[0]
	t.Logf("a delta of %d bytes; pending for the peer: %d deltas, %d bytes; live heap %.1f MiB",
		enc, st.PendingDeltas, st.PendingBytes, float64(held)/(1<<20))
	if held > documented*5/4 {
		t.Errorf("the buffer of a peer that never acknowledges holds %.1f MiB of live heap (%d removal deltas of %d bytes each); documented: at most 64 MiB",
			float64(held)/(1<<20), st.PendingDeltas, enc)
	}
	runtime.KeepAlive(p)
}
