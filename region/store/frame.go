package store

import (
	"encoding/binary"
	"hash/crc32"
	"strings"
)

// Stored value layout: crc32c(rest) | txid | n | payload, where txid
// identifies the BuntDB transaction that wrote the value and n is how many
// keys that transaction set. On open, a final transaction with fewer than n
// values in the file was torn by a crash and is cut off, so one logical
// write is all-or-nothing even though BuntDB writes (and on recovery
// truncates) command by command.
const valueHeader = 4 + 8 + 2

var crcTable = crc32.MakeTable(crc32.Castagnoli)

func frame(txid uint64, n uint16, payload []byte) string {
	var h [valueHeader]byte
	binary.BigEndian.PutUint64(h[4:], txid)
	binary.BigEndian.PutUint16(h[12:], n)
	crc := crc32.Update(crc32.Update(0, crcTable, h[4:]), crcTable, payload)
	binary.BigEndian.PutUint32(h[:], crc)
	var sb strings.Builder
	sb.Grow(valueHeader + len(payload))
	sb.Write(h[:])
	sb.Write(payload)
	return sb.String()
}

func unframe(b []byte) (txid uint64, n uint16, payload []byte, err error) {
	if len(b) < valueHeader || binary.BigEndian.Uint32(b) != crc32.Checksum(b[4:], crcTable) {
		return 0, 0, nil, ErrCorrupt
	}
	return binary.BigEndian.Uint64(b[4:]), binary.BigEndian.Uint16(b[12:]), b[valueHeader:], nil
}
