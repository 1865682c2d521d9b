package store

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/tidwall/buntdb"

	"github.com/latticedb/lattice/crdt"
)

// A region's identity: which incarnation of the region its store is, kept
// in a small file beside the store (path + ".id") that is written on its
// own, fsynced and renamed into place, and in the store (keyIncarnation).
//
// Dots, object counters, register versions and reservation numbers all
// go on from what the store holds. A store that may have lost some of its
// tail — a torn or cut file, an unclean stop (with everysec a power loss
// loses the last second), a restore from a backup — cannot tell which of
// them it had already handed out to peers and clients. So such a store
// goes on as a new incarnation: a new replica id (crdt.Incarnation) that
// has issued nothing. The store starts a new incarnation when
//
//   - the last stop was not clean (the identity file says so), and that
//     run had issued at least one dot (markUsed records that, durably,
//     before the first) or the file is now shorter than when it opened
//     — except a run with durability always that crashed on this same
//     boot with its store healthy, whose every write the kernel kept
//     (boot.go);
//   - recovery cut a torn transaction off the file;
//   - the file is not the one the identity file last saw closed (its last
//     transaction differs: the file was cut, replaced or copied);
//   - the store was restored (lattice restore sets restored, and the
//     unclean stop above);
//   - there is a store but no identity file (written by an older version).
//
// A new, empty store is incarnation 0 of its region when the region is
// alone (Options.Shared false). In a cluster of several regions it starts
// as a new incarnation in catch-up: its name may have written before (a
// removed region's name reused, a region started again on an empty
// directory), and the peers may hold that name's dots and its decisions
// as a home; a new incarnation issues none of those dots again, and
// catch-up waits for the peers' state before deciding.
//
// A new incarnation is max(last + IncarnationStep, the Unix time in
// hundredths of a second), so that a
// region restored on a machine that lost its identity file as well still
// picks a number no earlier incarnation used (as long as the clock has
// not gone back past the last one).
type identity struct {
	Incarnation uint64 `json:"incarnation"`
	// Clean is true once the store was closed cleanly; TxID is then the id
	// of its last transaction (the close marker). While the store is open,
	// TxID is the id of the last transaction the file held when it opened.
	Clean bool   `json:"clean"`
	TxID  uint64 `json:"txid,omitempty"`
	// Used is true once this run of the store may have issued a dot.
	Used bool `json:"used"`
	// CatchUp is true from the start of an incarnation that may have lost
	// writes (a restore among them) until the region has completed
	// anti-entropy with every peer: until then it decides no reservation.
	CatchUp bool `json:"catch_up,omitempty"`
	// Restored is set by Restore and cleared by the next open, which
	// starts a new incarnation for it. (CatchUp alone is carried over a
	// clean stop of a region still catching up, which keeps its
	// incarnation.)
	Restored bool `json:"restored,omitempty"`
	// Fresh is true while a store that began empty (the first start of a
	// region of several) catches up: it never held what its region's
	// name wrote before it, so catch-up brings back none of it as lost.
	// A restore, or a store file other than the one described, clears it.
	Fresh bool `json:"fresh,omitempty"`
	// Run names the current run of the store, among those of its
	// incarnation; the record of the boot it runs on names it too
	// (boot.go), so that a record left by another run is not taken for
	// this one's.
	Run string `json:"run,omitempty"`
}

// Store keys of the identity.
const (
	keyIncarnation = "m/incarnation"
	keyClosed      = "m/closed"
)

func identityPath(store string) string { return store + ".id" }
func lockPath(store string) string     { return store + ".lock" }

// readIdentity reads the identity file of the store at path; ok is false
// if there is none.
func readIdentity(path string) (id identity, ok bool, err error) {
	b, err := os.ReadFile(identityPath(path))
	if errors.Is(err, os.ErrNotExist) {
		return identity{}, false, nil
	}
	if err != nil {
		return identity{}, false, fmt.Errorf("store: %w", err)
	}
	if err := json.Unmarshal(b, &id); err != nil {
		return identity{}, false, fmt.Errorf("store: identity file %s is damaged (%v); move it away to start the store as a new incarnation", identityPath(path), err)
	}
	return id, true, nil
}

