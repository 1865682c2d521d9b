package crdt

import (
	"cmp"
	"encoding/binary"
	"fmt"
	"slices"
)

// A cart may be stored split: its head (CartHead: the causal context, how
// many entries and lines it holds and a hash of its entries) under one
// key, and each of its lines (the entries of one sku) under a key of its
// own. An operation then rewrites the head and the lines it changes, not
// the whole cart. The head determines the cart's state hash: two carts
// with the same entries and context have the same head, and two carts
// whose entries differ have different entry hashes (Sum, the XOR of
// EntryHash over the entries, which an add or a remove updates without
// reading the other entries) but for a 2⁻⁶⁴ chance.
//
//	head  [1, context, entries, lines, sum]      context as in AppendContext
//	line  [sku, [[replica, counter, kind, n]...]] entries by replica, counter

// CartHead is the part of a split-stored cart kept apart from its lines:
// its causal context, the number of its entries and of its lines (skus
// with at least one entry), and Sum, the XOR of EntryHash over its
// entries.
type CartHead struct {
	Ctx     Context
	Entries int
	Lines   int
	Sum     uint64
}

// headFormat is the first element of an encoded head; an encoded cart
// starts with a replica record (an array) instead.
const headFormat = 1

// EntryHash returns the hash of one cart entry, as CartHead.Sum XORs it:
// FNV-1a 64 over the entry's dot and line, with a final mix so that the
// XOR of many hashes keeps every bit.
func EntryHash(d Dot, l Line) uint64 {
	h := NewFNV64()
	h.String(string(d.Replica))
	h.Byte(0)
	var buf [8]byte
	binary.LittleEndian.PutUint64(buf[:], d.Counter)
	h.Bytes(buf[:])
	h.String(l.SKU)
	h.Byte(0)
	h.Byte(byte(l.Kind))
	binary.LittleEndian.PutUint64(buf[:], uint64(l.N))
	h.Bytes(buf[:])
	x := uint64(h)
	x ^= x >> 33
	x *= 0xff51afd7ed558ccd
	x ^= x >> 33
	x *= 0xc4ceb9fe1a85ec53
	x ^= x >> 33
	return x
}

// HeadOf returns the head of the cart c.
func HeadOf(c *Cart) CartHead {
	h := CartHead{Ctx: c.Ctx.Clone(), Entries: len(c.Entries)}
	skus := make(map[string]struct{})
	for d, l := range c.Entries {
		h.Sum ^= EntryHash(d, l)
		skus[l.SKU] = struct{}{}
	}
	h.Lines = len(skus)
	return h
}

// AppendCartHead appends the canonical encoding of h to b and returns the
// extended slice.
func AppendCartHead(b []byte, h *CartHead) []byte {
	b = appendArray(b, 5)
	b = appendUint(b, headFormat)
	b = AppendContext(b, &h.Ctx)
	b = appendUint(b, uint64(h.Entries))
	b = appendUint(b, uint64(h.Lines))
	return appendUint(b, h.Sum)
}

// EncodeCartHead returns the canonical encoding of h.
func EncodeCartHead(h *CartHead) []byte { return AppendCartHead(nil, h) }

// DecodeCartHead decodes and validates a head that this process encoded
// with EncodeCartHead and kept behind an integrity check of its own (see
// DecodeCartStored). A whole encoded cart is not a head and is refused.
func DecodeCartHead(b []byte) (*CartHead, error) {
	if err := checkSize(b, MaxObjectBytes); err != nil {
		return nil, err
	}
	p := parser{b: b} // decodeStored's would move to the heap
	h, err := p.cartHead()
	if err == nil {
		err = p.end()
	}
	if err != nil {
		return nil, err
	}
	return h, nil
}

// CartHeadCounts decodes and validates a head as DecodeCartHead does,
// accepting exactly the heads it accepts, and returns its counts of
// entries and lines and its sum without building its context, and so
// without allocating; HeadContextOf reads the context from b.
func CartHeadCounts(b []byte) (entries, lines int, sum uint64, err error) {
	if err := checkSize(b, MaxObjectBytes); err != nil {
		return 0, 0, 0, err
	}
	p := parser{b: b}
	e, l, sum, err := p.cartHeadCounts()
	if err == nil {
		err = p.end()
	}
	if err != nil {
		return 0, 0, 0, err
	}
	return int(e), int(l), sum, nil
}

