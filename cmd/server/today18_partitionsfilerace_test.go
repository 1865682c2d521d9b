package server

import (
	"os"
	"path/filepath"
	"sync"
	"testing"
)

// TestToday18PartitionsFileConcurrentNodes: docs/operations.md has the
// nodes of a region on one machine (or a shared volume) share
// data_dir/R ("nothing has to move: data_dir/R/pNNNN/ is the same
// place"). Two such nodes started at once on a fresh directory both record
// the partition count (startPartitioned → writePartitionsFile) through
// the same temporary file, PartitionsFile+".tmp": one renames it away
// while the other still writes or syncs it, and the other's rename fails,
// so that node refuses to start ("recording the partition count") though
// both record the same count.
func TestToday18PartitionsFileConcurrentNodes(t *testing.T) {
	for round := range 50 {
		dir := filepath.Join(t.TempDir(), "us-east")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		errs := make([]error, 2)
		start := make(chan struct{})
		for i := range errs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				errs[i] = writePartitionsFile(dir, 8)
			}()
		}
		close(start)
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Fatalf("round %d: node %d of two sharing %s could not record the partition count 8 that both record: %v", round, i, dir, err)
			}
		}
		if err := checkPartitionsFile(dir, 8); err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
	}
}
