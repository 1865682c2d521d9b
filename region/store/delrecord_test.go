package store

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/tidwall/buntdb"
)

// deleteAcked deletes key in a transaction of its own.
func deleteAcked(t *testing.T, st *Store, key string) {
	t.Helper()
	if err := st.Update(nil, func(tx *Tx) error { tx.Delete(key); return nil }); err != nil {
		t.Fatal(err)
	}
}

// TestDamagedDeleteKeyRefused: a delete's key damaged on disk into the key
// of another live value ("k/b" into "k/a") was loaded as the deletion of
// k/a, silently, with k/b kept: a live value lost and a deleted one back.
// A delete is now written with a record of its key's checksum beside it;
// the store refuses to open, naming the damage, and a file whose deletes
// are whole opens with every key as it was.
func TestDamagedDeleteKeyRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.db")
	st := openAcked(t, path)
	setAcked(t, st, "k/a")
	setAcked(t, st, "k/b")
	deleteAcked(t, st, "k/b")
	setAcked(t, st, "k/z")
	deleteAcked(t, st, "k/nothing") // not there: writes nothing
	if err := st.CloseUnclean(); err != nil {
		t.Fatal(err)
	}
	st = openAcked(t, path)
	got := heldState(t, st, "k/a", "k/b", "k/z")
	st.Close()
	if got["k/a"] != "ok" || got["k/b"] != "absent" || got["k/z"] != "ok" {
		t.Fatalf("reopened: %v; want k/a ok, k/b absent, k/z ok", got)
	}

	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	at := bytes.Index(b, []byte("del\r\n$3\r\nk/b\r\n"))
	if at < 0 {
		t.Fatalf("no delete of k/b in the file")
	}
	flipByte(t, path, int64(at+len("del\r\n$3\r\nk/")), 'b'^'a')
	st, err = Open(path, Options{LockKey: unlocked})
	if err == nil {
		got := heldState(t, st, "k/a", "k/b", "k/z")
		st.Close()
		t.Fatalf("a file whose delete of k/b was damaged into k/a opened: %v", got)
	}
	if !strings.Contains(err.Error(), "damaged file") || !strings.Contains(err.Error(), "delete") {
		t.Fatalf("refused with %v; want the damaged delete named", err)
	}
}

// TestDeleteTornFromItsRecordIsCut: a crash that wrote a delete's record
// but not the delete (or the delete but not its record: BuntDB writes a
// transaction's keys in any order) leaves the last transaction half
// written; the store cuts it, keeping the key, and opens. (A bare delete
// at the end of a file with no record before it is read as one of an
// older file: applied.)
func TestDeleteTornFromItsRecordIsCut(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.db")
	st := openAcked(t, path)
	setAcked(t, st, "k/a")
	setAcked(t, st, "k/b", "k/x")
	deleteAcked(t, st, "k/x")
	if err := st.CloseUnclean(); err != nil {
		t.Fatal(err)
	}
	whole, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	st = openAcked(t, path)
	deleteAcked(t, st, "k/b")
	if err := st.CloseUnclean(); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	del := bytes.Index(b[len(whole):], []byte("*2\r\n$3\r\ndel\r\n$3\r\nk/b"))
	mark := bytes.Index(b[len(whole):], []byte("*3\r\n$3\r\nset\r\n$4\r\n~del\r\n"))
	if del < 0 || mark < 0 {
		t.Fatalf("the delete wrote %q; want a delete and its record", b[len(whole):])
	}
	last := max(del, mark) + len(whole) // the second command of the pair
	for _, cut := range []int{last, last + 5, len(b) - 1} {
		if err := os.WriteFile(path, b[:cut], 0o600); err != nil {
			t.Fatal(err)
		}
		st, err := Open(path, Options{LockKey: unlocked})
		if err != nil {
			t.Fatalf("cut at %d of %d: %v", cut, len(b), err)
		}
		got := heldState(t, st, "k/a", "k/b")
		st.Close()
		if got["k/a"] != "ok" || got["k/b"] != "ok" {
			t.Fatalf("cut at %d of %d: %v; want the torn delete undone, k/a and k/b ok", cut, len(b), got)
		}
	}
}

// TestBareDeletesOfOlderFilesOpen: files written before deletes carried
// records hold bare deletes; they open as before, and deletes written
// after them carry records.
func TestBareDeletesOfOlderFilesOpen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.db")
	st := openAcked(t, path)
	setAcked(t, st, "k/a", "k/b", "k/c")
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	stripDeletesMarker(t, path)
	db, err := buntdb.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"k/b", "k/c"} {
		if err := db.Update(func(tx *buntdb.Tx) error { _, err := tx.Delete(k); return err }); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	st = openAcked(t, path)
	setAcked(t, st, "k/d")
	deleteAcked(t, st, "k/d")
	if err := st.CloseUnclean(); err != nil {
		t.Fatal(err)
	}
	st = openAcked(t, path)
	defer st.Close()
	got := heldState(t, st, "k/a", "k/b", "k/c", "k/d")
	if got["k/a"] != "ok" || got["k/b"] != "absent" || got["k/c"] != "absent" || got["k/d"] != "absent" {
		t.Fatalf("reopened: %v; want k/a ok and the rest deleted", got)
	}
}

// stripDeletesMarker removes from the file at path the command that sets
// deletesKey, as a file written before deletes carried records lacks it.
func stripDeletesMarker(t *testing.T, path string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	head := []byte("*3\r\n$3\r\nset\r\n$" + strconv.Itoa(len(deletesKey)) + "\r\n" + deletesKey + "\r\n$")
	at := bytes.Index(b, head)
	if at < 0 {
		t.Fatal("no deletes marker in the file")
	}
	rest := b[at+len(head):]
	nl := bytes.Index(rest, []byte("\r\n"))
	n, err := strconv.Atoi(string(rest[:nl]))
	if err != nil {
		t.Fatal(err)
	}
	end := at + len(head) + nl + 2 + n + 2
	if err := os.WriteFile(path, append(b[:at:at], b[end:]...), 0o600); err != nil {
		t.Fatal(err)
	}
}
