package region

import (
	"context"
	"slices"
	"strings"

	"github.com/latticedb/lattice/crdt"
	"github.com/latticedb/lattice/region/store"
)

// Cart limits. MaxCartSKUs is SPEC §6's; MaxCartEntries bounds the entries
// one region lets a cart reach by local writes (every add is an entry until
// a set or remove folds them); in a cluster of more than four regions, or
// of long region names, cartLimits holds it lower.
const (
	MaxCartSKUs    = 1000
	MaxCartEntries = 4096
)

func (n *Node) cartView(id string, c *crdt.Cart) Cart {
	items := c.Items()
	if items == nil {
		items = []crdt.CartItem{}
	}
	return Cart{CartID: id, Region: string(n.name), Items: items}
}

// GetCart returns the cart as this region has it: what it has durably
// applied (see Node.view).
func (n *Node) GetCart(ctx context.Context, id string) (Cart, error) {
	if err := validateID("cart_id", id); err != nil {
		return Cart{}, err
	}
	if err := n.quorumRead(ctx, prefixCart+id, concernOf(ctx).quorum); err != nil {
		return Cart{}, err
	}
	var view Cart
	err := n.view(ctx, prefixCart+id, func(r store.Reader) error {
		if err := n.heldBackErr(prefixCart + id); err != nil {
			return err
		}
		c, err := loadCart(n.cartReader(r), id)
		view = n.cartView(id, c)
		return err
	})
	return view, n.storeErr(err)
}

// cartWrite applies the delta that mut computes from the current cart:
// from its head and the line of sku (every line if sku is ""), which is
// all the delta of an add, set or remove of sku depends on (see
// cartstore.go). mut also gets the cart's head, for its counts.
func (n *Node) cartWrite(ctx context.Context, id, sku string, mut func(c *crdt.Cart, h *crdt.CartHead) (*crdt.Cart, error)) (Cart, error) {
	if err := validateID("cart_id", id); err != nil {
		return Cart{}, err
	}
	var view Cart
	err := n.write(ctx, []string{prefixCart + id}, func(tx *store.Tx, g *crdt.Group) error {
		var (
			c   *crdt.Cart
			p   *cartPart
			err error
		)
		if err := n.heldBackErr(prefixCart + id); err != nil {
			return err
		}
		if sku == "" || n.carts.isDamaged(id) {
			c, p, err = n.loadWholeCart(tx, id)
		} else {
			c, p, err = loadCartLines(tx, id, []string{sku}, false, false)
		}
		if err != nil {
			return err
		}
		delta, err := mut(c, &p.head)
		if err != nil {
			return err
		}
		if c.Brings(delta) {
			c.Join(delta)
			if err := n.saveCart(tx, p, c); err != nil {
				return err
			}
			// The group is this write's own and delta is not used again,
			// so the group takes it rather than a copy (AddCart copies).
			g.Carts = map[string]*crdt.Cart{id: delta}
		}
		view = Cart{CartID: id, Region: string(n.name)}
		if !cartItemsWanted(ctx) {
			return nil
		}
		view.Items, err = n.cartItems(p, c)
		return err
	})
	return view, err
}

// cartItems returns the view of the cart that p was loaded as, now c (a
// part of it unless p holds every line): the lines p read from c, the
// others as stored.
func (n *Node) cartItems(p *cartPart, c *crdt.Cart) ([]crdt.CartItem, error) {
	if p.all {
		return n.cartView(p.id, c).Items, nil
	}
	part := c.Items()
	items := make([]crdt.CartItem, 0, p.head.Lines+len(part))
	prefix := cartLinesPrefix(p.id)
	var lerr error
	err := n.store.Scan(prefix, func(k string, v []byte, err error) bool {
		if _, loaded := p.lines[k[len(prefix):]]; loaded || len(v) == 0 {
			return true
		}
		if err != nil {
			lerr = corruptCart(p.id)
			return false
		}
		sku, q, err := crdt.CartLineQtyOf(v, k[len(prefix):])
		if err != nil || sku != k[len(prefix):] {
			lerr = corruptCart(p.id)
			return false
		}
		if q > 0 {
			items = append(items, crdt.CartItem{SKU: sku, Qty: q})
		}
		return true
	})
	if err == nil {
		err = lerr
	}
	items = append(items, part...)
	slices.SortFunc(items, func(a, b crdt.CartItem) int { return strings.Compare(a.SKU, b.SKU) })
	return items, err
}

