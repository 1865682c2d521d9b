package crdt

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"slices"
)

// The reference codec: the reflection-based implementation the
// hand-written encoders and parser replaced, through the CBOR library's
// typed encoder and decoder and the wire structs below. Tests check that
// the production codec produces the same bytes and accepts, refuses and
// decodes exactly the same inputs.

func refEncodeContext(c *Context) []byte { return refEncodeCart(&Cart{Ctx: *c}) }

type wireEntry struct {
	_       struct{} `cbor:",toarray"`
	Counter uint64
	SKU     string
	Kind    uint8
	N       int64
}

// wireCartReplica is everything a cart holds of one replica: its version
// vector entry, its cloud counters and its entries.
type wireCartReplica struct {
	_       struct{} `cbor:",toarray"`
	Replica string
	VV      uint64
	Cloud   []uint64
	Entries []wireEntry
}

type wireCounter struct {
	_       struct{} `cbor:",toarray"`
	Replica string
	P       uint64
	N       uint64
}

type wireItem struct {
	_       struct{} `cbor:",toarray"`
	Stock   []wireCounter
	Version uint64
	Writer  string
	Held    int64
}

type wireGroupCart struct {
	_    struct{} `cbor:",toarray"`
	ID   string
	Cart []wireCartReplica
}

type wireGroupItem struct {
	_    struct{} `cbor:",toarray"`
	SKU  string
	Item wireItem
}

type wireGroup struct {
	_     struct{} `cbor:",toarray"`
	Carts []wireGroupCart
	Items []wireGroupItem
}

func (c *Cart) toWire() []wireCartReplica {
	byReplica := make(map[ReplicaID][]wireEntry)
	for d, l := range c.Entries {
		byReplica[d.Replica] = append(byReplica[d.Replica], wireEntry{Counter: d.Counter, SKU: l.SKU, Kind: uint8(l.Kind), N: l.N})
	}
	// One pass over the cloud, not one per replica.
	clouds := make(map[ReplicaID][]uint64)
	for d := range c.Ctx.Cloud {
		clouds[d.Replica] = append(clouds[d.Replica], d.Counter)
	}
	reps := c.Ctx.Replicas()
	for r := range byReplica {
		if !slices.Contains(reps, r) {
			reps = append(reps, r)
		}
	}
	slices.Sort(reps)
	out := make([]wireCartReplica, 0, len(reps))
	for _, r := range reps {
		es := byReplica[r]
		slices.SortFunc(es, func(a, b wireEntry) int { return cmpU64(a.Counter, b.Counter) })
		cloud := clouds[r]
		slices.Sort(cloud)
		out = append(out, wireCartReplica{Replica: string(r), VV: c.Ctx.VV[r], Cloud: cloud, Entries: es})
	}
	return out
}

