package crdt

import (
	"bytes"
	"errors"
	"fmt"

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
	// recordMode is decMode with arrays as long as MaxCartEntries: for a
	// region's own records (UnmarshalRecord), whose lists follow a cart's
	// entries.
	recordMode cbor.DecMode
)

func init() {
	var err error
	eo := cbor.CoreDetEncOptions()
	eo.NilContainers = cbor.NilContainerAsEmpty
	if encMode, err = eo.EncMode(); err != nil {
		panic(err)
	}
	decMode = strictDecMode(maxArray)
	recordMode = strictDecMode(MaxCartEntries)
}

// strictDecMode returns the strict decoding options (duplicate map keys
// and unknown fields rejected, no tags, no indefinite lengths, valid
// UTF-8, bounded nesting and maps) with arrays of up to maxArray
// elements.
func strictDecMode(maxArray int) cbor.DecMode {
	m, err := cbor.DecOptions{
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
	return m
}

// ErrNonCanonical is returned for a value that decodes but is not in the
// canonical encoding (unsorted, duplicated, uncompacted or non-minimal).
var ErrNonCanonical = errors.New("crdt: non-canonical encoding")

// Marshal encodes v with Lattice's deterministic CBOR options. It is for
// messages that embed carts, items or groups.
func Marshal(v any) ([]byte, error) { return encMode.Marshal(v) }

// checkSize refuses b, unread, if it is longer than limit.
func checkSize(b []byte, limit int) error {
	if len(b) > limit {
		return fmt.Errorf("crdt: message of %d bytes exceeds limit of %d", len(b), limit)
	}
	return nil
}

// MaxRecordBytes bounds a record UnmarshalRecord decodes: a region's own,
// checksummed value. A settled checkout of the largest cart keeps its
// order's lines more than once (the order, the plan and the last
// attempt's), which with the longest region names and skus passes
// MaxGroupBytes.
const MaxRecordBytes = 4 * MaxGroupBytes

// UnmarshalRecord decodes a region's own stored record (behind the
// store's checksum) as Unmarshal does, but with arrays of up to
// MaxCartEntries elements and up to MaxRecordBytes: a checkout's record
// lists every entry of the cart it bought, which a cart of the largest
// size a join may reach makes longer than a peer's object may be.
func UnmarshalRecord(b []byte, v any) error { return unmarshalIn(recordMode, b, v, MaxRecordBytes) }

// UnmarshalCarrier decodes a message or call that carries groups (of
// deltas, states, answers) as Unmarshal does, but with arrays of up to
// MaxCartEntries elements: a group is checked by DecodeGroup against its
// own limits, and a cart whose removals lag behind its adds may hold
// more entries of one replica than Unmarshal's arrays, which would
// refuse the whole message before its groups are looked at. Every other
// array of such a message is bounded by its own check.
func UnmarshalCarrier(b []byte, v any, maxBytes int) error {
	return unmarshalIn(recordMode, b, v, maxBytes)
}

// Unmarshal decodes b into v with the strict decoding options (limits,
// duplicate map keys and unknown fields rejected, no tags, no
// indefinite lengths). b longer than maxBytes is refused unread.
func Unmarshal(b []byte, v any, maxBytes int) error { return unmarshalIn(decMode, b, v, maxBytes) }

// unmarshalIn decodes b into v with mode; b longer than maxBytes is
// refused unread.
func unmarshalIn(mode cbor.DecMode, b []byte, v any, maxBytes int) error {
	if err := checkSize(b, maxBytes); err != nil {
		return err
	}
	if err := mode.Unmarshal(b, v); err != nil {
		return fmt.Errorf("crdt: decode: %w", err)
	}
	return nil
}

// shape describes one element of the wire format of encode.go. The
// parser of decode.go reads the encodings element by element against
// their shapes; check walks a whole input against a shape without
// allocating, which DecodeGroup runs before decoding anything, so that a
// group that is ill-typed anywhere is refused before any of its keys is
// decoded.
type shape struct {
	name   string
	major  byte     // CBOR major type: 0 unsigned, 3 text, 4 array
	signed bool     // an integer that may also be negative (major 1)
	fields []*shape // a fixed-length array: exactly these fields
	// optional is how many of the last fields may be left out.
	optional int
	elem     *shape // an array of elements of this shape
	max      int    // most elements of an elem array
}

var (
	uintShape  = &shape{name: "unsigned integer", major: majorUint}
	intShape   = &shape{name: "integer", major: majorUint, signed: true}
	textShape  = &shape{name: "text string", major: majorText}
	entryShape = &shape{name: "cart entry", major: majorArray, fields: []*shape{uintShape, textShape, uintShape, intShape}}
	// A cart's cloud and one replica's entries may be as long as the cart
	// itself (MaxCartEntries: one region's adds joined with another's
	// lagging removals), past the generic array bound; the parser's
	// allocations follow the input's bytes, not these counts.
	cloudShape   = arrayOf(uintShape, MaxCartEntries)
	entriesShape = arrayOf(entryShape, MaxCartEntries)
	replShape    = &shape{name: "cart replica record", major: majorArray, fields: []*shape{textShape, uintShape, cloudShape, entriesShape}}
	cartShape    = arrayOf(replShape, MaxReplicas)
	ctrShape     = &shape{name: "counter record", major: majorArray, fields: []*shape{textShape, uintShape, uintShape}}
	stockShape   = arrayOf(ctrShape, MaxReplicas)
	escrowRec    = &shape{name: "escrow record", major: majorArray, fields: []*shape{uintShape, textShape, textShape, uintShape}}
	escrowShape  = arrayOf(escrowRec, MaxEscrowRecords)
	itemShape    = &shape{name: "item", major: majorArray, fields: []*shape{stockShape, uintShape, textShape, intShape, escrowShape}, optional: 1}
	gCartShape   = &shape{name: "group cart", major: majorArray, fields: []*shape{textShape, cartShape}}
	gItemShape   = &shape{name: "group item", major: majorArray, fields: []*shape{textShape, itemShape}}
	gCartsShape  = arrayOf(gCartShape, MaxGroupKeys)
	gItemsShape  = arrayOf(gItemShape, MaxGroupKeys)
	groupShape   = &shape{name: "group", major: majorArray, fields: []*shape{gCartsShape, gItemsShape}}
)

func arrayOf(elem *shape, max int) *shape {
	return &shape{name: "array of " + elem.name, major: majorArray, elem: elem, max: max}
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

// minWide is, for each width of a head's argument (1, 2, 4 and 8 bytes),
// the smallest argument that needs that width.
var minWide = [4]uint64{24, 1 << 8, 1 << 16, 1 << 32}

// head decodes the CBOR head at b[i:]: its major type and argument, where
// the item's content starts, and whether the argument is in its shortest
// form.
func head(b []byte, i int) (major byte, arg uint64, next int, short bool, err error) {
	if i >= len(b) {
		return 0, 0, 0, false, errTruncated
	}
	major, info := b[i]>>5, b[i]&0x1f
	switch {
	case info < 24:
		return major, uint64(info), i + 1, true, nil
	case info <= 27:
		n := 1 << (info - 24)
		if len(b)-i-1 < n {
			return 0, 0, 0, false, errTruncated
		}
		for _, c := range b[i+1 : i+1+n] {
			arg = arg<<8 | uint64(c)
		}
		return major, arg, i + 1 + n, arg >= minWide[info-24], nil
	case info == 31 && major >= 2 && major <= 5:
		return 0, 0, 0, false, fmt.Errorf("indefinite-length item at byte %d", i)
	}
	return 0, 0, 0, false, fmt.Errorf("malformed item at byte %d", i)
}

// accepts reports whether an item of the given major type, at byte at, may
// be of shape s.
func (s *shape) accepts(major byte, at int) error {
	if major != s.major && !(s.signed && major == majorNeg) {
		what := [8]string{"unsigned integer", "negative integer", "byte string", "text string", "array", "map", "tag", "simple value or float"}[major]
		return fmt.Errorf("%s expected at byte %d, found %s", s.name, at, what)
	}
	return nil
}

// length checks the length n of an array of shape s at byte at, with rest
// bytes after its head.
func (s *shape) length(n uint64, at, rest int) error {
	if s.fields != nil && (n > uint64(len(s.fields)) || n < uint64(len(s.fields)-s.optional)) {
		if s.optional > 0 {
			return fmt.Errorf("%s of %d to %d fields expected at byte %d, found %d", s.name, len(s.fields)-s.optional, len(s.fields), at, n)
		}
		return fmt.Errorf("%s of %d fields expected at byte %d, found %d", s.name, len(s.fields), at, n)
	}
	if s.elem != nil && n > uint64(s.max) {
		return fmt.Errorf("%s of %d elements at byte %d exceeds limit of %d", s.name, n, at, s.max)
	}
	if n > uint64(rest) { // every element takes a byte at least
		return errTruncated
	}
	return nil
}

// scan checks the data item at b[i:] against s and returns where it ends.
func (s *shape) scan(b []byte, i int) (int, error) {
	at := i
	major, arg, i, _, err := head(b, i)
	if err != nil {
		return 0, err
	}
	if err := s.accepts(major, at); err != nil {
		return 0, err
	}
	switch major {
	case majorText:
		if arg > uint64(len(b)-i) {
			return 0, errTruncated
		}
		return i + int(arg), nil
	case majorArray:
		if err := s.length(arg, at, len(b)-i); err != nil {
			return 0, err
		}
		for k := range int(arg) {
			sub := s.elem
			if s.fields != nil {
				sub = s.fields[k]
			}
			if i, err = sub.scan(b, i); err != nil {
				return 0, err
			}
		}
	}
	return i, nil
}

// EncodeCart returns the canonical encoding of c.
func EncodeCart(c *Cart) []byte { return AppendCart(nil, c) }

// DecodeCart decodes and validates a canonical cart encoding. It refuses
// any other encoding of the same value with ErrNonCanonical.
func DecodeCart(b []byte) (*Cart, error) {
	return decodeStrict(b, MaxObjectBytes, (*parser).cart, AppendCart)
}

// DecodeCartUpTo is DecodeCart for an encoding of up to limit bytes: a
// whole cart of the largest size a join may reach, which travels
// compressed (a forwarded checkout's copy of the cart).
func DecodeCartUpTo(b []byte, limit int) (*Cart, error) {
	return decodeStrict(b, limit, (*parser).cart, AppendCart)
}

// DecodeCartCeilUpTo is DecodeCartUpTo for a reader of a cart's entries
// that does not need which dots its context holds one by one (a
// checkout's coordinator reading another region's copy): it keeps at most
// cloudCap cloud dots (positive) one by one, a decoded map entry each
// (CloudDotMem) for as little as a byte of encoding. Past that the cart's
// context is its ceiling (Context.Ceil, still covering every entry), and
// an entry of a replica whose cloud was cut is taken when its dot is at
// most that replica's highest cloud dot; such a cart is not compared
// with its canonical encoding, which its cloud is needed for. A cart of
// at most cloudCap cloud dots is decoded exactly as DecodeCartUpTo does.
func DecodeCartCeilUpTo(b []byte, limit, cloudCap int) (*Cart, error) {
	if err := checkSize(b, limit); err != nil {
		return nil, err
	}
	p := parser{b: b, cloudCap: max(cloudCap, 1), ceilEntries: true}
	c, err := p.cart()
	if err == nil {
		err = p.end()
	}
	if err != nil {
		return nil, err
	}
	if len(p.ceil) == 0 {
		if !bytes.Equal(AppendCart(make([]byte, 0, len(b)), c), b) {
			return nil, ErrNonCanonical
		}
		return c, nil
	}
	ceil := c.Ctx.Ceil()
	for _, d := range p.ceil {
		if d.Counter > ceil.VV[d.Replica] {
			ceil.VV[d.Replica] = d.Counter
		}
	}
	c.Ctx = ceil
	return c, nil
}

// DecodeCartStored decodes and validates a cart that this process encoded
// with EncodeCart and kept behind an integrity check of its own, such as a
// checksummed store. It validates everything DecodeCart does (identifiers,
// ranges, sortedness, limits, every entry's dot in the causal context) and
// refuses malformed input with an error, but it does not re-encode the
// value to compare it with b. Bytes from anywhere else go to DecodeCart.
func DecodeCartStored(b []byte) (*Cart, error) {
	return decodeStored(b, MaxObjectBytes, (*parser).cart)
}

// DecodeCartStoredUpTo is DecodeCartStored of a value of up to limit
// bytes: a whole cart a region keeps for itself (the deltas it holds
// aside for a damaged cart) may be larger than a peer's object.
func DecodeCartStoredUpTo(b []byte, limit int) (*Cart, error) {
	return decodeStored(b, limit, (*parser).cart)
}

// EncodeItem returns the canonical encoding of it.
func EncodeItem(it *Item) []byte { return AppendItem(nil, it) }

// DecodeItem decodes and validates a canonical item encoding. It refuses
// any other encoding of the same value with ErrNonCanonical.
func DecodeItem(b []byte) (*Item, error) {
	return decodeStrict(b, MaxObjectBytes, (*parser).item, AppendItem)
}

// DecodeItemStored decodes and validates an item that this process
// encoded with EncodeItem and kept behind an integrity check of its own.
// Like DecodeCartStored, it validates everything DecodeItem does but does
// not re-encode the value to compare it with b.
func DecodeItemStored(b []byte) (*Item, error) {
	return decodeStored(b, MaxObjectBytes, (*parser).item)
}

// EncodeGroup returns the canonical encoding of g.
func EncodeGroup(g *Group) []byte { return AppendGroup(nil, g) }

// DecodeGroup decodes and validates a canonical delta-group encoding. It
// refuses any other encoding of the same value with ErrNonCanonical.
func DecodeGroup(b []byte) (*Group, error) {
	return decodeStrict(b, MaxGroupBytes, (*parser).group, AppendGroup)
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
