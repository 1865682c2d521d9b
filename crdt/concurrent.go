package crdt

import "slices"

// Concurrent reports whether joining delta d into c combines edits of one
// line made at two regions: d has an entry for a sku that c also holds
// an entry for, from another region, which d's context does not cover (d
// neither replaced nor removed it). The join keeps both entries — the
// line's quantity is their merge, never a lost update. Operators count
// these merges to see how often two regions edit one cart line.
func (c *Cart) Concurrent(d *Cart) bool {
	if len(d.Entries)*len(c.Entries) <= 4096 {
		for dd, dl := range d.Entries {
			for cd, cl := range c.Entries {
				if cl.SKU == dl.SKU && cd.Replica.Region() != dd.Replica.Region() && !d.Ctx.Contains(cd) {
					return true
				}
			}
		}
		return false
	}
	// Large carts: the regions of d's entries by sku, then one pass over
	// c's entries (linear, where the loops above are |c|·|d|).
	regions := make(map[string][]string, len(d.Entries))
	for dd, dl := range d.Entries {
		r := dd.Replica.Region()
		if !slices.Contains(regions[dl.SKU], r) {
			regions[dl.SKU] = append(regions[dl.SKU], r)
		}
	}
	for cd, cl := range c.Entries {
		rs, ok := regions[cl.SKU]
		if !ok || d.Ctx.Contains(cd) {
			continue
		}
		cr := cd.Replica.Region()
		for _, r := range rs {
			if r != cr {
				return true
			}
		}
	}
	return false
}
