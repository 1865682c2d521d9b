package crdt

import (
	"hash/fnv"
	"testing"
)

// TestHashesAreFNV1a pins the digest's hashes to FNV-1a (hash/fnv): every
// region of a cluster, of every version, must place and hash keys alike.
func TestHashesAreFNV1a(t *testing.T) {
	for _, key := range []string{"", "c/cart-1", "i/sku:42", "c/" + string(make([]byte, 300))} {
		h32 := fnv.New32a()
		h32.Write([]byte(key))
		if got := FNV32(key); got != h32.Sum32() {
			t.Errorf("FNV32(%q) = %d, want %d", key, got, h32.Sum32())
		}
		if got, want := KeyBucket(key, 1024), h32.Sum32()%1024; got != want {
			t.Errorf("KeyBucket(%q) = %d, want %d", key, got, want)
		}
		state := []byte("state of " + key)
		h64 := fnv.New64a()
		h64.Write([]byte(key))
		h64.Write([]byte{0xff})
		h64.Write(state)
		if got := StateHash(key, state); got != h64.Sum64() {
			t.Errorf("StateHash(%q) = %d, want %d", key, got, h64.Sum64())
		}
	}
}

func TestValidKey(t *testing.T) {
	for k, want := range map[string]bool{"c/cart-1": true, "i/sku:42": true, "c/": false, "x/y": false, "c/a b": false, "l/sku": false, "": false} {
		if ValidKey(k) != want {
			t.Errorf("ValidKey(%q) = %v", k, !want)
		}
	}
}
