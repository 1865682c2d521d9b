package region

import "sync"

// dueIndex remembers, for each sku with open holds at this home, the
// earliest expiry among them, so background expiry visits only skus that
// have something due instead of every ledger. It may be stale in either
// direction (a ledger write that did not commit, a hold released since);
// expiry re-reads the ledger in its own transaction, so staleness costs at
// most a wasted visit.
type dueIndex struct {
	mu  sync.Mutex
	exp map[string]int64 // sku → earliest hold expiry, Unix ms
}

// note records the ledger of sku as it is about to be stored.
func (d *dueIndex) note(sku string, l *ledger) {
	earliest := int64(-1)
	for _, h := range l.Holds {
		if earliest < 0 || h.ExpMs < earliest {
			earliest = h.ExpMs
		}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.exp == nil {
		d.exp = make(map[string]int64)
	}
	if earliest < 0 {
		delete(d.exp, sku)
		return
	}
	d.exp[sku] = earliest
}

// due returns the skus with a hold expiring at or before nowMs.
func (d *dueIndex) due(nowMs int64) []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []string
	for sku, e := range d.exp {
		if e <= nowMs {
			out = append(out, sku)
		}
	}
	return out
}

// buildDueIndex reads every ledger once, at start-up.
func (n *Node) buildDueIndex() error {
	return n.store.Scan(prefixLedger, func(k string, v []byte, err error) bool {
		if err != nil {
			return true
		}
		if l, err := parseLedger(v); err == nil {
			sku := k[len(prefixLedger):]
			n.due.note(sku, l)
			if !n.decides(n.HomeOf(sku), sku) {
				// Rights it may hold (of an escrow sku, or of one whose
				// escrow was turned off): returned when idle.
				n.noteEscrow(sku, 0)
			}
		}
		return true
	})
}
