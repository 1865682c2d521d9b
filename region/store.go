package region

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tidwall/buntdb"

	"github.com/latticedb/lattice/region/config"
)

// Durability says when a write is acknowledged: the config's type, one
// fact for both.
type Durability = config.Durability

// Durability modes (config key durability).
const (
	// DurabilityAlways fsyncs before acknowledging; concurrent writers
	// share one fsync (group commit).
	DurabilityAlways = config.DurabilityAlways
	// DurabilityEverySec acknowledges once the write is in the file (the
	// OS page cache) and fsyncs once a second: a power loss may lose up to
	// a second of acknowledged writes, a process crash loses none.
	DurabilityEverySec = config.DurabilityEverySec
)

// Stored value layout: crc32c(rest) | txid | n | payload, where txid
// identifies the BuntDB transaction that wrote the value and n is how many
// keys that transaction set. On open, a final transaction with fewer than n
// values in the file was torn by a crash and is cut off, so one logical
// write is all-or-nothing even though BuntDB writes (and on recovery
// truncates) command by command.
const valueHeader = 4 + 8 + 2

// epochKey sorts after every other key, so that in a shrunk file (keys
// written in key order) the last command is this key, written alone in
// its own transaction; the final transaction of a freshly shrunk file is
// thus always complete.
const epochKey = "~epoch"

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// ErrCorrupt is returned (wrapped in a *CorruptError) for a stored value
// whose checksum fails. The value is never served or replicated.
var ErrCorrupt = errors.New("region: stored value failed its checksum")

// ErrStoreFailed is returned by every write after the store failed: an
// fsync failed (after which Linux may have dropped the unwritten pages,
// so retrying it could falsely succeed), or a commit failed after the
// node had advanced its in-memory state for it. The store stops taking
// writes until the region restarts and reloads what its file holds.
var ErrStoreFailed = errors.New("region: the store failed a write to its file and takes no more writes until the region restarts")

// CorruptError names the key whose stored value is damaged.
type CorruptError struct{ Key string }

func (e *CorruptError) Error() string {
	return fmt.Sprintf("region: stored value of %q failed its checksum", e.Key)
}

// Unwrap returns ErrCorrupt.
func (e *CorruptError) Unwrap() error { return ErrCorrupt }

// StoreOptions configure a Store.
type StoreOptions struct {
	Durability Durability
	// ShrinkMinBytes is the file size below which the store never
	// shrinks; above it the file is rewritten once it exceeds twice the
	// live data.
	ShrinkMinBytes int64
	Logger         *slog.Logger
	Metrics        *Metrics

	// For benchmarks only: fsyncDelay is added to every fsync (a slower
	// disk) and serialFsync makes every writer fsync alone while holding
	// a lock (no group commit), as BuntDB's SyncPolicy Always does.
	fsyncDelay  time.Duration
	serialFsync bool
}

// Store is a region's BuntDB file. Update runs one logical write as one
// BuntDB transaction and, with DurabilityAlways, returns only after an
// fsync covering it; concurrent Updates share fsyncs (group commit). A
// value read back is checked against its checksum.
//
// Path ":memory:" keeps everything in memory (for simulation tests).
type Store struct {
	db      *buntdb.DB
	path    string
	opts    StoreOptions
	log     *slog.Logger
	metrics *Metrics

	txMu sync.Mutex // guards txid, liveBytes
	txid uint64
	live int64

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

	fileMu   sync.Mutex // guards syncFile; held across a shrink
	syncFile *os.File

	corruptMu sync.Mutex
	corrupt   map[string]struct{}

	persist bool
	failed  atomic.Bool

	// The store's identity (identity.go): idMu guards id; used is set once
	// the identity file records that the incarnation may issue dots; lock
	// is the held lock file.
	idMu sync.Mutex
	id   identity
	used atomic.Bool
	lock *os.File

	stop chan struct{}
	done chan struct{}
}

