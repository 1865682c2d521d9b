package protocol

import (
	"encoding/binary"
	"errors"
)

// Set sketches of a bucket's keys (invertible Bloom lookup tables). A
// sketch of a set of elements — a key's slot within its bucket (the low
// 32 bits of crdt.KeySlot) and its state hash — is K tables of M cells
// each; an element goes into one cell of every table, chosen by a salted
// hash of it. A cell holds the count of its elements (mod 256) and the
// XOR of their slots, of their state hashes and of a 16-bit check of
// each; the sketch also holds the sum (mod 2^64) of a 64-bit check of
// every element. Subtracting one region's sketch of a bucket from the
// other's, cell by cell (same shape and salt), leaves a sketch of the
// elements the two hold differently, with signs: +1 held by the first
// only, −1 by the second only. Elements equal on both sides (same key,
// same state) cancel. When the difference is small, peeling recovers
// it: a cell of count ±1 whose check and position match the element it
// would hold holds that element alone, which is taken out of its other
// cells, and so on; the decode succeeded when every cell is empty and
// the sums balance.
//
// A decode can fail (too many differences for the sketch; the sender
// retries with a wider one) but not succeed wrongly short of a 64-bit
// coincidence: a cell of several elements may pass for one (its 16-bit
// check matches by chance), but the element taken out then is not one of
// the difference, and the additive sum, which XOR-combinations of
// elements do not balance, refuses the result. The state hashes in the
// cells are whole, so a decoded element names the key's state as
// strongly as the tree's fingerprints do.
const (
	// sketchCell is the bytes of one encoded cell: count, slot, hash,
	// check.
	sketchCell = 1 + 4 + 8 + 2
	// sketchTables is K of a sketch of more than one cell.
	sketchTables = 3
	// MaxSketchWidth bounds M, the cells of one table of a sketch.
	MaxSketchWidth = 4096
)

// sketch is a set sketch being built or decoded.
type sketch struct {
	k, m  int
	salt  uint64
	count []uint8
	slot  []uint32
	hash  []uint64
	chk   []uint16
	sum   uint64
}

func newSketch(k, m int, salt uint64) *sketch {
	n := k * m
	return &sketch{k: k, m: m, salt: salt, count: make([]uint8, n), slot: make([]uint32, n), hash: make([]uint64, n), chk: make([]uint16, n)}
}

// mix64 is MurmurHash3's 64-bit finalizer.
func mix64(x uint64) uint64 {
	x ^= x >> 33
	x *= 0xff51afd7ed558ccd
	x ^= x >> 33
	x *= 0xc4ceb9fe1a85ec53
	x ^= x >> 33
	return x
}

// ident returns the salted identity of an element (its cells) and its
// check.
func (s *sketch) ident(slot uint32, hash uint64) (e, c uint64) {
	e = mix64(hash ^ mix64(uint64(slot)^s.salt))
	return e, mix64(e + 0x9e3779b97f4a7c15)
}

// cell returns the index of the cell of table j that element e goes in.
func (s *sketch) cell(e uint64, j int) int {
	return j*s.m + int((e>>(21*j))&(1<<21-1))%s.m
}

// add adds (sign +1) or removes (−1) an element.
func (s *sketch) add(slot uint32, hash uint64, sign int) {
	e, c := s.ident(slot, hash)
	for j := range s.k {
		i := s.cell(e, j)
		s.count[i] += uint8(sign)
		s.slot[i] ^= slot
		s.hash[i] ^= hash
		s.chk[i] ^= uint16(c)
	}
	s.sum += uint64(sign) * c
}

// subtract takes o (same shape and salt) away from s.
func (s *sketch) subtract(o *sketch) {
	for i := range s.count {
		s.count[i] -= o.count[i]
		s.slot[i] ^= o.slot[i]
		s.hash[i] ^= o.hash[i]
		s.chk[i] ^= o.chk[i]
	}
	s.sum -= o.sum
}

