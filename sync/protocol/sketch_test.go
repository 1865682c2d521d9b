package protocol

import (
	"math/rand/v2"
	"slices"
	"testing"
)

// sketchDiff sketches two random sets that share common elements and
// differ by onlyA and onlyB elements, subtracts, and peels.
func sketchDiff(r *rand.Rand, k, m, common, onlyA, onlyB int, salt uint64) (wantA, wantB, gotA, gotB []sketchElem, ok bool) {
	a, b := newSketch(k, m, salt), newSketch(k, m, salt)
	for range common {
		e := sketchElem{r.Uint32(), r.Uint64()}
		a.add(e.slot, e.hash, 1)
		b.add(e.slot, e.hash, 1)
	}
	for range onlyA {
		e := sketchElem{r.Uint32(), r.Uint64()}
		a.add(e.slot, e.hash, 1)
		wantA = append(wantA, e)
	}
	for range onlyB {
		e := sketchElem{r.Uint32(), r.Uint64()}
		b.add(e.slot, e.hash, 1)
		wantB = append(wantB, e)
	}
	a.subtract(b)
	gotA, gotB, ok = a.peel()
	return
}

func sortElems(es []sketchElem) []sketchElem {
	es = slices.Clone(es)
	slices.SortFunc(es, func(x, y sketchElem) int {
		if x.slot != y.slot {
			return int(int64(x.slot) - int64(y.slot))
		}
		if x.hash < y.hash {
			return -1
		}
		if x.hash > y.hash {
			return 1
		}
		return 0
	})
	return es
}

// TestSketchDecodesDifferences: a sketch sized by sketchSize, widened
// twice over as the protocol does after a failure, decodes the exact
// difference of two sets of a thousand elements; a decode never
// succeeds with a wrong result.
func TestSketchDecodesDifferences(t *testing.T) {
	const seed = 7
	r := rand.New(rand.NewPCG(seed, seed))
	for _, n := range []int{1, 2, 3, 4, 7, 20, 100, 300} {
		tries := 0
		for trial := range 200 {
			onlyA := r.IntN(n + 1)
			k, m := sketchSize(n)
			for attempt := 0; ; attempt++ {
				tries++
				wantA, wantB, gotA, gotB, ok := sketchDiff(r, k, m, 1000, onlyA, n-onlyA, uint64(trial*10+attempt))
				if ok {
					if !slices.Equal(sortElems(gotA), sortElems(wantA)) || !slices.Equal(sortElems(gotB), sortElems(wantB)) {
						t.Fatalf("seed %d n=%d: decoded a wrong difference", seed, n)
					}
					break
				}
				if attempt == 5 {
					t.Fatalf("seed %d n=%d: no decode after %d widenings", seed, n, attempt)
				}
				k, m = sketchTables, max(3, 2*m)
			}
		}
		if tries > 200*13/10 {
			t.Errorf("seed %d n=%d: %d sketches for 200 differences, want at most 260", seed, n, tries)
		}
	}
}

// TestSketchRefusesTooManyElements: sketches far too small for the
// difference (one cell holding three elements whose counts add to one,
// tiny tables holding dozens) fail to decode rather than decode
// something else, whatever the salt.
func TestSketchRefusesTooManyElements(t *testing.T) {
	const seed = 11
	r := rand.New(rand.NewPCG(seed, seed))
	decoded := 0
	for trial := range 20000 {
		k, m := 1, 1+trial%2
		if trial%3 == 0 {
			k, m = sketchTables, 1+trial%4
		}
		wantA, wantB, gotA, gotB, ok := sketchDiff(r, k, m, 50, 2+trial%40, 1+trial%7, uint64(trial))
		if !ok {
			continue
		}
		decoded++
		if !slices.Equal(sortElems(gotA), sortElems(wantA)) || !slices.Equal(sortElems(gotB), sortElems(wantB)) {
			t.Fatalf("seed %d trial %d: a sketch of %d cells decoded a wrong difference", seed, trial, k*m)
		}
	}
	if decoded > 200 {
		t.Errorf("seed %d: %d of 20000 overfull sketches decoded", seed, decoded)
	}
}

// TestSketchWire: a sketch survives its encoding; shapes are checked.
func TestSketchWire(t *testing.T) {
	s := newSketch(sketchTables, 5, 42)
	for i := range 40 {
		s.add(uint32(i*7919), uint64(i)*0x9e3779b97f4a7c15, 1)
	}
	w := Sketch{Width: 5, Cells: s.encode(), Sum: s.sum}
	d := decodeSketch(&w, 42)
	if d == nil || !slices.Equal(d.count, s.count) || !slices.Equal(d.slot, s.slot) || !slices.Equal(d.hash, s.hash) || !slices.Equal(d.chk, s.chk) || d.sum != s.sum {
		t.Fatal("sketch changed on the wire")
	}
	for _, c := range []struct {
		width uint32
		cells int
		ok    bool
	}{{1, 1, true}, {1, 3, true}, {5, 15, true}, {5, 10, false}, {0, 0, false}, {MaxSketchWidth + 1, 3 * (MaxSketchWidth + 1), false}, {4, 5, false}} {
		_, err := sketchShape(c.width, c.cells*sketchCell)
		if (err == nil) != c.ok {
			t.Errorf("width %d, %d cells: %v", c.width, c.cells, err)
		}
	}
}

// TestCutFingerprintCoincidenceSendsRangeAgain: when the responder's XOR
// of the buckets it found equal is not the initiator's (a cut
// fingerprint hid a difference), those buckets go again (the range's
// runs of unanswered buckets, here 4 and 6 around the answered 5); when
// it is, nothing does.
func TestCutFingerprintCoincidenceSendsRangeAgain(t *testing.T) {
	p := &Protocol{cfg: DefaultConfig()}
	r := &rangeReq{lo: 4, hi: 7, fps: []uint64{11, 22, 33}, counts: []uint32{5, 5, 5}}
	st := &aeStep{ranges: []*rangeReq{r}, salt: 9}
	sk := Sketch{Bucket: 5, Width: 1, Cells: make([]byte, sketchCell)}
	for _, c := range []struct {
		eq    uint64
		again bool
	}{{11 ^ 33, false}, {11 ^ 34, true}} {
		ae := &aeRound{final: true}
		p.takeRanges(ae, st, &Message{Next: 1, Eq: []uint64{c.eq}, Sketches: []Sketch{sk}})
		var sent [][2]uint64
		for _, q := range ae.rqueue {
			sent = append(sent, [2]uint64{q.lo, q.hi})
		}
		want := [][2]uint64(nil)
		if c.again {
			want = [][2]uint64{{4, 5}, {6, 7}}
		}
		if !slices.Equal(sent, want) {
			t.Errorf("eq %d: buckets sent again %v, want %v", c.eq, sent, want)
		}
		if len(ae.sketches) != 1 || ae.sketches[0].w.Bucket != 5 {
			t.Errorf("eq %d: sketch of bucket 5 not queued: %+v", c.eq, ae.sketches)
		}
	}
	// An answer that names no range answered sends every range again.
	ae := &aeRound{final: true}
	p.takeRanges(ae, st, &Message{Next: 1})
	if !slices.Contains(ae.rqueue, r) || len(ae.sketches) != 0 {
		t.Errorf("answer without checks: rqueue %v, sketches %v", ae.rqueue, ae.sketches)
	}
}
