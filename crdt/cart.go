package crdt

import (
	"maps"
	"slices"
	"strings"
)

// Quantity limits of SPEC §6.
const (
	// MaxQty bounds the n of an add and the q of a set.
	MaxQty = 1_000_000
	// MaxCartEntries bounds the entries a decoded cart may carry (a state
	// or delta from another region). It is four times what every
	// region's writes together may make a cart hold (JoinCartEntries), so
	// that a join in which removals lag behind the adds they removed — a
	// region that sees one region's new adds before another region's
	// removal of its earlier ones — still decodes.
	MaxCartEntries = 4 * JoinCartEntries
	// JoinCartEntries bounds the entries a cart may reach by the writes
	// of all regions together, each writing up to its share of it
	// before it sees the others' adds (region.Node's cart limits).
	JoinCartEntries = 16384
	// MaxStoredCartEntries bounds the entries a stored cart head counts.
	// A stored head is the region's own checksummed record, not another
	// region's input: its bound is only a sanity check, far past any
	// count a join of honest writes reaches, so that a cart whose
	// removals lag behind its adds stays readable (and takes its
	// removals when they come) instead of being taken for damaged.
	MaxStoredCartEntries = 1 << 24
)

// LineKind tells an add entry from a set entry.
type LineKind uint8

// Line entry kinds.
const (
	KindAdd LineKind = 1
	KindSet LineKind = 2
)

// Line is the payload of one cart entry: the sku and what the operation
// that made it contributes to the sku's quantity.
type Line struct {
	SKU  string
	Kind LineKind
	N    int64
}

// Cart is an add-wins observed-remove set of line entries without
// tombstones (an ORSWOT over dots): Entries maps the dot of each surviving
// operation to its line, and Ctx holds every dot the cart has seen, so a
// dot in Ctx but not in Entries was removed.
//
// The quantity of a sku is max(n of its set entries, or 0) plus the sum of
// its add entries; a sku with quantity ≤ 0 is not in the cart. Metadata is
// O(live entries + replicas): removed entries leave only their dot in Ctx,
// which compacts into the version vector.
//
// The zero Cart is empty and ready to use.
type Cart struct {
	Entries map[Dot]Line
	Ctx     Context
}

// CartItem is one line of the cart's view.
type CartItem struct {
	SKU string `json:"sku"`
	Qty int64  `json:"qty"`
}

func (c *Cart) dotsOf(sku string) []Dot {
	var ds []Dot
	for d, l := range c.Entries {
		if l.SKU == sku {
			ds = append(ds, d)
		}
	}
	return ds
}

func newDelta(removed []Dot) *Cart {
	delta := &Cart{}
	if len(removed) == 0 {
		return delta
	}
	// All at once, compacted once: inserting one by one compacts the
	// whole cloud at each dot out of order (quadratic in a large cart).
	delta.Ctx.Cloud = make(map[Dot]struct{}, len(removed))
	for _, d := range removed {
		delta.Ctx.Cloud[d] = struct{}{}
	}
	delta.Ctx.Compact()
	return delta
}

func (c *Cart) insert(delta *Cart, r ReplicaID, l Line) {
	d := c.Ctx.Next(r)
	if delta.Entries == nil {
		delta.Entries = make(map[Dot]Line, 1)
	}
	delta.Entries[d] = l
	delta.Ctx.Insert(d)
}

// Add returns the delta of adding n (≥ 1) units of sku at replica r: one
// new add entry.
func (c *Cart) Add(r ReplicaID, sku string, n int64) *Cart {
	delta := &Cart{}
	c.insert(delta, r, Line{SKU: sku, Kind: KindAdd, N: n})
	return delta
}

// Set returns the delta of setting sku to q (≥ 0) at replica r: every
// observed entry of sku is removed and, if q > 0, one set entry inserted.
func (c *Cart) Set(r ReplicaID, sku string, q int64) *Cart {
	delta := newDelta(c.dotsOf(sku))
	if q > 0 {
		c.insert(delta, r, Line{SKU: sku, Kind: KindSet, N: q})
	}
	return delta
}

// Remove returns the delta of removing every observed entry of sku.
func (c *Cart) Remove(sku string) *Cart { return newDelta(c.dotsOf(sku)) }

// Clear returns the delta of removing every observed entry of the cart.
func (c *Cart) Clear() *Cart { return newDelta(slices.Collect(maps.Keys(c.Entries))) }

