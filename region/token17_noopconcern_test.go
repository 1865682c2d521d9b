package region

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/latticedb/lattice/crdt"
)

// holdersByOrigin stands for replication in a cluster of three regions
// where every write of a region is held by held[its region] regions (the
// origin included): a write concern of n is met for a dot once that many
// regions hold it, and never otherwise.
type holdersByOrigin struct{ held map[string]int }

func (h holdersByOrigin) meets(d crdt.Dot, n int) bool { return n <= h.held[d.Replica.Region()] }

func (h holdersByOrigin) WaitReplicas(ctx context.Context, d crdt.Dot, n int) error {
	if n <= 1 || h.meets(d, n) {
		return nil
	}
	<-ctx.Done()
	return ctx.Err()
}

func (h holdersByOrigin) WaitReplicasThrough(ctx context.Context, d crdt.Dot, n int) error {
	return h.WaitReplicas(ctx, d, n)
}

// TestNoOpRemoveWriteConcernCoversShownRemoval: a cart line removed at
// eu-west reached us-east but not ap-south (eu-west's write concern of
// all timed out there). The client removes the line again at us-east with
// Lattice-Replicas: all. The remove changes nothing at us-east: what it
// answers (the line gone) is eu-west's removal, held by 2 of the 3
// regions. docs/api.md: the answer waits "until N regions including the
// answering one hold the write durably", and with W + Q > R "a quorum
// read sees every write acknowledged (with W)". Answered as met, a read
// at ap-south (quorum=1: W + Q = 4 > 3) still shows the line. The
// concern must not be reported met (replication_timeout) until the
// removal it shows is at 3 regions.
func TestNoOpRemoveWriteConcernCoversShownRemoval(t *testing.T) {
	s := &regionSet{}
	dir := t.TempDir()
	west := ceOpen(t, s, filepath.Join(dir, "eu-west.db"), "eu-west", []string{"us-east", "ap-south"}, nil)
	east := ceOpen(t, s, filepath.Join(dir, "us-east.db"), "us-east", []string{"eu-west", "ap-south"}, func(o *Options) {
		// us-east's own writes reach every region; eu-west's only two
		// (eu-west and us-east).
		o.Replicas = holdersByOrigin{held: map[string]int{"us-east": 3, "eu-west": 2}}
	})

	must[Cart](t)(west.AddItem(bg, "c1", "book", 2))
	must[Cart](t)(west.RemoveItem(bg, "c1", "book"))
	g, ctx, err := west.Read([]string{prefixCart + "c1"})
	if err != nil {
		t.Fatal(err)
	}
	if err := east.ApplyRemote(&ctx, g); err != nil {
		t.Fatal(err)
	}
	if c := must[Cart](t)(east.GetCart(bg, "c1")); len(c.Items) != 0 {
		t.Fatalf("test setup: us-east has %+v, want the removal applied", c.Items)
	}

	rctx, cancel := context.WithTimeout(WithReplicas(WithAnswer(bg), 3), 300*time.Millisecond)
	defer cancel()
	c, err := east.RemoveItem(rctx, "c1", "book")
	if err != nil {
		t.Fatalf("remove at us-east: %v", err)
	}
	if err := east.AwaitReplicas(rctx); err == nil {
		t.Fatalf("the remove at us-east (cart %+v) answered that 3 regions hold it; the removal it shows is eu-west's write, which 2 regions hold", c.Items)
	} else {
		wantCode(t, err, CodeReplicationTimeout)
	}
}
