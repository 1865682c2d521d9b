package store

import (
	"encoding/binary"
	"hash/crc32"
	"strings"
	"unsafe"
)

// Stored value layout: crc32c(key | rest) | 0x81 | txid | n | mark |
// payload, where rest is everything after the checksum, with txid, n and
// mark unsigned varints: txid identifies the BuntDB transaction that
// wrote the value, n is how many keys that transaction set and mark is
// the transaction's mark (Tx.Mark). On open, a final transaction with
// fewer than n values in the file was torn by a crash and is cut off, so
// one logical write is all-or-nothing even though BuntDB writes (and on
// recovery truncates) command by command. The checksum covers the key
// too, so that a key damaged into another valid key is caught rather
// than its value served as the other key's.
//
// Earlier layouts are read as well: crc32c(rest) | 0x80 | txid | n |
// mark | payload (the same without the key under the checksum), and,
// from before marks, crc32c(rest) | txid (8 bytes, big-endian) | n (2
// bytes, big-endian) | payload, whose txid's first byte, where the
// others have 0x80 or 0x81, is 0 (transaction ids stay below 2⁵⁶).
const (
	frameKeyed  = 0x81
	frameMarked = 0x80
	// oldHeader is the header size of the fixed layout.
	oldHeader = 4 + 8 + 2
	// maxHeader bounds the header of the varint layouts.
	maxHeader = 4 + 1 + 3*binary.MaxVarintLen64
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// frame returns the stored form of payload under key.
func frame(key string, txid uint64, n uint16, mark uint64, payload []byte) string {
	var h [maxHeader]byte
	h[4] = frameKeyed
	l := 5
	l += binary.PutUvarint(h[l:], txid)
	l += binary.PutUvarint(h[l:], uint64(n))
	l += binary.PutUvarint(h[l:], mark)
	crc := crc32.Update(keyCRC(key), crcTable, h[4:l])
	crc = crc32.Update(crc, crcTable, payload)
	binary.BigEndian.PutUint32(h[:], crc)
	var sb strings.Builder
	sb.Grow(l + len(payload))
	sb.Write(h[:l])
	sb.Write(payload)
	return sb.String()
}

// keyCRC is the checksum's state after key.
func keyCRC(key string) uint32 {
	return crc32.Update(0, crcTable, unsafe.Slice(unsafe.StringData(key), len(key)))
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
	case frameMarked, frameKeyed:
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

// unframe checks a stored value of key against its checksum and returns
// its header and payload.
func unframe(key string, b []byte) (txid uint64, n uint16, mark uint64, payload []byte, err error) {
	txid, n, mark, payload, ok := frameHeader(b)
	if !ok {
		return 0, 0, 0, nil, ErrCorrupt
	}
	var crc uint32
	if b[4] == frameKeyed {
		crc = keyCRC(key)
	}
	if binary.BigEndian.Uint32(b) != crc32.Update(crc, crcTable, b[4:]) {
		return 0, 0, 0, nil, ErrCorrupt
	}
	return txid, n, mark, payload, nil
}