// sketchElem is a decoded element of a difference.
type sketchElem struct {
	slot uint32
	hash uint64
}

// peel decodes s, a difference: the elements of the first sketch only
// (plus) and of the second only (minus); ok false if it could not be
// decoded whole. s is consumed.
func (s *sketch) peel() (plus, minus []sketchElem, ok bool) {
	n := len(s.count)
	queue := make([]int, 0, n)
	for i := range n {
		queue = append(queue, i)
	}
	for len(queue) > 0 {
		i := queue[len(queue)-1]
		queue = queue[:len(queue)-1]
		if s.count[i] != 1 && s.count[i] != 0xff {
			continue
		}
		slot, hash := s.slot[i], s.hash[i]
		e, c := s.ident(slot, hash)
		if uint16(c) != s.chk[i] || s.cell(e, i/s.m) != i {
			continue
		}
		if len(plus)+len(minus) >= n {
			return nil, nil, false // more elements than cells: not a difference of two sets
		}
		sign := 1
		if s.count[i] == 0xff {
			sign = -1
			minus = append(minus, sketchElem{slot, hash})
		} else {
			plus = append(plus, sketchElem{slot, hash})
		}
		s.add(slot, hash, -sign)
		for j := range s.k {
			queue = append(queue, s.cell(e, j))
		}
	}
	if s.sum != 0 {
		return nil, nil, false
	}
	for i := range n {
		if s.count[i] != 0 || s.slot[i] != 0 || s.hash[i] != 0 || s.chk[i] != 0 {
			return nil, nil, false
		}
	}
	return plus, minus, true
}

// encode returns the cells on the wire (Sketch.Cells).
func (s *sketch) encode() []byte {
	b := make([]byte, 0, len(s.count)*sketchCell)
	for i := range s.count {
		b = append(b, s.count[i])
		b = binary.BigEndian.AppendUint32(b, s.slot[i])
		b = binary.BigEndian.AppendUint64(b, s.hash[i])
		b = binary.BigEndian.AppendUint16(b, s.chk[i])
	}
	return b
}

var errBadSketch = errors.New("protocol: invalid sketch")

// sketchShape returns K of a sketch of width m whose cells take n bytes,
// or an error.
func sketchShape(m uint32, n int) (int, error) {
	if m < 1 || m > MaxSketchWidth || n%sketchCell != 0 {
		return 0, errBadSketch
	}
	switch uint64(n / sketchCell) {
	case uint64(m):
		return 1, nil
	case sketchTables * uint64(m):
		return sketchTables, nil
	}
	return 0, errBadSketch
}

// decodeSketch returns the sketch of a message (checked by validate).
func decodeSketch(w *Sketch, salt uint64) *sketch {
	k, err := sketchShape(w.Width, len(w.Cells))
	if err != nil {
		return nil
	}
	s := newSketch(k, int(w.Width), salt)
	b := w.Cells
	for i := range s.count {
		s.count[i] = b[0]
		s.slot[i] = binary.BigEndian.Uint32(b[1:])
		s.hash[i] = binary.BigEndian.Uint64(b[5:])
		s.chk[i] = binary.BigEndian.Uint16(b[13:])
		b = b[sketchCell:]
	}
	s.sum = w.Sum
	return s
}

// sketchSize returns the shape of a sketch for a difference of about n
// elements: one cell for one, else three tables wide enough that the
// bytes of the sketch and of the wider one sent when it fails to decode
// are least (measured: 2 elements in 3 tables of 2 cells fail 12 % of
// the time, 4 in 3 of 4 9 %, 10 in 3 of 8 9 %, 100 in 3 of 57 4 %).
func sketchSize(n int) (k, m int) {
	switch {
	case n <= 1:
		return 1, 1
	case n <= 4:
		return sketchTables, n
	}
	r := 0
	for (r+1)*(r+1) <= n {
		r++
	}
	return sketchTables, min(MaxSketchWidth, (n+1)/2+2+r/2)
}
