package region

import (
	"bytes"
	"compress/flate"
	"fmt"
	"runtime"
	"testing"
)

// TestForward19DeflatedCartWithinInput: a checkout forwarded to a cart's
// coordinator carries the answering region's copy of the cart, deflated
// when large (HomeRequest.CartZ), bounded at 4 MiB once inflated
// (unpackCart: "a few kilobytes from a peer may cost up to 4 MiB, once
// per call"). But the cart it decodes holds every cloud dot of its
// context as a map entry, some 3 bytes inflated and some 90 decoded: a
// context of 256 replicas with the same 5,000 out-of-order counters
// each (the dots of lines removed, as checkouts and clears leave them) is
// 3.8 MB inflated, deflates to a few dozen kilobytes, and decodes to
// 1.28 million map entries. What one call from a peer holds must stay a
// small multiple of its size (30 times here), or at least the 4 MiB
// stated.
func TestForward19DeflatedCartWithinInput(t *testing.T) {
	const replicas, dots = 256, 5000
	// The canonical encoding of a cart with no entries: per replica,
	// [id, 0, [cloud counters], []].
	b := []byte{0x99, replicas >> 8, replicas & 0xff}
	for r := range replicas {
		id := fmt.Sprintf("r%03d", r)
		b = append(b, 0x84, 0x60|byte(len(id)))
		b = append(b, id...)
		b = append(b, 0x00, 0x99, dots>>8, dots&0xff)
		for k := 0; k < dots; k++ {
			c := 300 + k
			b = append(b, 0x19, byte(c>>8), byte(c))
		}
		b = append(b, 0x80)
	}
	var z bytes.Buffer
	w, err := flate.NewWriter(&z, flate.BestCompression)
	if err != nil {
		t.Fatal(err)
	}
	w.Write(b)
	w.Close()
	input := z.Len()

	base := mem19LiveHeap()
	c, err := unpackCart(nil, z.Bytes())
	if err != nil {
		t.Fatalf("unpack (%d bytes inflated): %v", len(b), err)
	}
	// The input's buffer (z) may be freed by now: a heap smaller than
	// at base holds nothing (and must not wrap around).
	var held uint64
	if after := mem19LiveHeap(); after > base {
		held = after - base
	}
	t.Logf("a forwarded cart of %d bytes deflated, %d inflated: %d cloud dots, %.1f MiB live (%.0f times)",
		input, len(b), len(c.Ctx.Cloud), float64(held)/(1<<20), float64(held)/float64(input))
	if held > 30*uint64(input) || held > 4<<20 {
		t.Errorf("a forwarded cart of %d bytes (CartZ, %d inflated) holds %.1f MiB decoded, %.0f times its size and past the 4 MiB stated: "+
			"%d cloud dots, each a map entry", input, len(b), float64(held)/(1<<20), float64(held)/float64(input), len(c.Ctx.Cloud))
	}
	runtime.KeepAlive(c)
}
