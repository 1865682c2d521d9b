package region

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/latticedb/lattice/crdt"
)

// concern18Holders stands for replication where each dot is held by
// held[dot] regions (the origin included), 3 (every region) for a dot
// not listed: a write concern of n is met for a dot once that many
// regions hold it, and never otherwise.
type concern18Holders struct{ held map[crdt.Dot]int }

func (h concern18Holders) count(d crdt.Dot) int {
	if k, ok := h.held[d]; ok {
		return k
	}
	return 3
}

func (h concern18Holders) WaitReplicas(ctx context.Context, d crdt.Dot, n int) error {
	if n <= 1 || h.count(d) >= n {
		return nil
	}
	<-ctx.Done()
	return ctx.Err()
}

func (h concern18Holders) WaitReplicasThrough(ctx context.Context, d crdt.Dot, n int) error {
	if n <= 1 {
		return nil
	}
	for k := uint64(1); k <= d.Counter; k++ {
		if h.count(crdt.Dot{Replica: d.Replica, Counter: k}) < n {
			<-ctx.Done()
			return ctx.Err()
		}
	}
	return nil
}

// concern18Deliver applies the delta of seq that rec recorded at n, as
// replication brings it (its one dot, its group).
func concern18Deliver(t *testing.T, rec *deltaRecorder, seq uint64, n *Node) {
	t.Helper()
	rec.mu.Lock()
	d, ok := rec.deltas[seq]
	rec.mu.Unlock()
	if !ok {
		t.Fatalf("test setup: no delta %d recorded", seq)
	}
	dots := &crdt.Context{}
	dots.Insert(crdt.Dot{Replica: d.Origin, Counter: d.Seq})
	g, err := crdt.DecodeGroup(crdt.EncodeGroup(d.Group))
	if err != nil {
		t.Fatal(err)
	}
	if err := n.ApplyRemote(dots, g); err != nil {
		t.Fatal(err)
	}
}

// TestNoOpRemoveConcernCoversRemovalShownByQuorumRead: eu-west adds book
// to a cart (every region gets it), then removes it (the removal reaches
// no region yet). A quorum read of 2 at us-east (ap-south unreachable)
// joins eu-west's state: us-east now shows the cart empty, and read
// repair left nothing to send. The client then removes book again at
// us-east with Lattice-Replicas: all (3). The remove changes nothing:
// what it answers, the line gone, is eu-west's removal, held by 2 of the
// 3 regions (eu-west, and us-east through the quorum read). docs/api.md:
// a retry that changes nothing waits "for every write the answering
// region holds so far to reach N regions ... and those of other regions
// it applied, since what it answers may be another region's write (a
// line another region removed)". The removal us-east holds reached it by
// a repair, so its dot is not in us-east's applied version vector (only
// in what the key's state reflects), and noteReplay does not wait for it:
// the concern is answered met, and ap-south (quorum=1, W + Q = 4 > 3)
// still shows book.
func TestNoOpRemoveConcernCoversRemovalShownByQuorumRead(t *testing.T) {
	s := &regionSet{}
	dir := t.TempDir()
	rec := &deltaRecorder{}
	west := ceOpen(t, s, filepath.Join(dir, "eu-west.db"), "eu-west", []string{"us-east", "ap-south"}, func(o *Options) { o.Publisher = rec })
	south := ceOpen(t, s, filepath.Join(dir, "ap-south.db"), "ap-south", []string{"us-east", "eu-west"}, nil)
	removal := crdt.Dot{Replica: west.Self(), Counter: 2}
	east := ceOpen(t, s, filepath.Join(dir, "us-east.db"), "us-east", []string{"eu-west", "ap-south"}, func(o *Options) {
		// eu-west's removal is held by eu-west and us-east only.
		o.Replicas = concern18Holders{held: map[crdt.Dot]int{removal: 2}}
	})

	must[Cart](t)(west.AddItem(bg, "c1", "book", 2))
	concern18Deliver(t, rec, 1, east)
	concern18Deliver(t, rec, 1, south)
	must[Cart](t)(west.RemoveItem(bg, "c1", "book"))
	if got := west.Applied().VV[west.Self()]; got != 2 {
		t.Fatalf("test setup: eu-west's removal is dot %d, want 2", got)
	}

	s.mu.Lock()
	s.down["ap-south"] = true
	s.mu.Unlock()
	qctx, qcancel := context.WithTimeout(WithQuorum(WithAnswer(bg), 2), 2*time.Second)
	defer qcancel()
	if c := must[Cart](t)(east.GetCart(qctx, "c1")); len(c.Items) != 0 {
		t.Fatalf("test setup: us-east's quorum read of 2 shows %+v, want eu-west's removal", c.Items)
	}
	s.mu.Lock()
	s.down["ap-south"] = false
	s.mu.Unlock()

	rctx, cancel := context.WithTimeout(WithReplicas(WithAnswer(bg), 3), 300*time.Millisecond)
	defer cancel()
	c, err := east.RemoveItem(rctx, "c1", "book")
	if err != nil {
		t.Fatalf("remove at us-east: %v", err)
	}
	if err := east.AwaitReplicas(rctx); err == nil {
		sc := must[Cart](t)(south.GetCart(bg, "c1"))
		t.Fatalf("the remove at us-east (answered %+v) with Lattice-Replicas: 3 reported met; the removal it shows is eu-west's dot %v, which 2 regions hold; ap-south still shows %+v",
			c.Items, removal, sc.Items)
	} else {
		wantCode(t, err, CodeReplicationTimeout)
	}
}