// cartLimits returns the most entries a cart, and one of its lines, may
// reach by this region's writes: MaxCartEntries, or less in a cluster of
// many regions or long region names. Every region may add up to its limit
// concurrently before it sees the others' adds, so the cart the join
// makes holds up to the regions' count times it: the limits keep that
// within crdt.JoinCartEntries entries and each line within half of
// crdt.MaxObjectBytes (each entry repeats its replica id), so that no
// cluster's concurrent adds make a cart no region can read. A region that
// sees one region's new adds before another region's removal of its
// earlier ones holds more than that for a while; the codecs accept four
// times JoinCartEntries from a peer, and a stored head any honest count
// (crdt.MaxStoredCartEntries), so such a cart stays readable and takes
// the removals when they come.
func (n *Node) cartLimits() (entries, line int) {
	regions := n.Regions()
	longest := len(n.name)
	for _, p := range n.opts.PeerRegions {
		longest = max(longest, len(p))
	}
	// An entry in a stored line: its replica id (the region's name and an
	// incarnation of up to 20 digits), counter, kind and quantity, with
	// their heads; half of the object's bytes as margin.
	entryBytes := longest + 1 + 20 + 24
	entries = min(MaxCartEntries, crdt.JoinCartEntries/regions)
	line = min(entries, crdt.MaxObjectBytes/2/entryBytes/regions)
	return entries, line
}

// checkRoom refuses an entry of sku in a cart with head h whose line of
// sku is in c.
func (n *Node) checkRoom(c *crdt.Cart, h *crdt.CartHead, sku string) error {
	entries, line := n.cartLimits()
	if h.Entries >= entries {
		return Errorf(CodeCartFull, "cart holds %d entries; set the quantity of a line to fold its entries", h.Entries)
	}
	if c.LineEntries(sku) >= line {
		return Errorf(CodeCartFull, "the line of %s holds %d entries; set its quantity to fold them", sku, c.LineEntries(sku))
	}
	if !c.Has(sku) && h.Lines >= MaxCartSKUs {
		return Errorf(CodeCartFull, "cart holds %d distinct skus, the most allowed", MaxCartSKUs)
	}
	return nil
}

func validQty(field string, q, lo int64) error {
	if q < lo || q > crdt.MaxQty {
		return InvalidField(field, "%s must be an integer from %d to %d", field, lo, crdt.MaxQty)
	}
	return nil
}

// AddItem adds qty units of sku to the cart.
func (n *Node) AddItem(ctx context.Context, id, sku string, qty int64) (Cart, error) {
	if err := validateID("sku", sku); err != nil {
		return Cart{}, err
	}
	if err := validQty("qty", qty, 1); err != nil {
		return Cart{}, err
	}
	return n.cartWrite(ctx, id, sku, func(c *crdt.Cart, h *crdt.CartHead) (*crdt.Cart, error) {
		if err := n.checkRoom(c, h, sku); err != nil {
			return nil, err
		}
		return c.Add(n.self, sku, qty), nil
	})
}

// SetItem sets the quantity of sku; 0 removes it.
func (n *Node) SetItem(ctx context.Context, id, sku string, qty int64) (Cart, error) {
	if err := validateID("sku", sku); err != nil {
		return Cart{}, err
	}
	if err := validQty("qty", qty, 0); err != nil {
		return Cart{}, err
	}
	return n.cartWrite(ctx, id, sku, func(c *crdt.Cart, h *crdt.CartHead) (*crdt.Cart, error) {
		if qty > 0 {
			if err := n.checkRoom(c, h, sku); err != nil && !c.Has(sku) {
				return nil, err
			}
		}
		return c.Set(n.self, sku, qty), nil
	})
}

// RemoveItem removes every observed entry of sku.
func (n *Node) RemoveItem(ctx context.Context, id, sku string) (Cart, error) {
	if err := validateID("sku", sku); err != nil {
		return Cart{}, err
	}
	return n.cartWrite(ctx, id, sku, func(c *crdt.Cart, _ *crdt.CartHead) (*crdt.Cart, error) { return c.Remove(sku), nil })
}

// ClearCart removes every observed entry of the cart.
func (n *Node) ClearCart(ctx context.Context, id string) (Cart, error) {
	return n.cartWrite(ctx, id, "", func(c *crdt.Cart, _ *crdt.CartHead) (*crdt.Cart, error) { return c.Clear(), nil })
}
