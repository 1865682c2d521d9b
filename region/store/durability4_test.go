package store

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/latticedb/lattice/region/config"
)

// TestKeysSortingAfterEpochKeyRefused: a rewrite (Shrink) writes the live
// keys in key order and ends with the store's own epoch key ("~epoch"),
// which makes a freshly rewritten file read as whole; a key sorting after
// it would end the file instead, in a transaction whose other values lie
// earlier, and the open would cut it as torn (an acknowledged write lost).
// So the store refuses such keys: the transaction fails and writes
// nothing, and the keys before it survive a rewrite and a crash.
func TestKeysSortingAfterEpochKeyRefused(t *testing.T) {
	for _, late := range []string{"~z", "\xffkey", "~epoch/x"} {
		t.Run(fmt.Sprintf("%q", late), func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "s.db")
			st := openAcked(t, path)
			for i := range 20 {
				setAcked(t, st, fmt.Sprintf("k/%d", i%4))
			}
			err := st.Update(nil, func(tx *Tx) error {
				tx.Set("a", []byte("1"))
				tx.Set(late, []byte("1"))
				return nil
			})
			if err == nil {
				t.Fatalf("a transaction setting %q (after the epoch key) was accepted", late)
			}
			if err := st.Shrink(); err != nil {
				t.Fatal(err)
			}
			if err := st.CloseUnclean(); err != nil { // a crash after the rewrite
				t.Fatal(err)
			}
			st = openAcked(t, path)
			defer st.Close()
			if got := heldState(t, st, "k/0", "k/3"); !allOK(got) {
				t.Errorf("after a rewrite, a crash and a reopen: %v; want every acknowledged key ok", got)
			}
			if got := heldState(t, st, "a"); allOK(got) {
				t.Errorf("the refused transaction's other key is there: %v", got)
			}
		})
	}
}