func cmpU64(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func cartFromWire(w []wireCartReplica) (*Cart, error) {
	if len(w) > MaxReplicas {
		return nil, fmt.Errorf("crdt: cart names %d replicas, limit %d", len(w), MaxReplicas)
	}
	c := &Cart{}
	total := 0
	for i, rec := range w {
		r := ReplicaID(rec.Replica)
		if !validReplica(r) {
			return nil, fmt.Errorf("crdt: cart: invalid replica id %q", rec.Replica)
		}
		if i > 0 && w[i-1].Replica >= rec.Replica {
			return nil, fmt.Errorf("crdt: cart: replicas not strictly sorted at %q", rec.Replica)
		}
		if rec.VV > MaxCounter {
			return nil, fmt.Errorf("crdt: cart: version vector of %q out of range", rec.Replica)
		}
		if rec.VV > 0 {
			if c.Ctx.VV == nil {
				c.Ctx.VV = make(map[ReplicaID]uint64, len(w))
			}
			c.Ctx.VV[r] = rec.VV
		}
		prev := rec.VV + 1
		for _, k := range rec.Cloud {
			if k <= prev || k > MaxCounter {
				return nil, fmt.Errorf("crdt: cart: cloud dot %s:%d is covered, unsorted or out of range", rec.Replica, k)
			}
			if c.Ctx.Cloud == nil {
				c.Ctx.Cloud = make(map[Dot]struct{})
			}
			c.Ctx.Cloud[Dot{r, k}] = struct{}{}
			prev = k
		}
		total += len(rec.Entries)
		if total > MaxCartEntries {
			return nil, fmt.Errorf("crdt: cart holds more than %d entries", MaxCartEntries)
		}
		var last uint64
		for _, e := range rec.Entries {
			d := Dot{r, e.Counter}
			if e.Counter <= last {
				return nil, fmt.Errorf("crdt: cart: entry %s unsorted or duplicated", d)
			}
			last = e.Counter
			if !c.Ctx.Contains(d) {
				return nil, fmt.Errorf("crdt: cart: entry %s is not in the causal context", d)
			}
			if !ValidID(e.SKU) {
				return nil, fmt.Errorf("crdt: cart: entry %s has invalid sku %q", d, e.SKU)
			}
			if LineKind(e.Kind) != KindAdd && LineKind(e.Kind) != KindSet {
				return nil, fmt.Errorf("crdt: cart: entry %s has unknown kind %d", d, e.Kind)
			}
			if e.N < 1 || e.N > MaxQty {
				return nil, fmt.Errorf("crdt: cart: entry %s has quantity %d outside 1..%d", d, e.N, MaxQty)
			}
			if c.Entries == nil {
				c.Entries = make(map[Dot]Line)
			}
			c.Entries[d] = Line{SKU: e.SKU, Kind: LineKind(e.Kind), N: e.N}
		}
		if rec.VV == 0 && len(rec.Cloud) == 0 {
			return nil, fmt.Errorf("crdt: cart: replica %q has an empty record", rec.Replica)
		}
	}
	return c, nil
}

func (it *Item) toWire() wireItem {
	reps := make(map[ReplicaID]struct{})
	for r := range it.Stock.P {
		reps[r] = struct{}{}
	}
	for r := range it.Stock.N {
		reps[r] = struct{}{}
	}
	w := wireItem{Version: it.Held.Version, Writer: string(it.Held.Replica), Held: it.Held.Value}
	for _, r := range slices.Sorted(maps.Keys(reps)) {
		p, n := it.Stock.P[r], it.Stock.N[r]
		if p == 0 && n == 0 {
			continue
		}
		w.Stock = append(w.Stock, wireCounter{Replica: string(r), P: p, N: n})
	}
	return w
}

func itemFromWire(w *wireItem) (*Item, error) {
	if len(w.Stock) > MaxReplicas {
		return nil, fmt.Errorf("crdt: item names %d replicas, limit %d", len(w.Stock), MaxReplicas)
	}
	it := &Item{}
	for i, rec := range w.Stock {
		r := ReplicaID(rec.Replica)
		if !validReplica(r) {
			return nil, fmt.Errorf("crdt: item: invalid replica id %q", rec.Replica)
		}
		if i > 0 && w.Stock[i-1].Replica >= rec.Replica {
			return nil, fmt.Errorf("crdt: item: replicas not strictly sorted at %q", rec.Replica)
		}
		if rec.P > MaxCount || rec.N > MaxCount {
			return nil, fmt.Errorf("crdt: item: counter of %q out of range", rec.Replica)
		}
		if rec.P == 0 && rec.N == 0 {
			return nil, fmt.Errorf("crdt: item: replica %q has an empty record", rec.Replica)
		}
		if rec.P > 0 {
			if it.Stock.P == nil {
				it.Stock.P = make(map[ReplicaID]uint64, len(w.Stock))
			}
			it.Stock.P[r] = rec.P
		}
		if rec.N > 0 {
			if it.Stock.N == nil {
				it.Stock.N = make(map[ReplicaID]uint64, len(w.Stock))
			}
			it.Stock.N[r] = rec.N
		}
	}
	switch {
	case w.Version == 0 && (w.Writer != "" || w.Held != 0):
		return nil, errors.New("crdt: item: held units without a version")
	case w.Version > MaxCounter:
		return nil, errors.New("crdt: item: held version out of range")
	case w.Version > 0 && !validReplica(ReplicaID(w.Writer)):
		return nil, fmt.Errorf("crdt: item: invalid held writer %q", w.Writer)
	case w.Held < 0 || w.Held > MaxCount:
		return nil, fmt.Errorf("crdt: item: held units %d out of range", w.Held)
	}
	it.Held = Register{Version: w.Version, Replica: ReplicaID(w.Writer), Value: w.Held}
	return it, nil
}

func (g *Group) toWire() wireGroup {
	carts, items := g.Keys()
	w := wireGroup{Carts: make([]wireGroupCart, 0, len(carts)), Items: make([]wireGroupItem, 0, len(items))}
	for _, id := range carts {
		w.Carts = append(w.Carts, wireGroupCart{ID: id, Cart: g.Carts[id].toWire()})
	}
	for _, sku := range items {
		w.Items = append(w.Items, wireGroupItem{SKU: sku, Item: g.Items[sku].toWire()})
	}
	return w
}

func groupFromWire(w *wireGroup) (*Group, error) {
	if len(w.Carts)+len(w.Items) > MaxGroupKeys {
		return nil, fmt.Errorf("crdt: group holds more than %d keys", MaxGroupKeys)
	}
	g := &Group{}
	for i, wc := range w.Carts {
		if !ValidID(wc.ID) {
			return nil, fmt.Errorf("crdt: group: invalid cart id %q", wc.ID)
		}
		if i > 0 && w.Carts[i-1].ID >= wc.ID {
			return nil, fmt.Errorf("crdt: group: cart ids not strictly sorted at %q", wc.ID)
		}
		c, err := cartFromWire(wc.Cart)
		if err != nil {
			return nil, fmt.Errorf("%w (cart %q)", err, wc.ID)
		}
		if g.Carts == nil {
			g.Carts = make(map[string]*Cart, len(w.Carts))
		}
		g.Carts[wc.ID] = c
	}
	for i := range w.Items {
		wi := &w.Items[i]
		if !ValidID(wi.SKU) {
			return nil, fmt.Errorf("crdt: group: invalid sku %q", wi.SKU)
		}
		if i > 0 && w.Items[i-1].SKU >= wi.SKU {
			return nil, fmt.Errorf("crdt: group: skus not strictly sorted at %q", wi.SKU)
		}
		it, err := itemFromWire(&wi.Item)
		if err != nil {
			return nil, fmt.Errorf("%w (sku %q)", err, wi.SKU)
		}
		if g.Items == nil {
			g.Items = make(map[string]*Item, len(w.Items))
		}
		g.Items[wi.SKU] = it
	}
	return g, nil
}

func mustMarshal(v any) []byte {
	b, err := encMode.Marshal(v)
	if err != nil {
		// The wire types hold only strings, integers and slices of them.
		panic(fmt.Sprintf("crdt: encode: %v", err))
	}
	return b
}

// refDecode is the reflection-based decoding path: size limit, shape check, strict CBOR,
// validation by conv, then a canonical check (the value must re-encode to
// b exactly).
func refDecode[W any, V any](b []byte, limit int, sh *shape, conv func(*W) (V, error), enc func(V) []byte) (V, error) {
	var zero V
	var w W
	if len(b) <= limit {
		if err := sh.check(b); err != nil {
			return zero, err
		}
	}
	if err := Unmarshal(b, &w, limit); err != nil {
		return zero, err
	}
	v, err := conv(&w)
	if err != nil {
		return zero, err
	}
	if !bytes.Equal(enc(v), b) {
		return zero, ErrNonCanonical
	}
	return v, nil
}

// refEncodeCart returns the canonical encoding of c.
func refEncodeCart(c *Cart) []byte { return mustMarshal(c.toWire()) }

// refDecodeCart decodes and validates a canonical cart encoding.
func refDecodeCart(b []byte) (*Cart, error) {
	return refDecode(b, MaxObjectBytes, cartShape, func(w *[]wireCartReplica) (*Cart, error) { return cartFromWire(*w) }, refEncodeCart)
}

// refEncodeItem returns the canonical encoding of it.
func refEncodeItem(it *Item) []byte { return mustMarshal(it.toWire()) }

// refDecodeItem decodes and validates a canonical item encoding.
func refDecodeItem(b []byte) (*Item, error) {
	return refDecode(b, MaxObjectBytes, itemShape, itemFromWire, refEncodeItem)
}

// refEncodeGroup returns the canonical encoding of g.
func refEncodeGroup(g *Group) []byte { return mustMarshal(g.toWire()) }

// refDecodeGroup decodes and validates a canonical delta-group encoding.
func refDecodeGroup(b []byte) (*Group, error) {
	return refDecode(b, MaxGroupBytes, groupShape, groupFromWire, refEncodeGroup)
}