// writeIdentity replaces the identity file durably: a new file, fsynced,
// renamed over the old one, and the directory fsynced.
func writeIdentity(path string, id identity) error {
	b, err := json.Marshal(id)
	if err != nil {
		return err
	}
	tmp := identityPath(path) + ".tmp"
	if err := writeFileSync(tmp, b); err != nil {
		return err
	}
	if err := os.Rename(tmp, identityPath(path)); err != nil {
		return fmt.Errorf("store: %w", err)
	}
	return syncDir(filepath.Dir(path))
}

func writeFileSync(path string, b []byte) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("store: %w", err)
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return fmt.Errorf("store: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("store: fsync %s: %w", path, err)
	}
	return f.Close()
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("store: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("store: fsync %s: %w", dir, err)
	}
	return nil
}

// lockStore takes the store's lock file, so that no two processes open
// one store and lattice restore never replaces the file of a running
// region.
func lockStore(path string) (*os.File, error) {
	f, err := os.OpenFile(lockPath(path), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("store: the store %s is open in another process (a running region?)", path)
		}
		return nil, fmt.Errorf("store: lock %s: %w", lockPath(path), err)
	}
	return f, nil
}

// nextIncarnation returns the incarnation that follows last: at least
// the Unix time in hundredths of a second (12 digits until the year
// 2286, crdt.MaxIncarnationDigits), so that two regions of one name whose
// stores know nothing of each other's (a removed region's name reused on
// an empty store a moment later) pick different numbers, and at least
// IncarnationStep past last, whatever the clock says: an incarnation's
// reservation numbers begin at K × 2²⁰ (region.resSeqFloor), so the
// numbers of the last one, which may have lived long after a start with
// the clock ahead and whose high-water mark a restore loses, stay below
// the next one's unless it issued 2³⁶ of them.
func nextIncarnation(last uint64, now time.Time) uint64 {
	return max(last+IncarnationStep, uint64(max(now.UnixMilli()/10, 0)))
}

// randUint64 returns a random number (0 if the system has none to give).
func randUint64() uint64 {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return 0
	}
	return binary.LittleEndian.Uint64(b[:])
}

// IncarnationStep is the least an incarnation number grows by from one
// incarnation to the next (nextIncarnation). The 12 digits of
// crdt.MaxIncarnationDigits leave room for about 12.5 million
// incarnations past today's clock, against the 256 replica ids (writing
// incarnations) a cluster has in all.
const IncarnationStep = 1 << 16

