package crdt

import "strings"

// Digest is a consistent summary of a replica's replicated key space, as
// anti-entropy compares it: for each bucket the XOR of the state hashes of
// its keys, the state hashes of the keys of some chosen buckets, and the
// applied context the states reflect.
type Digest struct {
	// Buckets is the digest: for each bucket, the XOR of the hashes of
	// its keys' states.
	Buckets []uint64
	// Keys holds the hash of every key in the chosen buckets.
	Keys map[string]uint64
	// Applied is the region-level causal context the state reflects.
	Applied Context
	// Counts holds, for each bucket, the number of its keys (nil if the
	// storage does not count them).
	Counts []uint32
}

// FNV-1a parameters.
const (
	fnv32Offset = 2166136261
	fnv32Prime  = 16777619
	fnv64Offset = 14695981039346656037
	fnv64Prime  = 1099511628211
)

// FNV32 returns the 32-bit FNV-1a hash of s.
func FNV32(s string) uint32 {
	h := uint32(fnv32Offset)
	for i := 0; i < len(s); i++ {
		h ^= uint32(s[i])
		h *= fnv32Prime
	}
	return h
}

// FNV64 is a running 64-bit FNV-1a hash; the zero value is not ready to
// use, NewFNV64 is.
type FNV64 uint64

// NewFNV64 returns an FNV-1a hash of nothing yet.
func NewFNV64() FNV64 { return fnv64Offset }

// Byte mixes b into the hash.
func (h *FNV64) Byte(b byte) { *h = (*h ^ FNV64(b)) * fnv64Prime }

// String mixes the bytes of s into the hash.
func (h *FNV64) String(s string) {
	for i := 0; i < len(s); i++ {
		h.Byte(s[i])
	}
}

// Bytes mixes b into the hash.
func (h *FNV64) Bytes(b []byte) {
	for _, c := range b {
		h.Byte(c)
	}
}

// KeyBucket returns the digest bucket of a key: its FNV-1a 32 hash modulo
// buckets. Every region must use the same function and bucket count.
func KeyBucket(key string, buckets int) uint32 { return FNV32(key) % uint32(buckets) }

// KeySlot returns the place of a key in the anti-entropy tree: its
// digest bucket (KeyBucket) in the high 32 bits and, in the low 32, the
// high 32 bits of its FNV-1a 64 hash after a 64-bit finalizer
// (MurmurHash3's fmix64: FNV-1a's high bits alone barely tell apart keys
// that differ in their last bytes), so that the keys of a bucket spread
// evenly over the bucket's slots.
func KeySlot(key string, buckets int) uint64 {
	f := NewFNV64()
	f.String(key)
	h := uint64(f)
	h ^= h >> 33
	h *= 0xff51afd7ed558ccd
	h ^= h >> 33
	h *= 0xc4ceb9fe1a85ec53
	h ^= h >> 33
	return uint64(KeyBucket(key, buckets))<<32 | h>>32
}

// StateHash returns the hash of a key's stored state (FNV-1a 64 over the
// key, a 0xff separator and its canonical encoding), XORed into its
// bucket's digest.
func StateHash(key string, state []byte) uint64 {
	h := NewFNV64()
	h.String(key)
	h.Byte(0xff)
	h.Bytes(state)
	return uint64(h)
}

// Keys of the replicated key space: a cart's state is stored, digested
// and shipped under CartPrefix + its id, an item's under ItemPrefix + its
// sku.
const (
	CartPrefix = "c/"
	ItemPrefix = "i/"
)

// ValidKey reports whether k names a replicated object: CartPrefix + a
// cart id or ItemPrefix + a sku.
func ValidKey(k string) bool {
	id, ok := strings.CutPrefix(k, CartPrefix)
	if !ok {
		id, ok = strings.CutPrefix(k, ItemPrefix)
	}
	return ok && ValidID(id)
}
