package crdt

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"unicode/utf8"
)

// parser reads the canonical encodings of encode.go element by element,
// checking each against its shape, and validates the values as it builds
// them, so that it allocates only for what it has accepted so far. It
// notes any head that is not in its shortest form; the decoders refuse
// such input as non-canonical once nothing else is wrong with it.
type parser struct {
	b    []byte
	i    int
	wide bool // some head was not in its shortest form

	// cloudCap, if positive, bounds the cloud dots cart keeps one by one
	// (a causal token's context, ParseToken): past it a replica's cloud is
	// kept as its highest dot, in ceil, and the context is raised to its
	// ceiling (Context.Ceil) at the end. Such a parse takes no entries,
	// unless ceilEntries: then an entry of a replica whose cloud was
	// capped is taken if its dot is at most the replica's highest cloud
	// dot (which the ceiling covers).
	cloudCap    int
	clouds      int
	ceil        []Dot
	ceilEntries bool
}

// next reads the head of the item at p.i, which must be of shape s, and
// returns its major type and argument.
func (p *parser) next(s *shape) (byte, uint64, error) {
	at := p.i
	major, arg, next, short, err := head(p.b, at)
	if err == nil {
		err = s.accepts(major, at)
	}
	if err != nil {
		return 0, 0, fmt.Errorf("crdt: decode: %w", err)
	}
	p.i = next
	p.wide = p.wide || !short
	return major, arg, nil
}

// array reads the head of an array of shape s and returns its length.
func (p *parser) array(s *shape) (int, error) {
	// The common case first: a length in the head byte, within bounds.
	if p.i < len(p.b) {
		if c := p.b[p.i]; c>>5 == majorArray && c&0x1f < 24 && s.major == majorArray {
			n := int(c & 0x1f)
			if (s.fields == nil || n <= len(s.fields) && n >= len(s.fields)-s.optional) &&
				(s.elem == nil || n <= s.max) && n <= len(p.b)-p.i-1 {
				p.i++
				return n, nil
			}
		}
	}
	at := p.i
	_, n, err := p.next(s)
	if err != nil {
		return 0, err
	}
	if err := s.length(n, at, len(p.b)-p.i); err != nil {
		return 0, fmt.Errorf("crdt: decode: %w", err)
	}
	return int(n), nil
}

func (p *parser) uint() (uint64, error) {
	if p.i < len(p.b) && p.b[p.i] < 24 { // majorUint, the value in the head
		v := p.b[p.i]
		p.i++
		return uint64(v), nil
	}
	_, n, err := p.next(uintShape)
	return n, err
}

func (p *parser) uint8() (uint8, error) {
	at := p.i
	n, err := p.uint()
	if err == nil && n > math.MaxUint8 {
		err = fmt.Errorf("crdt: decode: unsigned integer at byte %d overflows uint8", at)
	}
	return uint8(n), err
}

func (p *parser) int64() (int64, error) {
	if p.i < len(p.b) && p.b[p.i] < 24 { // majorUint, the value in the head
		v := p.b[p.i]
		p.i++
		return int64(v), nil
	}
	at := p.i
	major, n, err := p.next(intShape)
	switch {
	case err != nil:
		return 0, err
	case n > math.MaxInt64:
		return 0, fmt.Errorf("crdt: decode: integer at byte %d overflows int64", at)
	case major == majorNeg:
		return -1 - int64(n), nil
	}
	return int64(n), nil
}

func (p *parser) text() (string, error) {
	s, err := p.textBytes()
	return string(s), err
}

// textOr reads a text string as text does, returning want itself when it
// holds want's bytes (so that a string the caller has already costs no
// copy).
func (p *parser) textOr(want string) (string, error) {
	s, err := p.textBytes()
	if err == nil && string(s) == want {
		return want, nil
	}
	return string(s), err
}

// textBytes reads a text string and returns its bytes, in p.b.
func (p *parser) textBytes() ([]byte, error) {
	// The common case first: a length in the head byte, within bounds.
	if p.i < len(p.b) {
		if c := p.b[p.i]; c>>5 == majorText && c&0x1f < 24 {
			if i, j := p.i+1, p.i+1+int(c&0x1f); j <= len(p.b) && validUTF8(p.b[i:j]) {
				p.i = j
				return p.b[i:j], nil
			}
		}
	}
	at := p.i
	_, n, err := p.next(textShape)
	if err != nil {
		return nil, err
	}
	if n > uint64(len(p.b)-p.i) {
		return nil, fmt.Errorf("crdt: decode: %w", errTruncated)
	}
	s := p.b[p.i : p.i+int(n)]
	if !utf8.Valid(s) {
		return nil, fmt.Errorf("crdt: decode: invalid UTF-8 in text string at byte %d", at)
	}
	p.i += int(n)
	return s, nil
}

