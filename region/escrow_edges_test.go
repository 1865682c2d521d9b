package region

import (
	"strings"
	"testing"
	"time"

	"github.com/latticedb/lattice/crdt"
	"github.com/latticedb/lattice/region/store"
)

// queuedItemDelta returns a copy of the first delta queued from region from
// that carries an escrow record of sku.
func (r *escrowRig) queuedItemDelta(from, sku string) (Delta, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, q := range r.queue {
		if q.from != from || q.d.Group == nil {
			continue
		}
		if it, ok := q.d.Group.Items[sku]; ok && len(it.Escrow) > 0 {
			g := &crdt.Group{}
			g.AddItem(sku, it.Clone())
			return Delta{Origin: q.d.Origin, Seq: q.d.Seq, Group: g}, true
		}
	}
	return Delta{}, false
}

// deliverAll applies every queued delta at every other region, as
// deliver(nil) does, but leaves a region's refusal of one to the test.
func (r *escrowRig) deliverAll() {
	r.mu.Lock()
	q := r.queue
	r.queue = nil
	r.mu.Unlock()
	for _, x := range q {
		for _, to := range escrowRegions {
			if to == x.from {
				continue
			}
			dots := &crdt.Context{}
			dots.Insert(crdt.Dot{Replica: x.d.Origin, Counter: x.d.Seq})
			if err := r.nodes[to].ApplyRemote(dots, x.d.Group); err != nil {
				r.t.Logf("%s refused a delta of %s: %v", to, x.from, err)
			}
		}
	}
}

// openUnits counts the open holds of sku in every region's ledger.
func (r *escrowRig) openUnits(sku string) (n int, units int64) {
	r.t.Helper()
	for _, node := range r.nodes {
		err := node.store.View([]string{prefixItem + sku}, func(rd store.Reader) error {
			l, err := loadLedger(rd, sku)
			if err != nil {
				return err
			}
			for _, h := range l.Holds {
				if r.clock.Now().UnixMilli() < h.ExpMs {
					n++
					units += h.Qty
				}
			}
			return nil
		})
		if err != nil {
			r.t.Fatal(err)
		}
	}
	return n, units
}

// TestEscrowDamagedItemNotRebuiltFromStaleGrant: a region's stored item of
// an escrow sku is damaged after it used part of its rights. A late
// duplicate of the home's grant delta (which carries only the grant) must
// not become the region's whole view of the item: its uses of its rights,
// which only it writes, would vanish from it, and it would hold again the
// units it already committed. held + committed must stay within stock.
func TestEscrowDamagedItemNotRebuiltFromStaleGrant(t *testing.T) {
	r := newEscrowRig(t)
	h := r.nodes["h"]
	must[Item](t)(h.Restock(bg, "e1", 10))
	r.deliver(nil)

	first := must[Reservation](t)(r.nodes["a"].Reserve(bg, "e1", 4, time.Minute, Idem{}))
	if !strings.HasPrefix(first.ID, "a:") {
		t.Fatalf("first reservation decided at %s, want at a from its rights", first.ID)
	}
	grant, ok := r.queuedItemDelta("h", "e1")
	if !ok {
		t.Fatal("no grant delta of the home queued")
	}
	granted := *r.item("h", "e1").Granted // 5: a has 1 unused
	var committed int64
	if c := must[Reservation](t)(r.nodes["a"].Commit(bg, first.ID, Idem{})); c.State == StateCommitted {
		committed += first.Qty
	}
	r.deliver(nil)
	// The home holds what it has left beside a's rights.
	hv := r.item("h", "e1")
	homeHold := must[Reservation](t)(h.Reserve(bg, "e1", hv.Available, time.Minute, Idem{}))
	// A later write of a, so that the damaged value is not in its last
	// transaction.
	must[Item](t)(r.nodes["a"].Restock(bg, "x1", 1))
	r.deliver(nil)

	r.nodes["a"].close()
	flipStoredByte(t, r.nodes["a"].path, prefixItem+"e1")
	r.open("a")
	a := r.nodes["a"]
	if a.CatchingUp() {
		r.catchUp("a", "e1", "x1")
	}

	// The home's grant delta arrives once more (duplicated, late).
	dots := &crdt.Context{}
	dots.Insert(crdt.Dot{Replica: grant.Origin, Counter: grant.Seq})
	if err := a.ApplyRemote(dots, grant.Group); err != nil {
		t.Logf("a refused the late grant delta: %v", err)
	}
	if it, err := a.GetItem(bg, "e1", false); err == nil && it.Rights != nil {
		t.Logf("a after the late grant delta: stock %d, rights %d (granted %d, %d used)", it.Stock, *it.Rights, granted, first.Qty)
	}
	res, err := a.Reserve(bg, "e1", granted, time.Minute, Idem{})
	if err == nil {
		t.Logf("a reserved %d as %s", granted, res.ID)
	}
	n, units := r.openUnits("e1")
	if units+committed > 10 {
		t.Errorf("%d units held (%d holds) + %d committed > 10 in stock", units, n, committed)
	}
	if err == nil {
		if c, err := a.Commit(bg, res.ID, Idem{}); err == nil && c.State == StateCommitted {
			committed += res.Qty
		}
	}
	if c, err := h.Commit(bg, homeHold.ID, Idem{}); err == nil && c.State == StateCommitted {
		committed += homeHold.Qty
	}
	r.deliverAll()
	if committed > 10 {
		t.Errorf("%d units committed of a stock of 10; the home shows stock %d", committed, r.item("h", "e1").Stock)
	}
}

