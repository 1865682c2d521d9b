package region

import (
	"math"
	"strconv"
	"testing"
)

func TestParseReservationID(t *testing.T) {
	for _, tc := range []struct {
		id   string
		home string
		part int
		seq  uint64
		ok   bool
	}{
		{"us-east:1", "us-east", 0, 1, true},
		{"us-east:zz", "us-east", 0, 36*36 - 1, true},
		{"us-east:7:10", "us-east", 7, 36, true},
		{"us-east:0:10", "us-east", 0, 36, true},
		{"us-east:4095:1", "us-east", 4095, 1, true},
		{"us-east:4096:1", "", 0, 0, false},
		{"us-east:07:1", "", 0, 0, false},
		{"us-east:-1:1", "", 0, 0, false},
		{"us-east::1", "", 0, 0, false},
		{":3:1", "", 0, 0, false},
		{"a:b:10", "", 0, 0, false},
		{"a:1:2:3", "", 0, 0, false},
		{"us-east:" + strconv.FormatUint(math.MaxUint64, 36), "us-east", 0, math.MaxUint64, true},
		{"us-east:3w5e11264sgsh", "", 0, 0, false}, // one past the largest
		{"us-east:0", "", 0, 0, false},
		{"us-east:01", "", 0, 0, false},
		{"us-east:00", "", 0, 0, false},
		{"us-east:A", "", 0, 0, false},
		{"us-east:-1", "", 0, 0, false},
		{"us-east:+1", "", 0, 0, false},
		{"us-east:1_0", "", 0, 0, false},
		{"us-east:", "", 0, 0, false},
		{":1", "", 0, 0, false},
		{"us-east", "", 0, 0, false},
		{"", "", 0, 0, false},
		{"us east:1", "", 0, 0, false},
	} {
		home, part, seq, ok := parseReservationID(tc.id)
		if home != tc.home || part != tc.part || seq != tc.seq || ok != tc.ok {
			t.Errorf("parseReservationID(%q) = %q, %d, %d, %v; want %q, %d, %d, %v", tc.id, home, part, seq, ok, tc.home, tc.part, tc.seq, tc.ok)
		}
	}
}

// TestIssuedAcrossRestart checks that a number above the last one handed
// out is never issued, before and after the node reopens its store.
func TestIssuedAcrossRestart(t *testing.T) {
	dir := t.TempDir()
	clock := newFakeClock()
	n := openNode(t, dir, clock)
	must[Item](t)(n.Restock(bg, "w", 10))
	r := must[Reservation](t)(n.Reserve(bg, "w", 1, 0, Idem{}))
	_, _, seq, ok := parseReservationID(r.ID)
	if !ok || !n.issued(seq) || n.issued(seq+1) {
		t.Fatalf("after reserving %s: issued(%d) = %v, issued(%d) = %v", r.ID, seq, n.issued(seq), seq+1, n.issued(seq+1))
	}
	wantCode(t, second3(n.GetReservation(bg, "us-east:"+strconv.FormatUint(seq+1, 36))), CodeNotFound)
	n.close()

	n = openNode(t, dir, clock)
	if !n.issued(seq) {
		t.Errorf("after a restart, %d (issued before it) reads as never issued", seq)
	}
	if got := must[Reservation](t)(n.GetReservation(bg, r.ID)); got.ID != r.ID {
		t.Errorf("after a restart, get %s: %+v", r.ID, got)
	}
	r2 := must[Reservation](t)(n.Reserve(bg, "w", 1, 0, Idem{}))
	_, _, seq2, _ := parseReservationID(r2.ID)
	if seq2 <= seq || !n.issued(seq2) || n.issued(seq2+1) {
		t.Errorf("after a restart, reserved %s: issued(%d) = %v, issued(%d) = %v", r2.ID, seq2, n.issued(seq2), seq2+1, n.issued(seq2+1))
	}
}
