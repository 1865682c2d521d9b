// Package store is a region's storage engine: one BuntDB file (or, at
// path ":memory:", a store held in memory for tests) whose values carry a
// checksum, the id and size of the transaction that wrote them and a mark
// (frame.go, Tx.Mark), written with group commit (commit.go), cut back to its last
// whole transaction after a torn write (recover.go), rewritten when it
// holds mostly dead data (rewrite.go), with the identity of the region's
// incarnation beside it, backup and restore (identity.go), and hooks that
// fault tests use to crash it and cut its file (faults.go). It imports
// crdt and region/config and nothing else of the module; region builds on
// it; the composition root opens the store, and the backup and restore
// commands use Backup and Restore.
//
// # Isolation
//
// Isolation is the store's job. A transaction names the keys it reads or
// writes, and the store takes their locks (striped read-write locks, taken
// in one order by every locker, so no two deadlock): Update(keys, fn)
// takes them exclusively, View(keys, fn) shared, so reads exclude the
// writes of their keys and not each other. A caller that must do more
// work under the locks than one transaction (the region holds a write's
// locks until the write is durable and its dots are applied) takes them
// with Lock or RLock and runs its transactions on the Locked it gets. A
// transaction or view that reads or writes a key it did not name fails
// with ErrUnnamedKey and writes nothing: it could otherwise race with the
// next read-modify-write of that key.
//
// Three kinds of keys are not locked under their own name:
//
//   - Keys that Options.LockKey maps to another name are guarded by that
//     name's lock: a transaction names the guard. The region guards an
//     item's ledger ("l/SKU") by the item ("i/SKU").
//   - Keys that Options.LockKey maps to "" have no lock of the store's: any
//     transaction may touch them and the store's opener answers for their
//     isolation. The region uses that for its applied context ("m/applied",
//     also set as a placeholder before the commit function writes it), its
//     reservation counter ("m/resseq", under the node's own mutex) and its
//     reservation records ("r/ID", whose sku is not in the key: each is
//     only read or written under its item's lock).
//   - The second function of UpdateLocked runs under the store's commit
//     lock, where transactions are serialised in commit order, and may
//     touch any key: the region writes its applied context and its
//     anti-entropy digest there.
//
// The store's own keys (the epoch key, the incarnation "m/incarnation",
// the close marker "m/closed") are written only by the store itself, at
// open and close, when no other transaction runs, and are read under
// their names like any other key. Scan lists keys without taking locks:
// it finds keys to read or write afterwards under their names, and may
// show writes that are not yet durable.
package store

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tidwall/buntdb"

	"github.com/latticedb/lattice/region/config"
)

// epochKey sorts after every other key, so that in a shrunk file (keys
// written in key order) the last command is this key, written alone in
// its own transaction; the final transaction of a freshly shrunk file is
// thus always complete.
const epochKey = "~epoch"

// delMarkKey is the record a delete writes beside itself: in the same
// BuntDB transaction, so in the same write and next to it in the file, a
// framed value under this key whose payload is the CRC-32C of the
// deleted key. BuntDB writes a delete as the bare key, with nothing to
// check it by; on open (tornAt) each delete is checked against its
// record, so that a delete whose key was damaged into another key of the
// store is refused as damage rather than loaded as the deletion of that
// key, and a delete torn from its record is cut with it. The key holds
// the record of the last delete and sorts before epochKey.
const delMarkKey = "~del"

// deletesKey says, from where it stands in the file on, that every delete
// carries its record (delMarkKey): Open writes it into a file that lacks
// it (a new one, or one of an earlier version), before any delete, and a
// rewrite keeps it. From there on a delete without its record is damage,
// even the file's first.
const deletesKey = "~deletes"

// ErrCorrupt is returned (wrapped in a *CorruptError) for a stored value
// whose checksum fails. The value is never served or replicated.
var ErrCorrupt = errors.New("store: stored value failed its checksum")