// OpenStore opens (creating if needed) the BuntDB file at path, cutting
// off a torn final transaction and reporting stored values that fail
// their checksums.
func OpenStore(path string, opts StoreOptions) (*Store, error) {
	if opts.Durability == "" {
		opts.Durability = DurabilityAlways
	}
	if opts.Durability != DurabilityAlways && opts.Durability != DurabilityEverySec {
		return nil, fmt.Errorf("region: unknown durability %q", opts.Durability)
	}
	if opts.ShrinkMinBytes == 0 {
		opts.ShrinkMinBytes = 64 << 20
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Metrics == nil {
		opts.Metrics = NewMetrics(nil)
	}
	s := &Store{path: path, opts: opts, log: opts.Logger, metrics: opts.Metrics,
		corrupt: make(map[string]struct{}), stop: make(chan struct{}), done: make(chan struct{})}
	s.gcond = sync.NewCond(&s.gmu)
	persist := path != ":memory:"
	s.persist = persist
	var cut int64
	var err error
	if persist {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return nil, fmt.Errorf("region: %w", err)
		}
		if s.lock, err = lockStore(path); err != nil {
			return nil, err
		}
		cut, err = recoverTail(path)
		if err != nil {
			s.lock.Close()
			return nil, err
		}
		if cut > 0 {
			s.log.Warn("discarded a torn transaction at the end of the store", "path", path, "bytes", cut)
			s.metrics.TornTails.Inc()
		}
	}
	db, err := buntdb.Open(path)
	if err != nil {
		if s.lock != nil {
			s.lock.Close()
		}
		return nil, fmt.Errorf("region: open %s: %w", path, err)
	}
	if err := db.SetConfig(buntdb.Config{SyncPolicy: buntdb.Never, AutoShrinkDisabled: true}); err != nil {
		db.Close()
		return nil, fmt.Errorf("region: %w", err)
	}
	s.db = db
	if persist {
		if s.syncFile, err = os.OpenFile(path, os.O_RDWR, 0); err != nil {
			db.Close()
			return nil, fmt.Errorf("region: %w", err)
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
	return s, nil
}

// scan verifies every stored value, records the highest transaction id
// and the live data size, and writes the epoch key if it is missing.
func (s *Store) scan() error {
	var hasEpoch bool
	err := s.db.View(func(tx *buntdb.Tx) error {
		return tx.Ascend("", func(k, v string) bool {
			s.live += int64(len(k) + len(v))
			if k == epochKey {
				hasEpoch = true
			}
			txid, _, _, err := unframe([]byte(v))
			if err != nil {
				s.markCorrupt(k)
				return true
			}
			s.txid = max(s.txid, txid)
			return true
		})
	})
	if err != nil {
		return fmt.Errorf("region: scan store: %w", err)
	}
	if !hasEpoch {
		return s.Update(func(tx *Tx) error {
			tx.Set(epochKey, []byte{1})
			return nil
		})
	}
	return nil
}

func (s *Store) markCorrupt(key string) {
	s.corruptMu.Lock()
	_, seen := s.corrupt[key]
	s.corrupt[key] = struct{}{}
	s.corruptMu.Unlock()
	if !seen {
		s.log.Error("stored value failed its checksum; it will not be served", "key", key)
		s.metrics.ChecksumFailures.Inc()
	}
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

func frame(txid uint64, n uint16, payload []byte) string {
	var h [valueHeader]byte
	binary.BigEndian.PutUint64(h[4:], txid)
	binary.BigEndian.PutUint16(h[12:], n)
	crc := crc32.Update(crc32.Update(0, crcTable, h[4:]), crcTable, payload)
	binary.BigEndian.PutUint32(h[:], crc)
	var sb strings.Builder
	sb.Grow(valueHeader + len(payload))
	sb.Write(h[:])
	sb.Write(payload)
	return sb.String()
}

func unframe(b []byte) (txid uint64, n uint16, payload []byte, err error) {
	if len(b) < valueHeader || binary.BigEndian.Uint32(b) != crc32.Checksum(b[4:], crcTable) {
		return 0, 0, nil, ErrCorrupt
	}
	return binary.BigEndian.Uint64(b[4:]), binary.BigEndian.Uint16(b[12:]), b[valueHeader:], nil
}

// Reader reads checked values.
type Reader interface {
	// Get returns the payload stored under key; ok is false if there is
	// none. A damaged value returns a *CorruptError.
	Get(key string) (val []byte, ok bool, err error)
	// Ascend calls fn for every key with the prefix, in key order, until
	// fn returns false. Damaged values are passed with err set.
	Ascend(prefix string, fn func(key string, val []byte, err error) bool) error
}

type reader struct {
	s  *Store
	tx *buntdb.Tx
}

func (r reader) Get(key string) ([]byte, bool, error) {
	v, err := r.tx.Get(key)
	if errors.Is(err, buntdb.ErrNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	_, _, p, err := unframe([]byte(v))
	if err != nil {
		r.s.markCorrupt(key)
		return nil, true, &CorruptError{Key: key}
	}
	return p, true, nil
}

func (r reader) Ascend(prefix string, fn func(string, []byte, error) bool) error {
	return r.tx.AscendGreaterOrEqual("", prefix, func(k, v string) bool {
		if len(k) < len(prefix) || k[:len(prefix)] != prefix {
			return false
		}
		_, _, p, err := unframe([]byte(v))
		if err != nil {
			r.s.markCorrupt(k)
			return fn(k, nil, &CorruptError{Key: k})
		}
		return fn(k, p, nil)
	})
}

// View runs fn with a consistent read-only snapshot.
func (s *Store) View(fn func(r Reader) error) error {
	return s.db.View(func(tx *buntdb.Tx) error { return fn(reader{s, tx}) })
}

// Tx is one logical write. Its reads see committed state plus the
// transaction's own writes; its writes are staged and committed together as
// one BuntDB transaction. fn runs outside BuntDB's write lock, so the caller
// must keep other writers away from the keys it reads and writes (the node
// holds per-key locks). A transaction either sets keys or deletes exactly
// one key (a delete has no value to carry the transaction id).
type Tx struct {
	s *Store
	// sets holds the staged values, one per key, in the order their keys
	// were first set; index finds a key's among many.
	sets    []staged
	index   map[string]int
	del     string
	durable func()
}

// durableFunc is the OnDurable function of the seq-th write.
type durableFunc struct {
	seq uint64
	f   func()
}

// staged is a value staged under a key.
type staged struct {
	key string
	val []byte
}

// indexFrom is how many staged values a transaction looks through before
// it indexes them by key.
const indexFrom = 8

// lookup returns the index in t.sets of the value staged under key, or -1.
func (t *Tx) lookup(key string) int {
	if t.index != nil {
		if i, ok := t.index[key]; ok {
			return i
		}
		return -1
	}
	for i := range t.sets {
		if t.sets[i].key == key {
			return i
		}
	}
	return -1
}

// Get returns the value under key as this transaction sees it.
func (t *Tx) Get(key string) (val []byte, ok bool, err error) {
	if i := t.lookup(key); i >= 0 {
		return t.sets[i].val, true, nil
	}
	err = t.s.View(func(r Reader) error {
		val, ok, err = r.Get(key)
		return err
	})
	return val, ok, err
}

// Ascend calls fn for every committed key with the prefix, in key order.
// fn must not write to the store.
func (t *Tx) Ascend(prefix string, fn func(key string, val []byte, err error) bool) error {
	return t.s.View(func(r Reader) error { return r.Ascend(prefix, fn) })
}

// Set stages val under key.
func (t *Tx) Set(key string, val []byte) {
	if i := t.lookup(key); i >= 0 {
		t.sets[i].val = val
		return
	}
	t.sets = append(t.sets, staged{key, val})
	switch n := len(t.sets); {
	case t.index != nil:
		t.index[key] = n - 1
	case n > indexFrom:
		t.index = make(map[string]int, 2*n)
		for i, st := range t.sets {
			t.index[st.key] = i
		}
	}
}

// OnDurable has f run once the transaction is durable (with
// DurabilityAlways, once an fsync covers it) and before Update returns nil;
// f is not run if Update returns an error. f may run on another writer's
// goroutine, together with the functions of the other writes the same
// fsync made durable, and must be quick and not use the store.
func (t *Tx) OnDurable(f func()) { t.durable = f }

// Delete stages the deletion of key; the transaction may set nothing else.
func (t *Tx) Delete(key string) { t.del = key }

// Writes reports whether the transaction staged anything.
func (t *Tx) Writes() bool { return len(t.sets) > 0 || t.del != "" }

// Update runs fn and commits what it staged as one transaction; if fn
// returns an error nothing is written. With DurabilityAlways, Update
// returns once an fsync covers the write.
func (s *Store) Update(fn func(tx *Tx) error) error { return s.UpdateLocked(fn, nil) }

// UpdateLocked is Update with a second function that runs inside BuntDB's
// write lock, after fn and only if fn staged writes, where transactions are
// serialised in commit order; it may stage more writes. The node uses it
// to number its writes.
func (s *Store) UpdateLocked(fn, locked func(tx *Tx) error) error {
	if s.failed.Load() {
		return ErrStoreFailed
	}
	t := &Tx{s: s}
	if err := fn(t); err != nil {
		return err
	}
	if !t.Writes() {
		return nil
	}
	if t.del != "" && len(t.sets) > 0 {
		return errors.New("region: a transaction may not both delete and set keys")
	}
	if len(t.sets) > 0xffff {
		return errors.New("region: transaction sets too many keys")
	}
	hooked := false
	err := s.db.Update(func(btx *buntdb.Tx) error {
		if locked != nil {
			if err := locked(t); err != nil {
				return err
			}
			hooked = true
		}
		s.txMu.Lock()
		defer s.txMu.Unlock()
		if t.del != "" {
			old, err := btx.Delete(t.del)
			if err != nil && !errors.Is(err, buntdb.ErrNotFound) {
				return err
			}
			s.live -= int64(len(t.del) + len(old))
			return nil
		}
		s.txid++
		for _, st := range t.sets {
			k, v := st.key, st.val
			old, replaced, err := btx.Set(k, frame(s.txid, uint16(len(t.sets)), v), nil)
			if err != nil {
				return err
			}
			if replaced {
				s.live -= int64(len(k) + len(old))
			}
			s.live += int64(len(k) + valueHeader + len(v))
		}
		return nil
	})
	if err != nil {
		if hooked {
			s.fail(fmt.Errorf("commit: %w", err))
			return ErrStoreFailed
		}
		return err
	}
	if len(t.sets) > 0 {
		s.corruptMu.Lock()
		for _, st := range t.sets {
			delete(s.corrupt, st.key) // a rewritten key is whole again
		}
		s.corruptMu.Unlock()
	}
	if !s.persist || s.opts.Durability != DurabilityAlways {
		s.gmu.Lock()
		s.written++
		s.gmu.Unlock()
		if t.durable != nil {
			t.durable()
		}
		return nil
	}
	if s.opts.serialFsync {
		s.gmu.Lock()
		defer s.gmu.Unlock()
		s.written++
		if err := s.fsync(); err != nil {
			return err
		}
		if t.durable != nil {
			t.durable()
		}
		return nil
	}
	return s.waitDurable(t.durable)
}

// syncerState is the state of a store's syncer.
type syncerState uint8

const (
	syncerNotStarted syncerState = iota
	syncerRunning
	syncerStopped // stopped, or could not be started
)

// waitDurable is group commit: it returns once an fsync covers the write
// just committed, and concurrent writers share fsyncs. The OnDurable
// functions of the writes an fsync covered run, in write order, before any
// of their writers returns; a writer whose write no successful fsync
// covered returns an error wrapping ErrStoreFailed, and its function is
// dropped.
//
// With more than one P (GOMAXPROCS), the first waiter fsyncs everything
// written so far while later writers queue; when it finishes, every writer
// its fsync covered returns, and the next waiter leads the next fsync.
// Writers that commit meanwhile run on the other Ps. When the last fsync
// was shared (writers are concurrent), the leader yields the processor
// once before it fsyncs, so that writers ready to run commit first and
// share its fsync rather than wait for the next one; a lone writer does
// not wait.
//
// With one P (GOMAXPROCS=1, as under a 1-CPU container limit) that does
// not work: an fsync holds the only P, so no other goroutine runs until
// it returns (the runtime hands the P of a goroutine in a system call to
// another thread only once sysmon has seen the call twice, and an idle
// sysmon sleeps up to 10 ms), and the runtime polls the network only when
// it has nothing else to run. A leader covered only the writes of
// goroutines already runnable: the HTTP handler whose next request was
// always waiting when it came back for it committed and fsynced alone,
// write after write, while the other connections' requests waited
// unpolled. So with one P the writers hand their fsyncs to the syncer
// (syncLoop), a goroutine woken through a pipe that the network poller
// watches: it runs only once the poller has been asked, together with
// the goroutines whose connections have data, and it yields once more so
// that they commit their writes before its fsync. (Goroutines that keep
// the P busy without blocking delay it, as they delay every network
// event, until sysmon polls the network, which it does once no poll
// happened for 10 ms.)
//
// A writer leads an fsync itself whenever none is running and the syncer
// has no kick to answer: with more than one P, if the syncer could not be
// started (no pipe), or once it has stopped (the store is closing).
func (s *Store) waitDurable(onDurable func()) error {
	s.gmu.Lock()
	defer s.gmu.Unlock()
	s.written++
	seq := s.written
	if onDurable != nil {
		s.onDurable = append(s.onDurable, durableFunc{seq, onDurable})
	}
	if s.syncer != syncerStopped && runtime.GOMAXPROCS(0) == 1 {
		if s.syncer == syncerNotStarted {
			s.startSyncer()
		}
		if s.syncer == syncerRunning && !s.kicked {
			s.kicked = true
			kick := s.kick
			s.gmu.Unlock()
			_, err := kick.Write([]byte{1})
			s.gmu.Lock()
			if err != nil {
				// The pipe was closed (the syncer stops): no kick is on
				// its way, so this writer and those that counted on its
				// kick lead fsyncs themselves.
				s.kicked = false
				s.gcond.Broadcast()
			}
		}
	}
	for s.synced < seq {
		if s.failed.Load() {
			s.dropDurable(seq)
			if s.syncErr != nil {
				return fmt.Errorf("%w: fsync: %w", ErrStoreFailed, s.syncErr)
			}
			return ErrStoreFailed
		}
		if s.syncing || s.kicked && s.syncer == syncerRunning {
			s.gcond.Wait()
			continue
		}
		s.syncing = true
		if s.shared {
			s.gmu.Unlock()
			runtime.Gosched()
			s.gmu.Lock()
		}
		s.shared = s.written-s.synced > 1
		s.syncThrough(s.written)
	}
	return nil
}

// syncThrough fsyncs, covering the writes up to target, and wakes the
// waiters; the caller holds s.gmu and has set s.syncing. It releases s.gmu
// during the fsync.
func (s *Store) syncThrough(target uint64) {
	from := s.synced
	s.gmu.Unlock()
	start := time.Now()
	err := s.fsync()
	s.metrics.FsyncSeconds.Observe(time.Since(start).Seconds())
	s.metrics.FsyncBatch.Observe(float64(target - from))
	s.gmu.Lock()
	s.syncing = false
	if err != nil {
		s.syncErr = err
	} else {
		s.synced = target
		s.runDurable(target)
	}
	s.gcond.Broadcast()
}

// startSyncer starts the syncer, or marks it stopped if it cannot start;
// the caller holds s.gmu.
func (s *Store) startSyncer() {
	r, w, err := os.Pipe()
	if err != nil {
		s.log.Warn("group commit without a syncer: with GOMAXPROCS=1 fewer writes share an fsync", "err", err)
		s.syncer = syncerStopped
		return
	}
	s.syncer, s.kick, s.syncerDone = syncerRunning, w, make(chan struct{})
	go s.syncLoop(r)
}

// syncLoop is the syncer: woken by a kick, it yields once (so that
// writers made runnable together with it commit first), then fsyncs
// everything written so far, unless an fsync is running or nothing is
// left to fsync. Once the pipe's write end is closed and every kick
// answered, it stops.
func (s *Store) syncLoop(r *os.File) {
	defer close(s.syncerDone)
	defer r.Close()
	var buf [16]byte
	for {
		if _, err := r.Read(buf[:]); err != nil {
			break
		}
		runtime.Gosched()
		s.gmu.Lock()
		s.kicked = false
		if s.synced < s.written && !s.syncing && !s.failed.Load() {
			s.syncing = true
			s.syncThrough(s.written)
		}
		s.gcond.Broadcast()
		s.gmu.Unlock()
	}
	s.gmu.Lock()
	s.syncer = syncerStopped
	s.gcond.Broadcast()
	s.gmu.Unlock()
}

// stopSyncer stops the syncer, if it runs, and waits until it has.
func (s *Store) stopSyncer() {
	s.gmu.Lock()
	if s.syncer == syncerNotStarted {
		s.syncer = syncerStopped
	}
	kick, done := s.kick, s.syncerDone
	s.gmu.Unlock()
	if kick != nil {
		kick.Close()
		<-done
	}
}

// runDurable runs and forgets the OnDurable functions of the writes up to
// seq; the caller holds s.gmu.
func (s *Store) runDurable(seq uint64) {
	i := 0
	for ; i < len(s.onDurable) && s.onDurable[i].seq <= seq; i++ {
		s.onDurable[i].f()
		s.onDurable[i] = durableFunc{}
	}
	s.onDurable = s.onDurable[i:]
	if len(s.onDurable) == 0 {
		s.onDurable = s.onDurable[:0:0]
	}
}

// dropDurable forgets the OnDurable function of the seq-th write; the
// caller holds s.gmu.
func (s *Store) dropDurable(seq uint64) {
	for i, d := range s.onDurable {
		if d.seq == seq {
			s.onDurable = append(s.onDurable[:i], s.onDurable[i+1:]...)
			return
		}
	}
}

// fail stops the store taking writes.
func (s *Store) fail(err error) {
	if s.failed.CompareAndSwap(false, true) {
		s.log.Error("store failed; it takes no more writes until the region restarts", "err", err)
	}
}

// Failed reports whether the store stopped taking writes (see
// ErrStoreFailed).
func (s *Store) Failed() bool { return s.failed.Load() }

func (s *Store) fsync() error {
	if err := s.syncFile0(); err != nil {
		s.fail(fmt.Errorf("fsync: %w", err))
		return err
	}
	return nil
}

func (s *Store) syncFile0() error {
	s.fileMu.Lock()
	defer s.fileMu.Unlock()
	if s.syncFile == nil {
		return nil
	}
	if s.opts.fsyncDelay > 0 {
		time.Sleep(s.opts.fsyncDelay)
	}
	return s.syncFile.Sync()
}

// maintain fsyncs once a second in everysec mode and shrinks the file when
// it holds more than twice the live data.
func (s *Store) maintain() {
	defer close(s.done)
	defer s.stopSyncer()
	if !s.persist {
		<-s.stop
		return
	}
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
		}
		if s.opts.Durability == DurabilityEverySec {
			s.gmu.Lock()
			target := s.written
			s.gmu.Unlock()
			if err := s.fsync(); err != nil {
				s.log.Error("fsync failed", "err", err)
			} else {
				s.gmu.Lock()
				s.synced = max(s.synced, target)
				s.gmu.Unlock()
			}
		}
		if err := s.MaybeShrink(); err != nil {
			s.log.Error("shrink failed", "err", err)
		}
	}
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
		return fmt.Errorf("region: shrink: %w", err)
	}
	f, err := os.OpenFile(s.path, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("region: reopen after shrink: %w", err)
	}
	s.syncFile.Close()
	s.syncFile = f
	if err := f.Sync(); err != nil {
		return fmt.Errorf("region: fsync after shrink: %w", err)
	}
	if d, err := os.Open(filepath.Dir(s.path)); err == nil {
		_ = d.Sync()
		d.Close()
	}
	s.metrics.Shrinks.Inc()
	s.log.Info("store shrunk", "path", s.path, "took", time.Since(start))
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
	err := s.db.Close()
	if s.syncFile != nil {
		s.syncFile.Close()
	}
	if s.lock != nil {
		s.lock.Close()
	}
	return err
}

// recoverTail scans the BuntDB file at path and cuts off a final
// transaction that holds fewer values than it declares (or a final
// command that is incomplete). It returns how many bytes it cut.
func recoverTail(path string) (int64, error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("region: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return 0, fmt.Errorf("region: %w", err)
	}
	r := bufio.NewReaderSize(f, 1<<16)
	var (
		pos        int64 // start of the next command
		groupStart int64 // start of the last group of commands
		groupTx    uint64
		groupSeen  int
		groupWant  int
	)
	for {
		cmd, size, err := readCommand(r)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			// An incomplete or unreadable final command: the group it
			// belongs to is torn.
			if groupTx != 0 && groupSeen < groupWant && pos > groupStart {
				pos = groupStart
			}
			return cut(f, fi.Size(), pos)
		}
		var txid uint64
		var n uint16
		if len(cmd) == 3 && bytes.EqualFold(cmd[0], []byte("set")) {
			// The header is read without checking the value's checksum:
			// a damaged value (found and refused later) must not make its
			// transaction look torn.
			if v := cmd[2]; len(v) >= valueHeader {
				txid, n = binary.BigEndian.Uint64(v[4:]), binary.BigEndian.Uint16(v[12:])
			}
		}
		if txid == 0 || txid != groupTx {
			groupStart, groupTx, groupSeen, groupWant = pos, txid, 0, int(n)
		}
		groupSeen++
		pos += size
	}
	if groupTx != 0 && groupSeen < groupWant {
		return cut(f, fi.Size(), groupStart)
	}
	return 0, nil
}

