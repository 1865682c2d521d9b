package region

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/latticedb/lattice/crdt"
	"github.com/latticedb/lattice/region/store"
)

// esc8Alone stands for replication at a region cut off from every peer:
// no write of it reaches another region, and a write concern above 1 is
// refused at once, as replication refuses a concern the connected regions
// cannot meet.
type esc8Alone struct{}

func (w *esc8Alone) WaitReplicas(ctx context.Context, d crdt.Dot, n int) error {
	if n <= 1 {
		return nil
	}
	return errors.New("too few regions connected to meet the write concern")
}

func (w *esc8Alone) WaitReplicasThrough(ctx context.Context, d crdt.Dot, n int) error {
	return w.WaitReplicas(ctx, d, n)
}

// TestEscrowHoldFromRightsHonoursWriteConcern: docs/api.md (Write and read
// concerns): "Lattice-Replicas: N on a write: the answer waits … until N
// regions including the answering one hold the write durably … If … the
// regions connected (with those that already hold the write) are too few
// to meet it, the answer is 503 replication_timeout … at once". Region a
// holds rights to an escrow sku and is cut off from both peers; a
// reservation sent to it with Lattice-Replicas: 3 is decided from its
// rights. The hold lives in a's ledger alone (holds decided from rights
// are never replicated, and no region but a can hold it), so the concern
// cannot be met: the answer must not say that 3 regions hold it. A cart
// write made at a right after, with the same concern, answers
// replication_timeout.
func TestEscrowHoldFromRightsHonoursWriteConcern(t *testing.T) {
	r := newEscrowRig(t)
	w := &esc8Alone{}
	r.nodes["a"].close()
	r.openEscrowWith("a", store.Options{}, func(o *Options) { o.Replicas = w })
	h, a := r.nodes["h"], r.nodes["a"]
	must[Item](t)(h.Restock(bg, "e1", 100))
	r.deliver(nil)
	must[Reservation](t)(a.Reserve(bg, "e1", 1, time.Hour, Idem{})) // a gets rights
	r.deliver(nil)
	r.cut["a"] = true

	concern := func() (context.Context, context.CancelFunc) {
		return context.WithTimeout(WithReplicas(WithAnswer(bg), 3), 2*time.Second)
	}
	// A reservation at a with the concern, decided from its rights.
	ctx, cancel := concern()
	defer cancel()
	res, resErr := a.Reserve(ctx, "e1", 2, time.Hour, Idem{})
	if resErr == nil {
		if !strings.HasPrefix(res.ID, "h:") {
			t.Fatalf("reservation %s with a write concern of 3 decided away from the home", res.ID)
		}
		resErr = a.AwaitReplicas(ctx)
	}

	// A cart write at a with the concern: refused, as the docs say.
	ctx2, cancel2 := concern()
	defer cancel2()
	must[Cart](t)(a.AddItem(ctx2, "c1", "x", 1))
	cartErr := a.AwaitReplicas(ctx2)
	t.Logf("write concern 3 at a cut off from both peers: reservation from rights %v; cart add %v", resErr, cartErr)
	wantCode(t, cartErr, CodeReplicationTimeout)
	// Cut off, the home cannot decide it: home_unavailable, not met.
	if resErr == nil {
		t.Fatalf("reservation %s decided from a's rights with Lattice-Replicas: 3 while a is cut off from both peers: "+
			"answered as met (no replication_timeout), but the hold is in a's ledger only; "+
			"want 503 replication_timeout, as the cart add at a answers (%v)", res.ID, cartErr)
	}
}