// ErrStoreFailed is returned by every write after the store failed: an
// fsync failed (after which Linux may have dropped the unwritten pages,
// so retrying it could falsely succeed), or a commit failed after the
// node had advanced its in-memory state for it. The store stops taking
// writes until the region restarts and reloads what its file holds.
var ErrStoreFailed = errors.New("store: the store failed a write to its file and takes no more writes until the region restarts")

// ErrStoreClosed is returned for a write to a store that is closing or
// closed: nothing was written.
var ErrStoreClosed = errors.New("store: the store is closed: nothing was written")

// ErrWriteUnsure is the error of the write whose fsync (or commit) failed
// the store: it reached the file, or part of it did, and a restart may
// find it there or not. It wraps ErrStoreFailed. Whoever answers for the
// write must not say it was not made.
var ErrWriteUnsure = fmt.Errorf("%w (this write reached the file, and no fsync covered it: it may or may not be there after a restart)", ErrStoreFailed)

// CorruptError names the key whose stored value is damaged.
type CorruptError struct{ Key string }

func (e *CorruptError) Error() string {
	return fmt.Sprintf("store: stored value of %q failed its checksum", e.Key)
}

// Unwrap returns ErrCorrupt.
func (e *CorruptError) Unwrap() error { return ErrCorrupt }

// Options configure a Store.
type Options struct {
	// Durability says when a write is acknowledged (default
	// config.DurabilityAlways).
	Durability config.Durability
	// ShrinkMinBytes is the file size below which the store never
	// shrinks; above it the file is rewritten once it exceeds twice the
	// live data.
	ShrinkMinBytes int64
	Logger         *slog.Logger
	Metrics        *Metrics
	// LockKey returns the name whose lock guards key (see the package
	// doc): key itself, another key, or "" for a key the store does not
	// lock. nil: every key is guarded by its own name.
	LockKey func(key string) string
	// Checkpoint is the key whose MaxMarkSince the opener asks for right
	// after Open: Open finds it in the pass over the file it makes
	// anyway, instead of a pass of its own. "": none.
	Checkpoint string

	// Shared says the store's region is one of several: a new, empty
	// store then starts as a new incarnation in catch-up rather than as
	// incarnation 0, since an empty store cannot tell whether its region
	// wrote under this name before (a region re-added under a removed
	// region's name, one started again on an empty directory) and its
	// peers may hold what it wrote, and decisions it made as a home.
	Shared bool

	// ProgressBytes is the file size from which Open logs its progress
	// (progress.go): 0 means DefaultProgressBytes, negative never.
	// ProgressEvery is how often (0: DefaultProgressEvery).
	ProgressBytes int64
	ProgressEvery time.Duration

	// BootID names the running kernel's boot (BootID() reads it). With
	// durability always, a store whose last run stopped uncleanly on
	// this same boot, its store healthy to the end, keeps its
	// incarnation (see boot.go); "" turns that off, so that every
	// unclean stop of a run that wrote begins a new incarnation.
	BootID string

	// For benchmarks only: FsyncDelay is added to every fsync (a slower
	// disk) and SerialFsync makes every writer fsync alone while holding
	// a lock (no group commit), as BuntDB's SyncPolicy Always does.
	FsyncDelay  time.Duration
	SerialFsync bool
}