// TestZeroFilledTailIsCutAsTorn: the file system may extend a file before
// the blocks of its last write reach the disk, so a crash can leave the
// file at its full size with its last blocks read as NUL bytes; a block
// boundary falls anywhere, mostly inside a command. That is a torn tail
// (only the unacknowledged last write is affected): the open must cut it,
// keep every earlier acknowledged write, and not refuse the file as
// damaged. The last transaction here crosses the 4 KiB block boundary;
// the NUL run starts at that boundary, then at every 8th offset inside
// the transaction.
func TestZeroFilledTailIsCutAsTorn(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "s.db")
	st := openAcked(t, path)
	setAcked(t, st, "a1")
	setAcked(t, st, "a2", "a3")
	pad := "pad/" + string(bytes.Repeat([]byte{'p'}, 1800)) // a long key, and value
	setAcked(t, st, pad)
	if err := st.CloseUnclean(); err != nil {
		t.Fatal(err)
	}
	keep := fileSize(t, path)
	st = openAcked(t, path)
	if err := st.Update(nil, func(tx *Tx) error {
		for i := range 3 {
			tx.Set(fmt.Sprintf("b%d", i), bytes.Repeat([]byte{'v'}, 300))
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := st.CloseUnclean(); err != nil {
		t.Fatal(err)
	}
	whole, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	txs, err := Transactions(path)
	if err != nil {
		t.Fatal(err)
	}
	last := txs[len(txs)-1]
	if last.Start < keep || last.Commands != 3 || last.Start >= 4096 || last.End <= 4096 {
		t.Fatalf("unexpected last transaction %+v (earlier writes end at %d); want it across the block boundary at 4096", last, keep)
	}
	var refused []string
	// The block boundary first, then every 8th offset of the transaction.
	offs := []int64{4096}
	for off := last.Start + 1; off < last.End; off += 8 {
		offs = append(offs, off)
	}
	for _, off := range offs {
		b := append([]byte(nil), whole...)
		clear(b[off:])
		p := filepath.Join(dir, fmt.Sprintf("z%d.db", off))
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		s, err := Open(p, Options{LockKey: unlocked})
		if err != nil {
			if len(refused) < 3 {
				refused = append(refused, fmt.Sprintf("NUL from byte %d (last transaction %d-%d): %v", off, last.Start, last.End, err))
			} else {
				refused = append(refused, "")
			}
			continue
		}
		got := heldState(t, s, "a1", "a2", "a3", pad)
		s.Close()
		if !allOK(got) {
			t.Fatalf("NUL from byte %d: acknowledged writes %v; want all kept", off, got)
		}
		os.Remove(p)
	}
	if len(refused) > 0 {
		t.Fatalf("a store whose last, unacknowledged transaction was torn into NUL bytes was refused at %d of %d offsets; want the tail cut, e.g. %q",
			len(refused), len(offs), refused[:min(3, len(refused))])
	}
}

// TestTornValueHoldingCommandBytesIsCut: a value may hold any bytes,
// among them the bytes with which a set command starts in the file. A
// crash that tears the last transaction inside such a value leaves an
// incomplete final command and nothing after it: a torn tail, which the
// open must cut (keeping the earlier acknowledged writes), not refuse as
// a damaged length.
func TestTornValueHoldingCommandBytesIsCut(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.db")
	st := openAcked(t, path)
	setAcked(t, st, "a")
	payload := []byte("header\r\n*3\r\n$3\r\nset\r\n$1\r\nx\r\n$1\r\ny\r\ntrailer and more bytes after it")
	if err := st.Update(nil, func(tx *Tx) error { tx.Set("blob", payload); return nil }); err != nil {
		t.Fatal(err)
	}
	if err := st.CloseUnclean(); err != nil {
		t.Fatal(err)
	}
	size := fileSize(t, path)
	// Cut 10 bytes before the end: inside the value, after the bytes that
	// look like a command.
	if err := os.Truncate(path, size-10); err != nil {
		t.Fatal(err)
	}
	st, err := Open(path, Options{LockKey: unlocked})
	if err != nil {
		t.Fatalf("open after a crash tore the last value: %v; want the torn tail cut", err)
	}
	defer st.Close()
	if got := heldState(t, st, "a"); !allOK(got) {
		t.Fatalf("after cutting the torn tail: %v; want a ok", got)
	}
}

// TestRestoreRefusesSnapshotCutInsideRewrittenPart: after a rewrite the
// file lists the live keys in key order, so the values of one
// transaction lie apart (here: p<i> and q<i> of one write, with the keys
// of other writes in between). A snapshot copy cut short inside that part is not a state
// the store was ever in: it can hold one value of a transaction and not
// its other. Restore refuses a snapshot cut short; if it accepts one, the
// restored store must at least hold every transaction whole or not at
// all.
func TestRestoreRefusesSnapshotCutInsideRewrittenPart(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "s.db")
	st := openAcked(t, path)
	const n = 6
	for i := range n {
		// Write i sets p<i> and q<i>, and the keys of different writes
		// interleave in key order: p0 p1 ... q0 q1 ...
		setAcked(t, st, fmt.Sprintf("p%d", i), fmt.Sprintf("q%d", i))
	}
	for i := range 10 {
		setAcked(t, st, fmt.Sprintf("p%d", i%n), fmt.Sprintf("q%d", i%n))
	}
	setAcked(t, st, "pz") // a write of one key, between the p and q keys
	if err := st.Shrink(); err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	var snap bytes.Buffer
	if _, err := Backup(path, &snap); err != nil {
		t.Fatal(err)
	}
	from := filepath.Join(dir, "snap.db")
	if err := os.WriteFile(from, snap.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	var ends []int64
	if err := Commands(from, func(cmd [][]byte, end int64) bool {
		ends = append(ends, end)
		return true
	}); err != nil {
		t.Fatal(err)
	}
	var bad []string
	for ci, end := range ends[:len(ends)-1] {
		cut := filepath.Join(dir, fmt.Sprintf("cut%d.db", ci))
		if err := os.WriteFile(cut, snap.Bytes()[:end], 0o644); err != nil {
			t.Fatal(err)
		}
		target := filepath.Join(dir, fmt.Sprintf("r%d", ci), "s.db")
		if err := Restore(target, cut); err != nil {
			continue // refused: fine
		}
		rs := openAcked(t, target)
		err := rs.View(nil, func(r Reader) error {
			for i := range n {
				_, okP, err1 := r.Get(fmt.Sprintf("p%d", i))
				_, okQ, err2 := r.Get(fmt.Sprintf("q%d", i))
				if err1 != nil || err2 != nil {
					return fmt.Errorf("%v %v", err1, err2)
				}
				if okP != okQ {
					bad = append(bad, fmt.Sprintf("cut at byte %d of %d: write %d restored in part (p%d %v, q%d %v)", end, snap.Len(), i, i, okP, i, okQ))
					return nil
				}
			}
			return nil
		})
		rs.Close()
		if err != nil {
			t.Fatal(err)
		}
	}
	if len(bad) > 0 {
		t.Fatalf("Restore accepted %d snapshots cut short inside the rewritten part and restored a transaction in part; want each refused (or whole): %q", len(bad), bad[:min(3, len(bad))])
	}
}

// TestTruncatedFileOpensWholeTransactions: a store written over
// two runs (writes of one to three keys, deletes, a clean stop and a
// crash) is cut at the start, the second byte, the middle and the last
// byte of every transaction, as a lost tail would leave it. Every
// cut file opens, holds each write whole or not at all, holds every write
// that ends before the cut, and starts a new incarnation (the run that
// wrote stopped uncleanly).
func TestTruncatedFileOpensWholeTransactions(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "s.db")
	st := openAcked(t, path)
	write := func(i int) {
		setAcked(t, st, func() []string {
			var ks []string
			for j := range i%3 + 1 {
				ks = append(ks, fmt.Sprintf("w%d/%d", i, j))
			}
			return ks
		}()...)
	}
	const n = 12
	for i := range 6 {
		write(i)
	}
	if err := st.Update(nil, func(tx *Tx) error { tx.Delete("w0/0"); return nil }); err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	st = openAcked(t, path)
	if err := st.MarkUsed(); err != nil {
		t.Fatal(err)
	}
	for i := 6; i < n; i++ {
		write(i)
	}
	inc := st.Incarnation()
	if err := st.CloseUnclean(); err != nil {
		t.Fatal(err)
	}
	whole, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	id, err := os.ReadFile(identityPath(path))
	if err != nil {
		t.Fatal(err)
	}
	// Where each write ends in the file.
	ends := map[int]int64{}
	if err := Commands(path, func(cmd [][]byte, end int64) bool {
		if len(cmd) == 3 {
			var i, j int
			if _, err := fmt.Sscanf(string(cmd[1]), "w%d/%d", &i, &j); err == nil {
				ends[i] = max(ends[i], end)
			}
		}
		return true
	}); err != nil {
		t.Fatal(err)
	}
	// Each transaction's start, the byte after it, its middle and its last
	// byte, and the end of the file.
	txs, err := Transactions(path)
	if err != nil {
		t.Fatal(err)
	}
	var offs []int64
	for _, tx := range txs {
		offs = append(offs, tx.Start, tx.Start+1, (tx.Start+tx.End)/2, tx.End-1)
	}
	offs = append(offs, int64(len(whole)))
	for _, off := range offs {
		p := filepath.Join(dir, "cut", fmt.Sprint(off), "s.db")
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, whole[:off], 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(identityPath(p), id, 0o644); err != nil {
			t.Fatal(err)
		}
		s, err := Open(p, Options{LockKey: unlocked})
		if err != nil {
			t.Fatalf("cut at byte %d of %d: open: %v; want the torn tail cut", off, len(whole), err)
		}
		held := faultWrites(t, s, n)
		for i := range n {
			in := slices.Contains(held, i)
			if ends[i] <= off && !in && i != 0 {
				t.Errorf("cut at byte %d: write %d (ends at %d) missing", off, i, ends[i])
			}
		}
		if s.Incarnation() == inc {
			t.Errorf("cut at byte %d: incarnation %d kept after an unclean stop of a run that wrote", off, inc)
		}
		s.Close()
		os.RemoveAll(filepath.Dir(p))
	}
}

// TestCleanRestartWhileCatchingUpKeepsIncarnation: a store that began a
// new incarnation after a crash is in catch-up until the region has
// synced with every peer. A clean stop before that (a rolling restart
// while a peer is unreachable) records a close marker, and the docs
// promise that a clean stop keeps the incarnation: the next open must
// go on as the same incarnation, still catching up, rather than spend
// another replica id (a cluster has 256 for its lifetime) for a store
// that lost nothing since.
func TestCleanRestartWhileCatchingUpKeepsIncarnation(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.db")
	st := openAcked(t, path)
	if err := st.MarkUsed(); err != nil {
		t.Fatal(err)
	}
	setAcked(t, st, "a")
	if err := st.CloseUnclean(); err != nil { // a crash: the next open is a new incarnation
		t.Fatal(err)
	}
	st = openAcked(t, path)
	k1 := st.Incarnation()
	if !st.CatchingUp() {
		t.Fatal("a new incarnation after a crash is not catching up")
	}
	if err := st.MarkUsed(); err != nil {
		t.Fatal(err)
	}
	setAcked(t, st, "b")
	if err := st.Close(); err != nil { // a clean stop, before catching up
		t.Fatal(err)
	}
	st = openAcked(t, path)
	defer st.Close()
	if k2 := st.Incarnation(); k2 != k1 {
		t.Errorf("after a clean stop of incarnation %d (still catching up): incarnation %d; want %d kept", k1, k2, k1)
	}
	if !st.CatchingUp() {
		t.Errorf("after a clean stop while catching up: not catching up; want still catching up")
	}
}

// TestBackupDuringShrinkIsConsistent: writers update pairs of keys in one
// transaction each while the file is rewritten (Shrink) and backed up
// again and again. Every backup must restore to a state the store was in:
// each pair equal, and every write acknowledged before the backup began
// there; and after a crash that follows the rewrites, every acknowledged
// write is there.
func TestBackupDuringShrinkIsConsistent(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "s.db")
	st := openAcked(t, path)
	defer st.Close()
	const writers = 4
	var acked [writers]atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := int64(1); ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				v := []byte(strconv.FormatInt(i, 10))
				err := st.Update(nil, func(tx *Tx) error {
					tx.Set(fmt.Sprintf("x%d", w), v)
					tx.Set(fmt.Sprintf("pad%d/%d", w, i%50), bytes.Repeat([]byte{'p'}, 200))
					tx.Set(fmt.Sprintf("y%d", w), v)
					return nil
				})
				if err != nil {
					t.Error(err)
					return
				}
				acked[w].Store(i)
			}
		})
	}
	shrinkDone := make(chan error, 1)
	go func() {
		var err error
		for range 4 {
			if err = st.Shrink(); err != nil {
				break
			}
		}
		shrinkDone <- err
	}()
	var problems []string
	deadline := time.Now().Add(8 * time.Second)
	for b := 0; ; b++ {
		select {
		case err := <-shrinkDone:
			if err != nil {
				t.Fatal(err)
			}
			close(stop)
			wg.Wait()
			if len(problems) > 0 {
				t.Fatalf("backups taken during rewrites: %q", problems)
			}
			// A crash after the rewrites: every acknowledged write is there.
			if err := st.CloseUnclean(); err != nil {
				t.Fatal(err)
			}
			again := openAcked(t, path)
			defer again.Close()
			_ = again.View(nil, func(r Reader) error {
				for w := range writers {
					x, _, err := r.Get(fmt.Sprintf("x%d", w))
					if xi, _ := strconv.ParseInt(string(x), 10, 64); err != nil || xi < acked[w].Load() {
						t.Errorf("after rewrites under writes and a crash: writer %d's x=%q (%v); want at least its last acknowledged write %d", w, x, err, acked[w].Load())
					}
				}
				return nil
			})
			return
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("the rewrites did not finish in time")
		}
		var floor [writers]int64
		for w := range writers {
			floor[w] = acked[w].Load()
		}
		var snap bytes.Buffer
		if _, err := Backup(path, &snap); err != nil {
			problems = append(problems, fmt.Sprintf("backup %d: %v", b, err))
			continue
		}
		from := filepath.Join(dir, fmt.Sprintf("snap%d.db", b))
		if err := os.WriteFile(from, snap.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
		target := filepath.Join(dir, fmt.Sprintf("r%d", b), "s.db")
		if err := Restore(target, from); err != nil {
			problems = append(problems, fmt.Sprintf("restore of backup %d: %v", b, err))
			continue
		}
		rs := openAcked(t, target)
		_ = rs.View(nil, func(r Reader) error {
			for w := range writers {
				x, _, err1 := r.Get(fmt.Sprintf("x%d", w))
				y, _, err2 := r.Get(fmt.Sprintf("y%d", w))
				xi, _ := strconv.ParseInt(string(x), 10, 64)
				if err1 != nil || err2 != nil || string(x) != string(y) || xi < floor[w] {
					problems = append(problems, fmt.Sprintf("backup %d writer %d: x=%q y=%q (%v %v), acknowledged before the backup: %d", b, w, x, y, err1, err2, floor[w]))
				}
			}
			return nil
		})
		rs.Close()
		os.RemoveAll(filepath.Dir(target))
		os.Remove(from)
	}
}