// validUTF8 is utf8.Valid, faster on the short ASCII strings of ids.
func validUTF8(s []byte) bool {
	for _, c := range s {
		if c >= utf8.RuneSelf {
			return utf8.Valid(s)
		}
	}
	return true
}

// decodeStored is the decoding path without the canonical check: size
// limit, then parse runs over all of b and validates what it reads. Input
// with heads that are not in their shortest form is refused as
// non-canonical.
func decodeStored[V any](b []byte, limit int, parse func(*parser) (V, error)) (V, error) {
	var zero V
	if err := checkSize(b, limit); err != nil {
		return zero, err
	}
	p := parser{b: b}
	v, err := parse(&p)
	if err == nil {
		err = p.end()
	}
	if err != nil {
		return zero, err
	}
	return v, nil
}

// end checks that a stored value's parse read all of it, in shortest
// form.
func (p *parser) end() error {
	if p.i != len(p.b) {
		return fmt.Errorf("crdt: decode: extraneous data at byte %d", p.i)
	}
	if p.wide {
		return ErrNonCanonical
	}
	return nil
}

// decodeStrict is decodeStored followed by the canonical check: the value
// must re-encode to b exactly.
func decodeStrict[V any](b []byte, limit int, parse func(*parser) (V, error), enc func([]byte, V) []byte) (V, error) {
	v, err := decodeStored(b, limit, parse)
	if err != nil {
		return v, err
	}
	if !bytes.Equal(enc(make([]byte, 0, len(b)), v), b) {
		var zero V
		return zero, ErrNonCanonical
	}
	return v, nil
}

// cart reads and validates a cart: replica records sorted by replica, none
// empty, with version-vector entries and cloud dots in range, clouds
// sorted and compact, and entries sorted, well formed and in the causal
// context.
func (p *parser) cart() (*Cart, error) {
	n, err := p.array(cartShape)
	if err != nil {
		return nil, err
	}
	c := &Cart{}
	total := 0
	var last string
	for i := range n {
		if _, err := p.array(replShape); err != nil {
			return nil, err
		}
		rep, err := p.text()
		if err != nil {
			return nil, err
		}
		r := ReplicaID(rep)
		if !validReplica(r) {
			return nil, fmt.Errorf("crdt: cart: invalid replica id %q", rep)
		}
		if i > 0 && last >= rep {
			return nil, fmt.Errorf("crdt: cart: replicas not strictly sorted at %q", rep)
		}
		last = rep
		vv, err := p.uint()
		if err != nil {
			return nil, err
		}
		if vv > MaxCounter {
			return nil, fmt.Errorf("crdt: cart: version vector of %q out of range", rep)
		}
		if vv > 0 {
			if c.Ctx.VV == nil {
				c.Ctx.VV = make(map[ReplicaID]uint64, p.hint(n-i, minRecordBytes))
			}
			c.Ctx.VV[r] = vv
		}
		nc, err := p.array(cloudShape)
		if err != nil {
			return nil, err
		}
		prev := vv + 1
		capped := false
		for range nc {
			k, err := p.uint()
			if err != nil {
				return nil, err
			}
			if k <= prev || k > MaxCounter {
				return nil, fmt.Errorf("crdt: cart: cloud dot %s:%d is covered, unsorted or out of range", rep, k)
			}
			prev = k
			if p.cloudCap > 0 && p.clouds >= p.cloudCap {
				capped = true
				continue
			}
			p.clouds++
			if c.Ctx.Cloud == nil {
				c.Ctx.Cloud = make(map[Dot]struct{})
			}
			c.Ctx.Cloud[Dot{r, k}] = struct{}{}
		}
		if capped {
			p.ceil = append(p.ceil, Dot{r, prev})
		}
		ne, err := p.array(entriesShape)
		if err != nil {
			return nil, err
		}
		if ne > 0 && len(p.ceil) > 0 && !p.ceilEntries {
			return nil, errors.New("crdt: context holds entries")
		}
		total += ne
		if total > MaxCartEntries {
			return nil, fmt.Errorf("crdt: cart holds more than %d entries", MaxCartEntries)
		}
		var lastCounter uint64
		for range ne {
			d, l, err := p.entry(r)
			if err != nil {
				return nil, err
			}
			if d.Counter <= lastCounter {
				return nil, fmt.Errorf("crdt: cart: entry %s unsorted or duplicated", d)
			}
			lastCounter = d.Counter
			if d.Counter > vv && !c.Ctx.Contains(d) && !(capped && d.Counter <= prev) {
				return nil, fmt.Errorf("crdt: cart: entry %s is not in the causal context", d)
			}
			if !ValidID(l.SKU) {
				return nil, fmt.Errorf("crdt: cart: entry %s has invalid sku %q", d, l.SKU)
			}
			if l.Kind != KindAdd && l.Kind != KindSet {
				return nil, fmt.Errorf("crdt: cart: entry %s has unknown kind %d", d, l.Kind)
			}
			if l.N < 1 || l.N > MaxQty {
				return nil, fmt.Errorf("crdt: cart: entry %s has quantity %d outside 1..%d", d, l.N, MaxQty)
			}
			if c.Entries == nil {
				c.Entries = make(map[Dot]Line, entriesHint(ne, n-i, len(p.b)-p.i))
			}
			c.Entries[d] = l
		}
		if vv == 0 && nc == 0 {
			return nil, fmt.Errorf("crdt: cart: replica %q has an empty record", rep)
		}
	}
	return c, nil
}