// Store is a region's BuntDB file. Update runs one logical write as one
// BuntDB transaction and, with config.DurabilityAlways, returns only after an
// fsync covering it; concurrent Updates share fsyncs (group commit). A
// value read back is checked against its checksum.
//
// Path ":memory:" keeps everything in memory (for simulation tests).
type Store struct {
	db      *buntdb.DB
	path    string
	opts    Options
	log     *slog.Logger
	metrics *Metrics
	// syncedSize is the file size the last SyncNow covered (SyncedSize).
	syncedSize atomic.Int64

	txMu sync.Mutex // guards txid, mark, live
	txid uint64
	// fileTxid is the last transaction id the file held when it was
	// opened, before the store's own writes at open (scan): what the
	// identity file's TxID is compared with.
	fileTxid uint64
	live     int64
	// mark is the highest mark (Tx.Mark) set since the store opened; every
	// value written carries it.
	mark uint64
	// sinceCheckpoint is MaxMarkSince(opts.Checkpoint) as Open found it,
	// valid until a transaction of the store's opener commits.
	sinceCheckpoint      uint64
	sinceCheckpointValid bool
	// sample holds every sampleEvery-th key of the store as Open found
	// it, in key order (KeySample).
	sample      []string
	sampleEvery int

	gmu     sync.Mutex // group commit state
	gcond   *sync.Cond
	written uint64
	synced  uint64
	syncing bool
	syncErr error
	shared  bool // the last fsync covered more than one write
	// onDurable holds the OnDurable functions of written transactions that
	// no fsync covers yet, in the order of their writes.
	onDurable []durableFunc
	// With GOMAXPROCS=1 the syncer (syncLoop) fsyncs for the writers: a
	// writer wakes it through the kick pipe, writing one byte unless
	// kicked says a byte is already on its way. syncerDone is closed when
	// it has stopped.
	syncer     syncerState
	kicked     bool
	kick       *os.File // the pipe's write end
	syncerDone chan struct{}

	fileMu sync.Mutex // guards syncFile; held across a shrink
	// shrinking is set while Shrink runs (under fileMu): a write that
	// needs no fsync (everysec) is acknowledged only once Shrink is done,
	// since until then Open would go back to the old file (restorePrev),
	// which lacks what was written to the new one.
	shrinking atomic.Bool
	syncFile  *os.File

	corruptMu sync.Mutex
	corrupt   map[string]struct{}

	locks keyLocks

	persist bool
	// rewriteUndone is set when Open went back to the file an
	// interrupted rewrite was replacing (restorePrev).
	rewriteUndone bool
	failed        atomic.Bool
	closing       atomic.Bool // Close began: only its marker is written
	closeSynced   atomic.Bool // the close marker is written and fsynced
	// opened is set once Open has scanned the store and settled its
	// identity: the background maintenance rewrites the file only then
	// (the live size is counted during the scan, and a rewrite would hold
	// up the identity's fsync).
	opened atomic.Bool

	// The store's identity (identity.go): idMu guards id; used is set once
	// the identity file records that the incarnation may issue dots; lock
	// is the held lock file.
	idMu sync.Mutex
	id   identity
	used atomic.Bool
	lock *os.File

	// opening reports the progress of a large store's open until its
	// opener calls Opened (progress.go); nil otherwise.
	opening atomic.Pointer[opening]

	stop chan struct{}
	done chan struct{}
}

