package region

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/latticedb/lattice/crdt"
)

// TestToday18NoOpConcernOnRepairedKeyCrossesGap: noteReplay (dff601a)
// waits through the answer's reflected context's version vector, taking
// its runs for ones "a peer claimed and so holds". But a key's reflected
// context with more than maxExtraCloud (1,024) out-of-order dots is kept
// as its ceiling (noteReflects): its version vector then runs across
// gaps no peer ever claimed. With a gap that exists nowhere (an old
// incarnation's write lost by a power loss) a no-op write of that key
// waits through it and can never be met — the fault dff601a fixed for
// the applied context, back with about a thousand dots; and since the
// ceiling is never covered by the applied context, the key keeps it for
// good.
//
// us-east holds eu-west's dot 1 and dots 3…1103 out of order; dot 2
// exists nowhere; every other dot is held by every region. A repair of
// cart c1 reflects the same dots plus 1104 (held by the peers). A no-op
// remove at us-east of a line of c2 with Lattice-Replicas: 2 is met; the
// same no-op remove on c1 answers replication_timeout, for ever.
func TestToday18NoOpConcernOnRepairedKeyCrossesGap(t *testing.T) {
	s := &regionSet{}
	dir := t.TempDir()
	west := ceOpen(t, s, filepath.Join(dir, "eu-west.db"), "eu-west", []string{"us-east"}, nil)
	gap := crdt.Dot{Replica: west.Self(), Counter: 2}
	east := ceOpen(t, s, filepath.Join(dir, "us-east.db"), "us-east", []string{"eu-west"}, func(o *Options) {
		o.Replicas = concern18Holders{held: map[crdt.Dot]int{gap: 0}} // lost everywhere
	})
	for _, c := range []string{"c1", "c2"} {
		must[Cart](t)(east.AddItem(bg, c, "book", 1))
		must[Cart](t)(east.RemoveItem(bg, c, "book"))
	}
	const last = 1103
	dots := &crdt.Context{}
	dots.Insert(crdt.Dot{Replica: west.Self(), Counter: 1})
	for c := uint64(3); c <= last; c++ {
		dots.Insert(crdt.Dot{Replica: west.Self(), Counter: c})
	}
	if err := east.ApplyRemote(dots, &crdt.Group{}); err != nil {
		t.Fatal(err)
	}
	// A repair of c1 whose state reflects those dots and one more.
	g, _, err := east.readObjects([]string{"c1"}, nil, true)
	if err != nil {
		t.Fatal(err)
	}
	reflects := dots.Clone()
	reflects.Insert(crdt.Dot{Replica: west.Self(), Counter: last + 1})
	if err := east.ApplyReflecting(&crdt.Context{}, g, &reflects); err != nil {
		t.Fatal(err)
	}
	if a := east.Applied(); a.VV[west.Self()] != 1 || len(a.Cloud) != last-2 {
		t.Fatalf("test setup: us-east applied %v with %d out of order", a.VV, len(a.Cloud))
	}

	noOpRemove := func(cart string) error {
		t.Helper()
		ctx, cancel := context.WithTimeout(WithReplicas(WithAnswer(bg), 2), 500*time.Millisecond)
		defer cancel()
		if _, err := east.RemoveItem(ctx, cart, "book"); err != nil {
			t.Fatalf("no-op remove of %s: %v", cart, err)
		}
		return east.AwaitReplicas(ctx)
	}
	if err := noOpRemove("c2"); err != nil {
		t.Fatalf("test setup: a no-op remove of c2 (not repaired) should be met: %v", err)
	}
	if err := noOpRemove("c1"); err != nil {
		t.Errorf("a no-op remove of c1 at us-east with Lattice-Replicas: 2 answers %v: the repair's reflected context (%d out-of-order dots of eu-west, past maxExtraCloud) is kept as its ceiling, "+
			"and noteReplay waits through it, across dot 2 which exists nowhere; every dot that exists is held by every region", err, last-1)
	}
}