// minRecordBytes is less than the size of the smallest valid replica
// record of a context or a counter, or escrow record: an array head, a
// replica id of one byte and two more heads.
const minRecordBytes = 4

// hint bounds a map's size hint for n records still to read by what the
// input left could hold, so that input declaring more records than it
// carries does not size a map beyond valid input of its length.
func (p *parser) hint(n, minBytes int) int {
	return max(0, min(n, (len(p.b)-p.i)/minBytes+1))
}

// minEntryBytes is the size of the smallest valid cart entry: an array
// head, a counter, a sku of one byte, a kind and a quantity.
const minEntryBytes = 6

// entriesHint guesses how many entries a cart holds from the first record
// that has any (ne entries, with records to go, counting its own): as
// many in each record. The guess never exceeds MaxCartEntries nor what the
// rest bytes of input could hold, so input that declares more entries
// than it carries does not make the map larger than valid input of its
// size would.
func entriesHint(ne, records, rest int) int {
	return min(ne*records, rest/minEntryBytes+1, MaxCartEntries)
}

// entry reads one cart entry of replica r, unvalidated.
func (p *parser) entry(r ReplicaID) (Dot, Line, error) {
	var d Dot
	var l Line
	if _, err := p.array(entryShape); err != nil {
		return d, l, err
	}
	k, err := p.uint()
	if err != nil {
		return d, l, err
	}
	d = Dot{r, k}
	if l.SKU, err = p.text(); err != nil {
		return d, l, err
	}
	kind, err := p.uint8()
	if err != nil {
		return d, l, err
	}
	l.Kind = LineKind(kind)
	l.N, err = p.int64()
	return d, l, err
}

// item reads and validates an item: counter records sorted by replica,
// none empty, counters in range, and a held register that is either unset
// or has a version, a valid writer and a value in range.
func (p *parser) item() (*Item, error) {
	fields, err := p.array(itemShape)
	if err != nil {
		return nil, err
	}
	n, err := p.array(stockShape)
	if err != nil {
		return nil, err
	}
	it := &Item{}
	var last string
	for i := range n {
		if _, err := p.array(ctrShape); err != nil {
			return nil, err
		}
		rep, err := p.text()
		if err != nil {
			return nil, err
		}
		pos, err := p.uint()
		if err != nil {
			return nil, err
		}
		neg, err := p.uint()
		if err != nil {
			return nil, err
		}
		r := ReplicaID(rep)
		if !validReplica(r) {
			return nil, fmt.Errorf("crdt: item: invalid replica id %q", rep)
		}
		if i > 0 && last >= rep {
			return nil, fmt.Errorf("crdt: item: replicas not strictly sorted at %q", rep)
		}
		last = rep
		if pos > MaxCount || neg > MaxCount {
			return nil, fmt.Errorf("crdt: item: counter of %q out of range", rep)
		}
		if pos == 0 && neg == 0 {
			return nil, fmt.Errorf("crdt: item: replica %q has an empty record", rep)
		}
		if pos > 0 {
			if it.Stock.P == nil {
				it.Stock.P = make(map[ReplicaID]uint64, p.hint(n-i, minRecordBytes))
			}
			it.Stock.P[r] = pos
		}
		if neg > 0 {
			if it.Stock.N == nil {
				it.Stock.N = make(map[ReplicaID]uint64, p.hint(n-i, minRecordBytes))
			}
			it.Stock.N[r] = neg
		}
	}
	version, err := p.uint()
	if err != nil {
		return nil, err
	}
	writer, err := p.text()
	if err != nil {
		return nil, err
	}
	held, err := p.int64()
	if err != nil {
		return nil, err
	}
	switch {
	case version == 0 && (writer != "" || held != 0):
		return nil, errors.New("crdt: item: held units without a version")
	case version > MaxCounter:
		return nil, errors.New("crdt: item: held version out of range")
	case version > 0 && !validReplica(ReplicaID(writer)):
		return nil, fmt.Errorf("crdt: item: invalid held writer %q", writer)
	case held < 0 || held > MaxCount:
		return nil, fmt.Errorf("crdt: item: held units %d out of range", held)
	}
	it.Held = Register{Version: version, Replica: ReplicaID(writer), Value: held}
	if fields == 5 {
		if err := p.escrow(it); err != nil {
			return nil, err
		}
	}
	return it, nil
}