// openIdentity decides the store's incarnation after it was opened and
// scanned (cut is how many bytes recovery cut off its tail) and makes the
// decision durable before any write: the identity file first, then the
// store's own record.
func (s *Store) openIdentity(cut int64, now time.Time) error {
	var stored uint64
	var empty = true
	// A damaged incarnation record counts as unknown: the identity file
	// (or, without one, the clock) gives the next incarnation, which the
	// record is then written anew with (as after any damage, the store
	// goes on as a new incarnation).
	damagedInc := false
	err := s.view(nil, func(r Reader) error {
		b, ok, err := r.Get(keyIncarnation)
		if errors.Is(err, ErrCorrupt) {
			damagedInc = true
			return nil
		}
		if err != nil {
			return err
		}
		if ok {
			if err := crdt.Unmarshal(b, &stored, crdt.MaxObjectBytes); err != nil {
				stored, damagedInc = 0, true
			}
		}
		return nil
	})
	if err == nil {
		err = s.Scan("", func(k string, _ []byte, _ error) bool {
			if k != epochKey && k != delMarkKey && k != deletesKey {
				empty = false
			}
			return empty
		})
	}
	if err != nil {
		return err
	}
	if !s.persist {
		s.id = identity{Incarnation: stored}
		return nil
	}
	rec, exists, err := readIdentity(s.path)
	if err != nil {
		return err
	}
	// A run that crashed on this boot left every write it made in the
	// kernel (boot.go): its unclean stop lost nothing, unless the file
	// is now shorter than when it opened (the next case but one).
	keptByKernel := exists && !rec.Clean && rec.Used && s.lastRunOnThisBoot(rec) && s.fileTxid >= rec.TxID
	var why string
	switch {
	case cut > 0:
		why = "a torn transaction was cut off the store's tail"
	case len(s.Corrupt()) > 0:
		// A damaged value is repaired from the state of whichever peer
		// answers first, which may lack this region's own writes that
		// another peer holds: its counters would run again from below
		// them (a dot or a stock decrement issued twice).
		why = "stored values failed their checksums"
	case damagedInc:
		why = "the store's incarnation record is damaged"
	case rec.Restored:
		why = "the store was restored from a backup"
	case !exists && !empty:
		why = "the store has no identity file"
	case exists && rec.Incarnation != stored:
		why = "the store is not the one the identity file describes"
	case exists && rec.Clean && rec.TxID != s.fileTxid:
		why = "the store file changed since it was closed"
	case exists && !rec.Clean && rec.Used && !keptByKernel:
		why = "the last stop was not clean"
	case exists && !rec.Clean && s.fileTxid < rec.TxID:
		why = "the store lost transactions it held when it last opened"
	}
	next := identity{Incarnation: max(rec.Incarnation, stored), CatchUp: rec.CatchUp, TxID: s.txid,
		Fresh: rec.Fresh && rec.CatchUp && !rec.Restored && rec.Incarnation == stored}
	if why == "" && !exists && empty && s.opts.Shared {
		// Not a loss: the first start of this store. But the region's
		// name may have written before, elsewhere or on a lost disk.
		next.CatchUp, next.Fresh = true, true
		next.Incarnation = nextIncarnation(next.Incarnation, now)
		s.log.Info("a new store of a region of several starts as a new incarnation and catches up with its peers before deciding as a home",
			"path", s.path, "incarnation", next.Incarnation)
	}
	if why != "" {
		// What the store lost may include decisions of the reservation
		// ledger (holds, commits) that its peers already count: decide
		// again only once anti-entropy with every peer has brought back
		// what they hold (Node.SyncedWith).
		next.CatchUp = true
		next.Incarnation = nextIncarnation(next.Incarnation, now)
		if rec.Restored || !exists {
			// The incarnations since the one the file holds are not
			// known here (a restore on another machine): they may have
			// run ahead of the clock by IncarnationStep each, so the
			// next one lands off their steps, at a random offset.
			next.Incarnation += 1 + randUint64()%(IncarnationStep-1)
		}
		s.log.Warn("the store may have lost writes it had handed out; the region goes on as a new incarnation",
			"path", s.path, "reason", why, "incarnation", next.Incarnation)
		inc(s.metrics.Incarnations)
	}
	if why == "" && keptByKernel {
		s.log.Info("the last stop was not clean, but on this boot and with the store healthy to the end: the file holds every write of that run, and the region keeps its incarnation",
			"path", s.path, "incarnation", next.Incarnation)
	}
	next.Run = newRunID()
	if err := writeIdentity(s.path, next); err != nil {
		return err
	}
	if err := s.recordBoot(next.Run); err != nil {
		return fmt.Errorf("store: record the boot the store runs on: %w", err)
	}
	s.id = next
	if next.Incarnation != stored {
		b, err := crdt.Marshal(next.Incarnation)
		if err == nil {
			err = s.update(nil, func(tx *Tx) error {
				tx.Set(keyIncarnation, b)
				return nil
			}, nil)
		}
		if err == nil {
			err = s.fsync()
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// NewIncarnation starts a new incarnation that catches up, as opening a
// store that may have lost writes does (openIdentity), for a reason found
// after the store opened: the region's own checks of what it holds (a
// cart whose lines disagree with its head, a value that passes its
// checksum but does not decode). The caller must not have issued a dot of
// the store's incarnation since it opened.
func (s *Store) NewIncarnation(why string) error {
	s.idMu.Lock()
	next := s.id
	next.CatchUp = true
	next.Incarnation = nextIncarnation(next.Incarnation, time.Now())
	if s.persist {
		if err := writeIdentity(s.path, next); err != nil {
			s.idMu.Unlock()
			return err
		}
	}
	s.id = next
	s.idMu.Unlock()
	s.log.Warn("the store may have lost writes it had handed out; the region goes on as a new incarnation",
		"path", s.path, "reason", why, "incarnation", next.Incarnation)
	inc(s.metrics.Incarnations)
	b, err := crdt.Marshal(next.Incarnation)
	if err == nil {
		err = s.update(nil, func(tx *Tx) error {
			tx.Set(keyIncarnation, b)
			return nil
		}, nil)
	}
	if err == nil && s.persist {
		err = s.fsync()
	}
	return err
}

// Incarnation returns the store's incarnation (see crdt.Incarnation).
func (s *Store) Incarnation() uint64 {
	s.idMu.Lock()
	defer s.idMu.Unlock()
	return s.id.Incarnation
}

// CatchingUp reports whether the store began an incarnation that may have
// lost writes (see openIdentity) and the region has
// not yet completed anti-entropy with every peer since.
func (s *Store) CatchingUp() bool {
	s.idMu.Lock()
	defer s.idMu.Unlock()
	return s.id.CatchUp
}

// Fresh reports whether the store began empty, as the first store of a
// region of several, and is still catching up (see identity.Fresh).
func (s *Store) Fresh() bool {
	s.idMu.Lock()
	defer s.idMu.Unlock()
	return s.id.Fresh
}

// CaughtUp records, durably, that the restored region has caught up.
func (s *Store) CaughtUp() error {
	s.idMu.Lock()
	defer s.idMu.Unlock()
	if !s.id.CatchUp {
		return nil
	}
	next := s.id
	next.CatchUp, next.Fresh = false, false
	if s.persist {
		// What catch-up brought in must be durable before the record that
		// it is over (with everysec it may be only in the file): a power
		// loss would otherwise leave a region out of catch-up without it.
		// The record names the transaction catch-up reached: a later
		// open that finds the store short of it (a disk that lost synced
		// writes, a file put back) has lost what catch-up brought, the
		// home's own grants and commits among it, and catches up again
		// (openIdentity), though this run issued no dot.
		s.txMu.Lock()
		next.TxID = max(next.TxID, s.txid)
		s.txMu.Unlock()
		if err := s.fsync(); err != nil {
			return err
		}
		if err := writeIdentity(s.path, next); err != nil {
			return err
		}
	}
	s.id = next
	return nil
}

// BeginCatchUp records, durably, that the region is to catch up with
// every peer before it decides as a home (CatchingUp), as a new
// incarnation does, without starting one: the region's store lost
// nothing, but it may now be home to skus another region decided until
// now (the homes changed), whose commits it may not hold yet.
func (s *Store) BeginCatchUp() error {
	s.idMu.Lock()
	defer s.idMu.Unlock()
	if s.id.CatchUp {
		return nil
	}
	next := s.id
	next.CatchUp = true
	if s.persist {
		if err := writeIdentity(s.path, next); err != nil {
			return err
		}
	}
	s.id = next
	return nil
}

// MarkUsed records, durably, that the incarnation may issue dots; the
// region calls it before its first local write.
func (s *Store) MarkUsed() error {
	if s.used.Load() {
		return nil
	}
	s.idMu.Lock()
	defer s.idMu.Unlock()
	if s.used.Load() {
		return nil
	}
	if s.persist && !s.id.Used {
		next := s.id
		next.Used = true
		if err := writeIdentity(s.path, next); err != nil {
			s.fail(err)
			return ErrStoreFailed
		}
		s.id = next
	}
	s.used.Store(true)
	return nil
}

// closeIdentity writes the close marker as the store's last transaction,
// fsyncs it and records a clean stop.
func (s *Store) closeIdentity() error {
	if !s.persist || s.Failed() {
		return nil
	}
	// From here on only the marker is written (ErrStoreClosed), so that
	// it is the last transaction, as the identity records.
	s.closing.Store(true)
	if err := s.update0(nil, func(tx *Tx) error {
		tx.Set(keyClosed, []byte{1})
		return nil
	}, nil, true); err != nil {
		return err
	}
	if err := s.fsync(); err != nil {
		return err
	}
	// Every write is in the file and covered by that fsync: a writer
	// still waiting for its own fsync has it (syncFile0).
	s.closeSynced.Store(true)
	s.txMu.Lock()
	txid := s.txid
	s.txMu.Unlock()
	s.idMu.Lock()
	defer s.idMu.Unlock()
	next := s.id
	next.Clean, next.TxID = true, txid
	return writeIdentity(s.path, next)
}

// Backup writes a consistent snapshot of the store file at path to w,
// while a region may be writing to it: the file as it is when Backup
// opens it, less a final transaction still being written. It returns the
// bytes written.
//
// While the file a rewrite is replacing is still kept (Shrink's prevPath:
// the rewrite is running, or was cut short by a stop), that file is the
// one copied: it is what Open would go on from, and the new one may be
// only partly written.
func Backup(path string, w io.Writer) (int64, error) {
	return BackupContext(context.Background(), path, w)
}

// BackupContext is Backup, given up with ctx's error once ctx ends (its
// temporary copy removed).
func BackupContext(ctx context.Context, path string, w io.Writer) (int64, error) {
	f, err := os.Open(prevPath(path))
	if errors.Is(err, os.ErrNotExist) {
		f, err = os.Open(path)
	}
	return copySnapshot(ctx, f, err, path, w)
}

// ctxReader reads from r until ctx ends, then fails with ctx's error.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// CheckSnapshot checks that the file at path, and that file alone (not a
// ".prev" file beside it, which Backup would copy), reads as a snapshot
// of a store: whole transactions and values with valid frames. It
// returns the file's size as checked (less a final partial transaction,
// which Restore refuses).
func CheckSnapshot(path string) (int64, error) {
	return CheckSnapshotContext(context.Background(), path)
}

// CheckSnapshotContext is CheckSnapshot, given up once ctx ends.
func CheckSnapshotContext(ctx context.Context, path string) (int64, error) {
	f, err := os.Open(path)
	return copySnapshot(ctx, f, err, path, io.Discard)
}

// copySnapshot copies f, opened as path (or err), through a checked
// temporary copy to w, until ctx ends.
func copySnapshot(ctx context.Context, f *os.File, err error, path string, w io.Writer) (int64, error) {
	if err != nil {
		return 0, fmt.Errorf("store: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return 0, fmt.Errorf("store: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".backup-*")
	if err != nil {
		tmp, err = os.CreateTemp("", "lattice-backup-*")
		if err != nil {
			return 0, fmt.Errorf("store: %w", err)
		}
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	if _, err := io.Copy(tmp, ctxReader{ctx, io.NewSectionReader(f, 0, fi.Size())}); err != nil {
		return 0, fmt.Errorf("store: copy %s: %w", path, err)
	}
	if _, err := recoverTail(tmp.Name()); err != nil {
		return 0, fmt.Errorf("store: %s (a copy of it): %w", path, err)
	}
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("store: copy %s: %w", path, err)
	}
	if err := checkSnapshot(tmp.Name(), path); err != nil {
		return 0, err
	}
	if _, err := tmp.Seek(0, io.SeekStart); err != nil {
		return 0, fmt.Errorf("store: %w", err)
	}
	n, err := io.Copy(w, ctxReader{ctx, tmp})
	if err != nil {
		return n, fmt.Errorf("store: write backup: %w", err)
	}
	return n, nil
}

// checkSnapshot opens the BuntDB file at path, a copy of the file name,
// and checks that it loads and that its values carry valid frames; its
// errors speak of name.
func checkSnapshot(path, name string) error {
	db, err := buntdb.Open(path)
	if err != nil {
		return fmt.Errorf("store: %s is not a store snapshot: %w", name, err)
	}
	defer db.Close()
	// A check only reads: no rewrite of the copy behind Restore's back.
	var cfg buntdb.Config
	if err := db.ReadConfig(&cfg); err == nil {
		cfg.AutoShrinkDisabled, cfg.SyncPolicy = true, buntdb.Never
		_ = db.SetConfig(cfg)
	}
	bad, total, epoch := 0, 0, false
	err = db.View(func(tx *buntdb.Tx) error {
		return tx.Ascend("", func(k, v string) bool {
			total++
			epoch = epoch || k == epochKey
			if _, _, _, _, err := unframe(k, []byte(v)); err != nil {
				bad++
			}
			return true
		})
	})
	if err != nil {
		return fmt.Errorf("store: read %s: %w", name, err)
	}
	if total == 0 {
		return fmt.Errorf("store: %s holds no data: not a store snapshot", name)
	}
	if bad == total {
		return fmt.Errorf("store: no value of %s passes its checksum: not a store snapshot", name)
	}
	if bad > 0 {
		return fmt.Errorf("store: %d of the %d values of %s fail their checksums: a damaged snapshot", bad, total, name)
	}
	if !epoch {
		// Every store file holds the epoch key: in the first transaction
		// of a new file, and as the last key of a rewritten one (keys in
		// key order, the epoch key sorting last). A copy without it was
		// cut short inside a rewrite's part, where one transaction's
		// values lie apart and a cut can keep some of them.
		return fmt.Errorf("store: %s lacks the store's epoch key: cut short inside the part a rewrite wrote (or not a store snapshot)", name)
	}
	return nil
}

// Restore puts the snapshot from (written by Backup) in place of the store
// at path. The region must be stopped. The next open starts a new
// incarnation (so no dot is issued twice) in catch-up mode: the region
// serves carts and stock at once, and decides reservations again once it
// has completed anti-entropy with every peer, so that commits it made
// after the snapshot and its peers hold count again before it decides.
func Restore(path, from string) error {
	return RestoreContext(context.Background(), path, from)
}

// RestoreContext is Restore, given up once ctx ends before the store is
// marked restored (its copy of the snapshot removed, the store as it was).
func RestoreContext(ctx context.Context, path, from string) error {
	// A snapshot cut short is refused before anything is written (the
	// copy is checked again below: the file may change meanwhile).
	if at, err := tornAt(from); err != nil || at >= 0 {
		if err == nil {
			err = fmt.Errorf("it ends inside a transaction at byte %d: cut short", at)
		}
		return fmt.Errorf("store: %s: %w", from, err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("store: %w", err)
	}
	lock, err := lockStore(path)
	if err != nil {
		return err
	}
	defer lock.Close()
	if IsStoreFile(path, from) {
		return fmt.Errorf("store: %s is a file of the store being replaced, not a snapshot to restore; copy it elsewhere first", from)
	}
	src, err := os.Open(from)
	if err != nil {
		return fmt.Errorf("store: %w", err)
	}
	defer src.Close()
	tmp := path + ".restore"
	dst, err := os.OpenFile(tmp, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("store: %w", err)
	}
	_, err = io.Copy(dst, ctxReader{ctx, src})
	if err == nil {
		err = dst.Sync()
	}
	dst.Close()
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("store: copy %s: %w", from, err)
	}
	// Backup writes whole transactions only: a snapshot that ends inside
	// one was cut short (a partial copy, a full disk), and what it lacks
	// cannot be told.
	if at, err := tornAt(tmp); err != nil || at >= 0 {
		os.Remove(tmp)
		if err == nil {
			err = fmt.Errorf("it ends inside a transaction at byte %d: cut short", at)
		}
		return fmt.Errorf("store: %s (a copy of it): %w", from, err)
	}
	if err := checkSnapshot(tmp, from); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := ctx.Err(); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("store: restore %s: %w", from, err)
	}
	rec, _, err := readIdentity(path)
	if err != nil {
		rec = identity{} // a damaged identity: the new incarnation comes from the clock
	}
	// The identity says "restored" before the file is replaced: a crash in
	// between leaves either store marked for a new incarnation.
	rec.Clean, rec.TxID, rec.Used, rec.CatchUp, rec.Restored = false, 0, true, true, true
	if err := writeIdentity(path, rec); err != nil {
		os.Remove(tmp)
		return err
	}
	// A file an interrupted rewrite kept (Shrink) is of the store being
	// replaced: the next open must not go back to it.
	if err := os.Remove(prevPath(path)); err != nil && !errors.Is(err, os.ErrNotExist) {
		os.Remove(tmp)
		return fmt.Errorf("store: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("store: %w", err)
	}
	return syncDir(filepath.Dir(path))
}

// IsStoreFile reports whether p names the store at path or one of the
// files the store keeps beside it: its identity and lock files, the
// previous file a rewrite keeps (".prev"), a snapshot being put in place
// (".restore") and the temporary files of a rewrite or an identity write —
// any file of the store's directory whose name is the store's followed by
// nothing or by a dot. Such a file is replaced or removed by the store
// itself, so a snapshot must be neither written to nor read from one. The
// comparison is of the resolved directory and name (so "./x" and "x", or
// a path through a symbolic link to the directory, are the same), and of
// the file itself where it exists (a hard link).
func IsStoreFile(path, p string) bool {
	for _, suffix := range []string{"", ".id", ".lock", ".prev"} {
		if sameStat(path+suffix, p) {
			return true
		}
	}
	base, name := filepath.Base(path), filepath.Base(p)
	if name != base && !strings.HasPrefix(name, base+".") {
		return false
	}
	return sameDir(filepath.Dir(path), filepath.Dir(p))
}

// sameStat reports whether a and b both exist and are the same file.
func sameStat(a, b string) bool {
	fa, err := os.Stat(a)
	if err != nil {
		return false
	}
	fb, err := os.Stat(b)
	return err == nil && os.SameFile(fa, fb)
}

// sameDir reports whether the directories a and b are the same: the same
// directory on disk, or, where either does not exist, the same cleaned
// absolute path.
func sameDir(a, b string) bool {
	if sameStat(a, b) {
		return true
	}
	aa, err1 := filepath.Abs(a)
	ab, err2 := filepath.Abs(b)
	return err1 == nil && err2 == nil && aa == ab
}
