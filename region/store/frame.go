package store

import (
	"encoding/binary"
	"hash/crc32"
	"strings"
	"unsafe"
)

// Stored value layout: crc32c(rest) | 0x80 | txid | n | mark | payload,
// with txid, n and mark unsigned varints, where txid identifies the
// BuntDB transaction that wrote the value, n is how many keys that
// transaction set and mark is the transaction's mark (Tx.Mark). On open,
// a final transaction with fewer than n values in the file was torn by a
// crash and is cut off, so one logical write is all-or-nothing even
// though BuntDB writes (and on recovery truncates) command by command.
//
// Values written before marks existed have the fixed layout crc32c(rest)
// | txid (8 bytes, big-endian) | n (2 bytes, big-endian) | payload and no
// mark; their txid's first byte, where the newer layout has 0x80, is 0
// (transaction ids stay below 2⁵⁶). Both are read.
const (
	frameMarked = 0x80
	// oldHeader is the header size of the fixed layout.
	oldHeader = 4 + 8 + 2
	// maxHeader bounds the header of the varint layout.
	maxHeader = 4 + 1 + 3*binary.MaxVarintLen64
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// frame returns the stored form of payload.
func frame(txid uint64, n uint16, mark uint64, payload []byte) string {
	var h [maxHeader]byte
	h[4] = frameMarked
	l := 5
	l += binary.PutUvarint(h[l:], txid)
	l += binary.PutUvarint(h[l:], uint64(n))
	l += binary.PutUvarint(h[l:], mark)
	crc := crc32.Update(crc32.Update(0, crcTable, h[4:l]), crcTable, payload)
	binary.BigEndian.PutUint32(h[:], crc)
	var sb strings.Builder
	sb.Grow(l + len(payload))
	sb.Write(h[:l])
	sb.Write(payload)
	return sb.String()
}

// frameHeader reads the header of a stored value without checking its
// checksum; ok is false if it has none.
func frameHeader(b []byte) (txid uint64, n uint16, mark uint64, payload []byte, ok bool) {
	if len(b) < 5 {
		return 0, 0, 0, nil, false
	}
	switch b[4] {
	case 0:
		if len(b) < oldHeader {
			return 0, 0, 0, nil, false
		}
		return binary.BigEndian.Uint64(b[4:]), binary.BigEndian.Uint16(b[12:]), 0, b[oldHeader:], true
	case frameMarked:
		rest := b[5:]
		var v [3]uint64
		for i := range v {
			x, l := binary.Uvarint(rest)
			if l <= 0 {
				return 0, 0, 0, nil, false
			}
			v[i], rest = x, rest[l:]
		}
		if v[1] > 0xffff {
			return 0, 0, 0, nil, false
		}
		return v[0], uint16(v[1]), v[2], rest, true
	}
	return 0, 0, 0, nil, false
}

// storedBytes returns the bytes of v, a value as BuntDB holds it, without
// copying them: the payloads readers get (Reader.Get, Scan) share memory
// with the store and must not be modified. Their capacity ends where v
// does, so an append copies.
func storedBytes(v string) []byte {
	return unsafe.Slice(unsafe.StringData(v), len(v))
}

// unframe checks a stored value against its checksum and returns its
// header and payload.
func unframe(b []byte) (txid uint64, n uint16, mark uint64, payload []byte, err error) {
	txid, n, mark, payload, ok := frameHeader(b)
	if !ok || binary.BigEndian.Uint32(b) != crc32.Checksum(b[4:], crcTable) {
		return 0, 0, 0, nil, ErrCorrupt
	}
	return txid, n, mark, payload, nil
}
