package crdt

import (
	"fmt"
	"testing"
)

// The metadata bound of SPEC §2: a cart's stored size is O(live entries +
// regions), not O(operations ever applied).

const cycles = 100_000

// freshCart returns a cart whose lines "line-00".. were added once each, the
// k-th at replica rs[k%len(rs)].
func freshCart(lines int, rs ...ReplicaID) *Cart {
	c := &Cart{}
	for k := range lines {
		c.Join(c.Add(rs[k%len(rs)], fmt.Sprintf("line-%02d", k), int64(k+1)))
	}
	return c
}

// contentPlusContext returns a cart holding exactly c's entries and a
// causal context that is only the version vector vv: the smallest state
// with that content after those operations.
func contentPlusContext(c *Cart, vv map[ReplicaID]uint64) *Cart {
	out := &Cart{Entries: c.Clone().Entries}
	for r, n := range vv {
		if out.Ctx.VV == nil {
			out.Ctx.VV = make(map[ReplicaID]uint64)
		}
		out.Ctx.VV[r] = n
	}
	return out
}

func TestMetadataBoundAddRemoveCycles(t *testing.T) {
	for _, lines := range []int{10, 1, 0} {
		t.Run(fmt.Sprintf("lines=%d", lines), func(t *testing.T) {
			fresh := freshCart(lines, usEast)
			c := freshCart(lines, usEast)
			for range cycles {
				c.Join(c.Add(usEast, "cycled", 1))
				c.Join(c.Remove("cycled"))
			}
			requireView(t, "after the cycles", c, viewOf(fresh))
			if len(c.Entries) != lines || len(c.Ctx.Cloud) != 0 {
				t.Fatalf("after %d cycles: %d entries and %d cloud dots, want %d and 0", cycles, len(c.Entries), len(c.Ctx.Cloud), lines)
			}
			// Exactly the content plus a version vector.
			want := contentPlusContext(fresh, map[ReplicaID]uint64{usEast: uint64(lines + cycles)})
			sameCart(t, "cycled cart = content + version vector", c, want)

			got, base := len(EncodeCart(c)), len(EncodeCart(fresh))
			t.Logf("lines=%d: fresh %d bytes, after %d cycles %d bytes", lines, base, cycles, got)
			if lines >= 10 && float64(got) > 1.1*float64(base) {
				t.Fatalf("encoded cart is %d bytes after %d cycles, more than 1.1 × %d", got, cycles, base)
			}
			// With one line the growth is the varint growth of the counter
			// (and, with no line at all, the one replica record).
			if got > base+16 {
				t.Fatalf("encoded cart is %d bytes after %d cycles, more than %d + 16", got, cycles, base)
			}
		})
	}
}

// TestMetadataBoundCyclesAcrossRegions runs the cycles at all three
// regions in turn, the adding and removing regions differing, with every
// delta shipped to the other regions late and in reverse order, a window
// at a time (the third region sees each cycle only then). The cloud stays within the window,
// empties when deliveries catch up, and the final size is the content plus
// three version-vector entries.
func TestMetadataBoundCyclesAcrossRegions(t *testing.T) {
	const window = 8
	for _, lines := range []int{10, 1} {
		t.Run(fmt.Sprintf("lines=%d", lines), func(t *testing.T) {
			fresh := freshCart(lines, testReplicas...)
			x := map[ReplicaID]*Cart{}
			for _, r := range testReplicas {
				x[r] = fresh.Clone()
			}
			var late []*Cart // deltas held back for the late peer
			maxCloud := 0
			for k := range cycles {
				adder := testReplicas[k%3]
				remover := testReplicas[(k+1)%3]

				add := x[adder].Add(adder, "cycled", 1)
				x[adder].Join(add)
				x[remover].Join(add)
				rm := x[remover].Remove("cycled")
				x[remover].Join(rm)
				x[adder].Join(rm)
				late = append(late, add, rm)
				if len(late) == 2*window || k == cycles-1 {
					// The held-back deltas reach every region (the lagging
					// one for the first time), newest first.
					for i := len(late) - 1; i >= 0; i-- {
						for _, r := range testReplicas {
							x[r].Join(late[i])
							maxCloud = max(maxCloud, len(x[r].Ctx.Cloud))
						}
					}
					late = late[:0]
				}
			}
			if maxCloud > 2*window {
				t.Fatalf("a cloud reached %d dots, more than the %d deltas in flight", maxCloud, 2*window)
			}
			ref := EncodeCart(x[usEast])
			for _, r := range testReplicas {
				sameBytes(t, string(r)+" converged", EncodeCart(x[r]), ref)
				requireView(t, string(r), x[r], viewOf(fresh))
				if len(x[r].Ctx.Cloud) != 0 {
					t.Fatalf("%s keeps %d cloud dots after catching up", r, len(x[r].Ctx.Cloud))
				}
			}
			vv := make(map[ReplicaID]uint64)
			for k := range lines {
				vv[testReplicas[k%3]]++
			}
			for k := range cycles {
				vv[testReplicas[k%3]]++
			}
			sameCart(t, "cycled cart = content + version vector", x[usEast], contentPlusContext(fresh, vv))

			// The fresh cart to compare with knows all three regions, as any
			// cart edited in three regions does.
			vv1 := map[ReplicaID]uint64{}
			for _, r := range testReplicas {
				vv1[r] = max(1, fresh.Ctx.VV[r])
			}
			got, base := len(EncodeCart(x[usEast])), len(EncodeCart(contentPlusContext(fresh, vv1)))
			t.Logf("lines=%d: fresh %d bytes, after %d cycles over 3 regions %d bytes", lines, base, cycles, got)
			if lines >= 10 && float64(got) > 1.1*float64(base) {
				t.Fatalf("encoded cart is %d bytes, more than 1.1 × %d", got, base)
			}
			if got > base+3*4 {
				t.Fatalf("encoded cart is %d bytes, more than %d + 3 × 4 bytes of varint growth", got, base)
			}
		})
	}
}
