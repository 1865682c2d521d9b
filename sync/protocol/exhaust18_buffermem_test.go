package protocol_test

import (
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/latticedb/lattice/crdt"
	"github.com/latticedb/lattice/sync/protocol"
)

// exLiveHeap returns the live heap after a full collection.
func exLiveHeap() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// TestUnacknowledgedDeltasStayWithinDocumentedMemory: a peer that never
// acknowledges makes its region buffer deltas for it "up to 65,536
// deltas or 64 MiB" (docs/operations.md), "a partition holds at most 64
// MiB of deltas its peers have not acknowledged" (docs/capacity.md, which
// sizes a node's memory from it). The region writes past both bounds,
// with ordinary one-line cart writes and with writes of 30 lines; the
// memory the buffer keeps must stay near 64 MiB (a quarter more allowed
// for bookkeeping), whatever the deltas look like.
func TestUnacknowledgedDeltasStayWithinDocumentedMemory(t *testing.T) {
	const documented = 64 << 20
	for _, tc := range []struct {
		name          string
		lines, writes int
		removal       bool
	}{
		{"one line a write", 1, 70_000, false},
		{"30 lines a write", 30, 21_000, false},
		// The checkout of a cart of 1,000 lines added while the region
		// was young: the delta that removes them lists their dots (a
		// cloud, far apart since a region's counters are shared by all
		// its keys), 1-5 bytes a dot encoded, a map entry decoded.
		{"removals of 1,000 lines", 1000, 20_000, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := protocol.DefaultConfig()
			ids := []crdt.ReplicaID{"us-east", "eu-west"}
			now := time.Unix(1_800_000_000, 0)
			base := exLiveHeap()
			p := protocol.New("us-east", ids, crdt.Context{}, nullStorage{}, cfg)
			p.PeerUp("eu-west", now) // connected, and never answers
			var enc int
			for seq := 1; seq <= tc.writes; seq++ {
				var c crdt.Cart
				g := &crdt.Group{}
				if tc.removal {
					dots := make([]crdt.Dot, tc.lines)
					for k := range dots {
						dots[k] = crdt.Dot{Replica: "us-east", Counter: uint64(300 + seq%7 + k*7)}
					}
					g.AddCart(fmt.Sprintf("cart-%08d", seq), c.RemoveObserved(dots))
				} else {
					for k := range tc.lines {
						c.Join(c.Add("us-east", fmt.Sprintf("sku-%08d-%02d-of-a-catalogue-of-many-items", seq, k), 1))
					}
					g.AddCart(fmt.Sprintf("cart-%08d", seq), &c)
				}
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
			if st.PendingBytes > documented || st.PendingDeltas > 65_536 {
				t.Fatalf("the buffer counts %d deltas, %d bytes: past its own bounds", st.PendingDeltas, st.PendingBytes)
			}
			if held > documented*5/4 {
				t.Errorf("the buffer of a peer that never acknowledges holds %.1f MiB of live heap (%d deltas counted as %.1f MiB); documented: at most 64 MiB",
					float64(held)/(1<<20), st.PendingDeltas, float64(st.PendingBytes)/(1<<20))
			}
			runtime.KeepAlive(p)
		})
	}
}
