package store

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/latticedb/lattice/region/config"
)

// openOnBoot opens the store at path as a region of several would, with
// the given durability, on the boot named boot.
func openOnBoot(t *testing.T, path string, d config.Durability, boot string) *Store {
	t.Helper()
	st, err := Open(path, Options{LockKey: unlocked, Shared: true, Durability: d, BootID: boot})
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// crashAfterWrite marks the store used, writes key and crashes it (its
// files closed without the close marker), returning its incarnation.
func crashAfterWrite(t *testing.T, st *Store, key string) uint64 {
	t.Helper()
	if err := st.MarkUsed(); err != nil {
		t.Fatal(err)
	}
	setAcked(t, st, key)
	inc := st.Incarnation()
	if err := st.CloseUnclean(); err != nil {
		t.Fatal(err)
	}
	return inc
}

// TestCrashOnThisBootKeepsIncarnation: with durability always, a store
// whose run wrote and then crashed keeps its incarnation, and does not
// catch up, when it opens again on the same boot (the kernel kept every
// write of the crashed run); on another boot (a power loss or a crash of
// the machine) it begins a new incarnation, as it does after a crash of
// a run with everysec.
func TestCrashOnThisBootKeepsIncarnation(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.db")
	st := openOnBoot(t, path, config.DurabilityAlways, "boot-1")
	if err := st.CaughtUp(); err != nil { // a region that caught up long ago
		t.Fatal(err)
	}
	inc := crashAfterWrite(t, st, "a")

	st = openOnBoot(t, path, config.DurabilityAlways, "boot-1")
	if st.Incarnation() != inc || st.CatchingUp() {
		t.Fatalf("after a crash on the same boot: incarnation %d (was %d), catching up %v; want the same incarnation, not catching up",
			st.Incarnation(), inc, st.CatchingUp())
	}
	if got := heldState(t, st, "a")["a"]; got != "ok" {
		t.Fatalf("the crashed run's write is %s", got)
	}
	crashAfterWrite(t, st, "b")

	st = openOnBoot(t, path, config.DurabilityAlways, "boot-2")
	if st.Incarnation() == inc || !st.CatchingUp() {
		t.Fatalf("after a crash on an earlier boot: incarnation %d (was %d), catching up %v; want a new incarnation that catches up",
			st.Incarnation(), inc, st.CatchingUp())
	}
	if err := st.CaughtUp(); err != nil {
		t.Fatal(err)
	}
	inc = st.Incarnation()
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}

	// everysec: a write reaches peers before an fsync covers it.
	st = openOnBoot(t, path, config.DurabilityEverySec, "boot-2")
	if st.Incarnation() != inc {
		t.Fatalf("a clean stop changed the incarnation")
	}
	crashAfterWrite(t, st, "c")
	st = openOnBoot(t, path, config.DurabilityAlways, "boot-2")
	if st.Incarnation() == inc || !st.CatchingUp() {
		t.Fatalf("after a crash of a run with everysec on the same boot: incarnation %d (was %d), catching up %v; want a new incarnation",
			st.Incarnation(), inc, st.CatchingUp())
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}

	// No boot id: every crash of a run that wrote is a new incarnation.
	st = openOnBoot(t, path, config.DurabilityAlways, "")
	inc = crashAfterWrite(t, st, "d")
	st = openOnBoot(t, path, config.DurabilityAlways, "")
	if st.Incarnation() == inc {
		t.Fatalf("without a boot id a crash kept the incarnation %d", inc)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestFailedStoreOnThisBootBeginsNewIncarnation: a store that failed (a
// failed fsync may have cost writes the kernel held) removes the record
// of its boot at once, so the next start on the same boot begins a new
// incarnation; a run that crashed after its file lost transactions it
// held when it opened does too.
func TestFailedStoreOnThisBootBeginsNewIncarnation(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.db")
	st := openOnBoot(t, path, config.DurabilityAlways, "boot-1")
	if err := st.MarkUsed(); err != nil {
		t.Fatal(err)
	}
	setAcked(t, st, "a")
	if _, err := os.Stat(bootPath(path)); err != nil {
		t.Fatalf("a store with durability always records its boot: %v", err)
	}
	st.fail(errors.New("fsync: input/output error"))
	if _, err := os.Stat(bootPath(path)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a failed store kept the record of its boot (%v)", err)
	}
	inc := st.Incarnation()
	if err := st.CloseUnclean(); err != nil {
		t.Fatal(err)
	}
	st = openOnBoot(t, path, config.DurabilityAlways, "boot-1")
	if st.Incarnation() == inc || !st.CatchingUp() {
		t.Fatalf("after a failed store on the same boot: incarnation %d (was %d), catching up %v; want a new incarnation",
			st.Incarnation(), inc, st.CatchingUp())
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}

	// A file that lost transactions it held when the crashed run opened.
	st = openOnBoot(t, path, config.DurabilityAlways, "boot-1")
	size, err := st.SyncNow()
	if err != nil {
		t.Fatal(err)
	}
	setAcked(t, st, "x") // in the file when the next run opens
	if err := st.CloseUnclean(); err != nil {
		t.Fatal(err)
	}
	st = openOnBoot(t, path, config.DurabilityAlways, "boot-1")
	inc = crashAfterWrite(t, st, "b")
	if err := os.Truncate(path, size); err != nil {
		t.Fatal(err)
	}
	st = openOnBoot(t, path, config.DurabilityAlways, "boot-1")
	if st.Incarnation() == inc {
		t.Fatalf("a file shorter than when the crashed run opened kept the incarnation %d", inc)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestInterruptedRewriteOnThisBootBeginsNewIncarnation: a run that
// crashed during a rewrite of its file leaves the file being replaced
// (".prev"), which Open goes back to; it lacks the writes made during
// the rewrite, which reads may have shown before they were durable, so
// the start begins a new incarnation although it is on the same boot.
func TestInterruptedRewriteOnThisBootBeginsNewIncarnation(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.db")
	st := openOnBoot(t, path, config.DurabilityAlways, "boot-1")
	if err := st.MarkUsed(); err != nil {
		t.Fatal(err)
	}
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
	st = openOnBoot(t, path, config.DurabilityAlways, "boot-1")
	defer st.Close()
	if got := heldState(t, st, "b")["b"]; got != "absent" {
		t.Fatalf("test setup: the file from before the rewrite holds b (%s)", got)
	}
	if st.Incarnation() == inc || !st.CatchingUp() {
		t.Fatalf("after going back to the file from before an interrupted rewrite, on the same boot: incarnation %d (was %d), catching up %v; want a new incarnation",
			st.Incarnation(), inc, st.CatchingUp())
	}
}