// escrow reads an item's escrow records: at least one, strictly sorted,
// each valid (see EscrowKey) with a value in 1..MaxCount.
func (p *parser) escrow(it *Item) error {
	n, err := p.array(escrowShape)
	if err != nil {
		return err
	}
	if n == 0 {
		return errors.New("crdt: item: empty escrow records are left out")
	}
	it.Escrow = make(map[EscrowKey]uint64, p.hint(n, minRecordBytes))
	var last EscrowKey
	for i := range n {
		if _, err := p.array(escrowRec); err != nil {
			return err
		}
		kind, err := p.uint()
		if err != nil {
			return err
		}
		region, err := p.text()
		if err != nil {
			return err
		}
		rep, err := p.text()
		if err != nil {
			return err
		}
		v, err := p.uint()
		if err != nil {
			return err
		}
		if kind > 255 {
			return fmt.Errorf("crdt: item: escrow kind %d", kind)
		}
		k := EscrowKey{Kind: EscrowKind(kind), Region: region, Replica: ReplicaID(rep)}
		if err := k.validate(); err != nil {
			return err
		}
		if i > 0 && last.compare(k) >= 0 {
			return errors.New("crdt: item: escrow records not strictly sorted")
		}
		if v == 0 || v > MaxCount {
			return fmt.Errorf("crdt: item: escrow record %v out of range", k)
		}
		last = k
		it.Escrow[k] = v
	}
	return nil
}

// group reads and validates a delta-group, which must be all of p.b: at
// most MaxGroupKeys keys, cart ids and skus valid and strictly sorted, and
// every cart and item valid. The whole input is checked against the
// group's shape first, and the number of keys before any key is decoded.
func (p *parser) group() (*Group, error) {
	if err := groupShape.check(p.b[p.i:]); err != nil {
		return nil, err
	}
	if _, err := p.array(groupShape); err != nil {
		return nil, err
	}
	at := p.i
	nc, err := p.array(gCartsShape)
	if err != nil {
		return nil, err
	}
	itemsAt, err := gCartsShape.scan(p.b, at)
	if err != nil {
		return nil, fmt.Errorf("crdt: decode: %w", err)
	}
	q := parser{b: p.b, i: itemsAt}
	ni, err := q.array(gItemsShape)
	if err != nil {
		return nil, err
	}
	if nc+ni > MaxGroupKeys {
		return nil, fmt.Errorf("crdt: group holds more than %d keys", MaxGroupKeys)
	}
	g := &Group{}
	var lastID, lastSKU string
	for i := range nc {
		if _, err := p.array(gCartShape); err != nil {
			return nil, err
		}
		id, err := p.text()
		if err != nil {
			return nil, err
		}
		if !ValidID(id) {
			return nil, fmt.Errorf("crdt: group: invalid cart id %q", id)
		}
		if i > 0 && lastID >= id {
			return nil, fmt.Errorf("crdt: group: cart ids not strictly sorted at %q", id)
		}
		lastID = id
		// The cart is read within its own bytes: its entry map's size
		// hint is bounded by what is left of the input (entriesHint),
		// and the bytes of the carts and items after it are not this
		// cart's to claim.
		end, err := cartShape.scan(p.b, p.i)
		if err != nil {
			return nil, fmt.Errorf("crdt: decode: %w (cart %q)", err, id)
		}
		whole := p.b
		p.b = p.b[:end]
		c, err := p.cart()
		p.b = whole
		if err != nil {
			return nil, fmt.Errorf("%w (cart %q)", err, id)
		}
		if g.Carts == nil {
			g.Carts = make(map[string]*Cart, nc)
		}
		g.Carts[id] = c
	}
	if _, err := p.array(gItemsShape); err != nil {
		return nil, err
	}
	for i := range ni {
		if _, err := p.array(gItemShape); err != nil {
			return nil, err
		}
		sku, err := p.text()
		if err != nil {
			return nil, err
		}
		if !ValidID(sku) {
			return nil, fmt.Errorf("crdt: group: invalid sku %q", sku)
		}
		if i > 0 && lastSKU >= sku {
			return nil, fmt.Errorf("crdt: group: skus not strictly sorted at %q", sku)
		}
		lastSKU = sku
		it, err := p.item()
		if err != nil {
			return nil, fmt.Errorf("%w (sku %q)", err, sku)
		}
		if g.Items == nil {
			g.Items = make(map[string]*Item, ni)
		}
		g.Items[sku] = it
	}
	return g, nil
}
