package region_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/latticedb/lattice/crdt"
	"github.com/latticedb/lattice/region"
	"github.com/latticedb/lattice/region/store"
	"github.com/latticedb/lattice/sync/protocol"
	"github.com/latticedb/lattice/sync/replication"
)

// failOnceNode is a region node whose first transaction of remote applies
// fails, as a store that cannot write would.
type failOnceNode struct {
	*region.Node
	calls int
}

func (n *failOnceNode) ApplyGroup(dots *crdt.Context, g *crdt.Group, reflects *crdt.Context, state bool) error {
	n.calls++
	if n.calls == 1 {
		return errors.New("the store fails")
	}
	return n.Node.ApplyGroup(dots, g, reflects, state)
}

// TestDriverNeverAcksAFailedApply: a delta arrives from eu-west (not
// urgent, so its acknowledgement waits AckDelay), the driver's Process
// runs at once and the store fails the apply; the protocol is told
// (Discard). No later message acknowledges the delta (which would tell the
// peer it is durable here, so that it dropped it and never sent it
// again): the acknowledgements owed are dropped and the peer resends.
func TestDriverNeverAcksAFailedApply(t *testing.T) {
	st, err := region.OpenStore(":memory:", store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	rn, err := region.NewNode(region.Options{Name: "us-east", Store: st, ExpiryInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer rn.Close()
	node := &failOnceNode{Node: rn}
	now := time.Unix(1_800_000_000, 0)
	cfg := protocol.DefaultConfig()
	cfg.Buckets = rn.DigestBuckets()
	p := protocol.New(rn.Self(), []crdt.ReplicaID{"eu-west"}, rn.Applied(), rn, cfg)
	var acked []uint64
	drv := &replication.Driver{Protocol: p, Node: node, Peers: []string{"eu-west"},
		Now: func() time.Time { return now },
		Send: func(to crdt.ReplicaID, m *protocol.Message, b []byte) error {
			acked = append(acked, m.AckTags()...)
			return nil
		}}
	p.PeerUp("eu-west", now)
	if err := drv.Process(); err != nil {
		t.Fatal(err)
	}

	g := &crdt.Group{}
	var c crdt.Cart
	g.AddCart("c-1", c.Add("eu-west", "sku", 1))
	p.Step("eu-west", &protocol.Message{Kind: protocol.KindDelta, Tag: 7, Group: g,
		Dots: []protocol.DotRange{{From: 1, To: 1}}}, now)
	var ae *replication.ApplyError
	if err := drv.Process(); !errors.As(err, &ae) {
		t.Fatalf("Process: %v, want an *ApplyError", err)
	}
	if len(acked) != 0 {
		t.Fatalf("acknowledged %v in the Ready whose apply failed", acked)
	}
	dot := crdt.Dot{Replica: "eu-west", Counter: 1}
	for range 5 {
		now = now.Add(100 * time.Millisecond)
		p.Tick(now)
		if err := drv.Process(); err != nil {
			t.Fatal(err)
		}
	}
	applied := rn.Applied()
	for _, tag := range acked {
		if tag == 7 && !applied.Contains(dot) {
			t.Fatalf("delta tag 7 (dot %v) acknowledged to eu-west although its apply failed and the store does not hold it (applied %v)", dot, applied.VV)
		}
	}
}

// TestReservationReadAfterDurable: a home reads a reservation by looking
// its sku up without a lock, then reading the record under the lock of
// its item, which every write of it holds until durable. A read whose
// lookup comes just before the reservation's transaction commits answers
// not_found; it never reads the record under another item's lock, which
// would show it committed but not yet durable, its dot not in the
// applied context.
func TestReservationReadAfterDurable(t *testing.T) {
	st, err := region.OpenStore(filepath.Join(t.TempDir(), "data.db"), store.Options{FsyncDelay: 60 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	n, err := region.NewNode(region.Options{Name: "us-east", Store: st, ExpiryInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	ctx := context.Background()
	if _, err := n.Restock(ctx, "w", 1000); err != nil {
		t.Fatal(err)
	}
	first, err := n.Reserve(ctx, "w", 1, 0, region.Idem{})
	if err != nil {
		t.Fatal(err)
	}
	i := strings.LastIndexByte(first.ID, ':')
	seq, err := strconv.ParseUint(first.ID[i+1:], 36, 64)
	if err != nil {
		t.Fatal(err)
	}
	// The race is narrow: up to 150 tries, each waiting out a delayed
	// fsync (about 10 s in all when nothing fails).
	deadline := time.Now().Add(20 * time.Second)
	for attempt := 0; attempt < 150 && time.Now().Before(deadline); attempt++ {
		seq++
		id := first.ID[:i+1] + strconv.FormatUint(seq, 36)
		a := n.Applied()
		dot := a.Next(n.Self())
		done := make(chan struct{})
		var bad atomic.Value
		var wg sync.WaitGroup
		for range 3 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					select {
					case <-done:
						return
					default:
					}
					if _, err := n.GetReservation(ctx, id); err == nil {
						if applied := n.Applied(); !applied.Contains(dot) {
							bad.Store(fmt.Sprintf("GetReservation(%s) showed the reservation while the applied context %v lacks its dot %v", id, applied.VV, dot))
						}
						return
					}
				}
			}()
		}
		res, err := n.Reserve(ctx, "w", 1, 0, region.Idem{})
		close(done)
		wg.Wait()
		if err != nil {
			t.Fatal(err)
		}
		if res.ID != id {
			t.Fatalf("reservation %s, predicted %s", res.ID, id)
		}
		if msg := bad.Load(); msg != nil {
			t.Fatalf("attempt %d: %s", attempt, msg)
		}
	}
}
