package region

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/latticedb/lattice/crdt"
)

// TestToday18NoOpConcernPastShownBoundNeverMet: dff601a made a write that
// changes nothing wait for each out-of-order dot it holds by itself, not
// through the gap before it, since the gap may exist nowhere (an old
// incarnation's writes lost by a power loss) and a wait through it could
// never be met. Past maxShown (4,096) out-of-order dots, though, addShown
// falls back to raiseReplay: the wait goes through the highest of them
// again, across the gap, and is never met.
//
// us-east holds eu-west's dot 1, then dots 3…k out of order; dot 2 exists
// nowhere (held by no region). Every other dot is held by every region.
// A no-op remove at us-east with Lattice-Replicas: 2 is met with 4,096
// out-of-order dots; with one more it answers replication_timeout, and
// would for ever.
func TestToday18NoOpConcernPastShownBoundNeverMet(t *testing.T) {
	s := &regionSet{}
	dir := t.TempDir()
	west := ceOpen(t, s, filepath.Join(dir, "eu-west.db"), "eu-west", []string{"us-east"}, nil)
	gap := crdt.Dot{Replica: west.Self(), Counter: 2}
	east := ceOpen(t, s, filepath.Join(dir, "us-east.db"), "us-east", []string{"eu-west"}, func(o *Options) {
		o.Replicas = concern18Holders{held: map[crdt.Dot]int{gap: 0}} // lost everywhere
	})
	must[Cart](t)(east.AddItem(bg, "c1", "book", 1))
	must[Cart](t)(east.RemoveItem(bg, "c1", "book"))

	apply := func(from, to uint64) {
		t.Helper()
		dots := &crdt.Context{}
		for c := from; c <= to; c++ {
			dots.Insert(crdt.Dot{Replica: west.Self(), Counter: c})
		}
		if err := east.ApplyRemote(dots, &crdt.Group{}); err != nil {
			t.Fatal(err)
		}
	}
	noOpRemove := func() error {
		t.Helper()
		ctx, cancel := context.WithTimeout(WithReplicas(WithAnswer(bg), 2), 500*time.Millisecond)
		defer cancel()
		if _, err := east.RemoveItem(ctx, "c1", "book"); err != nil {
			t.Fatalf("no-op remove: %v", err)
		}
		return east.AwaitReplicas(ctx)
	}

	apply(1, 1)
	apply(3, 2+maxShown) // maxShown dots out of order past the gap
	if a := east.Applied(); a.VV[west.Self()] != 1 || len(a.Cloud) != maxShown {
		t.Fatalf("test setup: us-east applied %v with %d out of order, want eu-west through 1 and %d out of order", a.VV, len(a.Cloud), maxShown)
	}
	if err := noOpRemove(); err != nil {
		t.Fatalf("test setup: with %d out-of-order dots the no-op remove's concern should be met: %v", maxShown, err)
	}

	apply(3+maxShown, 3+maxShown) // one more
	if err := noOpRemove(); err != nil {
		t.Errorf("with %d out-of-order dots of eu-west past a gap that exists nowhere (dot 2), a no-op remove at us-east with Lattice-Replicas: 2 answers %v: "+
			"past maxShown the wait goes through the highest dot again, across the gap, and can never be met; every dot that exists is held by every region", maxShown+1, err)
	}
}
