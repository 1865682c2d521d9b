package crdt

import (
	"slices"
)

// Group is a delta-group: deltas (or whole states) of carts and items,
// keyed by cart id and sku, joined per key. A Group is itself a valid
// state of the key space, so joining groups is the same operation as
// joining states.
type Group struct {
	Carts map[string]*Cart
	Items map[string]*Item
}

// AddCart joins the cart delta d into the group under id. It copies d.
func (g *Group) AddCart(id string, d *Cart) {
	if g.Carts == nil {
		g.Carts = make(map[string]*Cart)
	}
	if cur, ok := g.Carts[id]; ok {
		cur.Join(d)
		return
	}
	g.Carts[id] = d.Clone()
}

// AddItem joins the item delta d into the group under sku. It copies d.
func (g *Group) AddItem(sku string, d *Item) {
	if g.Items == nil {
		g.Items = make(map[string]*Item)
	}
	if cur, ok := g.Items[sku]; ok {
		cur.Join(d)
		return
	}
	g.Items[sku] = d.Clone()
}

// Join joins every key of o into g. It does not keep references to o.
func (g *Group) Join(o *Group) {
	for id, c := range o.Carts {
		g.AddCart(id, c)
	}
	for sku, it := range o.Items {
		g.AddItem(sku, it)
	}
}

// Len returns the number of keys in the group.
func (g *Group) Len() int { return len(g.Carts) + len(g.Items) }

// CloudDotMem is about what one cloud dot of a decoded cart's context
// holds in memory (an entry of a map of dots, with the map's slack), for
// one to five bytes of encoding: a bound that estimates a decoded group's
// memory from its encoding adds it per dot (CloudDots).
const CloudDotMem = 96

// KeyMem is about what one decoded key of a group holds that its
// encoding does not tell: the cart or item and the first slots of its
// maps, some 600 B for an item of one replica record (16 B encoded).
const KeyMem = 640

// DecodedMem estimates what g holds decoded beyond a few times the bytes
// of its encoding: KeyMem a key and CloudDotMem a cloud dot. A bound on
// decoded groups counts it beside a multiple of their encoding.
func (g *Group) DecodedMem() int { return KeyMem*g.Len() + CloudDotMem*g.CloudDots() }

// CloudDots returns how many dots the carts of g hold in their contexts'
// clouds: the part of a decoded group whose memory its encoding does not
// tell, each dot a few bytes there and CloudDotMem here.
func (g *Group) CloudDots() int {
	n := 0
	for _, c := range g.Carts {
		n += len(c.Ctx.Cloud)
	}
	return n
}

// Clone returns a deep copy of g.
func (g *Group) Clone() *Group {
	out := &Group{}
	out.Join(g)
	return out
}

// Keys returns the cart ids and skus of the group.
func (g *Group) Keys() (carts, items []string) {
	return sortedKeys(g.Carts), sortedKeys(g.Items)
}

// sortedKeys returns m's keys sorted, in one allocation of their number
// (none for an empty m).
func sortedKeys[V any](m map[string]V) []string {
	if len(m) == 0 {
		return nil
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
