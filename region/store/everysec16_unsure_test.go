package store

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/latticedb/lattice/region/config"
)

// TestEverySecWriteCommittedAfterFailedFsyncIsUnsure: with everysec
// durability, a write whose transaction commits after an fsync failed the
// store (the ticker's fsync, failing while the write's function runs) has
// reached the file and the store's memory: reads see it and a restart
// finds it. Its error must then say it may have been made
// (ErrWriteUnsure), not only that the store failed (ErrStoreFailed, which
// the region answers with a 503 that tells the client nothing was made,
// so that it repeats an add elsewhere).
func TestEverySecWriteCommittedAfterFailedFsyncIsUnsure(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f.db")
	st, err := Open(path, Options{LockKey: unlocked, Durability: config.DurabilityEverySec})
	if err != nil {
		t.Fatal(err)
	}
	broken, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	broken.Close() // Sync on a closed file fails
	werr := st.Update(nil, func(tx *Tx) error {
		st.fileMu.Lock()
		good := st.syncFile
		st.syncFile = broken
		st.fileMu.Unlock()
		serr := st.fsync() // the everysec ticker's fsync, failing meanwhile
		st.fileMu.Lock()
		st.syncFile = good
		st.fileMu.Unlock()
		if serr == nil || !st.Failed() {
			t.Fatalf("the fsync did not fail the store: %v", serr)
		}
		tx.Set("k", []byte("committed after the failed fsync"))
		return nil
	})
	if werr == nil {
		t.Fatal("a write that committed after a failed fsync was acknowledged")
	}

	var inMemory bool
	if err := st.View(nil, func(r Reader) error {
		_, ok, err := r.Get("k")
		inMemory = ok
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	st2, err := Open(path, Options{LockKey: unlocked, Durability: config.DurabilityEverySec})
	if err != nil {
		t.Fatal(err)
	}
	defer st2.Close()
	var afterRestart bool
	if err := st2.View(nil, func(r Reader) error {
		_, ok, err := r.Get("k")
		afterRestart = ok
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if (inMemory || afterRestart) && !errors.Is(werr, ErrWriteUnsure) {
		t.Fatalf("the write was answered %q (ErrStoreFailed without ErrWriteUnsure: \"not made\"), "+
			"yet it was readable at once (%v) and found after a restart (%v): its answer must wrap ErrWriteUnsure",
			werr, inMemory, afterRestart)
	}
}
