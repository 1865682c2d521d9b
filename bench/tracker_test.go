package bench

import (
	"testing"
	"time"

	"github.com/latticedb/lattice/crdt"
	"github.com/latticedb/lattice/sync/protocol"
)

func TestTrackerMeasuresEachDotAtEachRemote(t *testing.T) {
	regions := []string{"a", "b", "c"}
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(msec int) time.Time { return t0.Add(time.Duration(msec) * time.Millisecond) }
	tr := NewTracker(regions)
	tr.Measure(at(100))

	tr.Published("a", 0, 1, at(50)) // before the measured period
	tr.Published("a", 0, 2, at(100))
	tr.Published("a", 0, 3, at(110))
	tr.Published("b", 0, 1, at(120))
	tr.Published("zz", 0, 1, at(120)) // not a region: ignored

	// b gets a's dots 1..3 in one range at 150; c gets 2 at 200 by relay
	// from b, then 2..3 again at 300 (only the first time counts).
	tr.Applied("b", []protocol.DotRange{{Origin: "a", From: 1, To: 3}}, at(150))
	tr.Applied("c", []protocol.DotRange{{Origin: "a", From: 2, To: 2}}, at(200))
	tr.Applied("c", []protocol.DotRange{{Origin: "a", From: 2, To: 3}}, at(300))
	// a gets b's dot; c never sees it as a delta but holds it at the end.
	tr.Applied("a", []protocol.DotRange{{Origin: "b", From: 1, To: 1}}, at(140))

	holds := map[[3]int]bool{{2, 1, 1}: true} // c holds b:1
	has := func(r, _, o int, seq uint64) bool { return holds[[3]int{r, o, int(seq)}] }
	if n := tr.Pending(has); n != 1 {
		t.Fatalf("pending %d, want 1 (a:1 at c)", n)
	}
	var missing []int
	tr.PendingBy(has, func(r int) { missing = append(missing, r) })
	if len(missing) != 1 || missing[0] != 2 {
		t.Fatalf("missing at %v, want [2]", missing)
	}

	oneWay := func(x, y string) time.Duration { return 30 * time.Millisecond }
	pairs, measured := tr.Pairs(has, oneWay)
	if measured != 3 {
		t.Fatalf("measured %d dots, want 3 (a:2, a:3, b:1)", measured)
	}
	if len(pairs) != 6 {
		t.Fatalf("%d pairs, want 6", len(pairs))
	}
	get := func(from, to string) PairResult {
		for _, p := range pairs {
			if p.From == from && p.To == to {
				return p
			}
		}
		t.Fatalf("no pair %s → %s", from, to)
		return PairResult{}
	}
	ab := get("a", "b")
	if ab.Count != 2 || ab.Min != 40 || ab.Max != 50 {
		t.Errorf("a → b: %+v, want 2 samples, 50 ms (a:2) and 40 ms (a:3)", ab.Summary)
	}
	ac := get("a", "c")
	if ac.Count != 2 || ac.Min != 100 || ac.Max != 190 {
		t.Errorf("a → c: %+v, want 100 ms (a:2) and 190 ms (a:3)", ac.Summary)
	}
	if ac.OneWayMS != 30 || ac.OverFloorP50MS != ac.P50-30 {
		t.Errorf("a → c floor: %v, over %v", ac.OneWayMS, ac.OverFloorP50MS)
	}
	ba := get("b", "a")
	if ba.Count != 1 || ba.P50 != 20 {
		t.Errorf("b → a: %+v, want one sample of 20 ms", ba.Summary)
	}
	if bc := get("b", "c"); bc.Count != 0 || bc.ViaAntiEntropy != 1 || bc.Missing != 0 {
		t.Errorf("b → c: %+v, want b:1 by anti-entropy", bc)
	}
	if ca := get("c", "a"); ca.Count != 0 || ca.Missing != 0 {
		t.Errorf("c → a: %+v, want nothing", ca)
	}
}

func TestTrackerCountsMissingDots(t *testing.T) {
	tr := NewTracker([]string{"a", "b"})
	tr.Published("a", 0, 1, time.Unix(1, 0))
	pairs, _ := tr.Pairs(func(int, int, int, uint64) bool { return false }, func(string, string) time.Duration { return 0 })
	for _, p := range pairs {
		if p.From == "a" && p.Missing != 1 {
			t.Fatalf("a → b: missing %d, want 1", p.Missing)
		}
	}
}

// TestTrackerTellsPartitionsApart: the partitions of a region number
// their dots separately under the same replica id, so a's dot 1 exists in
// partitions 0 and 3. An apply of a:1 at b counts for the partition whose
// applied context at b holds it, and a later apply of a:1 for the other.
func TestTrackerTellsPartitionsApart(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(msec int) time.Time { return t0.Add(time.Duration(msec) * time.Millisecond) }
	// held[region][part] is what region's partition part has applied.
	held := [2][4]crdt.Context{}
	reads := 0
	tr := NewPartitionedTracker([]string{"a", "b"}, 4, func(r, part int) crdt.Context {
		reads++
		return held[r][part].Clone()
	})
	tr.Published("a", 0, 1, at(0))
	tr.Published("a", 3, 1, at(10))
	tr.Published("a", 3, 2, at(20))
	tr.Published("a", 4, 1, at(20)) // no partition 4: ignored

	dot := func(seq uint64) crdt.Dot { return crdt.Dot{Replica: "a", Counter: seq} }
	held[1][3].Insert(dot(1))
	held[1][3].Insert(dot(2))
	tr.Applied("b", []protocol.DotRange{{Origin: "a", From: 1, To: 2}}, at(50))
	if reads != 2 {
		t.Errorf("%d reads of applied contexts for one apply of two partitions' candidates, want 2 (each partition once)", reads)
	}
	held[1][0].Insert(dot(1))
	tr.Applied("b", []protocol.DotRange{{Origin: "a", From: 1, To: 1}}, at(80))
	// A repeated apply changes nothing.
	tr.Applied("b", []protocol.DotRange{{Origin: "a", From: 1, To: 2}}, at(500))

	pairs, measured := tr.Pairs(func(int, int, int, uint64) bool { return false }, func(string, string) time.Duration { return 0 })
	if measured != 3 {
		t.Fatalf("measured %d dots, want 3 (a:1 of partitions 0 and 3, a:2 of partition 3)", measured)
	}
	for _, p := range pairs {
		if p.From != "a" {
			continue
		}
		// Partition 0's a:1: 80 ms; partition 3's a:1: 40 ms, a:2: 30 ms.
		if p.Count != 3 || p.Min != 30 || p.Max != 80 || p.Missing != 0 {
			t.Fatalf("a → b: %+v, want 30, 40 and 80 ms", p)
		}
	}
	if n := tr.Pending(func(int, int, int, uint64) bool { return false }); n != 0 {
		t.Errorf("pending %d, want 0", n)
	}
}
