package crdt

// Concurrent reports whether joining delta d into c combines edits of one
// line made at two regions: d has an entry for a sku that c also holds
// an entry for, from another region, which d's context does not cover (d
// neither replaced nor removed it). The join keeps both entries — the
// line's quantity is their merge, never a lost update. Operators count
// these merges to see how often two regions edit one cart line.
func (c *Cart) Concurrent(d *Cart) bool {
	for dd, dl := range d.Entries {
		for cd, cl := range c.Entries {
			if cl.SKU == dl.SKU && cd.Replica.Region() != dd.Replica.Region() && !d.Ctx.Contains(cd) {
				return true
			}
		}
	}
	return false
}