// TestCommitFunctionCannotOverflowTransactionSize: a transaction may set
// at most 65,535 keys, since each value records the transaction's size in
// 16 bits and recovery cuts a final transaction that holds fewer values
// than that. UpdateLocked's commit function may stage more keys after the
// check: a transaction that ends up with 65,536 keys must be refused (or
// stay all-or-nothing), not recorded with a size that wrapped to 0, which
// makes a torn copy of it look whole.
func TestCommitFunctionCannotOverflowTransactionSize(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.db")
	st := openAcked(t, path)
	lk := st.Lock()
	err := lk.UpdateLocked(func(tx *Tx) error {
		for i := range 0xffff {
			tx.Set(fmt.Sprintf("b/%05d", i), []byte{1})
		}
		return nil
	}, func(tx *Tx) error {
		tx.Set("m/extra", []byte{2})
		return nil
	})
	lk.Unlock()
	if err != nil {
		st.Close()
		return // refused: fine
	}
	if err := st.CloseUnclean(); err != nil {
		t.Fatal(err)
	}
	if _, err := CutTransactions(path, 1, true); err != nil { // a crash in the middle of its write
		t.Fatal(err)
	}
	st = openAcked(t, path)
	defer st.Close()
	n := 0
	if err := st.Scan("b/", func(string, []byte, error) bool { n++; return true }); err != nil {
		t.Fatal(err)
	}
	if n != 0 && n != 0xffff {
		t.Fatalf("a transaction of 65,536 keys torn in the middle of its write: %d of its keys kept after the open; want all or none", n)
	}
}

