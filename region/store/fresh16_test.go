package store

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// TestFreshStoreUntilCaughtUp: a region of several whose store starts
// empty catches up as a fresh store (it never held what its name wrote
// before); it stays fresh across a clean stop and a crash while still
// catching up, and is no longer once caught up. A store restored from a
// backup is not fresh: the snapshot holds the region's history, and
// catch-up may bring back writes the snapshot lacks as lost.
func TestFreshStoreUntilCaughtUp(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "s.db")
	open := func() *Store {
		t.Helper()
		st, err := Open(path, Options{LockKey: unlocked, Shared: true})
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	st := open()
	if !st.CatchingUp() || !st.Fresh() {
		t.Fatalf("a new store of a region of several: catching up %v, fresh %v; want both", st.CatchingUp(), st.Fresh())
	}
	setAcked(t, st, "a")
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	st = open()
	if !st.CatchingUp() || !st.Fresh() {
		t.Fatalf("after a clean stop while catching up: catching up %v, fresh %v; want both", st.CatchingUp(), st.Fresh())
	}
	if err := st.MarkUsed(); err != nil {
		t.Fatal(err)
	}
	setAcked(t, st, "b")
	if err := st.CloseUnclean(); err != nil { // a crash: a new incarnation next
		t.Fatal(err)
	}
	inc := st.Incarnation()
	st = open()
	if st.Incarnation() == inc {
		t.Fatalf("test setup: the crash did not start a new incarnation (%d)", inc)
	}
	if !st.CatchingUp() || !st.Fresh() {
		t.Fatalf("after a crash while catching up: catching up %v, fresh %v; want both", st.CatchingUp(), st.Fresh())
	}
	if err := st.CaughtUp(); err != nil {
		t.Fatal(err)
	}
	if st.Fresh() {
		t.Fatal("fresh after catching up")
	}
	setAcked(t, st, "c")
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	st = open()
	if st.CatchingUp() || st.Fresh() {
		t.Fatalf("after a clean stop once caught up: catching up %v, fresh %v; want neither", st.CatchingUp(), st.Fresh())
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}

	// A new store restored from a snapshot of this one.
	var snap bytes.Buffer
	if _, err := Backup(path, &snap); err != nil {
		t.Fatal(err)
	}
	from := filepath.Join(dir, "snap.db")
	if err := os.WriteFile(from, snap.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	other := filepath.Join(dir, "other", "s.db")
	if err := Restore(other, from); err != nil {
		t.Fatal(err)
	}
	rs, err := Open(other, Options{LockKey: unlocked, Shared: true})
	if err != nil {
		t.Fatal(err)
	}
	defer rs.Close()
	if !rs.CatchingUp() || rs.Fresh() {
		t.Fatalf("a restored store: catching up %v, fresh %v; want catching up, not fresh", rs.CatchingUp(), rs.Fresh())
	}
}