func cut(f *os.File, size, at int64) (int64, error) {
	if at >= size {
		return 0, nil
	}
	if err := f.Truncate(at); err != nil {
		return 0, fmt.Errorf("region: truncate torn tail: %w", err)
	}
	if err := f.Sync(); err != nil {
		return 0, fmt.Errorf("region: %w", err)
	}
	return size - at, nil
}

// readCommand reads one RESP array of bulk strings, as BuntDB writes them.
func readCommand(r *bufio.Reader) ([][]byte, int64, error) {
	var size int64
	for {
		c, err := r.ReadByte()
		if err != nil {
			return nil, 0, err
		}
		if c != 0 {
			_ = r.UnreadByte()
			break
		}
		size++
	}
	n, l, err := readLen(r, '*')
	if err != nil {
		return nil, 0, unexpected(err)
	}
	size += l
	if n < 1 || n > 16 {
		return nil, 0, fmt.Errorf("region: bad command arity %d", n)
	}
	parts := make([][]byte, n)
	for i := range parts {
		m, l, err := readLen(r, '$')
		if err != nil {
			return nil, 0, unexpected(err)
		}
		size += l
		if m < 0 || m > 1<<30 {
			return nil, 0, fmt.Errorf("region: bad bulk length %d", m)
		}
		b := make([]byte, m+2)
		if _, err := io.ReadFull(r, b); err != nil {
			return nil, 0, unexpected(err)
		}
		if b[m] != '\r' || b[m+1] != '\n' {
			return nil, 0, errors.New("region: bad bulk terminator")
		}
		parts[i] = b[:m]
		size += int64(m + 2)
	}
	return parts, size, nil
}

func unexpected(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

func readLen(r *bufio.Reader, prefix byte) (int, int64, error) {
	line, err := r.ReadSlice('\n')
	if err != nil {
		return 0, 0, err
	}
	if len(line) < 4 || line[0] != prefix || line[len(line)-2] != '\r' {
		return 0, 0, fmt.Errorf("region: bad header %q", line)
	}
	n, err := strconv.Atoi(string(line[1 : len(line)-2]))
	if err != nil {
		return 0, 0, fmt.Errorf("region: bad length %q", line)
	}
	return n, int64(len(line)), nil
}
