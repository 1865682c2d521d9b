package crdt

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"slices"

	"github.com/fxamacker/cbor/v2"
)

// Decoding limits. They are well below the CBOR library's defaults; a
// value over any of them is refused before it is joined anywhere.
const (
	// MaxObjectBytes bounds one encoded cart or item.
	MaxObjectBytes = 1 << 20
	// MaxGroupBytes bounds one encoded delta-group.
	MaxGroupBytes = 4 << 20
	// MaxGroupKeys bounds the keys of one delta-group.
	MaxGroupKeys = 16384
	maxNesting   = 12
	maxArray     = 16384
	maxMapPairs  = 256
)

var (
	encMode cbor.EncMode
	decMode cbor.DecMode
)

func init() {
	var err error
	eo := cbor.CoreDetEncOptions()
	eo.NilContainers = cbor.NilContainerAsEmpty
	if encMode, err = eo.EncMode(); err != nil {
		panic(err)
	}
	decMode, err = cbor.DecOptions{
		DupMapKey:         cbor.DupMapKeyEnforcedAPF,
		MaxNestedLevels:   maxNesting,
		MaxArrayElements:  maxArray,
		MaxMapPairs:       maxMapPairs,
		IndefLength:       cbor.IndefLengthForbidden,
		TagsMd:            cbor.TagsForbidden,
		ExtraReturnErrors: cbor.ExtraDecErrorUnknownField,
		UTF8:              cbor.UTF8RejectInvalid,
	}.DecMode()
	if err != nil {
		panic(err)
	}
}

// ErrNonCanonical is returned for a value that decodes but is not in the
// canonical encoding (unsorted, duplicated, uncompacted or non-minimal).
var ErrNonCanonical = errors.New("crdt: non-canonical encoding")

// Marshal encodes v with Lattice's deterministic CBOR options. It is for
// messages that embed carts, items or groups.
func Marshal(v any) ([]byte, error) { return encMode.Marshal(v) }

// Unmarshal decodes b into v with the strict decoding options (limits,
// duplicate map keys and unknown fields rejected, no tags, no
// indefinite lengths). b longer than maxBytes is refused unread.
func Unmarshal(b []byte, v any, maxBytes int) error {
	if len(b) > maxBytes {
		return fmt.Errorf("crdt: message of %d bytes exceeds limit of %d", len(b), maxBytes)
	}
	if err := decMode.Unmarshal(b, v); err != nil {
		return fmt.Errorf("crdt: decode: %w", err)
	}
	return nil
}

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

// shape describes a wire type for a check that runs before the typed
// decoder: the decoder allocates every array it meets at its declared
// length, even when the elements turn out to be of the wrong type, so an
// ill-typed input of a few megabytes could make it allocate over a hundred
// times its size. check walks the input without allocating and refuses any
// item of the wrong major type, any struct array with the wrong number of
// fields and any array over its limit, so the decoder only allocates for
// well-typed input, a small multiple of its size.
type shape struct {
	name   string
	major  byte     // CBOR major type: 0 unsigned, 3 text, 4 array
	signed bool     // an integer that may also be negative (major 1)
	fields []*shape // a toarray struct: exactly these fields
	elem   *shape   // an array of elements of this shape
	max    int      // most elements of an elem array
}

var (
	uintShape  = &shape{name: "unsigned integer", major: 0}
	intShape   = &shape{name: "integer", major: 0, signed: true}
	textShape  = &shape{name: "text string", major: 3}
	entryShape = &shape{name: "cart entry", major: 4, fields: []*shape{uintShape, textShape, uintShape, intShape}}
	replShape  = &shape{name: "cart replica record", major: 4, fields: []*shape{textShape, uintShape, arrayOf(uintShape, maxArray), arrayOf(entryShape, maxArray)}}
	cartShape  = arrayOf(replShape, MaxReplicas)
	ctrShape   = &shape{name: "counter record", major: 4, fields: []*shape{textShape, uintShape, uintShape}}
	itemShape  = &shape{name: "item", major: 4, fields: []*shape{arrayOf(ctrShape, MaxReplicas), uintShape, textShape, intShape}}
	groupShape = &shape{name: "group", major: 4, fields: []*shape{arrayOf(gCartShape, MaxGroupKeys), arrayOf(gItemShape, MaxGroupKeys)}}
	gCartShape = &shape{name: "group cart", major: 4, fields: []*shape{textShape, cartShape}}
	gItemShape = &shape{name: "group item", major: 4, fields: []*shape{textShape, itemShape}}
)

