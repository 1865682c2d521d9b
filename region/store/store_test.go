package store

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
)

func fileSize(t *testing.T, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

func TestShrinkKeepsDataAndBoundsFile(t *testing.T) {
	dir := t.TempDir()
	st, err := Open(filepath.Join(dir, "s.db"), Options{LockKey: unlocked, ShrinkMinBytes: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	val := bytes.Repeat([]byte("x"), 512)
	for i := range 2000 {
		if err := st.Update(nil, func(tx *Tx) error {
			tx.Set(fmt.Sprintf("k/%d", i%50), val)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.MaybeShrink(); err != nil {
		t.Fatal(err)
	}
	file, live := st.Sizes()
	if file > 2*live {
		t.Fatalf("file %d bytes > 2 × live %d", file, live)
	}
	if err := st.Update(nil, func(tx *Tx) error { tx.Set("after", []byte("shrink")); return nil }); err != nil {
		t.Fatal(err)
	}
	st.Close()
	st2, err := Open(filepath.Join(dir, "s.db"), Options{LockKey: unlocked})
	if err != nil {
		t.Fatal(err)
	}
	defer st2.Close()
	err = st2.View(nil, func(r Reader) error {
		for i := range 50 {
			v, ok, err := r.Get(fmt.Sprintf("k/%d", i))
			if err != nil || !ok || !bytes.Equal(v, val) {
				return fmt.Errorf("k/%d after shrink: ok=%v err=%v", i, ok, err)
			}
		}
		if v, ok, _ := r.Get("after"); !ok || string(v) != "shrink" {
			return fmt.Errorf("write after shrink lost")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(st2.Corrupt()) != 0 {
		t.Fatalf("shrink produced damaged values: %v", st2.Corrupt())
	}
}

func TestGroupCommitSharesFsyncs(t *testing.T) {
	m := newMetrics()
	st, err := Open(filepath.Join(t.TempDir(), "g.db"), Options{LockKey: unlocked, Metrics: m})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	var start dtoHist
	start.read(t, m) // the store's own first write
	const writers, each = 32, 20
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				if err := st.Update(nil, func(tx *Tx) error {
					tx.Set(fmt.Sprintf("w/%d/%d", w, i), []byte{byte(i)})
					return nil
				}); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	var h dtoHist
	h.read(t, m)
	count, sum := h.count-start.count, h.sum-start.sum
	if sum != writers*each {
		t.Fatalf("fsync batches cover %d writes, want %d", sum, writers*each)
	}
	if count >= writers*each {
		t.Fatalf("%d fsyncs for %d concurrent writes: no group commit", count, writers*each)
	}
	t.Logf("%d writes made durable by %d fsyncs", sum, count)
}

func TestGroupCommitFsyncFailure(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f.db")
	st, err := Open(path, Options{LockKey: unlocked})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	mend := breakFsync(t, st)

	var durable sync.Map // key → times its OnDurable ran
	write := func(w, i int) error {
		key := fmt.Sprintf("w/%d/%d", w, i)
		err := st.Update(nil, func(tx *Tx) error {
			tx.Set(key, []byte{byte(i)})
			tx.OnDurable(func() {
				n, _ := durable.LoadOrStore(key, new(atomic.Int32))
				n.(*atomic.Int32).Add(1)
			})
			return nil
		})
		n, ok := durable.Load(key)
		switch {
		case err != nil && ok:
			t.Errorf("OnDurable of %s ran, but its Update failed: %v", key, err)
		case err == nil && (!ok || n.(*atomic.Int32).Load() != 1):
			t.Errorf("OnDurable of %s did not run exactly once before Update returned", key)
		}
		return err
	}
	const writers, each = 16, 10
	var wg sync.WaitGroup
	var mu sync.Mutex
	acked := 0
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				if err := write(w, i); err == nil {
					mu.Lock()
					acked++
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	if acked > 0 {
		t.Fatalf("%d writes acknowledged while fsync fails", acked)
	}

	mend()
	if !st.Failed() {
		t.Fatal("the store did not fail on a failed fsync")
	}
	if err := write(0, each); !errors.Is(err, ErrStoreFailed) {
		t.Fatalf("write after a failed fsync: %v, want ErrStoreFailed", err)
	}
	st.Close()
	again, err := Open(path, Options{LockKey: unlocked})
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	if err := again.Update(nil, func(tx *Tx) error { tx.Set("after", []byte("restart")); return nil }); err != nil {
		t.Fatalf("write after reopening: %v", err)
	}
}

func TestFrameLayout(t *testing.T) {
	const key = "c/cart-1"
	for _, payload := range [][]byte{nil, {}, []byte("x"), bytes.Repeat([]byte("cart"), 100)} {
		v := []byte(frame(key, 0x0102030405060708, 0x0a0b, 300, payload))
		rest := []byte{frameKeyed}
		rest = binary.AppendUvarint(rest, 0x0102030405060708)
		rest = binary.AppendUvarint(rest, 0x0a0b)
		rest = binary.AppendUvarint(rest, 300)
		rest = append(rest, payload...)
		want := append(binary.BigEndian.AppendUint32(nil, crc32.Checksum(append([]byte(key), rest...), crcTable)), rest...)
		if !bytes.Equal(v, want) {
			t.Fatalf("frame(%q) = %x, want %x", payload, v, want)
		}
		txid, n, mark, p, err := unframe(key, v)
		if err != nil || txid != 0x0102030405060708 || n != 0x0a0b || mark != 300 || !bytes.Equal(p, payload) {
			t.Fatalf("unframe(frame(%q)) = %x, %x, %d, %q, %v", payload, txid, n, mark, p, err)
		}
		for i := range v {
			bad := bytes.Clone(v)
			bad[i] ^= 0x40
			if _, _, _, _, err := unframe(key, bad); err == nil {
				t.Fatalf("unframe accepts %x, byte %d flipped", bad, i)
			}
		}
		// The value under another key: a damaged key.
		for i := range len(key) {
			other := []byte(key)
			other[i] ^= 0x02
			if _, _, _, _, err := unframe(string(other), v); err == nil {
				t.Fatalf("the value of %q accepted as %q's", key, other)
			}
		}

		// The layout before the key was under the checksum: read under
		// any key.
		rest[0] = frameMarked
		marked := append(binary.BigEndian.AppendUint32(nil, crc32.Checksum(rest, crcTable)), rest...)
		txid, n, mark, p, err = unframe("any", marked)
		if err != nil || txid != 0x0102030405060708 || n != 0x0a0b || mark != 300 || !bytes.Equal(p, payload) {
			t.Fatalf("unframe(%x) = %x, %x, %d, %q, %v", marked, txid, n, mark, p, err)
		}

		// The fixed layout of values written before marks existed.
		rest = binary.BigEndian.AppendUint64(nil, 0x0002030405060708)
		rest = binary.BigEndian.AppendUint16(rest, 0x0a0b)
		rest = append(rest, payload...)
		old := append(binary.BigEndian.AppendUint32(nil, crc32.Checksum(rest, crcTable)), rest...)
		txid, n, mark, p, err = unframe(key, old)
		if err != nil || txid != 0x0002030405060708 || n != 0x0a0b || mark != 0 || !bytes.Equal(p, payload) {
			t.Fatalf("unframe(%x) = %x, %x, %d, %q, %v", old, txid, n, mark, p, err)
		}
	}
}

// TestMarks checks that a transaction's mark is carried by its values and
// every later value (after RaiseMark too), and that MaxMarkSince finds the
// highest from the transaction that wrote a key on, across a reopen.
func TestMarks(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.db")
	st, err := Open(path, Options{LockKey: unlocked})
	if err != nil {
		t.Fatal(err)
	}
	set := func(st *Store, key string, mark uint64) {
		t.Helper()
		if err := st.Update(nil, func(tx *Tx) error {
			tx.Set(key, []byte(key))
			if mark > 0 {
				tx.Mark(mark)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	since := func(st *Store, key string, want uint64) {
		t.Helper()
		if got, err := st.MaxMarkSince(key); err != nil || got != want {
			t.Fatalf("MaxMarkSince(%q) = %d, %v, want %d", key, got, err, want)
		}
	}
	set(st, "a", 7)
	set(st, "cp", 0)
	since(st, "cp", 7) // the mark sticks
	since(st, "none", 7)
	set(st, "b", 9)
	set(st, "b", 0) // overwritten by a transaction without a mark of its own
	since(st, "cp", 9)
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	st, err = Open(path, Options{LockKey: unlocked})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	since(st, "cp", 9)
	set(st, "cp", 0) // a new run starts from no mark
	since(st, "cp", 0)
	st.RaiseMark(4)
	set(st, "c", 0)
	since(st, "cp", 4)
	since(st, "a", 9)
}

func TestTxStagesOneValuePerKey(t *testing.T) {
	st, err := Open(filepath.Join(t.TempDir(), "s.db"), Options{LockKey: unlocked})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	for _, keys := range []int{1, indexFrom, indexFrom + 1, 100} {
		want := map[string]string{}
		err := st.Update(nil, func(tx *Tx) error {
			for round := range 3 {
				for k := range keys {
					key, val := fmt.Sprintf("t/%d/%d", keys, k), fmt.Sprintf("%d-%d", round, k)
					tx.Set(key, []byte(val))
					want[key] = val
					if got, ok, err := tx.Get(key); err != nil || !ok || string(got) != val {
						t.Fatalf("Get(%s) in the transaction = %q, %v, %v; want %q", key, got, ok, err, val)
					}
				}
			}
			if len(tx.sets) != keys {
				t.Fatalf("%d keys set three times stage %d values", keys, len(tx.sets))
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		err = st.View(nil, func(r Reader) error {
			for key, val := range want {
				got, ok, err := r.Get(key)
				if err != nil || !ok || string(got) != val {
					t.Fatalf("Get(%s) after commit = %q, %v, %v; want %q", key, got, ok, err, val)
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}
