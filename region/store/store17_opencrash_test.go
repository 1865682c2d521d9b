package store

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/latticedb/lattice/region/config"
)

// TestInterruptedRewriteUndoneThenOpenCrashedBeginsNewIncarnation: a run
// crashed during a rewrite of its file, and the start after it went back
// to the file from before the rewrite (".prev") and then crashed itself
// before it recorded the new incarnation that going back calls for (an
// OOM while loading a large file, a kill). The file the next start finds
// still lacks the writes made during the rewrite: that start, on the
// same boot, must begin a new incarnation too, as the start that went
// back to the file would have.
func TestInterruptedRewriteUndoneThenOpenCrashedBeginsNewIncarnation(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.db")
	st := usedOnBoot(t, path, "boot-1")
	setAcked(t, st, "a")
	// The file as the rewrite found it, kept under its second name; the
	// rewrite's new file then takes a write the old one lacks.
	old, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(prevPath(path), old, 0o644); err != nil {
		t.Fatal(err)
	}
	setAcked(t, st, "b")
	inc := st.Incarnation()
	if err := st.CloseUnclean(); err != nil {
		t.Fatal(err)
	}

	// The next start goes back to the file from before the rewrite (the
	// first thing Open does) and crashes there.
	if undone, err := restorePrev(path); err != nil || !undone {
		t.Fatalf("test setup: going back to the file from before the rewrite: %v, %v", undone, err)
	}

	st = openOnBoot(t, path, config.DurabilityAlways, "boot-1")
	defer st.Close()
	if got := heldState(t, st, "b")["b"]; got != "absent" {
		t.Fatalf("test setup: the file from before the rewrite holds b (%s)", got)
	}
	if st.Incarnation() == inc || !st.CatchingUp() {
		t.Fatalf("the start after one that went back to the file from before an interrupted rewrite and crashed, on the same boot: incarnation %d (was %d), catching up %v; want a new incarnation that catches up (the writes made during the rewrite are gone)",
			st.Incarnation(), inc, st.CatchingUp())
	}
}

// TestTornTailCutThenOpenCrashedBeginsNewIncarnation: a start cut a torn
// transaction off the store's tail and crashed before it recorded the new
// incarnation a torn tail calls for. The next start, on the same boot,
// finds a file without the tear, but the transaction is still gone: it
// must begin a new incarnation as the start that cut it would have
// (operations.md, Incarnations: "a new incarnation is still started …
// after a torn tail").
func TestTornTailCutThenOpenCrashedBeginsNewIncarnation(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.db")
	st := usedOnBoot(t, path, "boot-1")
	setAcked(t, st, "a")
	setAcked(t, st, "b1", "b2", "b3")
	inc := st.Incarnation()
	if err := st.CloseUnclean(); err != nil {
		t.Fatal(err)
	}
	if _, err := CutTransactions(path, 1, true); err != nil {
		t.Fatal(err)
	}

	// The next start cuts the torn transaction (before BuntDB loads the
	// file) and crashes there.
	if n, err := recoverTail(path); err != nil || n == 0 {
		t.Fatalf("test setup: cutting the torn transaction: %d bytes, %v", n, err)
	}

	st = openOnBoot(t, path, config.DurabilityAlways, "boot-1")
	defer st.Close()
	if got := heldState(t, st, "a", "b1"); got["a"] != "ok" || got["b1"] != "absent" {
		t.Fatalf("test setup: the store holds %v, want a and not b1", got)
	}
	if st.Incarnation() == inc || !st.CatchingUp() {
		t.Fatalf("the start after one that cut a torn transaction off the tail and crashed, on the same boot: incarnation %d (was %d), catching up %v; want a new incarnation that catches up",
			st.Incarnation(), inc, st.CatchingUp())
	}
}

// TestCrashRightAfterRewriteLinkOnThisBootKeepsIncarnation: a rewrite
// first gives the store's file a second name (data.db.prev, a hard link
// to the same file), then, for as long as it takes to write the live data
// to a new file, leaves both names on that one file, which takes every
// write meanwhile. A process crash in that window (an OOM kill while the
// rewrite buffers the live data) loses nothing: the file under both names
// is the file the crashed run wrote to, and the kernel holds all of it.
// With durability always, a start on the same boot keeps the incarnation
// (operations.md, Incarnations: "process crashes on one boot spend
// none"; a region that crash-loops spends no replica id of the cluster's
// 256).
func TestCrashRightAfterRewriteLinkOnThisBootKeepsIncarnation(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.db")
	st := usedOnBoot(t, path, "boot-1")
	setAcked(t, st, "a")
	if err := os.Link(path, prevPath(path)); err != nil { // the rewrite's first step
		t.Fatal(err)
	}
	setAcked(t, st, "b") // a write while the rewrite writes its new file
	inc := st.Incarnation()
	if err := st.CloseUnclean(); err != nil { // the crash, before the new file replaces the old
		t.Fatal(err)
	}

	st = openOnBoot(t, path, config.DurabilityAlways, "boot-1")
	defer st.Close()
	if got := heldState(t, st, "a", "b"); !allOK(got) {
		t.Fatalf("after the crash: %v; want every write of the crashed run", got)
	}
	if st.Incarnation() != inc || st.CatchingUp() {
		t.Fatalf("after a process crash on the same boot that lost nothing (during a rewrite, before its new file replaced the old): incarnation %d (was %d), catching up %v; want the same incarnation, not catching up",
			st.Incarnation(), inc, st.CatchingUp())
	}
}

// usedOnBoot opens the store at path on boot, durability always, caught
// up and marked as having written: a run whose unclean stop keeps its
// incarnation on the same boot if it lost nothing.
func usedOnBoot(t *testing.T, path, boot string) *Store {
	t.Helper()
	st := openOnBoot(t, path, config.DurabilityAlways, boot)
	if err := st.CaughtUp(); err != nil {
		t.Fatal(err)
	}
	if err := st.MarkUsed(); err != nil {
		t.Fatal(err)
	}
	return st
}
