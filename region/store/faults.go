package store

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/tidwall/buntdb"
)

// Helpers for fault tests (the replication simulation, crash tests): they
// stop a store as a crash would, tell how much of its file an fsync
// covers, and cut transactions off the end of a store file, so that a
// test can make a region lose the tail of its store the way a crash, a
// power loss or a damaged medium would. Nothing in a running region calls
// them.

// CloseUnclean closes the store as a killed process leaves it: its files
// and lock are released, but no close marker is written and the identity
// file still says the store is running, so the next open decides the
// store's incarnation as after a crash. Writes the store made are in the
// file (as in the page cache after a process crash); to lose some, cut
// the file afterwards (CutTransactions, os.Truncate to a size SyncNow
// returned). Closing the store again, cleanly or not, does nothing.
func (s *Store) CloseUnclean() error { return s.closeFiles() }

// SyncNow fsyncs the store file, as the everysec ticker does, and returns
// the size of the file that the fsync covers, taken between transactions:
// after a power loss the file holds at least that much. A fault test that
// calls it on its own schedule, and truncates the file of a crashed store
// to the size of the last call, simulates a power loss that loses
// everything the store wrote since. It does not acknowledge writers that
// wait for an fsync (their group commit does that) and the size says
// nothing about a file rewritten by a later Shrink. A store in memory
// returns 0. A failed fsync fails the store, as any fsync of it does, and
// a failed store is refused (ErrStoreFailed).
func (s *Store) SyncNow() (int64, error) {
	if !s.persist {
		return 0, nil
	}
	s.fileMu.Lock() // no shrink replaces the file meanwhile
	defer s.fileMu.Unlock()
	if s.failed.Load() {
		// A failed fsync may have dropped written pages, and a later
		// fsync of the file would succeed without covering them.
		return 0, ErrStoreFailed
	}
	if s.syncFile == nil {
		return 0, errors.New("store: the store is closed")
	}
	var size int64
	// BuntDB writes a transaction to the file while it holds the write
	// lock, which a read transaction excludes.
	err := s.db.View(func(*buntdb.Tx) error {
		fi, err := s.syncFile.Stat()
		if err != nil {
			return err
		}
		size = fi.Size()
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("store: %w", err)
	}
	if err := s.syncFile.Sync(); err != nil {
		s.fail(fmt.Errorf("fsync: %w", err))
		return 0, fmt.Errorf("store: fsync: %w", err)
	}
	s.syncedSize.Store(size)
	return size, nil
}

// SyncedSize returns the size of the file the last SyncNow (or Sync)
// covered, 0 before any: a fault test that simulates a power loss keeps
// at least that much of the file.
func (s *Store) SyncedSize() int64 { return s.syncedSize.Load() }

// TxSpan is where one transaction lies in a store file: bytes
// [Start, End), Commands commands, the last of which may be incomplete
// (Torn). A transaction is a run of set commands whose values carry the
// same transaction id (see frame); any other command (a delete) is
// a transaction of its own. Declared is how many values the transaction
// says it set (0 for a delete).
type TxSpan struct {
	Start, End int64
	TxID       uint64
	Commands   int
	Declared   int
	// Torn is true if the file ends inside this transaction: it holds
	// fewer values than it declares, or its last command is incomplete.
	// Opening the store cuts it off.
	Torn bool
}

// Transactions lists the transactions of the store file at path, in file
// order. The store must not be open (or must not be writing).
func Transactions(path string) ([]TxSpan, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	r := bufio.NewReaderSize(f, 1<<16)
	var out []TxSpan
	var pos int64
	for {
		cmd, size, err := readCommand(r)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			// An incomplete final command: part of the transaction before
			// it if that one is incomplete, else a transaction of its own.
			if n := len(out); n > 0 && out[n-1].TxID != 0 && out[n-1].Commands < out[n-1].Declared {
				out[n-1].End, out[n-1].Commands, out[n-1].Torn = fi.Size(), out[n-1].Commands+1, true
			} else {
				out = append(out, TxSpan{Start: pos, End: fi.Size(), Commands: 1, Torn: true})
			}
			return out, nil
		}
		var txid uint64
		var declared int
		if len(cmd) == 3 && bytes.EqualFold(cmd[0], []byte("set")) {
			id, n, _, _, _ := frameHeader(cmd[2])
			txid, declared = id, int(n)
		}
		if n := len(out); txid != 0 && n > 0 && out[n-1].TxID == txid {
			out[n-1].End += size
			out[n-1].Commands++
		} else {
			out = append(out, TxSpan{Start: pos, End: pos + size, TxID: txid, Commands: 1, Declared: declared})
		}
		pos += size
	}
	if n := len(out); n > 0 && out[n-1].TxID != 0 && out[n-1].Commands < out[n-1].Declared {
		out[n-1].Torn = true
	}
	return out, nil
}

// CutTransactions removes the last k transactions (see Transactions) of
// the store file at path, as a lost tail of the file would; the store
// must be closed. With torn, the first of them is not removed whole: the
// first half of its bytes stays behind, as a crash in the middle of its
// write leaves it (mostly an incomplete command; the open that follows
// cuts it off). It returns how many bytes it removed. If the file holds
// fewer than k transactions, everything goes.
func CutTransactions(path string, k int, torn bool) (int64, error) {
	if k < 1 {
		return 0, fmt.Errorf("store: cut %d transactions", k)
	}
	txs, err := Transactions(path)
	if err != nil {
		return 0, err
	}
	fi, err := os.Stat(path)
	if err != nil {
		return 0, fmt.Errorf("store: %w", err)
	}
	var at int64
	if k <= len(txs) {
		first := txs[len(txs)-k]
		at = first.Start
		if torn && first.End-first.Start >= 2 {
			at += (first.End - first.Start) / 2
		}
	}
	if err := os.Truncate(path, at); err != nil {
		return 0, fmt.Errorf("store: %w", err)
	}
	return fi.Size() - at, nil
}

// Commands calls fn for every whole command of the store file at path, in
// file order, with its arguments (for a set: "set", the key and the framed
// value; see Payload) and the offset where it ends, until fn returns
// false. An incomplete final command ends the walk without an error.
func Commands(path string, fn func(cmd [][]byte, end int64) bool) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("store: %w", err)
	}
	defer f.Close()
	r := bufio.NewReaderSize(f, 1<<16)
	var pos int64
	for {
		cmd, size, err := readCommand(r)
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil
		}
		if err != nil {
			return err
		}
		pos += size
		if !fn(cmd, pos) {
			return nil
		}
	}
}

// Payload returns the payload of a framed value of key as a set command
// of the file holds it, or ErrCorrupt if it fails its checksum.
func Payload(key string, framed []byte) ([]byte, error) {
	_, _, _, p, err := unframe(key, framed)
	return p, err
}

// Mark returns the mark (Tx.Mark) of a framed value of key as a set
// command of the file holds it, or ErrCorrupt if it fails its checksum.
func Mark(key string, framed []byte) (uint64, error) {
	_, _, m, _, err := unframe(key, framed)
	return m, err
}
