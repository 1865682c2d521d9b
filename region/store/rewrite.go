package store

import (
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// MaybeShrink rewrites the file if it exceeds ShrinkMinBytes and twice
// the live data. Writes go on during the rewrite; their acknowledgements
// wait until the new file is fsynced, so an acknowledged write is never
// only in the replaced file.
func (s *Store) MaybeShrink() error {
	file, live := s.Sizes()
	if file < s.opts.ShrinkMinBytes || file <= 2*live {
		return nil
	}
	return s.Shrink()
}

// Shrink rewrites the file to hold only live data.
func (s *Store) Shrink() error {
	if !s.persist {
		return nil
	}
	s.fileMu.Lock()
	defer s.fileMu.Unlock()
	start := time.Now()
	if err := s.db.Shrink(); err != nil {
		return fmt.Errorf("store: shrink: %w", err)
	}
	f, err := os.OpenFile(s.path, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("store: reopen after shrink: %w", err)
	}
	s.syncFile.Close()
	s.syncFile = f
	if err := f.Sync(); err != nil {
		return fmt.Errorf("store: fsync after shrink: %w", err)
	}
	if d, err := os.Open(filepath.Dir(s.path)); err == nil {
		_ = d.Sync()
		d.Close()
	}
	inc(s.metrics.Shrinks)
	s.log.Info("store shrunk", "path", s.path, "took", time.Since(start))
	return nil
}
