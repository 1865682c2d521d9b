package protocol_test

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/cockroachdb/datadriven"

	"github.com/latticedb/lattice/crdt"
	"github.com/latticedb/lattice/region"
)

// restart18Waiter is a region.ReplicaWaiter that records the waits a
// request's write concern asks for and answers them at once; the test
// then asks the protocol whether they could ever be met.
type restart18Waiter struct {
	mu      sync.Mutex
	through []crdt.Dot
	dots    []crdt.Dot
}

func (w *restart18Waiter) WaitReplicas(_ context.Context, d crdt.Dot, _ int) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.dots = append(w.dots, d)
	return nil
}

func (w *restart18Waiter) WaitReplicasThrough(_ context.Context, d crdt.Dot, _ int) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.through = append(w.through, d)
	return nil
}

// TestRestart18NoOpConcernAfterLostTailNeverMet: us-east (everysec) makes
// two writes; the first reaches no peer (its messages are dropped), the
// second reaches both peers, which claim it out of order (its incarnation
// is the latest they know). Then us-east loses power before retransmitting
// the first: its store loses both writes, and it goes on as a new
// incarnation. The first write is lost everywhere; the second is held by
// every region (us-east gets it back by anti-entropy).
//
// docs/api.md (Write and read concerns): "A retry that changes nothing (a
// remove of a line already gone …) waits again too: for every write the
// answering region holds so far to reach N regions". Every region holds
// every write that exists, so a no-op remove at eu-west with
// Lattice-Replicas: 2 must be met. But the region waits "through" the
// highest dot of each replica it held (noteReplay took the Ceil of its
// applied context, whose out-of-order dot is the second write), and the
// protocol counts a peer as holding "through" only when its version
// vector reaches that dot (Protocol.HoldersThrough); an out-of-order dot
// is now waited for by itself (Protocol.Holders). The lost first write
// is a gap in the old incarnation's version vector at every region that
// no dot will ever fill, so no peer ever counts, and the retry answers
// 503 replication_timeout forever.
func TestRestart18NoOpConcernAfterLostTailNeverMet(t *testing.T) {
	sc := newScenario(t, &datadriven.TestData{Cmd: "start"})
	run := func(line string) string {
		t.Helper()
		cmd, args, err := datadriven.ParseLine(line)
		if err != nil {
			t.Fatal(err)
		}
		out := sc.do(&datadriven.TestData{Pos: "restart18", Cmd: cmd, CmdArgs: args})
		sc.observe()
		t.Logf("%s -> %s", line, strings.TrimSpace(out))
		return out
	}
	run("run 1s")
	// A cart at eu-west whose line is then removed: the retry below
	// removes it again and changes nothing.
	run("write eu-west add cartx book 1")
	run("write eu-west remove cartx book")
	run("run 1s")
	// us-east's first write reaches no peer; its second reaches both.
	run("drop from=us-east kind=delta count=2")
	first := run("write us-east add carty pen 1")
	second := run("write us-east add cartz mug 1")
	run("run 50ms")
	lost := run("lose-tail us-east 2")
	if !strings.Contains(lost, strings.TrimSpace(first)) || strings.Contains(lost, strings.TrimSpace(second)) {
		t.Fatalf("setup: want only the first write (%s) lost everywhere, got %q", strings.TrimSpace(first), lost)
	}
	run("unfilter")
	run("run 30s")
	holdAll := func() {
		t.Helper()
		out := run("carts cartz")
		if strings.Count(out, "mug:1") != len(sc.s.regions) {
			t.Fatalf("setup: every region should hold us-east's second write: %s", out)
		}
	}
	holdAll()

	// eu-west, restarted cleanly (same incarnation) with a write concern
	// waiter that records what a request waits for.
	w := &restart18Waiter{}
	eu := sc.region(nil, "eu-west")
	sc.s.nodeOpts = func(i int, o *region.Options) {
		if i == eu {
			o.Replicas = w
		}
	}
	run("stop eu-west")
	run("restart eu-west")
	run("run 30s")

	ctx := region.WithReplicas(region.WithAnswer(context.Background()), 2)
	r := sc.s.regions[eu]
	if _, err := r.node.RemoveItem(ctx, "cartx", "book"); err != nil {
		t.Fatalf("no-op remove: %v", err)
	}
	if err := r.node.AwaitReplicas(ctx); err != nil {
		t.Fatalf("await: %v", err)
	}
	sc.s.process(eu)
	if len(w.through) == 0 {
		t.Fatalf("setup: the no-op remove should wait through eu-west's writes so far, got dots %v through %v", w.dots, w.through)
	}
	// Plenty of anti-entropy rounds (every 3 s here) for the peers to show
	// eu-west all they hold.
	run("run 60s")
	holdAll()
	type wait struct {
		d       crdt.Dot
		through bool
	}
	var waits []wait
	for _, d := range w.through {
		waits = append(waits, wait{d, true})
	}
	for _, d := range w.dots {
		waits = append(waits, wait{d, false})
	}
	for _, wt := range waits {
		d := wt.d
		holders := r.proto.Holders(d)
		if wt.through {
			holders = r.proto.HoldersThrough(d)
		}
		if 1+len(holders) < 2 {
			var applied []string
			for _, o := range sc.s.regions {
				a := o.node.Applied()
				applied = append(applied, fmt.Sprintf("%s applied %v, out of order %v", o.name, a.VV, slices.Collect(maps.Keys(a.Cloud))))
			}
			t.Errorf("a no-op remove at eu-west with Lattice-Replicas: 2 waits for a peer to hold every write of %s through %s; after 60 s of anti-entropy no peer counts (holders %v), so the write concern can never be met, though every region holds every write that exists (the first of us-east's writes was lost everywhere):\n  %s",
				sc.name(d.Replica), sc.dot(d), holders, strings.Join(applied, "\n  "))
		}
	}
}
