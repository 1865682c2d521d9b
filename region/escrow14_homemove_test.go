package region

import (
	"strings"
	"testing"
	"time"
)

// TestEscrowHomeMovedToRightsHolderAndBackNeverOversells: region a holds
// unused rights to escrow sku e1 (granted by its home h) when the operator
// moves e1's home to a (a clean rolling restart, no reservation open). As
// the home, a decides from the whole stock less the rights of the other
// regions: its own rights are not left out, and it sells all 10 units.
// The home then moves back to h (another clean rolling restart). The
// rights a held before it became home still show in the item (granted,
// never used nor returned), and a decides reservations from them again:
// units it already sold as the home. held + committed must stay <= stock
// (configuration.md, escrow: "whatever is ... restarted").
func TestEscrowHomeMovedToRightsHolderAndBackNeverOversells(t *testing.T) {
	r := newReconfRig(t, []string{"h", "a"}, homeAt("h"), escrowOnE(true))
	h, a := r.open("h"), r.open("a")
	must[Item](t)(h.Restock(bg, "e1", 10))
	r.deliver()
	res := must[Reservation](t)(a.Reserve(bg, "e1", 1, time.Minute, Idem{}))
	if !strings.HasPrefix(res.ID, "a:") {
		t.Fatalf("the reservation was decided at %s, not from a's rights", res.ID)
	}
	must[Reservation](t)(a.Release(bg, res.ID, Idem{}))
	r.deliver()
	rights := *r.item("a", "e1").Rights
	if rights == 0 {
		t.Fatal("a holds no rights to e1")
	}
	t.Logf("a holds %d unused rights to e1 (stock 10)", rights)

	// e1's home moves to a: a clean rolling restart, no hold open.
	r.stop("h")
	r.stop("a")
	r.home = homeAt("a")
	h, a = r.open("h"), r.open("a")
	r.antiEntropy("h", "a", nil, []string{"e1"})
	h.SyncedWith("a", a.HomesID(), []string{"a"})
	a.SyncedWith("h", h.HomesID(), []string{"h"})

	sold := int64(0)
	for sold < 10 {
		got, err := a.Reserve(bg, "e1", 1, time.Minute, Idem{})
		if err != nil {
			t.Logf("a, the home, refused after %d: %v", sold, err)
			break
		}
		must[Reservation](t)(a.Commit(bg, got.ID, Idem{}))
		sold++
	}
	r.deliver()
	t.Logf("a, as e1's home, sold %d units; the item there: %+v", sold, r.item("a", "e1"))

	// The home moves back to h: another clean rolling restart.
	r.stop("h")
	r.stop("a")
	r.home = homeAt("h")
	h, a = r.open("h"), r.open("a")
	r.antiEntropy("h", "a", nil, []string{"e1"})
	h.SyncedWith("a", a.HomesID(), []string{"a"})
	a.SyncedWith("h", h.HomesID(), []string{"h"})

	var more int64
	for range 10 {
		got, err := a.Reserve(bg, "e1", 1, time.Minute, Idem{})
		if err != nil {
			break
		}
		if _, err := a.Commit(bg, got.ID, Idem{}); err != nil {
			break
		}
		more++
	}
	r.deliver()
	r.antiEntropy("h", "a", nil, []string{"e1"})
	if sold+more > 10 {
		t.Fatalf("e1 (10 restocked) sold %d units: %d by a as its home, then %d by a from the %d rights h had granted it before a was home, which a's sales as the home did not use up (stock now %d at h)",
			sold+more, sold, more, rights, r.item("h", "e1").Stock)
	}
}

// TestEscrowNewHomeCountsGrantsOfTheOldHome: h, the home of escrow sku
// e1, grants rights to a while b is down (b never gets that delta). The
// operator then moves e1's home to b (a clean rolling restart, no
// reservation open; a keeps its unused rights, which the docs say stay
// a's and go back to the home once idle). b, the new home, catches up
// with h and a by anti-entropy before it decides, as operations.md
// (Catch-up, Changing the set of regions) says, so it must count a's
// rights: the grant record h wrote. If b drops that record (it was not
// written by e1's current home), b sells the whole stock while a still
// decides from its rights, and more units are sold than were restocked.
func TestEscrowNewHomeCountsGrantsOfTheOldHome(t *testing.T) {
	r := newReconfRig(t, []string{"h", "a", "b"}, homeAt("h"), escrowOnE(true))
	h, a := r.open("h"), r.open("a")
	r.open("b")
	must[Item](t)(h.Restock(bg, "e1", 10))
	r.deliver()
	r.stop("b") // b misses the grant's delta
	res := must[Reservation](t)(a.Reserve(bg, "e1", 1, time.Minute, Idem{}))
	if !strings.HasPrefix(res.ID, "a:") {
		t.Fatalf("the reservation was decided at %s, not from a's rights", res.ID)
	}
	must[Reservation](t)(a.Release(bg, res.ID, Idem{}))
	r.deliver()
	rights := *r.item("a", "e1").Rights
	t.Logf("a holds %d unused rights granted by h; h shows %d granted", rights, deref(r.item("h", "e1").Granted))

	// e1's home moves to b: a clean rolling restart of every region.
	r.stop("h")
	r.stop("a")
	r.home = homeAt("b")
	h, a = r.open("h"), r.open("a")
	b := r.open("b")
	if !b.CatchingUp() {
		t.Fatal("b, e1's new home, does not catch up before deciding")
	}
	r.antiEntropy("h", "b", nil, []string{"e1"})
	r.antiEntropy("a", "b", nil, []string{"e1"})
	r.antiEntropy("h", "a", nil, []string{"e1"})
	for _, x := range []string{"h", "a", "b"} {
		for _, y := range []string{"h", "a", "b"} {
			if x != y {
				r.nodes[x].SyncedWith(y, r.nodes[y].HomesID(), peersOf(r, x))
			}
		}
	}
	if b.CatchingUp() {
		t.Fatal("b still catching up")
	}
	view := r.item("b", "e1")
	t.Logf("b, the new home, after catching up: stock %d, available %d, granted %v", view.Stock, view.Available, deref(view.Granted))

	var atHome, fromRights int64
	for range 10 {
		got, err := b.Reserve(bg, "e1", 1, time.Minute, Idem{})
		if err != nil {
			break
		}
		must[Reservation](t)(b.Commit(bg, got.ID, Idem{}))
		atHome++
	}
	r.deliver()
	for range 10 {
		got, err := a.Reserve(bg, "e1", 1, time.Minute, Idem{})
		if err != nil || !strings.HasPrefix(got.ID, "a:") {
			break
		}
		if _, err := a.Commit(bg, got.ID, Idem{}); err != nil {
			break
		}
		fromRights++
	}
	r.deliver()
	if atHome+fromRights > 10 {
		t.Fatalf("e1 (10 restocked) sold %d units: %d by b, its new home, which does not count the %d rights h granted a before the move (b shows granted %v), and %d by a from those rights (stock now %d at b)",
			atHome+fromRights, atHome, rights, deref(view.Granted), fromRights, r.item("b", "e1").Stock)
	}
}

func peersOf(r *reconfRig, name string) []string {
	var out []string
	for _, p := range r.regions {
		if p != name {
			out = append(out, p)
		}
	}
	return out
}
