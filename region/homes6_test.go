package region

import (
	"strings"
	"testing"
	"time"
)

// TestHomesMoveNeverHasTwoDeciders: p1 (stock 10) moves from home h to
// home b by a rolling restart that starts, against the advice, with b.
// Before, b — caught up with h, which still ran the old homes — sold 10
// more units while h went on selling (18 committed of 10). Now a region
// decides as a home only once every peer has shown it the same homes in
// a completed anti-entropy round since they last changed: b waits for h
// to run the new homes, and h, once it has seen b run others, stops
// deciding too. After h's restart on the new homes both agree, and b,
// which then holds h's commits, sells only what is left.
func TestHomesMoveNeverHasTwoDeciders(t *testing.T) {
	r := newReconfRig(t, []string{"h", "b"}, homeAt("h"), escrowOnE(false))
	h, b := r.open("h"), r.open("b")
	must[Item](t)(h.Restock(bg, "p1", 10))
	r.deliver()
	sold := must[Reservation](t)(h.Reserve(bg, "p1", 8, time.Minute, Idem{}))
	must[Reservation](t)(h.Commit(bg, sold.ID, Idem{}))

	// b restarts first with p1 homed at b; h still runs the old homes.
	r.stop("b")
	r.home = homeAt("b")
	b = r.open("b")
	r.antiEntropy("h", "b", nil, []string{"p1"})
	b.SyncedWith("h", h.HomesID(), []string{"h"}) // a complete round: b's catch-up ends
	if b.CatchingUp() {
		t.Fatal("b still catches up after a complete round with its one peer")
	}
	_, err := b.Reserve(bg, "p1", 1, time.Minute, Idem{})
	wantCode(t, err, CodeUnavailable)
	if e := err.(*Error); !strings.Contains(e.Detail, "homes") || !strings.Contains(e.Detail, "h") {
		t.Fatalf("b's refusal does not say why: %q", e.Detail)
	}
	_, err = h.Reserve(bg, "p1", 1, time.Minute, Idem{})
	wantCode(t, err, CodeUnavailable) // h has seen b run other homes

	// A clean restart of h on the old homes, b away: h still remembers
	// that b runs others.
	r.stop("b")
	r.stop("h")
	r.home = homeAt("h")
	h = r.open("h")
	_, err = h.Reserve(bg, "p1", 1, time.Minute, Idem{})
	wantCode(t, err, CodeUnavailable)

	// Both on the new homes, and a complete round each way.
	r.stop("h")
	r.home = homeAt("b")
	h, b = r.open("h"), r.open("b")
	r.antiEntropy("h", "b", nil, []string{"p1"})
	h.SyncedWith("b", b.HomesID(), []string{"b"})
	b.SyncedWith("h", h.HomesID(), []string{"h"})
	if _, err := b.Reserve(bg, "p1", 3, time.Minute, Idem{}); err == nil {
		t.Fatal("b sold 3 of the 2 units h left")
	}
	last := must[Reservation](t)(b.Reserve(bg, "p1", 2, time.Minute, Idem{}))
	must[Reservation](t)(b.Commit(bg, last.ID, Idem{}))
	if st := r.item("b", "p1").Stock; st != 0 {
		t.Fatalf("stock %d after 10 of 10 sold", st)
	}
}

// TestHomesAgreementSurvivesRestartAndCut: once every peer has shown a
// region its homes, a clean restart with the same homes decides at once,
// also while the peers are unreachable (a home decides while cut off);
// a region whose homes changed decides nothing until every peer has
// shown it the new ones.
func TestHomesAgreementSurvivesRestartAndCut(t *testing.T) {
	r := newReconfRig(t, []string{"h", "b"}, homeAt("h"), escrowOnE(false))
	h, _ := r.open("h"), r.open("b")
	must[Item](t)(h.Restock(bg, "p1", 10))
	must[Reservation](t)(h.Reserve(bg, "p1", 1, time.Minute, Idem{}))
	r.stop("b")
	r.stop("h")
	h = r.open("h") // b is away
	must[Reservation](t)(h.Reserve(bg, "p1", 1, time.Minute, Idem{}))

	r.stop("h")
	r.regions = []string{"h", "b", "c"} // a region added: the homes of some skus may move
	h = r.open("h")
	_, err := h.Reserve(bg, "p1", 1, time.Minute, Idem{})
	wantCode(t, err, CodeUnavailable)
}

// TestHomesAgreementOfEarlierHomesLapses: a region's record that a peer
// ran its homes dates from before its homes last changed; after a change
// and a change back (A, B, A), with the peer away all along, the region
// does not take that peer as running A: meanwhile the peer may have
// come to run others and decide under them.
func TestHomesAgreementOfEarlierHomesLapses(t *testing.T) {
	r := newReconfRig(t, []string{"h", "b"}, homeAt("h"), escrowOnE(false))
	h, _ := r.open("h"), r.open("b")
	must[Item](t)(h.Restock(bg, "p1", 10))
	must[Reservation](t)(h.Reserve(bg, "p1", 1, time.Minute, Idem{}))
	r.stop("b")
	for _, home := range []string{"b", "h"} {
		r.stop("h")
		r.home = homeAt(home)
		h = r.open("h")
	}
	_, err := h.Reserve(bg, "p1", 1, time.Minute, Idem{})
	wantCode(t, err, CodeUnavailable)
}
