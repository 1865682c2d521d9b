package crdt

import (
	"fmt"
	"testing"
)

var benchLines = []int{1, 10, 100}

// benchCart returns a realistic cart of n lines: lines added at the three
// regions, after a history of add/remove cycles that gives every region a
// counter in the thousands, fully exchanged (no cloud).
func benchCart(n int) *Cart {
	c := freshCart(n, testReplicas...)
	for k := range 3000 {
		r := testReplicas[k%3]
		c.Join(c.Add(r, "cycled", 1))
		c.Join(c.Remove("cycled"))
	}
	return c
}

// batch is how many prepared inputs a benchmark makes at a time, with its
// timer stopped.
const batch = 256

// BenchmarkJoin joins the state of a replica that made one concurrent set
// into a replica that made one concurrent add (full-state anti-entropy of
// one cart).
func BenchmarkJoin(b *testing.B) {
	for _, n := range benchLines {
		b.Run(fmt.Sprintf("lines=%d", n), func(b *testing.B) {
			base := benchCart(n)
			east, west := base.Clone(), base.Clone()
			east.Join(east.Add(usEast, "line-00", 1))
			west.Join(west.Set(euWest, fmt.Sprintf("line-%02d", n-1), 9))
			dsts := make([]*Cart, batch)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if i%batch == 0 {
					b.StopTimer()
					for k := range dsts {
						dsts[k] = east.Clone()
					}
					b.StartTimer()
				}
				dsts[i%batch].Join(west)
			}
			b.StopTimer()
			if got := dsts[0]; got.Qty(fmt.Sprintf("line-%02d", n-1)) < 9 {
				b.Fatalf("join lost the concurrent set")
			}
		})
	}
}

// BenchmarkDeltaApply applies at a peer, in order, the deltas a region
// sends for a stream of set operations on the cart's lines (the cart keeps
// n lines).
func BenchmarkDeltaApply(b *testing.B) {
	for _, n := range benchLines {
		b.Run(fmt.Sprintf("lines=%d", n), func(b *testing.B) {
			src := benchCart(n)
			dst := src.Clone()
			deltas := make([]*Cart, batch)
			q := int64(0)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if i%batch == 0 {
					b.StopTimer()
					for k := range deltas {
						q = q%MaxQty + 1
						d := src.Set(usEast, fmt.Sprintf("line-%02d", (i+k)%n), q)
						src.Join(d)
						deltas[k] = d
					}
					b.StartTimer()
				}
				dst.Join(deltas[i%batch])
			}
			b.StopTimer()
			if len(dst.Entries) != n {
				b.Fatalf("the peer holds %d entries, want %d", len(dst.Entries), n)
			}
		})
	}
}

// BenchmarkEncode measures EncodeCart.
func BenchmarkEncode(b *testing.B) { benchEncode(b, EncodeCart) }

// BenchmarkEncodeReflect measures the reflection-based reference encoder
// that EncodeCart replaced.
func BenchmarkEncodeReflect(b *testing.B) { benchEncode(b, refEncodeCart) }

// BenchmarkAppendCart measures AppendCart into a reused buffer.
func BenchmarkAppendCart(b *testing.B) {
	var buf []byte
	benchEncode(b, func(c *Cart) []byte { buf = AppendCart(buf[:0], c); return buf })
}

func benchEncode(b *testing.B, enc func(*Cart) []byte) {
	for _, n := range benchLines {
		b.Run(fmt.Sprintf("lines=%d", n), func(b *testing.B) {
			c := benchCart(n)
			b.SetBytes(int64(len(enc(c))))
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				enc(c)
			}
		})
	}
}

// BenchmarkDecode measures DecodeCart.
func BenchmarkDecode(b *testing.B) { benchDecode(b, DecodeCart) }

// BenchmarkDecodeReflect measures the reflection-based reference decoder
// that DecodeCart replaced.
func BenchmarkDecodeReflect(b *testing.B) { benchDecode(b, refDecodeCart) }

// BenchmarkDecodeStored measures DecodeCartStored, which skips the
// canonical check.
func BenchmarkDecodeStored(b *testing.B) { benchDecode(b, DecodeCartStored) }

func benchDecode(b *testing.B, dec func([]byte) (*Cart, error)) {
	for _, n := range benchLines {
		b.Run(fmt.Sprintf("lines=%d", n), func(b *testing.B) {
			enc := EncodeCart(benchCart(n))
			b.SetBytes(int64(len(enc)))
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := dec(enc); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkCompactLongRuns joins the one dot that closes the gap in front
// of a cloud of 4 × 16,384 dots; compaction is linear in the cloud, so
// this stays in the milliseconds (a quadratic compaction took seconds).
func BenchmarkCompactLongRuns(b *testing.B) {
	reps := []ReplicaID{"ap-south", "eu-west", "us-east", "us-west"}
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		c := &Cart{}
		c.Ctx.Cloud = make(map[Dot]struct{}, len(reps)*maxArray)
		for _, r := range reps {
			for k := range maxArray {
				c.Ctx.Cloud[Dot{r, uint64(k + 2)}] = struct{}{}
			}
		}
		gap := &Cart{}
		for _, r := range reps {
			gap.Ctx.Insert(Dot{r, 1})
		}
		b.StartTimer()
		c.Join(gap)
	}
}

// BenchmarkDecodeGroup measures DecodeGroup of a delta-group of carts:
// one add's delta (carts=1, one line), and an anti-entropy batch of 64
// carts of 3 lines each from three replicas.
func BenchmarkDecodeGroup(b *testing.B) {
	for _, tc := range []struct {
		carts, lines int
	}{{1, 1}, {64, 3}} {
		b.Run(fmt.Sprintf("carts=%d/lines=%d", tc.carts, tc.lines), func(b *testing.B) {
			g := &Group{}
			for i := range tc.carts {
				g.AddCart(fmt.Sprintf("cart-%04d", i), freshCart(tc.lines, testReplicas...))
			}
			enc := EncodeGroup(g)
			b.SetBytes(int64(len(enc)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := DecodeGroup(enc); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
