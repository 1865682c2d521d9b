package store

import (
	"path/filepath"
	"testing"
)

// TestCleanStopOfAnEarlierFileKeepsIncarnation: a store file written by
// the version before deletes carried records has no "~deletes" key, and
// that version's identity file already records a clean stop with the id
// of the file's last transaction (the close marker). operations.md
// (Upgrades) says to stop cleanly, replace the binary and start, and
// names only a store without an identity file as starting a new
// incarnation on the first open; a clean stop keeps the incarnation. The
// first open of this version writes "~deletes" into the file itself: that
// write of its own must not be taken for a change of the file since the
// clean stop, which would spend a replica id (of the 256 a cluster has)
// and put the region into catch-up.
func TestCleanStopOfAnEarlierFileKeepsIncarnation(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.db")
	st := openAcked(t, path)
	setAcked(t, st, "k/a", "k/b")
	inc := st.Incarnation()
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	// The file as the earlier version leaves it: the same commands, and
	// no "~deletes" (the identity file's transaction id, the close
	// marker's, is unchanged).
	stripDeletesMarker(t, path)

	st = openAcked(t, path)
	defer st.Close()
	if got := heldState(t, st, "k/a", "k/b"); !allOK(got) {
		t.Fatalf("after the upgrade: %v; want both keys ok", got)
	}
	if st.Incarnation() != inc || st.CatchingUp() {
		t.Fatalf("first open after a clean stop of a file without %q: incarnation %d -> %d, catching up %v; want the incarnation kept and no catch-up",
			deletesKey, inc, st.Incarnation(), st.CatchingUp())
	}
}

// TestDamagedIncarnationRecordOpensAsNewIncarnation: the store keeps its
// incarnation in its own record "m/incarnation" and in the identity file
// beside it. operations.md (Damaged values) says a store found with
// damaged values when it opens goes on as a new incarnation and catches
// up; the records whose damage stops a start are listed there, and the
// store's incarnation record is not among them (the identity file still
// names the incarnation, and a damaged value starts a new one anyway).
// One flipped bit in that record must not leave the region unable to
// start.
func TestDamagedIncarnationRecordOpensAsNewIncarnation(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.db")
	opts := Options{LockKey: unlocked, Shared: true} // a region of several: the record is written at once
	st, err := Open(path, opts)
	if err != nil {
		t.Fatal(err)
	}
	setAcked(t, st, "k/a")
	inc := st.Incarnation()
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	frames := map[string]int{}
	if err := Commands(path, func(cmd [][]byte, _ int64) bool {
		if len(cmd) == 3 && string(cmd[0]) == "set" {
			frames[string(cmd[1])] = len(cmd[2])
		}
		return true
	}); err != nil {
		t.Fatal(err)
	}
	if frames[keyIncarnation] == 0 {
		t.Fatalf("test setup: no %q in the file", keyIncarnation)
	}
	offs := valueOffsets(t, path, keyIncarnation)
	flipByte(t, path, offs[keyIncarnation]+int64(frames[keyIncarnation])-1, 0x01) // the payload's last byte

	st, err = Open(path, opts)
	if err != nil {
		t.Fatalf("open with one bit of %q flipped: %v; want a new incarnation that catches up", keyIncarnation, err)
	}
	defer st.Close()
	if st.Incarnation() <= inc || !st.CatchingUp() {
		t.Fatalf("opened with %q damaged: incarnation %d -> %d, catching up %v; want a new incarnation past %d, catching up",
			keyIncarnation, inc, st.Incarnation(), st.CatchingUp(), inc)
	}
	if got := heldState(t, st, "k/a"); !allOK(got) {
		t.Fatalf("opened with %q damaged: %v; want k/a ok", keyIncarnation, got)
	}
}