// cartHeadCounts is cartHead without the context: it validates the
// context's records as cart does those of a cart without entries.
func (p *parser) cartHeadCounts() (entries, lines, sum uint64, err error) {
	if _, err := p.array(headShape); err != nil {
		return 0, 0, 0, err
	}
	f, err := p.uint()
	if err != nil {
		return 0, 0, 0, err
	}
	if f != headFormat {
		return 0, 0, 0, fmt.Errorf("crdt: cart head: unknown format %d", f)
	}
	n, err := p.array(cartShape)
	if err != nil {
		return 0, 0, 0, err
	}
	var last []byte
	for i := range n {
		if _, err := p.array(replShape); err != nil {
			return 0, 0, 0, err
		}
		rep, err := p.textBytes()
		if err != nil {
			return 0, 0, 0, err
		}
		if !validReplica(ReplicaID(rep)) {
			return 0, 0, 0, fmt.Errorf("crdt: cart: invalid replica id %q", rep)
		}
		if i > 0 && string(last) >= string(rep) {
			return 0, 0, 0, fmt.Errorf("crdt: cart: replicas not strictly sorted at %q", rep)
		}
		last = rep
		vv, err := p.uint()
		if err != nil {
			return 0, 0, 0, err
		}
		if vv > MaxCounter {
			return 0, 0, 0, fmt.Errorf("crdt: cart: version vector of %q out of range", rep)
		}
		nc, err := p.array(cloudShape)
		if err != nil {
			return 0, 0, 0, err
		}
		prev := vv + 1
		for range nc {
			k, err := p.uint()
			if err != nil {
				return 0, 0, 0, err
			}
			if k <= prev || k > MaxCounter {
				return 0, 0, 0, fmt.Errorf("crdt: cart: cloud dot %s:%d is covered, unsorted or out of range", rep, k)
			}
			prev = k
		}
		ne, err := p.array(entriesShape)
		if err != nil {
			return 0, 0, 0, err
		}
		if ne > 0 {
			return 0, 0, 0, fmt.Errorf("crdt: cart head: context holds entries")
		}
		if vv == 0 && nc == 0 {
			return 0, 0, 0, fmt.Errorf("crdt: cart: replica %q has an empty record", rep)
		}
	}
	if entries, err = p.uint(); err != nil {
		return 0, 0, 0, err
	}
	if lines, err = p.uint(); err != nil {
		return 0, 0, 0, err
	}
	if sum, err = p.uint(); err != nil {
		return 0, 0, 0, err
	}
	if entries > MaxStoredCartEntries || lines > entries || (entries > 0) != (lines > 0) {
		return 0, 0, 0, fmt.Errorf("crdt: cart head: %d entries in %d lines", entries, lines)
	}
	return entries, lines, sum, nil
}

// HeadContext is the context of an encoded head that CartHeadCounts
// accepted, read from the encoding without decoding it: Contains answers
// as the decoded context's Contains. The usual context, one replica's
// version vector alone, answers without reading the encoding again.
type HeadContext struct {
	b   []byte
	one bool // the context is every dot of rep up to vv, and no other
	rep []byte
	vv  uint64
}

// HeadContextOf returns the context of the head b, which CartHeadCounts
// accepted.
func HeadContextOf(b []byte) HeadContext {
	h := HeadContext{b: b}
	p := parser{b: b}
	if _, err := p.array(headShape); err != nil {
		return h
	}
	if _, err := p.uint(); err != nil {
		return h
	}
	if n, err := p.array(cartShape); err != nil || n != 1 {
		return h
	}
	if _, err := p.array(replShape); err != nil {
		return h
	}
	rep, err := p.textBytes()
	if err != nil {
		return h
	}
	vv, err := p.uint()
	if err != nil {
		return h
	}
	if nc, err := p.array(cloudShape); err != nil || nc != 0 {
		return h
	}
	h.one, h.rep, h.vv = true, rep, vv
	return h
}

// Contains reports whether the context holds d.
func (h *HeadContext) Contains(d Dot) bool {
	if h.one {
		return d.Counter == 0 || d.Counter <= h.vv && string(h.rep) == string(d.Replica)
	}
	return headContains(h.b, d)
}

// headContains reports whether the context of the head b holds d,
// reading it from b; false for b that does not decode.
func headContains(b []byte, d Dot) bool {
	p := parser{b: b}
	if _, err := p.array(headShape); err != nil {
		return false
	}
	if _, err := p.uint(); err != nil {
		return false
	}
	n, err := p.array(cartShape)
	if err != nil {
		return false
	}
	for range n {
		if _, err := p.array(replShape); err != nil {
			return false
		}
		rep, err := p.textBytes()
		if err != nil {
			return false
		}
		vv, err := p.uint()
		if err != nil {
			return false
		}
		nc, err := p.array(cloudShape)
		if err != nil {
			return false
		}
		mine := string(rep) == string(d.Replica)
		if mine && d.Counter <= vv {
			return true
		}
		for range nc {
			k, err := p.uint()
			if err != nil {
				return false
			}
			if mine && k == d.Counter {
				return true
			}
		}
		if mine {
			return false
		}
		if _, err := p.array(entriesShape); err != nil {
			return false
		}
	}
	return d.Counter == 0
}

