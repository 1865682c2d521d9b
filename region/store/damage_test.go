package store

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
)

// openAcked opens the store at path with durability always (every Update is
// acknowledged only once fsynced).
func openAcked(t *testing.T, path string) *Store {
	t.Helper()
	st, err := Open(path, Options{LockKey: unlocked})
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// setAcked writes keys (one transaction) and fails the test unless the
// write is acknowledged.
func setAcked(t *testing.T, st *Store, keys ...string) {
	t.Helper()
	err := st.Update(nil, func(tx *Tx) error {
		for _, k := range keys {
			tx.Set(k, []byte("value of "+k))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// heldState returns, for each key, "ok", "absent" or "corrupt".
func heldState(t *testing.T, st *Store, keys ...string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := st.View(nil, func(r Reader) error {
		for _, k := range keys {
			v, ok, err := r.Get(k)
			switch {
			case err != nil:
				out[k] = "corrupt"
			case !ok:
				out[k] = "absent"
			case string(v) != "value of "+k:
				out[k] = fmt.Sprintf("wrong %q", v)
			default:
				out[k] = "ok"
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// valueOffsets returns, for every set command of the file whose key is
// one of keys, the file offset of its value.
func valueOffsets(t *testing.T, path string, keys ...string) map[string]int64 {
	t.Helper()
	out := map[string]int64{}
	err := Commands(path, func(cmd [][]byte, end int64) bool {
		if len(cmd) == 3 && string(cmd[0]) == "set" {
			for _, k := range keys {
				if string(cmd[1]) == k {
					out[k] = end - 2 - int64(len(cmd[2]))
				}
			}
		}
		return true
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestDamagedHeaderKeepsTransaction: the last transaction of the file is
// a whole, acknowledged write of three keys, and one byte of the frame
// header (transaction id or count) of one of its values is damaged. That
// value fails its checksum and is refused when read; its header must not
// make the transaction look torn, so the two other values, undamaged and
// acknowledged, are still served after the open.
func TestDamagedHeaderKeepsTransaction(t *testing.T) {
	keys := []string{"t/a", "t/b", "t/c"}
	// BuntDB writes a transaction's values in map order: the subtests
	// damage the first, second and third value as they lie in the file.
	for vi, pos := range []string{"first", "second", "third"} {
		// Header bytes: 4 = layout marker, 5 = txid varint, 6 = count
		// varint (txids and counts are small here: one byte each).
		for _, hb := range []int{5, 6} {
			t.Run(fmt.Sprintf("%s/byte%d", pos, hb), func(t *testing.T) {
				path := filepath.Join(t.TempDir(), "s.db")
				st := openAcked(t, path)
				setAcked(t, st, "before")
				setAcked(t, st, keys...) // acknowledged: fsynced
				if err := st.CloseUnclean(); err != nil {
					t.Fatal(err)
				}
				offs := valueOffsets(t, path, keys...)
				inFile := slices.Clone(keys)
				slices.SortFunc(inFile, func(a, b string) int { return cmp.Compare(offs[a], offs[b]) })
				damaged := inFile[vi]
				flipByte(t, path, offs[damaged]+int64(hb), 0x04)
				st = openAcked(t, path)
				defer st.Close()
				held := heldState(t, st, append([]string{"before"}, keys...)...)
				for _, k := range keys {
					if k != damaged && held[k] != "ok" {
						t.Errorf("undamaged acknowledged key %s after one header byte of %s (the %s value in the file) was damaged: %s, want ok (all: %v)",
							k, damaged, pos, held[k], held)
					}
				}
				if held["before"] != "ok" {
					t.Errorf("before: %s", held["before"])
				}
			})
		}
	}
}

// TestNULGapCutAsTorn: a crash can leave a run of NUL bytes where blocks
// of the file were never written, with later blocks written after them (a
// file system that extends the file first). Both are after the last fsync
// (an fsync would have written the gap too), so the open cuts the file at
// the first NUL byte as a torn tail. BuntDB, left to load such a file,
// skips the NUL bytes but counts the file's size without them, so that its
// next writes land short of the end, over the last commands. Here the
// writes after the gap are whole and cut; the writes acknowledged after the
// open survive the next one.
func TestNULGapCutAsTorn(t *testing.T) {
	for _, torn := range []bool{false, true} {
		name := "gap"
		if torn {
			name = "gap+torn"
		}
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "s.db")
			st := openAcked(t, path)
			setAcked(t, st, "a")
			if err := st.CloseUnclean(); err != nil {
				t.Fatal(err)
			}
			gapAt := fileSize(t, path)
			st = openAcked(t, path)
			setAcked(t, st, "b")
			if torn {
				setAcked(t, st, "c1", "c2")
			}
			if err := st.CloseUnclean(); err != nil {
				t.Fatal(err)
			}
			if torn {
				if _, err := CutTransactions(path, 1, true); err != nil {
					t.Fatal(err)
				}
			}
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			// 64 NUL bytes between the first run's writes and the second's.
			b = append(b[:gapAt:gapAt], append(make([]byte, 64), b[gapAt:]...)...)
			if err := os.WriteFile(path, b, 0o644); err != nil {
				t.Fatal(err)
			}

			st = openAcked(t, path)
			if got := heldState(t, st, "a", "b", "c1", "c2"); got["a"] != "ok" || got["b"] != "absent" || got["c1"] != "absent" || got["c2"] != "absent" {
				t.Fatalf("after a NUL gap: %v; want a before it, nothing after it", got)
			}
			setAcked(t, st, "d") // acknowledged
			if err := st.Close(); err != nil {
				t.Fatal(err)
			}
			st, err = Open(path, Options{LockKey: unlocked})
			if err != nil {
				t.Fatalf("reopening the store after acknowledged writes: %v", err)
			}
			defer st.Close()
			if got := heldState(t, st, "a", "b", "d"); got["a"] != "ok" || got["b"] != "absent" || got["d"] != "ok" {
				t.Fatalf("after the reopen: %v; want a and d, acknowledged before it", got)
			}
		})
	}
}

// TestGarbageTailLength: garbage at the end of the file that looks like
// the start of a set command with an absurd bulk length. BuntDB sizes its
// read buffer from the lengths it reads (a 19-digit one overflows and
// panics inside it, a 9-digit one makes it allocate hundreds of MiB for a
// file of a few hundred bytes), so the file is checked, and refused or
// cut, before BuntDB reads it.
func TestGarbageTailLength(t *testing.T) {
	for _, tc := range []struct {
		name, length string
	}{
		{"overflow", "9223372036854775807"},
		{"huge", "200000000"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "s.db")
			st := openAcked(t, path)
			setAcked(t, st, "a")
			if err := st.CloseUnclean(); err != nil {
				t.Fatal(err)
			}
			f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := f.WriteString("*3\r\n$3\r\nset\r\n$1\r\nz\r\n$" + tc.length + "\r\ngarbage"); err != nil {
				t.Fatal(err)
			}
			f.Close()
			size := fileSize(t, path)

			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			var panicked any
			func() {
				defer func() { panicked = recover() }()
				st, err = Open(path, Options{LockKey: unlocked})
			}()
			runtime.ReadMemStats(&after)
			if panicked != nil {
				t.Fatalf("Open of a %d-byte file with a garbage tail panicked: %v", size, panicked)
			}
			if err == nil {
				defer st.Close()
			}
			if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 64<<20 {
				t.Fatalf("Open of a %d-byte file with a garbage tail allocated %d MiB", size, alloc>>20)
			}
			if err == nil {
				if got := heldState(t, st, "a"); got["a"] != "ok" {
					t.Fatalf("after cutting the garbage tail: %v", got)
				}
			}
		})
	}
}

// flipByte xors one byte of the file at path.
func flipByte(t *testing.T, path string, off int64, mask byte) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b[off] ^= mask
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestLengthFlipRefused: one digit of the bulk length of a value in the
// middle of the file is damaged, so that the command claims more bytes
// than the rest of the file holds. A tear is always the last thing in the
// file: whole commands after an incomplete one mean damage, and the open
// refuses the file rather than cut the acknowledged writes after it.
func TestLengthFlipRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.db")
	st := openAcked(t, path)
	setAcked(t, st, "a")
	big := bytes.Repeat([]byte("v"), 150) // a value of 150-odd bytes: "$15x"
	if err := st.Update(nil, func(tx *Tx) error { tx.Set("big", big); return nil }); err != nil {
		t.Fatal(err)
	}
	later := []string{"l/1", "l/2", "l/3", "l/4", "l/5"}
	for _, k := range later {
		setAcked(t, st, k) // acknowledged, fsynced
	}
	if err := st.CloseUnclean(); err != nil {
		t.Fatal(err)
	}
	off := valueOffsets(t, path, "big")["big"]
	b, _ := os.ReadFile(path)
	// "$1NN\r\n" precedes the value: make the leading '1' a '9'.
	lenAt := int64(bytes.LastIndexByte(b[:off], '$')) + 1
	if b[lenAt] != '1' || off-lenAt != int64(len("158\r\n")) {
		t.Fatalf("unexpected framing %q", b[lenAt-1:off])
	}
	if rest := int64(len(b)) - off; rest > 900 {
		t.Fatalf("the rest of the file (%d bytes) is longer than the damaged length claims", rest)
	}
	flipByte(t, path, lenAt, '1'^'9')

	st, err := Open(path, Options{LockKey: unlocked})
	if err != nil {
		if !strings.Contains(err.Error(), "damaged file") {
			t.Fatalf("refused with %v; want the damage named", err)
		}
		return
	}
	defer st.Close()
	t.Errorf("a file whose length field is damaged opened")
	held := heldState(t, st, append([]string{"a"}, later...)...)
	for _, k := range later {
		if held[k] != "ok" {
			t.Errorf("acknowledged write %s, whole in the file after the damaged length, after Open: %s (all: %v)", k, held[k], held)
		}
	}
}

// TestShrinkInterruptedKeepsOldFile: a rewrite keeps the file it replaces
// under a second name until the new file and its rename are durable; a
// power loss in between can leave the store's name on a file whose blocks
// were never written. Open then goes back to the old file, which holds
// every acknowledged write. A rewrite that completes leaves no second
// name behind.
func TestShrinkInterruptedKeepsOldFile(t *testing.T) {
	for _, left := range []string{"empty", "nul", "whole"} {
		t.Run(left, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "s.db")
			st := openAcked(t, path)
			for i := range 50 {
				setAcked(t, st, fmt.Sprintf("k/%d", i%5))
			}
			setAcked(t, st, "last")
			if err := st.Shrink(); err != nil {
				t.Fatal(err)
			}
			if _, err := os.Stat(prevPath(path)); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("after a completed rewrite, %s: %v; want none", prevPath(path), err)
			}
			setAcked(t, st, "after")
			if err := st.CloseUnclean(); err != nil {
				t.Fatal(err)
			}
			// What an interrupted rewrite leaves: the old file under the
			// second name, and under the store's name a new file that may
			// not have reached the disk.
			if err := os.Link(path, prevPath(path)); err != nil {
				t.Fatal(err)
			}
			size := fileSize(t, path)
			var newFile []byte
			switch left {
			case "nul":
				newFile = make([]byte, size)
			case "whole":
				b, err := os.ReadFile(path)
				if err != nil {
					t.Fatal(err)
				}
				newFile = b
			}
			tmp := path + ".new"
			if err := os.WriteFile(tmp, newFile, 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(tmp, path); err != nil {
				t.Fatal(err)
			}
			st = openAcked(t, path)
			defer st.Close()
			want := []string{"k/0", "k/1", "k/2", "k/3", "k/4", "last", "after"}
			if got := heldState(t, st, want...); !allOK(got) {
				t.Fatalf("after an interrupted rewrite (new file %s): %v", left, got)
			}
			if _, err := os.Stat(prevPath(path)); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("%s still there after the open: %v", prevPath(path), err)
			}
		})
	}
}

func allOK(m map[string]string) bool {
	for _, v := range m {
		if v != "ok" {
			return false
		}
	}
	return true
}

// TestDamagedKeyDetected: one bit of a key in the file flips, so that "k/c"
// reads as "k/a", a key of the store. The checksum covers the key: the
// value is refused as damaged, not served as k/a's.
func TestDamagedKeyDetected(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.db")
	st := openAcked(t, path)
	setAcked(t, st, "k/a")
	setAcked(t, st, "k/c") // after k/a in the file: its damaged copy replaces k/a's
	setAcked(t, st, "k/z")
	if err := st.CloseUnclean(); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	at := bytes.Index(b, []byte("\r\nk/c\r\n"))
	if at < 0 {
		t.Fatal("no k/c in the file")
	}
	flipByte(t, path, int64(at+2+2), 'c'^'a')
	st = openAcked(t, path)
	defer st.Close()
	got := heldState(t, st, "k/a", "k/c", "k/z")
	if got["k/a"] != "corrupt" || got["k/z"] != "ok" {
		t.Fatalf("after k/c's key was damaged into k/a: %v; want k/a corrupt (its value is k/c's), k/z ok", got)
	}
	if c := st.Corrupt(); !slices.Contains(c, "k/a") {
		t.Errorf("Corrupt() = %v; want k/a listed", c)
	}
}

// TestRestoreDropsInterruptedRewrite: a store left with the file of an
// interrupted rewrite (data.db.prev) and then restored from a snapshot
// opens with the snapshot's data, not the file the rewrite kept.
func TestRestoreDropsInterruptedRewrite(t *testing.T) {
	dir := t.TempDir()
	snapPath := filepath.Join(dir, "snap.db")
	{
		src := filepath.Join(dir, "src", "s.db")
		st := openAcked(t, src)
		setAcked(t, st, "snapshot")
		f, err := os.Create(snapPath)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := Backup(src, f); err != nil {
			t.Fatal(err)
		}
		f.Close()
		st.Close()
	}
	path := filepath.Join(dir, "s.db")
	st := openAcked(t, path)
	setAcked(t, st, "old")
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(path, prevPath(path)); err != nil {
		t.Fatal(err)
	}
	if err := Restore(path, snapPath); err != nil {
		t.Fatal(err)
	}
	st = openAcked(t, path)
	defer st.Close()
	if got := heldState(t, st, "snapshot", "old"); got["snapshot"] != "ok" || got["old"] != "absent" {
		t.Fatalf("after a restore over a store with %s: %v; want the snapshot's data only", prevPath(path), got)
	}
}
