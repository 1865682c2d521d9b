package store

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/latticedb/lattice/region/config"
)

// TestEverySecWriteAfterFailedFsync: with everysec durability, an fsync
// that fails while a write's transaction function runs (the ticker's,
// on a file whose fsync fails) fails the store, and the write is refused
// (ErrStoreFailed), as with always durability: no later fsync could be
// trusted to make it durable.
func TestEverySecWriteAfterFailedFsync(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f.db")
	st, err := Open(path, Options{LockKey: unlocked, Durability: config.DurabilityEverySec})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	broken, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	broken.Close() // Sync on a closed file fails
	err = st.Update(nil, func(tx *Tx) error {
		st.fileMu.Lock()
		good := st.syncFile
		st.syncFile = broken
		st.fileMu.Unlock()
		serr := st.fsync() // the everysec ticker's fsync (maintain), failing meanwhile
		st.fileMu.Lock()
		st.syncFile = good
		st.fileMu.Unlock()
		if serr == nil || !st.Failed() {
			t.Fatalf("the fsync did not fail the store: %v", serr)
		}
		tx.Set("k", []byte("after the failed fsync"))
		return nil
	})
	if !errors.Is(err, ErrStoreFailed) {
		t.Fatalf("a write that committed after a failed fsync failed the store was answered %v, want ErrStoreFailed", err)
	}
}
