package region

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/latticedb/lattice/crdt"
	"github.com/latticedb/lattice/region/store"
)

// noPeerHolds is a ReplicaWaiter of a region whose peers hold none of
// its writes (the link to them is cut): every wait for more than this
// region ends with its context.
type noPeerHolds struct{}

func (noPeerHolds) WaitReplicas(ctx context.Context, d crdt.Dot, n int) error {
	if n <= 1 {
		return nil
	}
	<-ctx.Done()
	return ctx.Err()
}

func (p noPeerHolds) WaitReplicasThrough(ctx context.Context, d crdt.Dot, n int) error {
	return p.WaitReplicas(ctx, d, n)
}

// TestRepeatedRemoveAfterUncleanRestartWaitsForWriteConcern: docs/api.md
// (Write and read concerns): "A retry that changes nothing (a remove of a
// line already gone, a commit already committed) waits again too: for
// every write the answering region has made so far to reach N regions,
// the earlier attempt's among them." A remove with Lattice-Replicas: 2
// times out (no peer holds it); the region then stops uncleanly (a
// killed process; nothing is lost) and starts a new incarnation. The
// retried remove changes nothing; no peer holds the first attempt's
// removal, so the retry must not answer that 2 regions hold it.
func TestRepeatedRemoveAfterUncleanRestartWaitsForWriteConcern(t *testing.T) {
	path := filepath.Join(t.TempDir(), "us-east.db")
	open := func() (*Node, *store.Store) {
		st, err := OpenStore(path, store.Options{})
		if err != nil {
			t.Fatal(err)
		}
		n, err := NewNode(Options{Name: "us-east", Store: st, ExpiryInterval: time.Hour,
			PeerRegions: []string{"eu-west"}, Replicas: noPeerHolds{}})
		if err != nil {
			st.Close()
			t.Fatal(err)
		}
		return n, st
	}
	remove := func(n *Node) error {
		ctx, cancel := context.WithTimeout(WithReplicas(WithAnswer(context.Background()), 2), 300*time.Millisecond)
		defer cancel()
		if _, err := n.RemoveItem(ctx, "c1", "book"); err != nil {
			return err
		}
		return n.AwaitReplicas(ctx)
	}

	n, st := open()
	must[Cart](t)(n.AddItem(context.Background(), "c1", "book", 2))
	if err := remove(n); err == nil {
		t.Fatal("test setup: the first remove met a write concern of 2 no peer holds")
	} else {
		wantCode(t, err, CodeReplicationTimeout)
	}
	removal := crdt.Dot{Replica: n.Self(), Counter: n.Applied().VV[n.Self()]}
	n.Close()
	st.CloseUnclean()

	n, st = open()
	defer func() { n.Close(); st.Close() }()
	if n.Self() == removal.Replica {
		t.Fatalf("test setup: the unclean stop did not start a new incarnation (%s)", n.Self())
	}
	if applied := n.Applied(); !applied.Contains(removal) {
		t.Fatalf("test setup: the reopened region lost the removal %v", removal)
	}
	if err := remove(n); err == nil {
		t.Fatalf("the repeated remove, after an unclean restart as %s, answered that 2 regions hold it; no peer holds the first attempt's removal %v", n.Self(), removal)
	} else {
		wantCode(t, err, CodeReplicationTimeout)
	}
}
