package replication_test

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/latticedb/lattice/crdt"
	"github.com/latticedb/lattice/region"
	"github.com/latticedb/lattice/region/store"
	"github.com/latticedb/lattice/sync/replication"
	"github.com/latticedb/lattice/sync/transport"
)

// loopTransport carries one region's messages straight to its peer's
// replicator, in order: both ends are always connected.
type loopTransport struct {
	mu   sync.Mutex
	self string
	to   *replication.Replicator
}

func (l *loopTransport) Send(peer string, b []byte) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.to.OnMessage(l.self, slices.Clone(b))
	return nil
}

func (l *loopTransport) Call(context.Context, string, []byte) ([]byte, error) {
	return nil, transport.ErrNotConnected
}
func (l *loopTransport) Connected(string) bool { return true }
func (l *loopTransport) Close() error          { return nil }

// TestNoOpWriteConcernAfterRegionRemoved: ap-south was a region of the
// cluster; its writes reached us-east and eu-west, and it was then
// removed from the config (docs/operations.md, "Removing a region": its
// replica ids stay in version vectors). A write with Lattice-Replicas: 2
// at us-east that changes nothing (a remove of a line that is not there)
// waits for everything us-east holds to reach 2 regions. eu-west holds
// all of it, ap-south's writes included, and us-east learns its applied
// context in the anti-entropy round of their connection, so the concern is
// met. It must not answer replication_timeout in a healthy two-region
// cluster.
func TestNoOpWriteConcernAfterRegionRemoved(t *testing.T) {
	names := []string{"us-east", "eu-west"}
	isRegion := func(n string) bool { return slices.Contains(names, n) }
	nodes := map[string]*region.Node{}
	reps := map[string]*replication.Replicator{}
	for i, name := range names {
		other := names[1-i]
		st, err := region.OpenStore(":memory:", store.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		r := replication.New(replication.Options{Region: name, Peers: []string{other}})
		n, err := region.NewNode(region.Options{Name: name, Store: st, ExpiryInterval: time.Hour,
			Publisher: r, Replicas: r, IsRegion: isRegion, PeerRegions: []string{other}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { n.Close() })
		if err := r.Check(n); err != nil {
			t.Fatal(err)
		}
		nodes[name], reps[name] = n, r
	}
	// ap-south's writes, made while it was a region, are at both.
	g := &crdt.Group{}
	var c crdt.Cart
	g.AddCart("c1", c.Add("ap-south", "book", 1))
	removed := crdt.Context{VV: map[crdt.ReplicaID]uint64{"ap-south": 1}}
	for _, name := range names {
		if err := nodes[name].ApplyRemote(&removed, g); err != nil {
			t.Fatal(err)
		}
	}
	for i, name := range names {
		other := names[1-i]
		reps[name].Start(nodes[name], &loopTransport{self: name, to: reps[other]})
	}
	t.Cleanup(func() {
		for _, r := range reps {
			r.Close()
		}
	})
	east := nodes["us-east"]

	// A write of us-east's own meets Lattice-Replicas: 2.
	ctx, cancel := context.WithTimeout(region.WithReplicas(region.WithAnswer(context.Background()), 2), 5*time.Second)
	defer cancel()
	if _, err := east.AddItem(ctx, "c2", "pen", 1); err != nil {
		t.Fatal(err)
	}
	if err := east.AwaitReplicas(ctx); err != nil {
		t.Fatalf("test setup: a write at us-east with Lattice-Replicas: 2: %v", err)
	}
	// Both regions have run their first anti-entropy round.
	deadline := time.Now().Add(10 * time.Second)
	for {
		done := true
		for _, r := range reps {
			for _, s := range r.Status() {
				done = done && s.LastAntiEntropy != nil && s.AntiEntropy == "idle"
			}
		}
		if done {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("test setup: no anti-entropy round completed")
		}
		time.Sleep(20 * time.Millisecond)
	}

	// A remove that changes nothing, with Lattice-Replicas: 2.
	ctx2, cancel2 := context.WithTimeout(region.WithReplicas(region.WithAnswer(context.Background()), 2), 3*time.Second)
	defer cancel2()
	if _, err := east.RemoveItem(ctx2, "c1", "absent"); err != nil {
		t.Fatal(err)
	}
	if err := east.AwaitReplicas(ctx2); err != nil {
		var re *region.Error
		errors.As(err, &re)
		applied := nodes["eu-west"].Applied()
		t.Fatalf("a no-op remove at us-east with Lattice-Replicas: 2 answered %v, though eu-west holds everything us-east holds (eu-west applied %v, us-east applied %v)",
			err, applied.VV, east.Applied().VV)
	}
}
