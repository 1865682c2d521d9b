package store

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// TestRestoreOfCutSnapshotWritesNothing: a snapshot that ends inside a
// transaction (a copy cut short) is refused by Restore before it creates
// anything: a region that never ran keeps no data directory and no lock
// file from the attempt.
func TestRestoreOfCutSnapshotWritesNothing(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "s.db")
	st := openAcked(t, path)
	setAcked(t, st, "a1", "a2", "a3")
	setAcked(t, st, "b1", "b2", "b3")
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	var snap bytes.Buffer
	if _, err := Backup(path, &snap); err != nil {
		t.Fatal(err)
	}
	from := filepath.Join(dir, "snap.db")
	if err := os.WriteFile(from, snap.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	txs, err := Transactions(from)
	if err != nil {
		t.Fatal(err)
	}
	var last *TxSpan
	for i := range txs {
		if txs[i].Declared > 1 {
			last = &txs[i]
		}
	}
	if last == nil {
		t.Fatalf("test setup: no transaction of several values in the snapshot")
	}
	cut := filepath.Join(dir, "cut.db")
	if err := os.WriteFile(cut, snap.Bytes()[:last.Start+(last.End-last.Start)/2], 0o644); err != nil {
		t.Fatal(err)
	}
	regionDir := filepath.Join(dir, "never-ran")
	if err := Restore(filepath.Join(regionDir, "s.db"), cut); err == nil {
		t.Fatal("Restore accepted a snapshot cut inside its last transaction")
	}
	if _, err := os.Stat(regionDir); !os.IsNotExist(err) {
		entries, _ := os.ReadDir(regionDir)
		t.Fatalf("a refused restore left %s behind (%v; holding %v)", regionDir, err, entries)
	}
}