func arrayOf(elem *shape, max int) *shape {
	return &shape{name: "array of " + elem.name, major: 4, elem: elem, max: max}
}

// check reports whether b is one data item of shape s and nothing else.
func (s *shape) check(b []byte) error {
	end, err := s.scan(b, 0)
	if err != nil {
		return fmt.Errorf("crdt: decode: %w", err)
	}
	if end != len(b) {
		return fmt.Errorf("crdt: decode: extraneous data at byte %d", end)
	}
	return nil
}

var errTruncated = errors.New("unexpected EOF")

// scan checks the data item at b[i:] against s and returns where it ends.
func (s *shape) scan(b []byte, i int) (int, error) {
	at := i
	if i >= len(b) {
		return 0, errTruncated
	}
	major, info := b[i]>>5, b[i]&0x1f
	i++
	var arg uint64
	switch {
	case info < 24:
		arg = uint64(info)
	case info <= 27:
		n := 1 << (info - 24)
		if len(b)-i < n {
			return 0, errTruncated
		}
		for _, c := range b[i : i+n] {
			arg = arg<<8 | uint64(c)
		}
		i += n
	case info == 31 && major >= 2 && major <= 5:
		return 0, fmt.Errorf("indefinite-length item at byte %d", at)
	default:
		return 0, fmt.Errorf("malformed item at byte %d", at)
	}
	if major != s.major && !(s.signed && major == 1) {
		what := [8]string{"unsigned integer", "negative integer", "byte string", "text string", "array", "map", "tag", "simple value or float"}[major]
		return 0, fmt.Errorf("%s expected at byte %d, found %s", s.name, at, what)
	}
	switch major {
	case 3:
		if arg > uint64(len(b)-i) {
			return 0, errTruncated
		}
		return i + int(arg), nil
	case 4:
		if s.fields != nil && arg != uint64(len(s.fields)) {
			return 0, fmt.Errorf("%s of %d fields expected at byte %d, found %d", s.name, len(s.fields), at, arg)
		}
		if s.elem != nil && arg > uint64(s.max) {
			return 0, fmt.Errorf("%s of %d elements at byte %d exceeds limit of %d", s.name, arg, at, s.max)
		}
		if arg > uint64(len(b)-i) { // every element takes a byte at least
			return 0, errTruncated
		}
		for k := range int(arg) {
			sub := s.elem
			if s.fields != nil {
				sub = s.fields[k]
			}
			var err error
			if i, err = sub.scan(b, i); err != nil {
				return 0, err
			}
		}
	}
	return i, nil
}

func mustMarshal(v any) []byte {
	b, err := encMode.Marshal(v)
	if err != nil {
		// The wire types hold only strings, integers and slices of them.
		panic(fmt.Sprintf("crdt: encode: %v", err))
	}
	return b
}

// decode is the one decoding path: size limit, shape check, strict CBOR,
// validation by conv, then a canonical check (the value must re-encode to
// b exactly).
func decode[W any, V any](b []byte, limit int, sh *shape, conv func(*W) (V, error), enc func(V) []byte) (V, error) {
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

// EncodeCart returns the canonical encoding of c.
func EncodeCart(c *Cart) []byte { return mustMarshal(c.toWire()) }

// DecodeCart decodes and validates a canonical cart encoding.
func DecodeCart(b []byte) (*Cart, error) {
	return decode(b, MaxObjectBytes, cartShape, func(w *[]wireCartReplica) (*Cart, error) { return cartFromWire(*w) }, EncodeCart)
}

// EncodeItem returns the canonical encoding of it.
func EncodeItem(it *Item) []byte { return mustMarshal(it.toWire()) }

// DecodeItem decodes and validates a canonical item encoding.
func DecodeItem(b []byte) (*Item, error) {
	return decode(b, MaxObjectBytes, itemShape, itemFromWire, EncodeItem)
}

// EncodeGroup returns the canonical encoding of g.
func EncodeGroup(g *Group) []byte { return mustMarshal(g.toWire()) }

// DecodeGroup decodes and validates a canonical delta-group encoding.
func DecodeGroup(b []byte) (*Group, error) {
	return decode(b, MaxGroupBytes, groupShape, groupFromWire, EncodeGroup)
}

// MarshalCBOR lets a Group travel inside other CBOR messages.
func (g *Group) MarshalCBOR() ([]byte, error) { return EncodeGroup(g), nil }

// UnmarshalCBOR decodes a Group with the same limits and validation as
// DecodeGroup.
func (g *Group) UnmarshalCBOR(b []byte) error {
	v, err := DecodeGroup(b)
	if err != nil {
		return err
	}
	*g = *v
	return nil
}
