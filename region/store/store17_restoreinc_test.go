package store

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/latticedb/lattice/region/config"
)

// TestRestoreOnNewMachinePicksUnusedIncarnation: a region's incarnations
// after the one a backup holds may already have written (their dots are
// held by the peers). Restored on a new machine (an empty data_dir, no
// identity file), the region must start as an incarnation none of them
// used: operations.md promises the restore works there, and the identity
// relies on the clock to pick a number past them. But an incarnation
// begun within 65,536 hundredths of a second (about 11 minutes) of the
// last is last + 65,536, ahead of the clock, so a few unclean stops in a
// row (a crash loop with everysec, power losses) leave the last ones
// ahead of the clock; a restore soon after then picks one of them again,
// and its new writes reuse dots its peers hold with other content.
func TestRestoreOnNewMachinePicksUnusedIncarnation(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "old", "s.db")
	st := openOnBoot(t, path, config.DurabilityAlways, "boot-1")
	setAcked(t, st, "a")
	var snap bytes.Buffer
	if _, err := Backup(path, &snap); err != nil {
		t.Fatal(err)
	}
	used := []uint64{st.Incarnation()}
	// Three runs that wrote and stopped uncleanly (power losses: a new
	// boot each time), each a new incarnation, minutes apart at most.
	boots := []string{"boot-2", "boot-3", "boot-4"}
	crashAfterWrite(t, st, "b")
	for _, b := range boots {
		st = openOnBoot(t, path, config.DurabilityAlways, b)
		used = append(used, crashAfterWrite(t, st, "b"))
	}
	for i := 1; i < len(used); i++ {
		if used[i] == used[i-1] {
			t.Fatalf("test setup: run %d kept incarnation %d", i, used[i])
		}
	}

	// The old machine is gone: the backup is restored on a new one.
	from := filepath.Join(dir, "snap.db")
	if err := os.WriteFile(from, snap.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	fresh := filepath.Join(dir, "new", "s.db")
	if err := Restore(fresh, from); err != nil {
		t.Fatal(err)
	}
	st = openOnBoot(t, fresh, config.DurabilityAlways, "boot-9")
	defer st.Close()
	for _, u := range used {
		if st.Incarnation() == u {
			t.Fatalf("the restored region starts as incarnation %d, which an earlier run already wrote as (incarnations used: %v)", u, used)
		}
	}
}