// RemoveObserved returns the delta that removes exactly the given entries
// (for example the lines a checkout read); entries added since survive.
func (c *Cart) RemoveObserved(dots []Dot) *Cart { return newDelta(dots) }

// Join makes c the join of c and o: an entry survives if both sides hold
// it, or if one side holds it and the other has not seen its dot. It does
// not keep references to o.
func (c *Cart) Join(o *Cart) {
	for d := range c.Entries {
		if _, ok := o.Entries[d]; !ok && o.Ctx.Contains(d) {
			delete(c.Entries, d)
		}
	}
	for d, l := range o.Entries {
		if _, ok := c.Entries[d]; ok || c.Ctx.Contains(d) {
			continue
		}
		if c.Entries == nil {
			c.Entries = make(map[Dot]Line, len(o.Entries))
		}
		c.Entries[d] = l
	}
	if len(c.Entries) == 0 {
		c.Entries = nil
	}
	c.Ctx.Join(&o.Ctx)
}

// Brings reports whether joining delta into c would change c: the delta
// holds a dot c has not seen, or removes an entry c holds.
func (c *Cart) Brings(delta *Cart) bool {
	if !c.Ctx.Covers(&delta.Ctx) {
		return true
	}
	for d := range c.Entries {
		if _, ok := delta.Entries[d]; !ok && delta.Ctx.Contains(d) {
			return true
		}
	}
	return false
}

// Qty returns the quantity of sku in the cart (≤ 0 means absent).
func (c *Cart) Qty(sku string) int64 {
	var set, add int64
	for _, l := range c.Entries {
		if l.SKU != sku {
			continue
		}
		switch l.Kind {
		case KindSet:
			set = max(set, l.N)
		case KindAdd:
			add += l.N
		}
	}
	return set + add
}

// Items returns the cart's view: every sku with quantity > 0, sorted by
// sku.
func (c *Cart) Items() []CartItem {
	ls := make([]Line, 0, len(c.Entries))
	for _, l := range c.Entries {
		ls = append(ls, l)
	}
	slices.SortFunc(ls, func(a, b Line) int { return strings.Compare(a.SKU, b.SKU) })
	items := []CartItem{}
	for i := 0; i < len(ls); {
		sku := ls[i].SKU
		var set, add int64
		for ; i < len(ls) && ls[i].SKU == sku; i++ {
			switch l := ls[i]; l.Kind {
			case KindSet:
				set = max(set, l.N)
			case KindAdd:
				add += l.N
			}
		}
		if q := set + add; q > 0 {
			items = append(items, CartItem{SKU: sku, Qty: q})
		}
	}
	return items
}

// Has reports whether sku currently has at least one entry in the cart.
func (c *Cart) Has(sku string) bool {
	for _, l := range c.Entries {
		if l.SKU == sku {
			return true
		}
	}
	return false
}

// LineEntries returns how many of the cart's entries are of sku.
func (c *Cart) LineEntries(sku string) int {
	n := 0
	for _, l := range c.Entries {
		if l.SKU == sku {
			n++
		}
	}
	return n
}

// Dots returns the dots of the cart's entries for the given skus (all
// entries when skus is empty), sorted.
func (c *Cart) Dots(skus ...string) []Dot {
	var ds []Dot
	for d, l := range c.Entries {
		if len(skus) == 0 || slices.Contains(skus, l.SKU) {
			ds = append(ds, d)
		}
	}
	slices.SortFunc(ds, compareDots)
	return ds
}

// Clone returns a deep copy of c.
func (c *Cart) Clone() *Cart {
	return &Cart{Entries: maps.Clone(c.Entries), Ctx: c.Ctx.Clone()}
}

// Empty reports whether c holds neither entries nor context.
func (c *Cart) Empty() bool { return len(c.Entries) == 0 && c.Ctx.Empty() }

// Conflicts returns the dots that c and o both hold as entries with
// different lines, sorted. Dots are unique per replica, so a conflict
// means some replica issued one dot twice: a divergence that joins keep
// (each side keeps its own entry) and nothing repairs.
func (c *Cart) Conflicts(o *Cart) []Dot {
	var out []Dot
	for d, l := range o.Entries {
		if mine, ok := c.Entries[d]; ok && mine != l {
			out = append(out, d)
		}
	}
	slices.SortFunc(out, compareDots)
	return out
}