// TestEscrowCheckoutAtHomeRecallsRights: a checkout whose line the sku's
// home would refuse, while rights another region holds unused would cover
// it, recalls them and succeeds — as a reservation of the same units at
// the home does (docs/configuration.md, Escrow: "When the home would
// refuse a reservation that rights other regions hold unused would
// cover, it first recalls them").
func TestEscrowCheckoutAtHomeRecallsRights(t *testing.T) {
	r := newEscrowRig(t)
	h, a := r.nodes["h"], r.nodes["a"]
	must[Item](t)(h.Restock(bg, "e1", 10))
	r.deliver(nil)
	must[Reservation](t)(a.Reserve(bg, "e1", 1, time.Minute, Idem{}))
	r.deliver(nil)
	free := *r.item("a", "e1").Rights
	hv := r.item("h", "e1")
	want := hv.Available + free
	if free == 0 || want > 9 {
		t.Fatalf("a holds %d unused rights, the home %d available; the test needs both", free, hv.Available)
	}
	must[Cart](t)(h.AddItem(bg, "c1", "e1", want))
	order, err := h.Checkout(bg, "c1", time.Minute, fp("c1"))
	if err == nil {
		t.Logf("order %+v", order)
		return
	}
	t.Errorf("checkout of %d e1 (the home has %d available, a holds %d unused rights): %v", want, hv.Available, free, err)
	// A reservation of the same units at the same home recalls a's rights.
	if res, err := h.Reserve(bg, "e1", want, time.Minute, Idem{}); err == nil {
		t.Logf("a reservation of %d at the home then succeeds: %s", want, res.ID)
	}
}

// TestEscrowDamagedHomeItemKeepsGrants: the home's stored item of an
// escrow sku is damaged while another region holds rights to it; the
// stock came from restocks of a third region. A restock delta of that
// region must not become the home's whole view of the item: the home
// would no longer count the rights it granted nor the units it
// committed, and would reserve them again.
func TestEscrowDamagedHomeItemKeepsGrants(t *testing.T) {
	r := newEscrowRig(t)
	h, a, b := r.nodes["h"], r.nodes["a"], r.nodes["b"]
	must[Item](t)(b.Restock(bg, "e1", 10))
	r.deliver(nil)
	held := must[Reservation](t)(a.Reserve(bg, "e1", 1, time.Minute, Idem{}))
	r.deliver(nil)
	granted := *r.item("h", "e1").Granted
	var committed int64
	hv := r.item("h", "e1")
	res := must[Reservation](t)(h.Reserve(bg, "e1", hv.Available, time.Minute, Idem{}))
	if c := must[Reservation](t)(h.Commit(bg, res.ID, Idem{})); c.State == StateCommitted {
		committed += res.Qty
	}
	must[Item](t)(h.Restock(bg, "x1", 1)) // the damaged value is not in the last transaction
	r.deliver(nil)

	h.close()
	flipStoredByte(t, h.path, prefixItem+"e1")
	r.open("h")
	h = r.nodes["h"]
	if h.CatchingUp() {
		r.catchUp("h", "e1", "x1")
	}
	must[Item](t)(b.Restock(bg, "e1", 1))
	r.deliverAll()
	stock := int64(11)

	// a uses its rights (its hold and the rest), the home sells what it
	// has available.
	if c, err := a.Commit(bg, held.ID, Idem{}); err == nil && c.State == StateCommitted {
		committed += held.Qty
	}
	if rest := granted - held.Qty; rest > 0 {
		if x, err := a.Reserve(bg, "e1", rest, time.Minute, Idem{}); err == nil && strings.HasPrefix(x.ID, "a:") {
			if c, err := a.Commit(bg, x.ID, Idem{}); err == nil && c.State == StateCommitted {
				committed += x.Qty
			}
		}
	}
	if hv, err := h.GetItem(bg, "e1", false); err != nil {
		t.Logf("the home after the restock delta: %v", err)
	} else if hv.Available > 0 {
		t.Logf("the home after the restock delta: stock %d, granted %d, available %d (a holds %d granted)", hv.Stock, *hv.Granted, hv.Available, granted)
		x, err := h.Reserve(bg, "e1", hv.Available, time.Minute, Idem{})
		if err == nil {
			if c, err := h.Commit(bg, x.ID, Idem{}); err == nil && c.State == StateCommitted {
				committed += x.Qty
			}
		}
	}
	if committed > stock {
		t.Fatalf("%d units committed of a stock of %d", committed, stock)
	}
}