// TestCommitFunctionSetsInADeleteAreNotDropped: a transaction either
// sets keys or deletes one. UpdateLocked's commit function may stage
// writes to any key; staged in a transaction whose first function deleted
// a key, they must make the transaction fail, not be dropped while the
// transaction is acknowledged.
func TestCommitFunctionSetsInADeleteAreNotDropped(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.db")
	st := openAcked(t, path)
	defer st.Close()
	setAcked(t, st, "gone")
	lk := st.Lock()
	err := lk.UpdateLocked(func(tx *Tx) error {
		tx.Delete("gone")
		return nil
	}, func(tx *Tx) error {
		tx.Set("m/checkpoint", []byte("written in the commit function"))
		return nil
	})
	lk.Unlock()
	if err != nil {
		return // refused: fine
	}
	got := heldState(t, st, "m/checkpoint")
	if got["m/checkpoint"] == "absent" {
		t.Fatalf("UpdateLocked acknowledged a transaction that deleted a key and whose commit function set m/checkpoint; m/checkpoint afterwards: %s; want it written, or the transaction refused", got["m/checkpoint"])
	}
}

// TestOpenMemoryOfHugeValues: opening a store costs memory in proportion
// to its file: a file of a few large values (and a large key) must open
// with allocations a small multiple of its size.
func TestOpenMemoryOfHugeValues(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.db")
	st := openAcked(t, path)
	big := bytes.Repeat([]byte{'v'}, 8<<20)
	key := "k/" + string(bytes.Repeat([]byte{'k'}, 1<<20))
	for i := range 3 {
		if err := st.Update(nil, func(tx *Tx) error { tx.Set(key, big[i:]); tx.Set("small", []byte{1}); return nil }); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	size := fileSize(t, path)
	big = nil
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	st, err := Open(path, Options{LockKey: unlocked})
	if err != nil {
		t.Fatal(err)
	}
	runtime.ReadMemStats(&after)
	defer st.Close()
	alloc := after.TotalAlloc - before.TotalAlloc
	t.Logf("file %d MiB, open allocated %d MiB", size>>20, alloc>>20)
	if alloc > uint64(4*size) {
		t.Fatalf("Open of a %d-byte file allocated %d bytes; want at most 4 times the file", size, alloc)
	}
}

// TestOpenManyTinyTransactions: a file of many tiny transactions (one
// small key each) opens with memory a small multiple of the file's size.
func TestOpenManyTinyTransactions(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.db")
	const n = 300_000
	var buf bytes.Buffer
	put := func(k string, v string) {
		fmt.Fprintf(&buf, "*3\r\n$3\r\nset\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n", len(k), k, len(v), v)
	}
	put(epochKey, frame(epochKey, 1, 1, 0, []byte{1}))
	for i := range n {
		k := fmt.Sprintf("k/%07d", i)
		put(k, frame(k, uint64(i+2), 1, 0, []byte{byte(i)}))
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	size := int64(buf.Len())
	buf = bytes.Buffer{}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	start := time.Now()
	st, err := Open(path, Options{LockKey: unlocked})
	if err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	runtime.GC()
	runtime.ReadMemStats(&after)
	defer st.Close()
	held := int64(after.HeapAlloc) - int64(before.HeapAlloc)
	t.Logf("file %d KiB, %d transactions: open took %v, holds %d KiB, allocated %d KiB", size>>10, n, took, held>>10, (after.TotalAlloc-before.TotalAlloc)>>10)
	if held > 8*size {
		t.Fatalf("an open store of a %d-byte file of %d tiny transactions holds %d bytes; want at most 8 times the file", size, n, held)
	}
}

// TestRewriteInterruptedRightAfterLinkLeavesNoPrev: a rewrite first gives
// the store's file a second name (data.db.prev, a hard link) and only
// then writes the new file. A crash right after the link leaves both
// names on the same file. The next open goes back to data.db.prev, which
// must then be gone: operations.md says it is present only while the
// file is being rewritten (a stale one makes every later start log an
// interrupted rewrite, and Backup copy it instead of the store's file).
func TestRewriteInterruptedRightAfterLinkLeavesNoPrev(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.db")
	st := openAcked(t, path)
	setAcked(t, st, "a")
	if err := st.CloseUnclean(); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(path, prevPath(path)); err != nil { // the crash: right after Shrink's link
		t.Fatal(err)
	}
	st = openAcked(t, path)
	defer st.Close()
	if got := heldState(t, st, "a"); !allOK(got) {
		t.Fatalf("after the interrupted rewrite: %v", got)
	}
	if _, err := os.Stat(prevPath(path)); err == nil {
		t.Fatalf("%s still there after the open that went back to it; want it gone", prevPath(path))
	}
}

// TestCaughtUpRecordedOnlyOnceDurable: a new incarnation decides no
// reservation until anti-entropy has brought back what its peers hold
// (catch-up); CaughtUp then records, durably, that it is over. With
// everysec the states catch-up wrote are only in the file: if CaughtUp
// records the end of catch-up before an fsync covers them, a power loss
// right after loses those states while the identity says the region
// caught up, and a run that issued no dot restarts as the same
// incarnation, out of catch-up, deciding on the counters it had before.
// Here every fsync fails meanwhile: CaughtUp must then fail (and the
// store stay in catch-up), not record the end of catch-up.
func TestCaughtUpRecordedOnlyOnceDurable(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.db")
	open := func() *Store {
		st, err := Open(path, Options{LockKey: unlocked, Durability: config.DurabilityEverySec})
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	st := open()
	if err := st.MarkUsed(); err != nil {
		t.Fatal(err)
	}
	setAcked(t, st, "a")
	if err := st.CloseUnclean(); err != nil { // a crash: the next run is a new incarnation, catching up
		t.Fatal(err)
	}
	st = open()
	defer st.Close()
	if !st.CatchingUp() {
		t.Fatal("the new incarnation is not catching up")
	}
	setAcked(t, st, "pulled-from-peer") // what anti-entropy brought (everysec: in the file)
	broken, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	broken.Close() // Sync on a closed file fails
	st.fileMu.Lock()
	good := st.syncFile
	st.syncFile = broken
	st.fileMu.Unlock()
	err = st.CaughtUp()
	st.fileMu.Lock()
	st.syncFile = good
	st.fileMu.Unlock()
	if err == nil && !st.CatchingUp() {
		t.Fatalf("CaughtUp recorded the end of catch-up (nil error) while no fsync could cover the states written during it; want it to fail and the store to stay in catch-up")
	}
}

// TestLostCatchUpTransactionsCatchUpAgain: what catch-up brought in is
// part of what the region decides from as a home (its own grants and
// commits, held by its peers). A later run that issues no dot and stops
// uncleanly, with the tail of the file lost (the catch-up's
// transactions), must not open as caught up: the store is short of a
// transaction it held when catch-up ended.
func TestLostCatchUpTransactionsCatchUpAgain(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.db")
	open := func() *Store {
		st, err := Open(path, Options{LockKey: unlocked, Durability: config.DurabilityEverySec})
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	st := open()
	if err := st.MarkUsed(); err != nil {
		t.Fatal(err)
	}
	setAcked(t, st, "a")
	if err := st.CloseUnclean(); err != nil {
		t.Fatal(err)
	}
	st = open()
	if !st.CatchingUp() {
		t.Fatal("test setup: the new incarnation is not catching up")
	}
	inc := st.Incarnation()
	for _, k := range []string{"pulled-1", "pulled-2", "pulled-3"} {
		setAcked(t, st, k) // what anti-entropy brought
	}
	if err := st.CaughtUp(); err != nil {
		t.Fatal(err)
	}
	if err := st.CloseUnclean(); err != nil { // no dot issued in this run
		t.Fatal(err)
	}
	if _, err := CutTransactions(path, 3, false); err != nil {
		t.Fatal(err)
	}
	st = open()
	defer st.Close()
	if !st.CatchingUp() || st.Incarnation() == inc {
		t.Fatalf("the store lost the 3 transactions catch-up brought, and opened with catching up %v, incarnation %d (was %d); want a new incarnation catching up", st.CatchingUp(), st.Incarnation(), inc)
	}
}