// Open opens (creating if needed) the BuntDB file at path, cutting
// off a torn final transaction and reporting stored values that fail
// their checksums.
func Open(path string, opts Options) (_ *Store, err error) {
	if opts.Durability == "" {
		opts.Durability = config.DurabilityAlways
	}
	if opts.Durability != config.DurabilityAlways && opts.Durability != config.DurabilityEverySec {
		return nil, fmt.Errorf("store: unknown durability %q", opts.Durability)
	}
	if opts.ShrinkMinBytes == 0 {
		opts.ShrinkMinBytes = 64 << 20
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Metrics == nil {
		opts.Metrics = &Metrics{}
	}
	if opts.ProgressBytes == 0 {
		opts.ProgressBytes = DefaultProgressBytes
	}
	if opts.ProgressEvery <= 0 {
		opts.ProgressEvery = DefaultProgressEvery
	}
	s := &Store{path: path, opts: opts, log: opts.Logger, metrics: opts.Metrics,
		corrupt: make(map[string]struct{}), stop: make(chan struct{}), done: make(chan struct{})}
	s.gcond = sync.NewCond(&s.gmu)
	persist := path != ":memory:"
	s.persist = persist
	var cut int64
	if persist {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return nil, fmt.Errorf("store: %w", err)
		}
		if s.lock, err = lockStore(path); err != nil {
			return nil, err
		}
	}
	// tornAt reads the whole file first and a torn final transaction is
	// cut off before BuntDB loads it: BuntDB trusts the lengths it reads
	// (a damaged one can make it allocate a gigabyte or panic), drops an
	// incomplete final command silently, and skips NUL bytes but then
	// counts the file's size without them. A damaged file is refused here.
	if persist {
		restored, err := restorePrev(path)
		if err != nil {
			s.lock.Close()
			return nil, fmt.Errorf("store: open %s: %w", path, err)
		}
		if restored {
			s.log.Warn("a rewrite of the store's file was interrupted; opening the file from before it", "path", path)
			// The writes made during the rewrite are not in that file,
			// and reads (an anti-entropy answer) may have shown them
			// before they were durable: the crashed run did not keep
			// every write it made (boot.go).
			s.rewriteUndone = true
		}
		var size int64
		if fi, err := os.Stat(path); err == nil {
			size = fi.Size()
		}
		o := s.startOpening(path, size)
		s.opening.Store(o)
		defer func() {
			if err != nil {
				o.end(false)
			}
		}()
		torn, err := tornAt(path)
		if err == nil && torn >= 0 {
			cut, err = cutAt(path, torn)
		}
		if err != nil {
			s.lock.Close()
			return nil, fmt.Errorf("store: open %s: %w", path, err)
		}
	}
	db, err := buntdb.Open(path)
	if cut > 0 {
		s.log.Warn("discarded a torn transaction at the end of the store", "path", path, "bytes", cut)
		inc(s.metrics.TornTails)
	}
	if err != nil {
		if db != nil {
			db.Close()
		}
		if s.lock != nil {
			s.lock.Close()
		}
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	if err := db.SetConfig(buntdb.Config{SyncPolicy: buntdb.Never, AutoShrinkDisabled: true}); err != nil {
		db.Close()
		if s.lock != nil {
			s.lock.Close()
		}
		return nil, fmt.Errorf("store: %w", err)
	}
	s.db = db
	if o := s.opening.Load(); o != nil {
		_ = db.View(func(tx *buntdb.Tx) error {
			n, err := tx.Len()
			o.total.Store(int64(n))
			return err
		})
		o.setPhase(phaseCheck)
	}
	if persist {
		if s.syncFile, err = os.OpenFile(path, os.O_RDWR, 0); err != nil {
			db.Close()
			s.lock.Close()
			return nil, fmt.Errorf("store: %w", err)
		}
	}
	go s.maintain()
	if err := s.scan(); err != nil {
		s.closeFiles()
		return nil, err
	}
	if err := s.openIdentity(cut, time.Now()); err != nil {
		s.closeFiles()
		return nil, err
	}
	s.opened.Store(true)
	s.opening.Load().setPhase(phaseRebuild)
	return s, nil
}

// scan verifies every stored value, records the highest transaction id,
// the live data size, MaxMarkSince(opts.Checkpoint) and a sample of the
// keys (KeySample), and writes the epoch key if it is missing. With more
// than one core, the goroutine that walks the keys hands batches of them
// to a second that checks them, whenever that one is free.
func (s *Store) scan() error {
	var hasEpoch, hasDeletes bool
	err := s.db.View(func(tx *buntdb.Tx) error {
		// The transaction from which MaxMarkSince(opts.Checkpoint) counts
		// (see there).
		var from uint64
		if s.opts.Checkpoint != "" {
			if v, err := tx.Get(s.opts.Checkpoint); err == nil {
				if from, _, _, _, err = unframe(s.opts.Checkpoint, storedBytes(v)); err != nil {
					from = 1<<64 - 1 // damaged: MaxMarkSince answers for itself
				}
			} else if !errors.Is(err, buntdb.ErrNotFound) {
				return err
			}
		}
		var mine, theirs scanResult
		var work, free chan []keyValue
		done := make(chan struct{})
		if runtime.GOMAXPROCS(0) > 1 {
			work, free = make(chan []keyValue, 4), make(chan []keyValue, 8)
			go func() {
				defer close(done)
				for kvs := range work {
					s.checkValues(kvs, from, &theirs)
					select {
					case free <- kvs[:0]:
					default:
					}
				}
			}()
		} else {
			close(done)
		}
		o, read := s.opening.Load(), int64(0)
		var keys int
		s.sampleEvery = 1
		batch := make([]keyValue, 0, scanBatch)
		err := tx.Ascend("", func(k, v string) bool {
			if read++; read == 4096 {
				o.read(read)
				read = 0
			}
			if keys%s.sampleEvery == 0 {
				if len(s.sample) == 2*maxSample {
					// Keep every other sample: every 2×sampleEvery-th key.
					for i := range maxSample {
						s.sample[i] = s.sample[2*i]
					}
					clear(s.sample[maxSample:])
					s.sample = s.sample[:maxSample]
					s.sampleEvery *= 2
				}
				if keys%s.sampleEvery == 0 {
					s.sample = append(s.sample, k)
				}
			}
			keys++
			s.live += int64(len(k) + len(v))
			switch k {
			case epochKey:
				hasEpoch = true
			case deletesKey:
				hasDeletes = true
			}
			if batch = append(batch, keyValue{k, v}); len(batch) == scanBatch {
				select {
				case work <- batch:
					select {
					case batch = <-free:
					default:
						batch = make([]keyValue, 0, scanBatch)
					}
				default: // the checker is busy (or there is none)
					s.checkValues(batch, from, &mine)
					batch = batch[:0]
				}
			}
			return true
		})
		s.checkValues(batch, from, &mine)
		if work != nil {
			close(work)
		}
		<-done
		o.read(read)
		s.txid = max(s.txid, mine.txid, theirs.txid)
		if s.opts.Checkpoint != "" && from != 1<<64-1 {
			s.sinceCheckpoint, s.sinceCheckpointValid = max(mine.mark, theirs.mark), true
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("store: scan store: %w", err)
	}
	s.fileTxid = s.txid
	if !hasDeletes {
		err := s.update(nil, func(tx *Tx) error {
			tx.own = true
			tx.Set(deletesKey, []byte{1})
			return nil
		}, nil)
		if err != nil {
			return err
		}
	}
	if !hasEpoch {
		return s.update(nil, func(tx *Tx) error {
			tx.Set(epochKey, []byte{1})
			return nil
		}, nil)
	}
	return nil
}

// scanBatch is how many keys scan checks at a time.
const scanBatch = 1024

type keyValue struct{ k, v string }

// scanResult is what checking values found: the highest transaction id
// and the highest mark of a transaction from the checkpoint's.
type scanResult struct{ txid, mark uint64 }

// checkValues checks the stored values kvs against their checksums,
// marking the damaged ones, and notes their transaction ids and the marks
// of those of transaction from or later in r.
func (s *Store) checkValues(kvs []keyValue, from uint64, r *scanResult) {
	for _, kv := range kvs {
		txid, _, m, _, err := unframe(kv.k, storedBytes(kv.v))
		if err != nil {
			s.MarkCorrupt(kv.k)
			continue
		}
		r.txid = max(r.txid, txid)
		if txid >= from {
			r.mark = max(r.mark, m)
		}
	}
}

// maxSample bounds the keys KeySample holds: between maxSample and
// 2×maxSample once the store holds that many keys.
const maxSample = 128

// KeySample returns the keys from lo (included) to hi (excluded; "" is no
// upper bound) of a sample of the store's keys taken when it opened, in
// key order, and how many keys each stands for: every every-th key of the
// store was taken. It tells how to split a scan of many keys into ranges
// of about the same size (ScanRange); the store may have changed since.
func (s *Store) KeySample(lo, hi string) (keys []string, every int) {
	for _, k := range s.sample {
		if k >= lo && (hi == "" || k < hi) {
			keys = append(keys, k)
		}
	}
	return keys, max(s.sampleEvery, 1)
}

// MarkCorrupt records that the stored value of key is damaged (the store
// finds that itself when a checksum fails; the region also when a value
// passes its checksum but does not decode): logged and counted once, and
// listed by Corrupt until the key is rewritten. It reports whether the
// key was not listed before.
func (s *Store) MarkCorrupt(key string) bool {
	s.corruptMu.Lock()
	_, seen := s.corrupt[key]
	s.corrupt[key] = struct{}{}
	s.corruptMu.Unlock()
	if !seen {
		s.log.Error("stored value failed its checksum; it will not be served", "key", key)
		inc(s.metrics.ChecksumFailures)
	}
	return !seen
}

// checksumFailed is MarkCorrupt for a value a read found failing its
// checksum. Every value was checked when the store opened, and the store
// reads its values from memory: one failing after that says the process's
// memory is no longer to be trusted, and the store fails. A repair from one
// peer would be unsafe too (it may lack this region's own writes that
// another peer holds, whose counters the region would then issue again);
// a restart checks every value and, finding damage, goes on as a new
// incarnation that catches up.
func (s *Store) checksumFailed(key string) {
	if s.MarkCorrupt(key) && s.opened.Load() {
		s.fail(fmt.Errorf("stored value of %q failed its checksum while the store ran; restart the region", key))
	}
}

// MarkDamaged lists key with the damaged keys (Corrupt) until it is
// rewritten, without counting or logging it as a checksum failure: for a
// key whose own value is whole but which stands for something damaged (a
// cart's head, whose line failed its checksum or disagrees with it).
func (s *Store) MarkDamaged(key string) {
	s.corruptMu.Lock()
	s.corrupt[key] = struct{}{}
	s.corruptMu.Unlock()
}

// ClearDamaged takes key off the damaged keys (Corrupt) that MarkDamaged
// listed it among: the region found it whole again without rewriting it.
func (s *Store) ClearDamaged(key string) {
	s.corruptMu.Lock()
	delete(s.corrupt, key)
	s.corruptMu.Unlock()
}

// Corrupt returns the keys whose stored values failed their checksums and
// have not been rewritten since.
func (s *Store) Corrupt() []string {
	s.corruptMu.Lock()
	defer s.corruptMu.Unlock()
	out := make([]string, 0, len(s.corrupt))
	for k := range s.corrupt {
		out = append(out, k)
	}
	return out
}

// Sizes returns the file size and the live data size in bytes.
func (s *Store) Sizes() (file, live int64) {
	s.txMu.Lock()
	live = s.live
	s.txMu.Unlock()
	if !s.persist {
		return 0, live
	}
	s.fileMu.Lock()
	defer s.fileMu.Unlock()
	if fi, err := s.syncFile.Stat(); err == nil {
		file = fi.Size()
	}
	return file, live
}

// Durability returns the store's durability mode.
func (s *Store) Durability() config.Durability { return s.opts.Durability }

// Sync makes every write committed so far durable (an fsync of the file),
// whatever the store's durability: a caller about to act on a write at
// other regions needs it to survive a power loss even with everysec. A
// failed fsync fails the store and returns an error wrapping
// ErrWriteUnsure (the writes may or may not be in the file).
func (s *Store) Sync() error {
	if _, err := s.SyncNow(); err != nil {
		return fmt.Errorf("%w: %w", ErrWriteUnsure, err)
	}
	return nil
}

// Close flushes and closes the store; a store that has not failed
// records a clean stop (identity.go).
func (s *Store) Close() error {
	select {
	case <-s.stop:
		return nil
	default:
	}
	idErr := s.closeIdentity()
	if idErr != nil {
		s.log.Error("could not record a clean stop; the next start begins a new incarnation", "err", idErr)
	}
	return errors.Join(s.closeFiles(), idErr)
}

// closeFiles stops the store's background work and closes its files.
func (s *Store) closeFiles() error {
	select {
	case <-s.stop:
		return nil
	default:
	}
	close(s.stop)
	<-s.done
	s.opening.Swap(nil).end(false)
	err := s.db.Close()
	if s.syncFile != nil {
		s.syncFile.Close()
	}
	if s.lock != nil {
		s.lock.Close()
	}
	return err
}