// TestNoOpRemoveConcernCoversOutOfOrderRemoval: eu-west adds book to a
// cart (every region gets it), writes another cart (its delta is delayed
// everywhere), then removes book; the removal's delta reaches us-east
// only, ahead of the delayed one, so us-east holds it out of order (in
// its applied context's cloud, past its version vector's entry of
// eu-west). The client removes book again at us-east with
// Lattice-Replicas: 3. The remove changes nothing at us-east: what it
// answers is eu-west's removal, held by 2 regions. noteReplay waits for
// other regions' writes only through their version vector entries, so
// the out-of-order removal is not waited for and the concern is answered
// met while ap-south still shows book.
func TestNoOpRemoveConcernCoversOutOfOrderRemoval(t *testing.T) {
	s := &regionSet{}
	dir := t.TempDir()
	rec := &deltaRecorder{}
	west := ceOpen(t, s, filepath.Join(dir, "eu-west.db"), "eu-west", []string{"us-east", "ap-south"}, func(o *Options) { o.Publisher = rec })
	south := ceOpen(t, s, filepath.Join(dir, "ap-south.db"), "ap-south", []string{"us-east", "eu-west"}, nil)
	removal := crdt.Dot{Replica: west.Self(), Counter: 3}
	east := ceOpen(t, s, filepath.Join(dir, "us-east.db"), "us-east", []string{"eu-west", "ap-south"}, func(o *Options) {
		o.Replicas = concern18Holders{held: map[crdt.Dot]int{
			{Replica: west.Self(), Counter: 2}: 1, // delayed everywhere
			removal:                            2, // eu-west and us-east
		}}
	})

	must[Cart](t)(west.AddItem(bg, "c1", "book", 2))
	concern18Deliver(t, rec, 1, east)
	concern18Deliver(t, rec, 1, south)
	must[Cart](t)(west.AddItem(bg, "c2", "pen", 1))
	must[Cart](t)(west.RemoveItem(bg, "c1", "book"))
	concern18Deliver(t, rec, 3, east)
	if c := must[Cart](t)(east.GetCart(bg, "c1")); len(c.Items) != 0 {
		t.Fatalf("test setup: us-east shows %+v, want eu-west's removal", c.Items)
	}
	if a := east.Applied(); a.VV[west.Self()] != 1 || !a.Contains(removal) {
		t.Fatalf("test setup: us-east's applied context %v, want eu-west's removal out of order", a)
	}

	rctx, cancel := context.WithTimeout(WithReplicas(WithAnswer(bg), 3), 300*time.Millisecond)
	defer cancel()
	c, err := east.RemoveItem(rctx, "c1", "book")
	if err != nil {
		t.Fatalf("remove at us-east: %v", err)
	}
	if err := east.AwaitReplicas(rctx); err == nil {
		sc := must[Cart](t)(south.GetCart(bg, "c1"))
		t.Fatalf("the remove at us-east (answered %+v) with Lattice-Replicas: 3 reported met; the removal it shows is eu-west's dot %v, which 2 regions hold; ap-south still shows %+v",
			c.Items, removal, sc.Items)
	} else {
		wantCode(t, err, CodeReplicationTimeout)
	}
}
