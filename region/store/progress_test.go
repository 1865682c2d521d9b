package store

import (
	"os"
	"path/filepath"
	"runtime"
	"testing"
)

// TestReadPos checks that the progress of a load is read from the offset
// of the descriptor reading the file.
func TestReadPos(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("readPos reads /proc/self/fdinfo, which only Linux has")
	}
	path := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(path, make([]byte, 100), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, ok := readPos(path); ok {
		t.Fatal("a position of a file no descriptor reads")
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Read(make([]byte, 37)); err != nil {
		t.Fatal(err)
	}
	if pos, ok := readPos(path); !ok || pos != 37 {
		t.Fatalf("readPos = %d, %v, want 37", pos, ok)
	}
}
