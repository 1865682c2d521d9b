package region

import (
	"errors"
	"fmt"

	"github.com/latticedb/lattice/crdt"
	"github.com/latticedb/lattice/region/store"
)

// A cart or item whose stored value is damaged takes only a whole state
// from a peer (applyCart, applyItems). The deltas it receives meanwhile
// are not dropped: the region claims their dots in its applied context
// (tokens promise them, peers adopt that context), so it must hold them.
// They are joined into one state kept under "p/" + the key, written in the
// transaction that claims them; the whole state that repairs the key is
// joined with it, and the pending value is then left empty and deleted in
// the background (a store transaction may not both set keys and delete
// one). Its lock is its key's (lockKey).

// pendingState is what holdPending kept for a damaged key: a cart or an
// item.
type pendingState struct {
	cart *crdt.Cart
	item *crdt.Item
}

// holdPending joins the delta (a cart or an item) into what is kept for
// the damaged key.
func (n *Node) holdPending(tx *store.Tx, key string, c *crdt.Cart, it *crdt.Item) error {
	held, err := n.readPending(tx, key)
	if err != nil {
		return err
	}
	switch {
	case c != nil:
		cur := &crdt.Cart{}
		if held != nil && held.cart != nil {
			cur = held.cart
		}
		cur.Join(c)
		b := crdt.EncodeCart(cur)
		if len(b) > crdt.MaxRecordBytes {
			// Kept, it could not be read back: the delta is refused
			// (not claimed; it comes again, or the repair brings it).
			return fmt.Errorf("region: the deltas kept for damaged key %s would take %d bytes, past %d", key, len(b), crdt.MaxRecordBytes)
		}
		tx.Set(prefixPending+key, b)
	case it != nil:
		cur := &crdt.Item{}
		if held != nil && held.item != nil {
			cur = held.item
		}
		cur.Join(it)
		tx.Set(prefixPending+key, crdt.EncodeItem(cur))
	}
	n.m.PendingDeltas.Inc()
	return nil
}

// takePending returns what is kept for the damaged key (nil if nothing)
// and leaves it empty, to be deleted once the transaction is done.
func (n *Node) takePending(tx *store.Tx, key string) (*pendingState, error) {
	held, err := n.readPending(tx, key)
	if err != nil {
		return nil, err
	}
	pk := prefixPending + key
	if held == nil {
		// Nothing kept, or a kept value that is damaged or does not
		// decode (readPending dropped it): that one is emptied too, so
		// that it leaves the store's damaged keys.
		b, ok, err := tx.Get(pk)
		if !errors.Is(err, store.ErrCorrupt) && (err != nil || !ok || len(b) == 0) {
			return nil, nil
		}
	}
	tx.Set(pk, []byte{})
	n.carts.mu.Lock()
	n.carts.blank[pk] = struct{}{}
	n.carts.mu.Unlock()
	select {
	case n.carts.kick <- struct{}{}:
	default:
	}
	return held, nil
}

// readPending reads what is kept for key. A kept value that is damaged
// too is logged and taken as nothing: the deltas it held are lost here
// (the whole state that repairs the key may hold them).
func (n *Node) readPending(tx *store.Tx, key string) (*pendingState, error) {
	pk := prefixPending + key
	b, ok, err := tx.Get(pk)
	switch {
	case err != nil && errors.Is(err, store.ErrCorrupt):
		n.log.Error("the deltas kept for a damaged key are damaged too; they are dropped", "key", key)
		return nil, nil
	case err != nil:
		return nil, err
	case !ok || len(b) == 0:
		return nil, nil
	}
	if _, isCart := cutCartKey(key); isCart {
		// A whole cart, which may be larger than a peer's object: read
		// within what holdPending writes.
		c, err := crdt.DecodeCartStoredUpTo(b, crdt.MaxRecordBytes)
		if err != nil {
			n.log.Error("the deltas kept for a damaged key do not decode; they are dropped", "key", key, "err", err)
			return nil, nil
		}
		return &pendingState{cart: c}, nil
	}
	it, err := crdt.DecodeItemStored(b)
	if err != nil {
		n.log.Error("the deltas kept for a damaged key do not decode; they are dropped", "key", key, "err", err)
		return nil, nil
	}
	return &pendingState{item: it}, nil
}

func cutCartKey(key string) (string, bool) {
	if len(key) > len(prefixCart) && key[:len(prefixCart)] == prefixCart {
		return key[len(prefixCart):], true
	}
	return "", false
}