var (
	headShape      = &shape{name: "cart head", major: majorArray, fields: []*shape{uintShape, cartShape, uintShape, uintShape, uintShape}}
	lineEntryShape = &shape{name: "line entry", major: majorArray, fields: []*shape{textShape, uintShape, uintShape, intShape}}
	// A line is only ever stored (the wire carries whole carts), and
	// stored it may hold a join's entries past what a peer's cart may
	// (MaxStoredCartEntries).
	lineShape = &shape{name: "cart line", major: majorArray, fields: []*shape{textShape, arrayOf(lineEntryShape, MaxStoredCartEntries)}}
)

// MaxStoredLineBytes bounds a stored line (the region's own checksummed
// value): a join whose removals lag behind its adds may take a line past
// a peer's object (MaxObjectBytes), and every line of any honest size is
// read.
const MaxStoredLineBytes = 64 << 20

func (p *parser) cartHead() (*CartHead, error) {
	if _, err := p.array(headShape); err != nil {
		return nil, err
	}
	f, err := p.uint()
	if err != nil {
		return nil, err
	}
	if f != headFormat {
		return nil, fmt.Errorf("crdt: cart head: unknown format %d", f)
	}
	c, err := p.cart()
	if err != nil {
		return nil, err
	}
	if len(c.Entries) > 0 {
		return nil, fmt.Errorf("crdt: cart head: context holds entries")
	}
	entries, err := p.uint()
	if err != nil {
		return nil, err
	}
	lines, err := p.uint()
	if err != nil {
		return nil, err
	}
	sum, err := p.uint()
	if err != nil {
		return nil, err
	}
	if entries > MaxStoredCartEntries || lines > entries || (entries > 0) != (lines > 0) {
		return nil, fmt.Errorf("crdt: cart head: %d entries in %d lines", entries, lines)
	}
	return &CartHead{Ctx: c.Ctx, Entries: int(entries), Lines: int(lines), Sum: sum}, nil
}

// AppendCartLine appends the canonical encoding of one line of a cart, the
// entries of sku (every entry's Line.SKU must be sku), to b and returns
// the extended slice.
func AppendCartLine(b []byte, sku string, entries map[Dot]Line) []byte {
	ds := make([]Dot, 0, len(entries))
	for d := range entries {
		ds = append(ds, d)
	}
	slices.SortFunc(ds, func(a, b Dot) int {
		if c := cmp.Compare(a.Replica, b.Replica); c != 0 {
			return c
		}
		return cmp.Compare(a.Counter, b.Counter)
	})
	b = appendArray(b, 2)
	b = appendText(b, sku)
	b = appendArray(b, len(ds))
	for _, d := range ds {
		l := entries[d]
		b = appendArray(b, 4)
		b = appendText(b, string(d.Replica))
		b = appendUint(b, d.Counter)
		b = appendUint(b, uint64(l.Kind))
		b = appendInt(b, l.N)
	}
	return b
}

// DecodeCartLine decodes and validates a line that this process encoded
// with AppendCartLine and kept behind an integrity check of its own: a
// valid sku and one or more entries, sorted, well formed and in range.
// Whether the entries are in the cart's context is for the caller to
// check, against the head.
func DecodeCartLine(b []byte) (string, map[Dot]Line, error) {
	return DecodeCartLineOf(b, "")
}

// DecodeCartLineOf is DecodeCartLine of a line expected to hold sku: the
// sku it returns is then sku itself rather than a copy read from b.
func DecodeCartLineOf(b []byte, sku string) (string, map[Dot]Line, error) {
	var entries map[Dot]Line
	got, err := decodeLine(b, sku, func(d Dot, l Line) {
		if entries == nil {
			entries = make(map[Dot]Line, 2)
		}
		entries[d] = l
	})
	if err != nil {
		return "", nil, err
	}
	return got, entries, nil
}

// VisitCartLine decodes and validates a line as DecodeCartLineOf does and
// calls visit for each of its entries, without keeping them.
func VisitCartLine(b []byte, sku string, visit func(Dot, Line)) (string, error) {
	return decodeLine(b, sku, visit)
}

