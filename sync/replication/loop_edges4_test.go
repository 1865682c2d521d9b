package replication

import (
	"context"
	"testing"
	"time"

	"github.com/latticedb/lattice/crdt"
	"github.com/latticedb/lattice/region"
	"github.com/latticedb/lattice/region/store"
	"github.com/latticedb/lattice/sync/transport"
)

// reachableTransport reports every peer connected and drops what is sent
// to it: a peer that is up and never acknowledges.
type reachableTransport struct{}

func (reachableTransport) Send(string, []byte) error { return nil }
func (reachableTransport) Call(context.Context, string, []byte) ([]byte, error) {
	return nil, transport.ErrNotConnected
}
func (reachableTransport) Connected(string) bool { return true }
func (reachableTransport) Close() error          { return nil }

// startReachable runs us-east's replicator over reachableTransport.
func startReachable(t *testing.T) (*Replicator, *region.Node) {
	st, err := region.OpenStore(":memory:", store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	node, err := region.NewNode(region.Options{Name: "us-east", Store: st, ExpiryInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { node.Close() })
	r := New(Options{Region: "us-east", Peers: []string{"eu-west"}})
	if err := r.Check(node); err != nil {
		t.Fatal(err)
	}
	r.Start(node, reachableTransport{})
	t.Cleanup(r.Close)
	return r, node
}

// TestCloseAnswersPendingWriteConcern: a client waiting for its write to
// reach two regions while the replicator closes is answered by Close (the
// loop that would answer it is gone), not left waiting for its own
// deadline.
func TestCloseAnswersPendingWriteConcern(t *testing.T) {
	r, node := startReachable(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- r.WaitReplicas(ctx, crdt.Dot{Replica: node.Self(), Counter: 1}, 2) }()
	// The waiter is registered and the loop has seen it (eu-west is up,
	// so it keeps waiting).
	deadline := time.Now().Add(5 * time.Second)
	for {
		r.mu.Lock()
		n := len(r.waiters)
		r.mu.Unlock()
		if n == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the waiter was not registered (%d waiters)", n)
		}
		time.Sleep(time.Millisecond)
	}
	select {
	case err := <-errc:
		t.Fatalf("WaitReplicas returned %v while eu-west is up and has not acknowledged", err)
	case <-time.After(3 * r.opts.TickInterval):
	}
	r.Close()
	select {
	case err := <-errc:
		if err == nil {
			t.Fatal("WaitReplicas reported the write held by two regions after Close, though no peer acknowledged it")
		}
	case <-time.After(2 * time.Second):
		r.mu.Lock()
		n := len(r.waiters)
		r.mu.Unlock()
		t.Fatalf("WaitReplicas still waiting 2s after Close (%d waiters left)", n)
	}
}

// TestWriteConcernAfterCloseDoesNotHang: a write concern asked of a
// closed replicator is answered at once, not left waiting for a loop
// that no longer runs.
func TestWriteConcernAfterCloseDoesNotHang(t *testing.T) {
	r, node := startReachable(t)
	r.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- r.WaitReplicas(ctx, crdt.Dot{Replica: node.Self(), Counter: 1}, 2) }()
	select {
	case err := <-errc:
		if err == nil {
			t.Fatal("WaitReplicas of a closed replicator reported the write held by two regions")
		}
	case <-time.After(2 * time.Second):
		t.Fatal("WaitReplicas of a closed replicator still waiting after 2s")
	}
}
