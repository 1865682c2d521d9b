package store

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// MaybeShrink rewrites the file if it exceeds ShrinkMinBytes and twice
// the live data. Writes go on during the rewrite; their acknowledgements
// wait until the new file is fsynced (with either durability), so an
// acknowledged write is never only in the file a restart after an
// interrupted rewrite would not use.
func (s *Store) MaybeShrink() error {
	file, live := s.Sizes()
	if file < s.opts.ShrinkMinBytes || file <= 2*live {
		return nil
	}
	return s.Shrink()
}

// Shrink rewrites the file to hold only live data.
//
// BuntDB writes the new file beside the old one and renames it over the
// old one without an fsync in between: after a power loss at that moment
// the name may point at a file whose blocks were never written. So the
// old file is first given a second name (prevPath, a hard link, made
// durable), and that name goes only once the new file and the rename are
// durable. Acknowledgements wait for the whole of it (s.fileMu), so while
// prevPath exists every acknowledged write is in the file it names, and
// Open goes back to it (restorePrev).
func (s *Store) Shrink() error {
	if !s.persist {
		return nil
	}
	s.fileMu.Lock()
	defer s.fileMu.Unlock()
	s.shrinking.Store(true)
	defer s.shrinking.Store(false) // before fileMu is unlocked
	start := time.Now()
	prev := prevPath(s.path)
	if err := os.Remove(prev); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("store: shrink: %w", err)
	}
	if err := os.Link(s.path, prev); err != nil {
		return fmt.Errorf("store: shrink: keep the old file: %w", err)
	}
	if err := syncDir(filepath.Dir(s.path)); err != nil {
		os.Remove(prev)
		return fmt.Errorf("store: shrink: %w", err)
	}
	if err := s.db.Shrink(); err != nil {
		err = fmt.Errorf("store: shrink: %w", err)
		if !sameStat(prev, s.path) {
			// BuntDB renamed its new file over the store's before it
			// failed: it writes to a file the store's fsyncs do not
			// reach. Fail, keeping the old file under its second name
			// for the next start (no write since the rewrite began was
			// acknowledged: s.fileMu).
			s.fail(err)
			return err
		}
		os.Remove(prev) // the old file is still the store's
		return err
	}
	f, err := os.OpenFile(s.path, os.O_RDWR, 0)
	if err != nil {
		err = fmt.Errorf("store: reopen after shrink: %w", err)
		s.fail(err)
		return err
	}
	s.syncFile.Close()
	s.syncFile = f
	if err := f.Sync(); err != nil {
		// As for any failed fsync: the kernel may have dropped the pages,
		// and a later fsync could succeed falsely.
		err = fmt.Errorf("store: fsync after shrink: %w", err)
		s.fail(err)
		return err
	}
	if err := syncDir(filepath.Dir(s.path)); err != nil {
		s.fail(err)
		return err
	}
	if err := os.Remove(prev); err != nil {
		s.fail(err)
		return fmt.Errorf("store: shrink: %w", err)
	}
	if err := syncDir(filepath.Dir(s.path)); err != nil {
		s.fail(err)
		return err
	}
	inc(s.metrics.Shrinks)
	s.log.Info("store shrunk", "path", s.path, "took", time.Since(start))
	return nil
}

// prevPath is where Shrink keeps the file it replaces until the new one
// is durable.
func prevPath(path string) string { return path + ".prev" }

// restorePrev puts back the file a rewrite was replacing when the process
// stopped (Shrink), if there is one: the new file may not have been
// durable, and the old one holds every acknowledged write. It reports
// whether it did: whether the file opened lacks the writes made during
// the rewrite. Before it replaces the file it removes the record of the
// last run's boot (forgetBoot), so that a start that crashes before it
// has recorded the loss does not keep the incarnation at the next.
func restorePrev(path string) (bool, error) {
	prev := prevPath(path)
	if _, err := os.Stat(prev); errors.Is(err, os.ErrNotExist) {
		return false, nil
	} else if err != nil {
		return false, fmt.Errorf("store: %w", err)
	}
	if sameStat(prev, path) {
		// Stopped right after the rewrite linked the file to prev: both
		// names are the old file, which a rename of one onto the other
		// leaves in place (POSIX), and every write of the run is in it.
		// Drop the second name.
		if err := os.Remove(prev); err != nil {
			return false, fmt.Errorf("store: %w", err)
		}
		return false, syncDir(filepath.Dir(path))
	}
	if err := forgetBoot(path); err != nil {
		return false, err
	}
	if err := os.Rename(prev, path); err != nil {
		return false, fmt.Errorf("store: restore the file from before an interrupted rewrite: %w", err)
	}
	return true, syncDir(filepath.Dir(path))
}