// ReplicaCache remembers the replica of the last entry of a line that
// VisitCartLineFrom read, once validated: the entries of the next lines
// that hold the same replica then cost neither a copy of its id nor its
// validation. The zero ReplicaCache remembers none.
type ReplicaCache struct {
	id ReplicaID // valid (validReplica) unless ""
}

// VisitCartLineFrom is VisitCartLine where a replica equal to the one c
// remembers is that one itself, already validated; c remembers the
// replica of the line's last entry.
func VisitCartLineFrom(b []byte, sku string, c *ReplicaCache, visit func(Dot, Line)) (string, error) {
	if err := checkSize(b, MaxStoredLineBytes); err != nil {
		return "", err
	}
	p := parser{b: b}
	got, r, err := p.cartLineFrom(sku, c.id, visit)
	if err == nil {
		err = p.end()
	}
	if err != nil {
		return "", err
	}
	c.id = r
	return got, nil
}

// CartLineQty decodes and validates a line as DecodeCartLine does and
// returns its sku and quantity (see Cart), without keeping its entries.
func CartLineQty(b []byte) (string, int64, error) {
	return CartLineQtyOf(b, "")
}

// CartLineQtyOf is CartLineQty of a line expected to hold sku, as
// DecodeCartLineOf is DecodeCartLine's.
func CartLineQtyOf(b []byte, sku string) (string, int64, error) {
	var set, add int64
	got, err := decodeLine(b, sku, func(_ Dot, l Line) {
		if l.Kind == KindSet {
			set = max(set, l.N)
		} else {
			add += l.N
		}
	})
	return got, set + add, err
}

// decodeLine is decodeStored of a line, on a parser that stays on the
// stack.
func decodeLine(b []byte, want string, visit func(Dot, Line)) (string, error) {
	if err := checkSize(b, MaxStoredLineBytes); err != nil {
		return "", err
	}
	p := parser{b: b}
	sku, err := p.cartLine(want, visit)
	if err == nil {
		err = p.end()
	}
	if err != nil {
		return "", err
	}
	return sku, nil
}

// cartLine reads and validates a line, calling visit for each entry; a
// sku equal to want is want itself.
func (p *parser) cartLine(want string, visit func(Dot, Line)) (string, error) {
	sku, _, err := p.cartLineFrom(want, "", visit)
	return sku, err
}

// cartLineFrom is cartLine where a replica equal to valid, a valid
// replica id or "", is valid itself; it returns the replica of the last
// entry.
func (p *parser) cartLineFrom(want string, valid ReplicaID, visit func(Dot, Line)) (string, ReplicaID, error) {
	if _, err := p.array(lineShape); err != nil {
		return "", "", err
	}
	sku, err := p.textOr(want)
	if err != nil {
		return "", "", err
	}
	if !ValidID(sku) {
		return "", "", fmt.Errorf("crdt: cart line: invalid sku %q", sku)
	}
	n, err := p.array(lineShape.fields[1])
	if err != nil {
		return "", "", err
	}
	if n == 0 {
		return "", "", fmt.Errorf("crdt: cart line %q without entries", sku)
	}
	var last Dot
	for i := range n {
		if _, err := p.array(lineEntryShape); err != nil {
			return "", "", err
		}
		r, err := p.textOr(string(valid)) // one string for a replica's entries
		if err != nil {
			return "", "", err
		}
		k, err := p.uint()
		if err != nil {
			return "", "", err
		}
		kind, err := p.uint8()
		if err != nil {
			return "", "", err
		}
		q, err := p.int64()
		if err != nil {
			return "", "", err
		}
		d := Dot{ReplicaID(r), k}
		switch {
		case (d.Replica != valid || valid == "") && !validReplica(d.Replica):
			return "", "", fmt.Errorf("crdt: cart line: invalid replica id %q", r)
		case k == 0 || k > MaxCounter:
			return "", "", fmt.Errorf("crdt: cart line: entry %s out of range", d)
		case i > 0 && !last.Less(d):
			return "", "", fmt.Errorf("crdt: cart line: entry %s unsorted or duplicated", d)
		case LineKind(kind) != KindAdd && LineKind(kind) != KindSet:
			return "", "", fmt.Errorf("crdt: cart line: entry %s has unknown kind %d", d, kind)
		case q < 1 || q > MaxQty:
			return "", "", fmt.Errorf("crdt: cart line: entry %s has quantity %d outside 1..%d", d, q, MaxQty)
		}
		last, valid = d, d.Replica
		visit(d, Line{SKU: sku, Kind: LineKind(kind), N: q})
	}
	return sku, valid, nil
}
