package store

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"
)

// TestCheckSnapshotCostBoundedByManyCommandStarts: a snapshot whose first
// command declares a value longer than the file, followed by many bytes
// that look like the starts of commands (none of them whole), is refused
// by CheckSnapshot (lattice restore --from). Checking it must cost no more
// memory than a small multiple of the file's size: the search for a whole
// command after the incomplete one must not allocate a fresh read buffer
// for every candidate start it finds.
func TestCheckSnapshotCostBoundedByManyCommandStarts(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "hostile.snapshot")
	var b bytes.Buffer
	b.WriteString("*3\r\n$3\r\nset\r\n$3\r\nabc\r\n$100000000\r\n")
	start := []byte("*3\r\n$3\r\nset\r\n")
	for b.Len() < 32<<10 {
		b.Write(start)
	}
	if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	size := int64(b.Len())

	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	t0 := time.Now()
	_, err := CheckSnapshot(path)
	took := time.Since(t0)
	runtime.ReadMemStats(&after)
	if err == nil {
		t.Fatalf("CheckSnapshot accepted a file that is not a snapshot")
	}
	alloc := int64(after.TotalAlloc - before.TotalAlloc)
	// Fixed buffers of a few MiB are fine; what must not happen is a
	// cost that grows with the number of command starts in the file.
	const limit = 16 << 20
	if alloc > limit {
		t.Fatalf("CheckSnapshot of a %d-byte file allocated %d bytes (%.0fx its size, over the %d-byte bound) in %v; error: %v",
			size, alloc, float64(alloc)/float64(size), limit, took, err)
	}
}

// TestCheckSnapshotManyLongCandidatesRefused: after an incomplete first
// command, a file holds a command start every few dozen bytes, each
// declaring a value that runs to the end of the file. Trying each one
// whole would read the rest of the file once per start (quadratic); the
// search reads within a budget of a few times the file's size and the
// snapshot is refused as damaged.
func TestCheckSnapshotManyLongCandidatesRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "hostile.snapshot")
	var b bytes.Buffer
	b.WriteString("*3\r\n$3\r\nset\r\n$3\r\nabc\r\n$100000000\r\n")
	start := []byte("*3\r\n$3\r\nset\r\n$1\r\nk\r\n$900000\r\n")
	for b.Len() < 1<<20 {
		b.Write(start)
	}
	if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := CheckSnapshot(path)
	if err == nil || !errors.Is(err, errCandidates) {
		t.Fatalf("CheckSnapshot of %d bytes of long command starts: %v, want a refusal naming too many command starts", b.Len(), err)
	}
}
