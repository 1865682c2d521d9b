package region

import (
	"context"

	"github.com/latticedb/lattice/crdt"
	"github.com/latticedb/lattice/region/store"
)

// Cart limits. MaxCartSKUs is SPEC §6's; MaxCartEntries bounds the entries
// one region lets a cart reach by local writes (every add is an entry until
// a set or remove folds them), keeping a cart from three regions well
// inside the decoder's crdt.MaxCartEntries.
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
		c, err := loadCart(r, id)
		view = n.cartView(id, c)
		return err
	})
	return view, n.storeErr(err)
}

// cartWrite applies the delta that mut computes from the current cart.
func (n *Node) cartWrite(ctx context.Context, id string, mut func(c *crdt.Cart) (*crdt.Cart, error)) (Cart, error) {
	if err := validateID("cart_id", id); err != nil {
		return Cart{}, err
	}
	var view Cart
	err := n.write(ctx, []string{prefixCart + id}, func(tx *store.Tx, g *crdt.Group) error {
		c, err := loadCart(tx, id)
		if err != nil {
			return err
		}
		delta, err := mut(c)
		if err != nil {
			return err
		}
		if c.Brings(delta) {
			c.Join(delta)
			tx.Set(prefixCart+id, crdt.EncodeCart(c))
			// The group is this write's own and delta is not used again,
			// so the group takes it rather than a copy (AddCart copies).
			g.Carts = map[string]*crdt.Cart{id: delta}
		}
		view = n.cartView(id, c)
		return nil
	})
	return view, err
}

func checkRoom(c *crdt.Cart, sku string) error {
	if len(c.Entries) >= MaxCartEntries {
		return Errorf(CodeCartFull, "cart holds %d entries; set the quantity of a line to fold its entries", len(c.Entries))
	}
	if c.Has(sku) || len(c.Entries) < MaxCartSKUs {
		return nil // fewer entries than the most skus allowed
	}
	skus := make(map[string]struct{})
	for _, l := range c.Entries {
		skus[l.SKU] = struct{}{}
	}
	if len(skus) >= MaxCartSKUs {
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
	return n.cartWrite(ctx, id, func(c *crdt.Cart) (*crdt.Cart, error) {
		if err := checkRoom(c, sku); err != nil {
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
	return n.cartWrite(ctx, id, func(c *crdt.Cart) (*crdt.Cart, error) {
		if qty > 0 {
			if err := checkRoom(c, sku); err != nil && !c.Has(sku) {
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
	return n.cartWrite(ctx, id, func(c *crdt.Cart) (*crdt.Cart, error) { return c.Remove(sku), nil })
}

// ClearCart removes every observed entry of the cart.
func (n *Node) ClearCart(ctx context.Context, id string) (Cart, error) {
	return n.cartWrite(ctx, id, func(c *crdt.Cart) (*crdt.Cart, error) { return c.Clear(), nil })
}
