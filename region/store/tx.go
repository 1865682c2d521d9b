package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"

	"github.com/tidwall/buntdb"

	"github.com/latticedb/lattice/region/config"
)

// Reader reads checked values.
type Reader interface {
	// Get returns the payload stored under key; ok is false if there is
	// none. The payload is read-only: it may share memory with the store. A damaged value returns a *CorruptError; a key the reader
	// may not read (see Locked) an error wrapping ErrUnnamedKey.
	Get(key string) (val []byte, ok bool, err error)
}

type reader struct {
	s  *Store
	tx *buntdb.Tx
	lk *Locked // nil: the store's own reads, unchecked
}

func (r reader) Get(key string) ([]byte, bool, error) {
	if err := r.lk.check(key); err != nil {
		return nil, false, err
	}
	return r.get(key)
}

func (r reader) get(key string) ([]byte, bool, error) {
	v, err := r.tx.Get(key)
	if errors.Is(err, buntdb.ErrNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	_, _, _, p, err := unframe(key, storedBytes(v))
	if err != nil {
		r.s.checksumFailed(key)
		return nil, true, &CorruptError{Key: key}
	}
	return p, true, nil
}

// Scan calls fn for every key with the prefix, in key order, until fn
// returns false, from the view's snapshot (a view's reader lists keys
// without a second BuntDB view, which would wait behind a waiting writer).
// Every key must be one the view may read. Damaged values are passed with
// err set.
func (r reader) Scan(prefix string, fn func(key string, val []byte, err error) bool) error {
	var lerr error
	err := r.tx.AscendGreaterOrEqual("", prefix, func(k, v string) bool {
		if !strings.HasPrefix(k, prefix) {
			return false
		}
		if lerr = r.lk.check(k); lerr != nil {
			return false
		}
		_, _, _, p, err := unframe(k, storedBytes(v))
		if err != nil {
			r.s.checksumFailed(k)
			return fn(k, nil, &CorruptError{Key: k})
		}
		return fn(k, p, nil)
	})
	return errors.Join(err, lerr)
}

func (s *Store) view(lk *Locked, fn func(r Reader) error) error {
	return s.db.View(func(tx *buntdb.Tx) error { return fn(reader{s, tx, lk}) })
}

// Scan calls fn for every key with the prefix, in key order, until fn
// returns false, from one consistent snapshot, without taking the keys'
// locks: it finds keys, which the caller then reads or writes under their
// names. It may show writes that are not yet durable. Damaged values are
// passed with err set. fn must not use the store, nor modify val, which
// shares memory with the store (it may keep it).
func (s *Store) Scan(prefix string, fn func(key string, val []byte, err error) bool) error {
	return s.ScanRange(prefix, PrefixEnd(prefix), fn)
}

// ScanRange is Scan of the keys from lo (included) to hi (excluded), in
// key order; hi "" is no upper bound. Scans may run at once on goroutines
// of their own: of disjoint ranges, they split a long scan between cores.
func (s *Store) ScanRange(lo, hi string, fn func(key string, val []byte, err error) bool) error {
	o, read := s.opening.Load(), int64(0) // the region's scans at start-up
	defer func() { o.read(read) }()
	return s.db.View(func(tx *buntdb.Tx) error {
		visit := func(k, v string) bool {
			if o != nil {
				if read++; read == 4096 {
					o.read(read)
					read = 0
				}
			}
			_, _, _, p, err := unframe(k, storedBytes(v))
			if err != nil {
				s.checksumFailed(k)
				return fn(k, nil, &CorruptError{Key: k})
			}
			return fn(k, p, nil)
		}
		if hi == "" {
			return tx.AscendGreaterOrEqual("", lo, visit)
		}
		if hi <= lo {
			return nil
		}
		return tx.AscendRange("", lo, hi, visit)
	})
}

// PrefixEnd returns the least key greater than every key with the prefix,
// or "" if there is none (the prefix is empty or all 0xff bytes).
func PrefixEnd(prefix string) string {
	for i := len(prefix) - 1; i >= 0; i-- {
		if prefix[i] != 0xff {
			return prefix[:i] + string([]byte{prefix[i] + 1})
		}
	}
	return ""
}

// Tx is one logical write. Its reads see committed state plus the
// transaction's own writes; its writes are staged and committed together as
// one BuntDB transaction. fn runs outside BuntDB's write lock, under the
// locks of the keys the transaction named (see Locked), and may touch
// only those keys. A transaction either sets keys or deletes exactly one
// key (a delete has no value to carry the transaction id).
type Tx struct {
	s  *Store
	lk *Locked // nil: unchecked (the store's own writes, commit functions)
	// sets holds the staged values, one per key, in the order their keys
	// were first set; index finds a key's among many.
	sets    []staged
	index   map[string]int
	del     string
	own     bool // the store's own write: its reserved keys allowed
	mark    uint64
	durable func()
	// err is the first touch of a key the transaction did not name.
	err error
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

// touch records and returns the error of touching key, if the
// transaction may not.
func (t *Tx) touch(key string) error {
	err := t.lk.check(key)
	if err != nil && t.err == nil {
		t.err = err
	}
	return err
}

// Get returns the value under key as this transaction sees it.
func (t *Tx) Get(key string) (val []byte, ok bool, err error) {
	if err := t.touch(key); err != nil {
		return nil, false, err
	}
	if i := t.lookup(key); i >= 0 {
		return t.sets[i].val, true, nil
	}
	err = t.s.db.View(func(tx *buntdb.Tx) error {
		val, ok, err = reader{s: t.s, tx: tx}.get(key)
		return err
	})
	return val, ok, err
}

// Set stages val under key. Setting a key the transaction did not name
// makes Update fail with ErrUnnamedKey; a key that sorts after "~epoch"
// (the store's own, which must sort last) makes it fail too.
func (t *Tx) Set(key string, val []byte) {
	if t.touch(key) != nil {
		return
	}
	if t.reserved(key) {
		return
	}
	if key > epochKey && t.err == nil {
		// A rewrite writes keys in key order and ends with the epoch key,
		// which must be the file's last command for the rewritten file
		// to read as whole (see epochKey).
		t.err = fmt.Errorf("store: key %q sorts after the store's own %q: keys must sort before it", key, epochKey)
		return
	}
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

// Mark marks the transaction's values with m (see MaxMarkSince): from
// this transaction on, every value the store writes carries the highest
// mark set since the store opened, until a higher one is set. A
// transaction that deletes a key writes no value and so no mark.
func (t *Tx) Mark(m uint64) { t.mark = max(t.mark, m) }

// Delete stages the deletion of key; the transaction may set nothing
// else. Deleting a key the transaction did not name makes Update fail
// with ErrUnnamedKey.
func (t *Tx) Delete(key string) {
	if t.touch(key) != nil || t.reserved(key) {
		return
	}
	t.del = key
}

// reserved fails the transaction on a key the store keeps for itself
// (its delete record, its record that deletes carry records), unless it
// is the store's own write.
func (t *Tx) reserved(key string) bool {
	if t.own || (key != delMarkKey && key != deletesKey) {
		return false
	}
	if t.err == nil {
		t.err = fmt.Errorf("store: key %q is the store's own", key)
	}
	return true
}

// Staged calls fn for every value the transaction staged, in the order
// their keys were first set.
func (t *Tx) Staged(fn func(key string, val []byte)) {
	for _, st := range t.sets {
		fn(st.key, st.val)
	}
}

// Sets returns how many keys the transaction has staged to set so far.
func (t *Tx) Sets() int { return len(t.sets) }

// Writes reports whether the transaction staged anything.
func (t *Tx) Writes() bool { return len(t.sets) > 0 || t.del != "" }

// update runs a transaction: fn under the names of lk (nil: unchecked),
// then, if it staged writes, locked inside BuntDB's write lock, then the
// commit and, with DurabilityAlways, group commit.
func (s *Store) update(lk *Locked, fn, locked func(tx *Tx) error) error {
	return s.update0(lk, fn, locked, false)
}

// update0 is update; marker is set for the close marker, the one write a
// closing store still takes (after it nothing is written: Close).
func (s *Store) update0(lk *Locked, fn, locked func(tx *Tx) error, marker bool) error {
	if s.failed.Load() {
		return ErrStoreFailed
	}
	if s.closing.Load() && !marker {
		return ErrStoreClosed
	}
	t := &Tx{s: s, lk: lk}
	err := fn(t)
	if t.err != nil {
		return t.err
	}
	if err != nil {
		return err
	}
	if !t.Writes() {
		return nil
	}
	if s.failed.Load() {
		// A read of fn's may have found a value failing its checksum,
		// which failed the store: what fn staged from that read is not
		// to be written (a repair would replace the value with one
		// peer's state, which may lack this region's own writes).
		return ErrStoreFailed
	}
	if t.del != "" && len(t.sets) > 0 {
		return errors.New("store: a transaction may not both delete and set keys")
	}
	if len(t.sets) > 0xffff {
		return errors.New("store: transaction sets too many keys")
	}
	hooked := false
	err = s.db.Update(func(btx *buntdb.Tx) error {
		if s.failed.Load() {
			return ErrStoreFailed // failed since: nothing more is written
		}
		if s.closing.Load() && !marker {
			// BuntDB runs one update at a time: none comes after the
			// close marker's, which the stop's fsync covers.
			return ErrStoreClosed
		}
		if locked != nil {
			t.lk = nil // the commit lock serialises what locked touches
			if err := locked(t); err != nil {
				return err
			}
			hooked = true
			// What the commit function staged is checked as fn's was: a
			// delete with sets would drop the sets, and more keys than a
			// frame counts would make the transaction look whole when
			// torn. (The store then fails: the function may have moved
			// the caller's state on.)
			if t.del != "" && len(t.sets) > 0 {
				return errors.New("store: a transaction may not both delete and set keys (its commit function set keys)")
			}
			if len(t.sets) > 0xffff {
				return errors.New("store: transaction sets too many keys (with its commit function's)")
			}
		}
		s.txMu.Lock()
		defer s.txMu.Unlock()
		if lk != nil {
			s.sinceCheckpointValid = false // the opener writes
		}
		if t.del != "" {
			old, err := btx.Delete(t.del)
			if errors.Is(err, buntdb.ErrNotFound) {
				return nil // BuntDB writes nothing
			}
			if err != nil {
				return err
			}
			s.live -= int64(len(t.del) + len(old))
			// The delete's record (delMarkKey), in the same write.
			s.txid++
			var sum [4]byte
			binary.BigEndian.PutUint32(sum[:], keyCRC(t.del))
			v := frame(delMarkKey, s.txid, 1, s.mark, sum[:])
			old, replaced, err := btx.Set(delMarkKey, v, nil)
			if err != nil {
				return err
			}
			if replaced {
				s.live -= int64(len(delMarkKey) + len(old))
			}
			s.live += int64(len(delMarkKey) + len(v))
			return nil
		}
		s.txid++
		s.mark = max(s.mark, t.mark)
		for _, st := range t.sets {
			k := st.key
			v := frame(k, s.txid, uint16(len(t.sets)), s.mark, st.val)
			old, replaced, err := btx.Set(k, v, nil)
			if err != nil {
				return err
			}
			if replaced {
				s.live -= int64(len(k) + len(old))
			}
			s.live += int64(len(k) + len(v))
		}
		return nil
	})
	if err != nil {
		if hooked {
			s.fail(fmt.Errorf("commit: %w", err))
			return ErrWriteUnsure
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
	if !s.persist || s.opts.Durability != config.DurabilityAlways {
		if s.shrinking.Load() {
			s.fileMu.Lock() // until Shrink is done (see Store.shrinking)
			s.fileMu.Unlock()
		}
		if s.failed.Load() {
			// An fsync failed meanwhile (everysec): no later write is
			// acknowledged, since no later fsync can be trusted with it.
			// This one is in the file and readable already: not made is
			// not what may be said of it.
			return ErrWriteUnsure
		}
		s.gmu.Lock()
		s.written++
		s.gmu.Unlock()
		if t.durable != nil {
			t.durable()
		}
		return nil
	}
	if s.opts.SerialFsync {
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

// MaxMarkSince returns the highest mark (Tx.Mark) of the stored values
// that the transaction which wrote key's value, or a later one, wrote
// (every stored value if key has none): the highest mark set since that
// transaction by any transaction whose values are not all overwritten or
// deleted since (a value overwritten later is overwritten by one that
// carries a mark at least as high). Damaged values are left out.
func (s *Store) MaxMarkSince(key string) (uint64, error) {
	s.txMu.Lock()
	if key == s.opts.Checkpoint && s.sinceCheckpointValid {
		// Found by Open, and only the store's own writes (its epoch key
		// and incarnation, which carry no mark) came since.
		m := s.sinceCheckpoint
		s.txMu.Unlock()
		return m, nil
	}
	s.txMu.Unlock()
	var mark uint64
	err := s.db.View(func(tx *buntdb.Tx) error {
		var from uint64
		if v, err := tx.Get(key); err == nil {
			if from, _, _, _, err = unframe(key, storedBytes(v)); err != nil {
				return &CorruptError{Key: key}
			}
		} else if !errors.Is(err, buntdb.ErrNotFound) {
			return err
		}
		return tx.Ascend("", func(k, v string) bool {
			if txid, _, m, _, err := unframe(k, storedBytes(v)); err == nil && txid >= from {
				mark = max(mark, m)
			}
			return true
		})
	})
	return mark, err
}

// RaiseMark raises the mark every value the store writes from now on
// carries (see Tx.Mark) to at least m. The opener calls it with the
// highest mark its store holds, so that no value of a later transaction
// carries a lower one, whether or not that transaction sets a mark.
func (s *Store) RaiseMark(m uint64) {
	s.txMu.Lock()
	s.mark = max(s.mark, m)
	s.sinceCheckpointValid = false // later values carry m
	s.txMu.Unlock()
}

// ResetMark sets the mark that values of later transactions carry back
// to 0: the opener raised it for a replica it then left for a new
// incarnation (NewIncarnation), whose marks count from 0, and writes a
// checkpoint before any value carries a mark of the new one.
func (s *Store) ResetMark() {
	s.txMu.Lock()
	s.mark = 0
	s.sinceCheckpointValid = false
	s.txMu.Unlock()
}
