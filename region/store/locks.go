package store

import (
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/latticedb/lattice/crdt"
)

// ErrUnnamedKey is returned (wrapped, with the key) when a transaction
// reads or writes a key whose lock it did not name: the transaction
// writes nothing.
var ErrUnnamedKey = errors.New("store: the transaction touches a key it did not name")

// keyLocks are striped per-key locks. A write holds the locks of its keys
// (exclusively) from its first read until the caller lets go of them
// (Locked.Unlock), which the region does once the write is durable and its
// dots are in its applied context; a read holds the locks of its keys
// (shared) while it reads. A read whose key shares a stripe with a write
// in flight waits for that write's fsync: with 4,096 stripes, 64 writes in
// flight hold 1.5 % of them (with 256, 22 %, which showed in the p99 of
// reads of keys no one wrote).
type keyLocks [4096]sync.RWMutex

// stripes returns the distinct stripes of keys in the one order every
// locker takes them (ascending), so no two lockers deadlock.
func (l *keyLocks) stripes(keys []string) []int {
	idx := make([]int, 0, len(keys))
	for _, k := range keys {
		idx = append(idx, l.stripe(k))
	}
	slices.Sort(idx)
	return slices.Compact(idx)
}

// stripe returns the stripe of key: its 32-bit FNV-1a hash modulo the
// number of stripes.
func (l *keyLocks) stripe(key string) int { return int(crdt.FNV32(key) % uint32(len(l))) }

// Locked is a set of named keys whose locks a goroutine holds: exclusively
// (Store.Lock), for transactions that read and write them, or shared
// (Store.RLock), for views that read them. Its transactions and views may
// touch only the keys it names (and the keys Options.LockKey guards by
// them or leaves unlocked). It is not safe for concurrent use, and must
// not be used after Unlock.
type Locked struct {
	s     *Store
	names []string
	// set holds names when they are many, so that checking the keys a
	// transaction touches costs O(1) a key (a repair's batch names
	// hundreds), not O(len(names)).
	set map[string]struct{}
	// one is the stripe of a single name; stripes those of several.
	one     int
	stripes []int
	write   bool
	held    bool
}

// Lock takes the exclusive locks of keys, in the order every locker takes
// them, and returns them held; the caller must Unlock them. keys must not
// change while they are held. No key is needed to touch only keys that
// Options.LockKey leaves unlocked.
func (s *Store) Lock(keys ...string) *Locked { return s.lockKeys(keys, true) }

// RLock takes the shared locks of keys (see Lock): views of them exclude
// every transaction that holds one of them exclusively.
func (s *Store) RLock(keys ...string) *Locked { return s.lockKeys(keys, false) }

func (s *Store) lockKeys(keys []string, write bool) *Locked {
	l := &Locked{s: s, names: keys, write: write, held: true}
	switch len(keys) {
	case 0:
	case 1:
		l.one = s.locks.stripe(keys[0])
		if write {
			s.locks[l.one].Lock()
		} else {
			s.locks[l.one].RLock()
		}
	default:
		if len(keys) > manyNames {
			l.set = make(map[string]struct{}, len(keys))
			for _, k := range keys {
				l.set[k] = struct{}{}
			}
		}
		l.stripes = s.locks.stripes(keys)
		for _, i := range l.stripes {
			if write {
				s.locks[i].Lock()
			} else {
				s.locks[i].RLock()
			}
		}
	}
	return l
}

// Unlock releases the locks. Unlocking twice panics.
func (l *Locked) Unlock() {
	if !l.held {
		panic("store: Unlock of keys not held")
	}
	l.held = false
	unlock := func(i int) {
		if l.write {
			l.s.locks[i].Unlock()
		} else {
			l.s.locks[i].RUnlock()
		}
	}
	switch len(l.names) {
	case 0:
	case 1:
		unlock(l.one)
	default:
		for _, i := range l.stripes {
			unlock(i)
		}
	}
}

// covers reports whether a transaction under l may touch key.
func (l *Locked) covers(key string) bool {
	name := l.s.LockKey(key)
	if name == "" {
		return true
	}
	if l.set != nil {
		_, ok := l.set[name]
		return ok
	}
	return slices.Contains(l.names, name)
}

// manyNames is the number of names past which a Locked keeps them in a
// set.
const manyNames = 16

// check returns the error of a transaction under l touching key, or nil.
func (l *Locked) check(key string) error {
	if l == nil || l.covers(key) {
		return nil
	}
	return fmt.Errorf("%w: %q (named: %q)", ErrUnnamedKey, key, l.names)
}

func (l *Locked) mustHold() {
	if !l.held {
		panic("store: transaction on keys no longer held")
	}
}

// Update runs fn as one transaction on the held keys (see Store.Update).
func (l *Locked) Update(fn func(tx *Tx) error) error { return l.UpdateLocked(fn, nil) }

// UpdateLocked is Update with a second function, locked, that runs inside
// the store's commit lock, after fn and only if fn staged writes, where
// transactions are serialised in commit order; it may stage more writes,
// to any key (the store's commit lock, not the keys' locks, serialises
// them). The region uses it to number its writes.
func (l *Locked) UpdateLocked(fn, locked func(tx *Tx) error) error {
	l.mustHold()
	if !l.write {
		return errors.New("store: a transaction under shared locks may not write (use Lock)")
	}
	return l.s.update(l, fn, locked)
}

// View runs fn with a consistent read-only snapshot, in which fn may read
// the held keys.
func (l *Locked) View(fn func(r Reader) error) error {
	l.mustHold()
	return l.s.view(l, fn)
}

// Update takes the exclusive locks of keys, runs fn as one transaction
// and commits what it staged if fn returns nil (nothing is written
// otherwise), then releases the locks. fn may read and write only the
// keys it names: touching another makes Update fail with ErrUnnamedKey
// and write nothing. With DurabilityAlways, Update returns once an fsync
// covers the write.
func (s *Store) Update(keys []string, fn func(tx *Tx) error) error {
	l := s.Lock(keys...)
	defer l.Unlock()
	return l.Update(fn)
}

// View takes the shared locks of keys, runs fn with a consistent
// read-only snapshot in which it may read those keys, and releases them.
func (s *Store) View(keys []string, fn func(r Reader) error) error {
	l := s.RLock(keys...)
	defer l.Unlock()
	return l.View(fn)
}

// LockKey returns the name whose lock guards key: "" if the store does
// not lock it (see Options.LockKey).
func (s *Store) LockKey(key string) string {
	if s.opts.LockKey == nil {
		return key
	}
	return s.opts.LockKey(key)
}
