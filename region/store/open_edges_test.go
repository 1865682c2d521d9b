package store

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/latticedb/lattice/region/config"
)

// TestEverySecAckDuringShrinkSurvivesProcessCrash: with durability
// everysec, operations.md promises that a process crash (kill -9, OOM)
// loses no acknowledged write. A write acknowledged while a rewrite of the
// file (Shrink) is finishing — the new file already under the store's
// name, the old one still kept under data.db.prev — must therefore still
// be there after the process dies at that moment and the store opens
// again.
func TestEverySecAckDuringShrinkSurvivesProcessCrash(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "s.db")
	st, err := Open(path, Options{LockKey: unlocked, Durability: config.DurabilityEverySec, ShrinkMinBytes: 1 << 40})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	// Live data of a few megabytes, so that the rewritten file takes a
	// while to fsync, and as much dead data.
	big := strings.Repeat("x", 4096)
	for round := range 2 {
		for i := range 1500 {
			k := fmt.Sprintf("live/%04d", i)
			if err := st.Update(nil, func(tx *Tx) error { tx.Set(k, []byte(big+fmt.Sprint(round))); return nil }); err != nil {
				t.Fatal(err)
			}
		}
	}
	saved := filepath.Join(dir, "kept-prev")
	const acked = "acked-during-rewrite"
	hit, reached := false, false
	deadline := time.Now().Add(20 * time.Second)
	for attempt := 0; !hit && !reached && attempt < 15 && time.Now().Before(deadline); attempt++ {
		old, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- st.Shrink() }()
	poll:
		for {
			select {
			case err := <-done:
				if err != nil {
					t.Fatal(err)
				}
				break poll
			default:
			}
			cur, err := os.Stat(path)
			if err != nil || os.SameFile(cur, old) {
				continue
			}
			if _, err := os.Stat(prevPath(path)); err != nil {
				continue
			}
			// The new file is under the store's name and the old one is
			// still kept: a write now is acknowledged at once (everysec).
			reached = true
			if err := st.Update(nil, func(tx *Tx) error { tx.Set(acked, []byte("value of "+acked)); return nil }); err != nil {
				t.Fatal(err)
			}
			// If data.db.prev is still there after the acknowledgement,
			// a crash at this moment leaves the directory as it is now.
			if err := os.Link(prevPath(path), saved); err == nil {
				hit = true
			}
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			break poll
		}
		if !hit {
			// Overwrite the live data again so the next rewrite has work.
			for i := range 1500 {
				k := fmt.Sprintf("live/%04d", i)
				if err := st.Update(nil, func(tx *Tx) error { tx.Set(k, []byte(big)); return nil }); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	if !hit {
		if !reached {
			t.Skip("the rewrite was never seen between its rename and the removal of data.db.prev")
		}
		// The write was issued in the window and acknowledged only once
		// data.db.prev was gone (it waits for the rewrite): no crash can
		// find it acknowledged with the old file kept.
		t.Log("a write issued while data.db.prev was kept was acknowledged only once it was gone")
		return
	}
	// The process dies with the directory as it was at the acknowledgement:
	// the new file under the store's name, the old one as data.db.prev.
	if err := st.CloseUnclean(); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(saved, prevPath(path)); err != nil {
		t.Fatal(err)
	}
	st, err = Open(path, Options{LockKey: unlocked, Durability: config.DurabilityEverySec, ShrinkMinBytes: 1 << 40})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if got := heldState(t, st, acked); got[acked] != "ok" {
		t.Fatalf("a write acknowledged (everysec) while the rewrite was finishing, after a process crash at that moment and a reopen: %s; want it kept", got[acked])
	}
	if _, err := os.Stat(prevPath(path)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s still there after the open: %v", prevPath(path), err)
	}
}

// TestBackupOfInterruptedRewriteIsAStateOfTheStore: a rewrite (Shrink)
// was cut short by a power loss after the new file took the store's name
// and before its blocks reached the disk: the store's name holds the start
// of the new file (keys in key order) and then NUL bytes, and the old file
// is kept as data.db.prev, from which the next open goes on. A backup taken
// of the stopped store then is a state the store was in: a transaction
// that set two keys is in it whole or not at all (or the backup is
// refused), as it is in the store Open would open.
func TestBackupOfInterruptedRewriteIsAStateOfTheStore(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "s.db")
	st := openAcked(t, path)
	for i := range 300 {
		setAcked(t, st, fmt.Sprintf("k/%03d", i%100))
	}
	setAcked(t, st, "a/pair", "z/pair") // one transaction
	old, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Shrink(); err != nil {
		t.Fatal(err)
	}
	if err := st.CloseUnclean(); err != nil {
		t.Fatal(err)
	}
	rewritten, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// Where the new file's blocks stop: after the set of a/pair, before
	// that of z/pair (the rewrite writes keys in key order).
	var stop int64 = -1
	if err := Commands(path, func(cmd [][]byte, end int64) bool {
		if len(cmd) == 3 && string(cmd[1]) == "k/050" {
			stop = end
			return false
		}
		return true
	}); err != nil || stop < 0 {
		t.Fatalf("no k/050 in the rewritten file: %v", err)
	}
	torn := append(rewritten[:stop:stop], make([]byte, len(rewritten)-int(stop))...)
	if err := os.WriteFile(path, torn, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(prevPath(path), old, 0o644); err != nil {
		t.Fatal(err)
	}

	var snap bytes.Buffer
	if _, err := Backup(path, &snap); err != nil {
		return // refused: no snapshot of a file the store does not go on from
	}
	snapPath := filepath.Join(dir, "snap.db")
	if err := os.WriteFile(snapPath, snap.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	restored := openAcked(t, snapPath)
	defer restored.Close()
	got := heldState(t, restored, "a/pair", "z/pair", "k/099")
	// What the store itself opens into.
	st = openAcked(t, path)
	defer st.Close()
	want := heldState(t, st, "a/pair", "z/pair", "k/099")
	if got["a/pair"] != got["z/pair"] || got["k/099"] != want["k/099"] {
		t.Fatalf("backup of a store whose rewrite was cut short holds %v; the store opens with %v", got, want)
	}
}
