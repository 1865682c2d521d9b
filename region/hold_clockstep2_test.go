package region

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/latticedb/lattice/region/store"
)

// TestHoldReadExpiredStaysExpiredWhenClockStepsBack: docs/api.md's
// states: held → expired once expires_at passes by the home's clock, "a
// held reservation past expires_at reads expired at once", and a commit
// of an expired reservation is 409 reservation_expired. A hold of all 4
// units is read past its expires_at (GET, and the replay of its keyed
// reservation, both answer expired; the item shows the 4 units free)
// before background expiry has swept it; then the home's clock steps back
// 2 s (an NTP step), to before expires_at. The home has told its clients
// the hold expired: its commit must be refused as expired and take no
// units, as it is when expiry swept the hold first
// (TestExpiredHoldStaysExpiredWhenHomeClockStepsBack).
func TestHoldReadExpiredStaysExpiredWhenClockStepsBack(t *testing.T) {
	n := newNode(t)
	must[Item](t)(n.Restock(bg, "w", 4))
	key := idemKey("rw", "reserve w 4")
	r := must[Reservation](t)(n.Reserve(bg, "w", 4, 2*time.Second, key))
	n.clock.Advance(3 * time.Second)
	if got := must[Reservation](t)(n.GetReservation(bg, r.ID)); got.State != StateExpired {
		t.Fatalf("%s past its expires_at reads %s, want expired", r.ID, got.State)
	}
	if got := must[Reservation](t)(n.Reserve(bg, "w", 4, 2*time.Second, key)); got.ID != r.ID || got.State != StateExpired {
		t.Fatalf("replay past expires_at: %+v, want %s expired", got, r.ID)
	}
	if it := must[Item](t)(n.GetItem(bg, "w", false)); it.Reserved != 0 || it.Available != 4 {
		t.Fatalf("item past the hold's expiry: %+v, want 0 reserved, 4 available", it)
	}

	n.clock.Advance(-2 * time.Second) // 1 s before expires_at again
	c, err := n.Commit(bg, r.ID, Idem{})
	it := must[Item](t)(n.GetItem(bg, "w", false))
	if codeOf(err) != CodeReservationExpired || it.Stock != 4 {
		t.Fatalf("%s read expired (GET and replay), then the home's clock stepped back 2 s: commit answered %+v %v "+
			"and the stock is %d; want 409 reservation_expired and the 4 units still in stock", r.ID, c, err, it.Stock)
	}
}

// TestReservationIDNotReissuedAfterRestoreWithClockBehind: docs/api.md
// says reservation numbers are never reused, and docs/operations.md that
// after a restore "reservation ids issued after the snapshot" answer 404
// not_found. An incarnation is max(last + 1, the Unix time in hundredths
// of a second) and numbers from K × 2²⁰; a store whose last incarnation
// was begun with the wall clock a day ahead (its identity file says so)
// goes on as last + 1 once the clock is right again, so the next
// incarnation's numbers begin only 2²⁰ past the last one's. The region
// takes a backup, hands out 2²⁰ numbers (its durable high-water mark, as
// that many reservations leave it), holds 3 units under the next, and is
// restored from the backup. A new reservation after the restore must not
// get the id of the hold made after the snapshot: its holder would read,
// release or commit the newcomer's hold with it.
func TestReservationIDNotReissuedAfterRestoreWithClockBehind(t *testing.T) {
	dir := t.TempDir()
	clock := newFakeClock()
	path := filepath.Join(dir, "us-east", "data.db")
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	ahead := uint64(time.Now().Add(24*time.Hour).UnixMilli() / 10)
	b, err := json.Marshal(map[string]any{"incarnation": ahead, "clean": true})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path+".id", b, 0o644); err != nil {
		t.Fatal(err)
	}
	n := openNode(t, dir, clock)
	k1 := n.store.Incarnation()
	if k1 <= ahead || n.CatchingUp() {
		t.Fatalf("incarnation %d (catching up %v), want one past %d, deciding", k1, n.CatchingUp(), ahead)
	}
	must[Item](t)(n.Restock(bg, "w", 10))
	var snap bytes.Buffer
	if _, err := store.Backup(n.path, &snap); err != nil {
		t.Fatal(err)
	}

	// 2²⁰ numbers of this incarnation handed out since the backup.
	if err := n.store.Update(nil, func(tx *store.Tx) error {
		tx.Set(keyResSeq, encode(resSeqFloor(k1)+1<<20))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	n.close()
	n = openNode(t, dir, clock) // a clean restart: same incarnation
	if n.store.Incarnation() != k1 {
		t.Fatalf("a clean restart began incarnation %d, want %d", n.store.Incarnation(), k1)
	}
	old := must[Reservation](t)(n.Reserve(bg, "w", 3, time.Hour, Idem{}))

	n.close()
	backup := filepath.Join(t.TempDir(), "backup")
	if err := os.WriteFile(backup, snap.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := store.Restore(path, backup); err != nil {
		t.Fatal(err)
	}
	n = openNode(t, dir, clock)
	t.Logf("incarnations %d then %d; the hold made after the snapshot: %s", k1, n.store.Incarnation(), old.ID)
	if _, err := n.GetReservation(bg, old.ID); codeOf(err) != CodeNotFound {
		t.Fatalf("after the restore %s (issued after the snapshot) answers %v, want 404 not_found", old.ID, err)
	}
	fresh := must[Reservation](t)(n.Reserve(bg, "w", 5, time.Hour, Idem{}))
	if fresh.ID == old.ID {
		rel, err := n.Release(bg, old.ID, Idem{})
		t.Fatalf("the reservation made after the restore got id %s again, the id of the hold of 3 made after the snapshot "+
			"(incarnation %d after %d): its old holder's release of %s answered %+v %v, releasing the new hold of %d",
			fresh.ID, n.store.Incarnation(), k1, old.ID, rel, err, fresh.Qty)
	}
}
