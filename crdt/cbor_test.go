package crdt

import (
	"encoding/binary"
	"fmt"
	"slices"
	"strings"
)

// Hand-made CBOR, to write hostile inputs byte by byte. The helpers with a
// w prefix build the wire shapes of codec.go; TestWireBuilderMatchesEncoder
// checks them against the encoder.

// cHead encodes a CBOR head (major type and argument) in its shortest
// form.
func cHead(major byte, n uint64) []byte {
	switch {
	case n < 24:
		return []byte{major<<5 | byte(n)}
	case n <= 0xff:
		return cHeadWide(major, n, 1)
	case n <= 0xffff:
		return cHeadWide(major, n, 2)
	case n <= 0xffffffff:
		return cHeadWide(major, n, 4)
	}
	return cHeadWide(major, n, 8)
}

// cHeadWide encodes a head with an argument of exactly width bytes (1, 2,
// 4 or 8), minimal or not.
func cHeadWide(major byte, n uint64, width int) []byte {
	info := map[int]byte{1: 24, 2: 25, 4: 26, 8: 27}[width]
	var buf [8]byte
	binary.BigEndian.PutUint64(buf[:], n)
	return append([]byte{major<<5 | info}, buf[8-width:]...)
}

func cat(parts ...[]byte) []byte { return slices.Concat(parts...) }

func cArr(items ...[]byte) []byte { return cat(cHead(4, uint64(len(items))), cat(items...)) }

func cUint(n uint64) []byte { return cHead(0, n) }

func cInt(n int64) []byte {
	if n >= 0 {
		return cHead(0, uint64(n))
	}
	return cHead(1, uint64(-1-n))
}

func cText(s string) []byte { return cat(cHead(3, uint64(len(s))), []byte(s)) }

func cBytes(s string) []byte { return cat(cHead(2, uint64(len(s))), []byte(s)) }

func wEntry(counter uint64, sku string, kind uint8, n int64) []byte {
	return cArr(cUint(counter), cText(sku), cUint(uint64(kind)), cInt(n))
}

func wUints(ns ...uint64) []byte {
	var items [][]byte
	for _, n := range ns {
		items = append(items, cUint(n))
	}
	return cArr(items...)
}

// wRep is one replica record of a cart: replica, version-vector entry,
// cloud counters and entries.
func wRep(replica string, vv uint64, cloud []uint64, entries ...[]byte) []byte {
	return cArr(cText(replica), cUint(vv), wUints(cloud...), cArr(entries...))
}

func wCart(reps ...[]byte) []byte { return cArr(reps...) }

func wCounter(replica string, p, n uint64) []byte {
	return cArr(cText(replica), cUint(p), cUint(n))
}

func wItem(stock [][]byte, version uint64, writer string, held int64) []byte {
	return cArr(cArr(stock...), cUint(version), cText(writer), cInt(held))
}

func wGroupCart(id string, cart []byte) []byte { return cArr(cText(id), cart) }

func wGroupItem(sku string, item []byte) []byte { return cArr(cText(sku), item) }

func wGroup(carts, items [][]byte) []byte { return cArr(cArr(carts...), cArr(items...)) }

// repeat returns n copies of b, concatenated.
func repeat(b []byte, n int) []byte { return []byte(strings.Repeat(string(b), n)) }

// cArrN is an array head of n elements followed by body (which should hold
// n items).
func cArrN(n int, body []byte) []byte { return cat(cHead(4, uint64(n)), body) }

// sampleCarts returns realistic carts: what replicas hold after scripted
// histories. The names are used for the fuzz seed corpus.
func sampleCarts() map[string]*Cart {
	out := map[string]*Cart{"empty": {}}

	one := &Cart{}
	one.Join(one.Add(usEast, "book", 1))
	out["one-line"] = one

	out["ten-lines-three-regions"] = freshCart(10, testReplicas...)
	out["hundred-lines"] = freshCart(100, testReplicas...)

	// A region that missed one delta of eu-west holds its next dot in its
	// cloud.
	base := freshCart(4, testReplicas...)
	origin := base.Clone()
	missed := origin.Add(euWest, "missed", 1)
	origin.Join(missed)
	next := origin.Add(euWest, "next", 2)
	origin.Join(next)
	gap := base.Clone()
	gap.Join(next)
	out["cloud"] = gap
	out["remove-delta-with-cloud"] = origin.Remove("next")

	// Sets, removes and a clear at three regions, exchanged.
	x := map[ReplicaID]*Cart{usEast: {}, euWest: {}, apSouth: {}}
	var msgs []*Cart
	do := func(r ReplicaID, d *Cart) { x[r].Join(d); msgs = append(msgs, d) }
	do(usEast, x[usEast].Add(usEast, "book", 2))
	do(euWest, x[euWest].Add(euWest, "cup", 1))
	do(apSouth, x[apSouth].Set(apSouth, "book", 5))
	for _, m := range msgs {
		x[euWest].Join(m)
	}
	do(euWest, x[euWest].Set(euWest, "book", 3))
	do(euWest, x[euWest].Remove("cup"))
	do(usEast, x[usEast].Add(usEast, "desk", 1))
	out["set-remove-history"] = x[euWest].Clone()
	out["set-delta"] = x[apSouth].Set(apSouth, "book", 7)
	do(apSouth, x[apSouth].Clear())
	out["cleared"] = x[apSouth].Clone()
	for _, r := range testReplicas {
		for _, m := range msgs {
			x[r].Join(m)
		}
	}
	out["converged"] = x[usEast]

	// After many add/remove cycles the counters need wide integers.
	big := freshCart(2, usEast, euWest)
	big.Ctx.VV[usEast] = 1 << 33
	big.Join(big.Add(usEast, "wide", MaxQty))
	out["wide-counters"] = big
	return out
}

// sampleItems returns realistic items.
func sampleItems() map[string]*Item {
	out := map[string]*Item{"empty": {}}
	it := &Item{}
	for k, r := range testReplicas {
		it.Join(it.Restock(r, uint64(10*(k+1))))
	}
	out["restocked-three-regions"] = it.Clone()
	it.Join(it.Consume(usEast, 7))
	it.Join(it.SetHeld(usEast, 4))
	out["consumed-and-held"] = it.Clone()
	out["held-delta"] = it.SetHeld(usEast, 0)
	out["restock-delta"] = it.Restock(apSouth, 3)
	wide := it.Clone()
	wide.Join(wide.Restock(euWest, 1<<40))
	wide.Held = Register{Version: 1 << 35, Replica: usEast, Value: 1 << 20}
	out["wide-counters"] = wide
	return out
}

// sampleGroups returns realistic delta-groups.
func sampleGroups() map[string]*Group {
	carts, items := sampleCarts(), sampleItems()
	out := map[string]*Group{"empty": {}}
	one := &Group{}
	one.AddCart("cart-1", carts["one-line"])
	out["one-cart-delta"] = one
	mixed := &Group{}
	mixed.AddCart("cart-1", carts["set-remove-history"])
	mixed.AddCart("cart-2", carts["cloud"])
	mixed.AddCart("cart-3", carts["empty"])
	mixed.AddItem("sku-a", items["consumed-and-held"])
	mixed.AddItem("sku-b", items["restock-delta"])
	out["carts-and-items"] = mixed
	items1 := &Group{}
	items1.AddItem("sku-a", items["held-delta"])
	out["item-delta"] = items1
	return out
}

type seed struct {
	name string
	data []byte
}

// String names the seed in test output.
func (s seed) String() string { return fmt.Sprintf("%s (%d bytes)", s.name, len(s.data)) }
