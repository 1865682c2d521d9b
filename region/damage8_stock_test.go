package region

import (
	"testing"
	"time"

	"github.com/latticedb/lattice/crdt"
)

// damage8DeliverTo applies every queued delta of the escrow rig at the
// regions to only, and leaves none queued.
func damage8DeliverTo(t *testing.T, r *escrowRig, to ...string) {
	t.Helper()
	r.mu.Lock()
	q := r.queue
	r.queue = nil
	r.mu.Unlock()
	for _, x := range q {
		for _, name := range to {
			if name == x.from {
				continue
			}
			dots := &crdt.Context{}
			dots.Insert(crdt.Dot{Replica: x.d.Origin, Counter: x.d.Seq})
			if err := r.nodes[name].ApplyRemote(dots, x.d.Group); err != nil {
				t.Fatalf("apply %s:%d at %s: %v", x.d.Origin, x.d.Seq, name, err)
			}
		}
	}
}

// damage8RepairItem sends region from's whole state of sku to region to,
// as an anti-entropy repair does.
func damage8RepairItem(t *testing.T, r *escrowRig, from, to, sku string) {
	t.Helper()
	g, ctx, err := r.nodes[from].readObjects(nil, []string{sku}, false)
	if err != nil {
		t.Fatalf("read %s at %s: %v", sku, from, err)
	}
	if g, err = crdt.DecodeGroup(crdt.EncodeGroup(g)); err != nil {
		t.Fatal(err)
	}
	if err := r.nodes[to].ApplyReflecting(&crdt.Context{}, g, &ctx); err != nil {
		t.Fatalf("repair of %s from %s at %s: %v", sku, from, to, err)
	}
}

// TestDamage8HomeStockRepairedFromStalePeerKeepsCommits: the home h
// commits 6 of a stock of 10 of a (non-escrow) sku; the commit reaches b
// but not a. h stops cleanly and its stored item is damaged on disk; a's
// older state repairs it first. The commit did replicate, so it must not
// be lost (README, Limitations: "what did replicate is never lost"): h
// must not commit more than the 4 units left, and once every region has
// every state the stock must count every commit.
func TestDamage8HomeStockRepairedFromStalePeerKeepsCommits(t *testing.T) {
	const sku = "p1"
	r := newEscrowRig(t)
	h := r.nodes["h"]
	must[Item](t)(h.Restock(bg, sku, 10))
	damage8DeliverTo(t, r, "a", "b")

	first := must[Reservation](t)(h.Reserve(bg, sku, 6, time.Minute, Idem{}))
	if c := must[Reservation](t)(h.Commit(bg, first.ID, Idem{})); c.State != StateCommitted {
		t.Fatalf("commit: %+v", c)
	}
	committed := first.Qty
	damage8DeliverTo(t, r, "b") // a is cut off from h meanwhile
	if it := r.item("b", sku); it.Stock != 4 {
		t.Fatalf("b after the commit: stock %d, want 4", it.Stock)
	}
	must[Item](t)(h.Restock(bg, "x1", 1)) // the damaged value is not in the last transaction
	damage8DeliverTo(t, r, "b")

	h.close()
	flipStoredByte(t, h.path, prefixItem+sku)
	r.open("h")
	h = r.nodes["h"]
	if h.CatchingUp() {
		t.Logf("h catches up after the damage")
	}
	wantCode(t, second2(h.GetItem(bg, sku, false)), CodeUnavailable)
	damage8RepairItem(t, r, "a", "h", sku) // a's round with h comes first

	it, err := h.GetItem(bg, sku, false)
	t.Logf("h after a's repair: %+v (err %v)", it, err)
	// Catching up (a new incarnation after the damage), h decides
	// nothing until every peer has brought back what it holds; its
	// plain read may show a's older state meanwhile.
	if err == nil && it.Stock != 10-committed && !h.CatchingUp() {
		t.Errorf("h shows stock %d after a stale peer repaired its damaged item, want %d: its replicated commit of %d is not counted",
			it.Stock, 10-committed, committed)
	}
	if res, err := h.Reserve(bg, sku, 10-committed+1, time.Minute, Idem{}); err == nil {
		if c, err := h.Commit(bg, res.ID, Idem{}); err == nil && c.State == StateCommitted {
			committed += res.Qty
		}
	}
	if res, err := h.Reserve(bg, sku, 10-committed, time.Minute, Idem{}); err == nil && 10-committed > 0 {
		if c, err := h.Commit(bg, res.ID, Idem{}); err == nil && c.State == StateCommitted {
			committed += res.Qty
		}
	}
	if committed > 10 {
		t.Errorf("h committed %d units of a stock of 10 after the repair", committed)
	}
	r.catchUp("h", sku) // b's round brings the commit back
	if it := r.item("h", sku); it.Stock != 10-committed {
		t.Errorf("h caught up shows stock %d, want %d", it.Stock, 10-committed)
	}
	if res, err := h.Reserve(bg, sku, 10-committed+1, time.Minute, Idem{}); err == nil {
		t.Errorf("h caught up reserved %d of the %d units left: %s", res.Qty, 10-committed, res.ID)
	}
	damage8DeliverTo(t, r, "a", "b")
	for _, from := range escrowRegions {
		for _, to := range escrowRegions {
			if from != to {
				damage8RepairItem(t, r, from, to, sku)
			}
		}
	}
	for _, name := range escrowRegions {
		if it := r.item(name, sku); it.Stock != 10-committed {
			t.Errorf("%s after every repair: stock %d, but %d of 10 units were committed (want stock %d)",
				name, it.Stock, committed, 10-committed)
		}
	}
}
