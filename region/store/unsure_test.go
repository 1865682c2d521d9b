package store

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// TestFailedFsyncTellsItsWriteApart checks what a write learns when the
// fsync that should cover it fails: its bytes are in the file, so a
// restart may find it there, and its error says so (ErrWriteUnsure, which
// the region answers as "may have been applied", never as a 503 that a
// client repeats an add on). A write made after the store failed reaches
// nothing and gets ErrStoreFailed alone.
func TestFailedFsyncTellsItsWriteApart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f.db")
	st, err := Open(path, Options{LockKey: unlocked})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	defer breakFsync(t, st)()

	err = st.Update(nil, func(tx *Tx) error { tx.Set("a", []byte("1")); return nil })
	if !errors.Is(err, ErrWriteUnsure) || !errors.Is(err, ErrStoreFailed) {
		t.Fatalf("the write whose fsync failed: %v, want ErrWriteUnsure (wrapping ErrStoreFailed)", err)
	}
	err = st.Update(nil, func(tx *Tx) error { tx.Set("b", []byte("1")); return nil })
	if !errors.Is(err, ErrStoreFailed) || errors.Is(err, ErrWriteUnsure) {
		t.Fatalf("a write after the store failed: %v, want ErrStoreFailed and not ErrWriteUnsure (it wrote nothing)", err)
	}
}

// breakFsync makes every fsync of st fail (the file it syncs is a closed
// one) and returns what puts the real file back.
func breakFsync(t *testing.T, st *Store) (mend func()) {
	t.Helper()
	broken, err := os.Open(st.path)
	if err != nil {
		t.Fatal(err)
	}
	broken.Close() // Sync on a closed file fails
	st.fileMu.Lock()
	good := st.syncFile
	st.syncFile = broken
	st.fileMu.Unlock()
	return func() {
		st.fileMu.Lock()
		st.syncFile = good
		st.fileMu.Unlock()
	}
}
