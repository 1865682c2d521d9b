package crdt

import (
	"fmt"
	"runtime"
	"testing"
)

// allocatedBy returns the bytes f allocates.
func allocatedBy(f func()) uint64 {
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// TestStockValueOfDecodableItemDoesNotOverflow checks the bound MaxCount
// documents: a replica's increments are at most MaxCount "so that sums
// over MaxReplicas never overflow". An item the decoder accepts, with
// MaxReplicas replicas that each restocked MaxCount units and consumed
// none, has a positive stock.
func TestStockValueOfDecodableItemDoesNotOverflow(t *testing.T) {
	var recs [][]byte
	for k := range MaxReplicas {
		recs = append(recs, wCounter(fmt.Sprintf("r%03d", k), MaxCount, 0))
	}
	it, err := DecodeItem(wItem(recs, 0, "", 0))
	if err != nil {
		t.Fatalf("DecodeItem: %v", err)
	}
	if v := it.Stock.Value(); v <= 0 {
		t.Fatalf("%d replicas each restocked %d units and none consumed any, but Value() = %d", MaxReplicas, uint64(MaxCount), v)
	}
}

// TestEscrowOutstandingOfDecodableItemDoesNotOverflow checks that the
// rights a decodable item shows for a region are never more than what was
// granted less what was used: a region whose incarnations used more than
// it was granted has no rights outstanding.
func TestEscrowOutstandingOfDecodableItemDoesNotOverflow(t *testing.T) {
	it := &Item{Escrow: map[EscrowKey]uint64{
		{Kind: EscrowGrant, Region: "eu-west", Replica: "us-east"}: 10,
	}}
	for k := uint64(1); k <= 384; k++ {
		it.Escrow[EscrowKey{Kind: EscrowUsed, Region: "eu-west", Replica: Incarnation("eu-west", k)}] = MaxCount
	}
	back, err := DecodeItem(EncodeItem(it))
	if err != nil {
		t.Fatalf("DecodeItem: %v", err)
	}
	if got := back.Outstanding("eu-west"); got != 0 {
		t.Fatalf("eu-west was granted %d and used %d×%d: Outstanding = %d, want 0 (Used() = %d)",
			back.Granted("eu-west"), 384, uint64(MaxCount), got, back.Used("eu-west"))
	}
	if got := back.OutstandingAll("us-east"); got != 0 {
		t.Fatalf("OutstandingAll = %d, want 0", got)
	}
}

// TestDecodeAllocationIsBoundedForDeclaredRecords decodes small inputs
// whose arrays of escrow records, stock records or replica records
// declare the most elements allowed but carry junk. The parser allocates
// only for what it has accepted (decode.go), so refusing them costs at
// most a small multiple of their size, as for declared entries.
func TestDecodeAllocationIsBoundedForDeclaredRecords(t *testing.T) {
	const factor = 32
	cases := []struct {
		name string
		data []byte
		dec  func([]byte) error
	}{
		{"item-escrow", cat(cHead(4, 5), cArr(), cUint(0), cText(""), cUint(0), cHead(4, MaxEscrowRecords), make([]byte, MaxEscrowRecords)),
			func(b []byte) error { _, err := DecodeItem(b); return err }},
		{"item-stock", cat(cHead(4, 4), cHead(4, MaxReplicas), wCounter("a", 1, 0), make([]byte, MaxReplicas)),
			func(b []byte) error { _, err := DecodeItem(b); return err }},
		{"context", cat(cHead(4, MaxReplicas), wRep("a", 1, nil), make([]byte, MaxReplicas)),
			func(b []byte) error { _, err := DecodeContext(b); return err }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var err error
			alloc := allocatedBy(func() { err = tc.dec(tc.data) })
			if err == nil {
				t.Fatalf("accepted")
			}
			if alloc > uint64(factor*len(tc.data)) {
				t.Fatalf("refusing %d bytes allocated %d bytes (%.0f×), more than %d×: %v",
					len(tc.data), alloc, float64(alloc)/float64(len(tc.data)), factor, err)
			}
		})
	}
}

// bigCloudRecords returns as many replica records as fit in limit bytes,
// each with a version-vector entry of 0 and the longest cloud a record
// may hold (counters 2, 3, ...): a valid, compact context.
func bigCloudRecords(limit int) [][]byte {
	var cloud []uint64
	for c := uint64(2); len(cloud) < maxArray; c++ {
		cloud = append(cloud, c)
	}
	var recs [][]byte
	size := 0
	for k := 0; k < MaxReplicas; k++ {
		r := wRep(fmt.Sprintf("r%03d", k), 0, cloud)
		if size+len(r)+64 > limit {
			break
		}
		size += len(r)
		recs = append(recs, r)
	}
	return recs
}

// TestDecodeAllocationIsBoundedForLargeClouds decodes the largest valid
// contexts and groups the limits admit, made of clouds of out-of-order
// dots, and checks that decoding them costs at most a small multiple of
// their size. Clouds are the costliest input per byte there is: a dot of
// 3 bytes becomes a map slot of a Dot (24 bytes) in a table that doubles
// as it grows, and the strict decoders sort the cloud to re-encode it
// (about 50× in all, measured); a group of MaxGroupBytes so costs about
// 200 MB while it is decoded.
func TestDecodeAllocationIsBoundedForLargeClouds(t *testing.T) {
	const factor = 64
	cases := []struct {
		name string
		data []byte
		dec  func([]byte) error
	}{
		{"context", wCart(bigCloudRecords(MaxObjectBytes)...),
			func(b []byte) error { _, err := DecodeContext(b); return err }},
		{"group", wGroup([][]byte{wGroupCart("a", wCart(bigCloudRecords(MaxGroupBytes)...))}, nil),
			func(b []byte) error { _, err := DecodeGroup(b); return err }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var err error
			alloc := allocatedBy(func() { err = tc.dec(tc.data) })
			if err != nil {
				t.Fatalf("refused a valid value: %v", err)
			}
			if alloc > uint64(factor*len(tc.data)) {
				t.Fatalf("decoding %d bytes allocated %d bytes (%.0f×), more than %d×",
					len(tc.data), alloc, float64(alloc)/float64(len(tc.data)), factor)
			}
		})
	}
}
