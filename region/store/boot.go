package store

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/latticedb/lattice/region/config"
)

// A process crash is not a power loss. What a process wrote to its file
// is in the kernel's page cache once write returns, and a crash of the
// process (SIGKILL, an OOM kill, a panic) leaves it there: the next
// process to open the file on the same boot reads every byte the crashed
// one wrote, fsynced or not. Only a crash of the kernel or a power loss
// (a new boot), or a disk that fails its writes, takes writes away.
//
// So a store whose last run stopped uncleanly need not begin a new
// incarnation (identity.go) when that run ran on this same boot, with
// durability always, and its store never failed. With durability always
// a write reaches the region's peers and clients only once an fsync
// covering it succeeded, and a disk that fails writes makes that fsync
// fail (the store then fails, below); with everysec a write reaches them
// once it is in the file, and a failed writeback could drop it before
// any fsync of the store reports the failure, so everysec stores begin a
// new incarnation after every unclean stop of a run that wrote.
//
// The record is a file beside the store (path + ".boot") holding the
// boot's id and the run's (identity.Run), written at open by a store with
// durability always and removed the moment the store fails. The removal
// is a second line of defence: with durability always, what a failed
// fsync can take is writes no peer or client was shown (each waits for
// an fsync covering it that succeeded, and anti-entropy's pulls wait for
// the writes they read to be durable), so even a record that stays
// because its removal failed (a file system turned read-only by errors)
// lets no dot a peer holds be handed out again. The record is not
// fsynced: on another boot it names a boot that is not the running one,
// and means nothing.

// bootIDPath is where Linux gives the id of the running kernel's boot, a
// random UUID drawn at each boot.
const bootIDPath = "/proc/sys/kernel/random/boot_id"

// BootID returns the id of the running kernel's boot, or "" when it
// cannot be read (not Linux): then no store keeps its incarnation after
// an unclean stop of a run that wrote.
func BootID() string {
	b, err := os.ReadFile(bootIDPath)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

func bootPath(store string) string { return store + ".boot" }

// lastRunOnThisBoot reports whether the store's last run (rec, its
// identity) recorded that it ran on the boot Options.BootID names, with
// durability always, and did not fail, and whether the file opened is the one it wrote to: not the
// file an interrupted rewrite was replacing, which lacks what was
// written during the rewrite (reads may have shown it before it was
// durable).
func (s *Store) lastRunOnThisBoot(rec identity) bool {
	if !s.persist || s.opts.BootID == "" || s.rewriteUndone || rec.Run == "" {
		return false
	}
	b, err := os.ReadFile(bootPath(s.path))
	return err == nil && string(b) == bootRecord(s.opts.BootID, rec.Run)
}

// bootRecord is the content of the record: the boot's id and the run's
// (identity.Run), so that a record another run left (an earlier version
// of the region, which neither writes nor removes it, run on this boot
// since) is not taken for the crashed run's.
func bootRecord(boot, run string) string { return boot + " " + run }

// newRunID returns a random name for a run of the store.
func newRunID() string {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return ""
	}
	return hex.EncodeToString(b[:])
}

// recordBoot records that this run of the store runs on this boot with
// durability always, or removes the record when it does not. Open calls
// it once the incarnation is decided, before any write of the run.
func (s *Store) recordBoot(run string) error {
	if !s.persist {
		return nil
	}
	if s.opts.BootID == "" || run == "" || s.opts.Durability != config.DurabilityAlways {
		if err := os.Remove(bootPath(s.path)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		return nil
	}
	return os.WriteFile(bootPath(s.path), []byte(bootRecord(s.opts.BootID, run)), 0o644)
}

// forgetBoot removes, durably, the record of the boot the store at path
// last ran on: Open calls it before it changes the file in a way that
// loses writes of that run (a torn tail cut, the file from before an
// interrupted rewrite put back). The start then begins a new incarnation,
// and so does the next one if this one crashes before it has recorded
// that (openIdentity).
func forgetBoot(path string) error {
	if err := os.Remove(bootPath(path)); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return fmt.Errorf("store: %w", err)
	}
	return syncDir(filepath.Dir(path))
}

// dropBootRecord removes the record of this run's boot: the store failed,
// and the writes the kernel held may be gone.
func (s *Store) dropBootRecord() {
	if !s.persist {
		return
	}
	if err := os.Remove(bootPath(s.path)); err != nil && !errors.Is(err, os.ErrNotExist) {
		s.log.Error("could not remove the record that the store runs on this boot; move it away before the region starts again, or the start may keep an incarnation whose writes the failure lost",
			"path", bootPath(s.path), "err", err)
	}
}
