package store

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/latticedb/lattice/region/config"
)

// TestBootRecordOfAnEarlierRunIsNotTakenForTheCrashedRuns: the record of
// a boot says which boot some run of the store ran on, not which run. A
// run that leaves it as it found it (a version of the region from before
// the record, started on this boot after one that wrote it, as a
// rollback of an upgrade does) and whose store then fails and crashes
// must not be taken, at the next start on this boot, for a run whose
// every write the kernel kept.
func TestBootRecordOfAnEarlierRunIsNotTakenForTheCrashedRuns(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.db")
	st := openOnBoot(t, path, config.DurabilityAlways, "boot-1")
	if err := st.CaughtUp(); err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil { // a clean stop leaves the record
		t.Fatal(err)
	}
	rec, err := os.ReadFile(bootPath(path))
	if err != nil {
		t.Fatalf("a clean stop removed the record (%v): then nothing here applies", err)
	}

	// A run of an earlier version: it knows nothing of the record (the
	// store run without a boot id removes it; the earlier version leaves
	// it, which the test does by putting it back).
	st = openOnBoot(t, path, config.DurabilityAlways, "")
	if err := os.WriteFile(bootPath(path), rec, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := st.MarkUsed(); err != nil {
		t.Fatal(err)
	}
	setAcked(t, st, "a")
	inc := st.Incarnation()
	st.fail(errors.New("fsync: input/output error"))
	if err := os.WriteFile(bootPath(path), rec, 0o644); err != nil { // its failure leaves it too
		t.Fatal(err)
	}
	if err := st.CloseUnclean(); err != nil {
		t.Fatal(err)
	}

	st = openOnBoot(t, path, config.DurabilityAlways, "boot-1")
	defer st.Close()
	if st.Incarnation() == inc || !st.CatchingUp() {
		t.Fatalf("a crash of a run that recorded no boot kept the incarnation %d (catching up %v) on the record an earlier run left",
			inc, st.CatchingUp())
	}
}
