package store

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/latticedb/lattice/region/config"
)

// TestSync19AfterFailedFsyncIsRefused: with everysec a write is
// acknowledged before any fsync; the everysec ticker's fsync then fails
// (EIO), failing the store. A failed fsync may have dropped what the
// kernel held of that write, and a second fsync of the same file then
// succeeds on Linux (the error is reported once and the pages are marked
// clean), so that success covers nothing. syncFile0, the ticker's and the
// group commit's fsync, refuses once the store failed for that reason.
// Store.Sync (0c774bd), which a checkout calls to make its plan durable
// before its steps go out to other regions, goes through SyncNow, which
// does not check: it answers nil on the failed store, and the checkout
// sends its reservations and commits on a plan a power loss may take —
// the double purchase 0c774bd meant to prevent.
func TestSync19AfterFailedFsyncIsRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f.db")
	st, err := Open(path, Options{LockKey: unlocked, Durability: config.DurabilityEverySec})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if err := st.Update(nil, func(tx *Tx) error {
		tx.Set("plan", []byte("a checkout's plan, acknowledged before any fsync"))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	broken, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	broken.Close() // fsync on a closed file fails
	st.fileMu.Lock()
	good := st.syncFile
	st.syncFile = broken
	st.fileMu.Unlock()
	serr := st.fsync() // the everysec ticker's fsync, failing
	st.fileMu.Lock()
	st.syncFile = good // the next fsync of the file succeeds, as on Linux after EIO
	st.fileMu.Unlock()
	if serr == nil || !st.Failed() {
		t.Fatalf("test setup: the fsync did not fail the store: %v", serr)
	}
	if err := st.Sync(); err == nil {
		t.Errorf("Sync on a store whose fsync failed answered nil: it claims the plan durable, yet the failed fsync may have lost it (syncFile0 refuses here with ErrStoreFailed)")
	}
}
