package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	storefile "github.com/latticedb/lattice/region/store"
)

// flipSnapshotValueByte flips the last byte of the value of the first set of key
// in the store file at path, so that the value fails its checksum while
// the file stays well formed.
func flipSnapshotValueByte(t *testing.T, path, key string) {
	t.Helper()
	var end int64 = -1
	err := storefile.Commands(path, func(cmd [][]byte, e int64) bool {
		if len(cmd) == 3 && string(cmd[1]) == key {
			end = e
			return false
		}
		return true
	})
	if err != nil || end < 0 {
		t.Fatalf("no set of %s in %s: %v", key, path, err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b[end-3] ^= 0x5a // the value's last byte, before its "\r\n"
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestRestoreRefusesSnapshotWithDamagedValue: operations.md says a
// snapshot is checked before it is put in place (it loads, its values pass
// their checksums). A snapshot one of whose values no longer passes its
// checksum (here the region's applied context) is refused, and the
// region's store is left as it was.
func TestRestoreRefusesSnapshotWithDamagedValue(t *testing.T) {
	dir := t.TempDir()
	addr := freeAddr(t)
	cfg := writeConfig(t, dir, addr)
	store := filepath.Join(dir, "data", "us-east", "data.db")
	r := serveInProcess(t, cfg, addr)
	r.add(t, "dmg", "a")
	snap := filepath.Join(dir, "snap.db")
	if code, _, stderr := runCLI(t, "backup", "--config", cfg, "--region", "us-east", "--out", snap); code != 0 {
		t.Fatalf("backup: exit %d: %s", code, stderr)
	}
	r.add(t, "dmg", "b")
	r.stop(t)

	flipSnapshotValueByte(t, snap, "m/applied")
	before, _ := os.ReadFile(store)
	code, stdout, stderr := runCLI(t, "restore", "--config", cfg, "--region", "us-east", "--from", snap)
	if code == 0 {
		// What the region makes of the restored store.
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		var serr syncBuffer
		done := make(chan int, 1)
		go func() {
			done <- run(ctx, []string{"serve", "--config", cfg, "--region", "us-east"}, &syncBuffer{}, &serr)
		}()
		var started string
		select {
		case c := <-done:
			started = "serve then exited " + strconv.Itoa(c) + ": " + restoreLogLastLine(serr.String())
		case <-time.After(5 * time.Second):
			started = "serve still running"
			cancel()
			<-done
		}
		t.Fatalf("restore of a snapshot whose m/applied fails its checksum: exit 0 (%q); want it refused. %s", bytes.TrimSpace([]byte(stdout)), started)
	}
	if after, _ := os.ReadFile(store); !bytes.Equal(before, after) {
		t.Errorf("a refused restore changed the store (stderr %q)", stderr)
	}
}

func restoreLogLastLine(s string) string {
	s = string(bytes.TrimSpace([]byte(s)))
	if i := bytes.LastIndexByte([]byte(s), '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}

// TestRestoreRefusesTruncatedSnapshot: a snapshot written by lattice
// backup never ends inside a transaction (backup cuts a transaction still
// being written before it writes the file). A snapshot file that does has
// lost its end (a copy cut short, a full disk) and is refused, rather than
// restored without the writes of its lost end and without a word.
func TestRestoreRefusesTruncatedSnapshot(t *testing.T) {
	dir := t.TempDir()
	addr := freeAddr(t)
	cfg := writeConfig(t, dir, addr)
	store := filepath.Join(dir, "data", "us-east", "data.db")
	r := serveInProcess(t, cfg, addr)
	for _, sku := range []string{"a", "b", "c"} {
		r.add(t, "cut", sku)
	}
	r.stop(t)
	snap := filepath.Join(dir, "snap.db")
	if code, _, stderr := runCLI(t, "backup", "--config", cfg, "--region", "us-east", "--out", snap); code != 0 {
		t.Fatalf("backup: exit %d: %s", code, stderr)
	}
	// The snapshot loses the second half of the transaction that added c.
	txs, err := storefile.Transactions(snap)
	if err != nil {
		t.Fatal(err)
	}
	var last *storefile.TxSpan
	for i := range txs {
		if txs[i].Declared > 1 {
			last = &txs[i]
		}
	}
	if last == nil {
		t.Fatalf("no transaction of several values in %s", snap)
	}
	b, err := os.ReadFile(snap)
	if err != nil {
		t.Fatal(err)
	}
	cutAt := last.Start + (last.End-last.Start)/2
	if err := os.WriteFile(snap, b[:cutAt], 0o644); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(store)
	code, stdout, _ := runCLI(t, "restore", "--config", cfg, "--region", "us-east", "--from", snap)
	if code == 0 {
		r = serveInProcess(t, cfg, addr)
		t.Fatalf("restore of a snapshot cut short inside its transaction at byte %d of %d: exit 0 (%q); want it refused; the restored cart holds %v",
			cutAt, len(b), bytes.TrimSpace([]byte(stdout)), r.skus(t, "cut"))
	}
	if after, _ := os.ReadFile(store); !bytes.Equal(before, after) {
		t.Errorf("a refused restore changed the store")
	}
}
