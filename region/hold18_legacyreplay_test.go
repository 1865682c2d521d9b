package region

import (
	"strings"
	"testing"
	"time"

	"github.com/latticedb/lattice/region/store"
)

// TestEscrowLegacyKeyedReplayShowsCommittedPastExpiry: docs/api.md
// (Idempotency, Replays): "A reserve's recorded held answer is replayed as
// it was until the hold's expires_at ...; from expires_at on, the replay
// shows the state the hold is in: expired, or committed or released if it
// ended so." reserveEscrow answers a keyed reservation from the record the
// region holds for its key when it decided the hold from its own rights
// (localIdem: "a reservation an earlier version decided here"). Such a
// hold, committed before its expires_at, must replay as committed after
// it, as a replay at the home does (ServeHome); a client retrying its
// reservation after the ttl must not be told its committed units expired.
func TestEscrowLegacyKeyedReplayShowsCommittedPastExpiry(t *testing.T) {
	r := newEscrowRig(t)
	h, a := r.nodes["h"], r.nodes["a"]
	must[Item](t)(h.Restock(bg, "e1", 100))
	r.deliver(nil)

	res := must[Reservation](t)(a.Reserve(bg, "e1", 3, 2*time.Second, Idem{}))
	if !strings.HasPrefix(res.ID, "a:") {
		t.Fatalf("reservation %s not decided from a's rights", res.ID)
	}
	// The record an earlier version wrote under the reservation's key when
	// it decided the hold here from a's rights.
	key := idemKey("legacy-k", "reserve e1 3 2000")
	var rec *ResRecord
	if err := a.store.Update([]string{prefixIdem + key.Key, prefixItem + "e1"}, func(tx *store.Tx) error {
		cur, ok, err := loadRes(tx, res.ID)
		if err != nil || !ok {
			t.Fatalf("record of %s: %v %v", res.ID, ok, err)
		}
		rec = cur
		tx.Set(prefixIdem+key.Key, encode(&idemRecord{FP: key.Fingerprint[:], AtMs: r.clock.Now().UnixMilli(), Resp: &HomeResponse{Res: rec}}))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if !rec.Escrow {
		t.Fatalf("record %+v not marked as decided from rights", rec)
	}
	before := r.forward
	if got := must[Reservation](t)(a.Reserve(bg, "e1", 3, 2*time.Second, key)); got.ID != res.ID || got.State != StateHeld || r.forward != before {
		t.Fatalf("replay of the legacy key: %+v (%d forwards), want %s held answered by a", got, r.forward-before, res.ID)
	}

	if c := must[Reservation](t)(a.Commit(bg, res.ID, Idem{})); c.State != StateCommitted {
		t.Fatalf("commit: %+v", c)
	}
	r.clock.Advance(3 * time.Second) // past expires_at
	if g := must[Reservation](t)(a.GetReservation(bg, res.ID)); g.State != StateCommitted {
		t.Fatalf("GET %s after its commit and ttl: %s, want committed", res.ID, g.State)
	}
	got := must[Reservation](t)(a.Reserve(bg, "e1", 3, 2*time.Second, key))
	if got.ID != res.ID || got.State != StateCommitted {
		t.Fatalf("keyed retry of the reservation past expires_at, %s committed before it: replay answers %s %s, "+
			"want committed (docs/api.md: from expires_at on the replay shows the state the hold ended in)", res.ID, got.ID, got.State)
	}
}
