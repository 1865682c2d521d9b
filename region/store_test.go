package region

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

func fileSize(t *testing.T, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// commandEnds returns the offsets at which each command after from ends.
func commandEnds(t *testing.T, path string, from int64) []int64 {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Seek(from, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(f)
	var ends []int64
	pos := from
	for {
		_, size, err := readCommand(r)
		if err == io.EOF {
			return ends
		}
		if err != nil {
			t.Fatal(err)
		}
		pos += size
		ends = append(ends, pos)
	}
}

// TestTornTransactionIsAllOrNothing writes a reservation (one logical
// write that sets several keys), then cuts the file at every command
// boundary inside it and in the middle of every command: after reopening,
// the reservation is either wholly there or wholly absent, never half.
func TestTornTransactionIsAllOrNothing(t *testing.T) {
	dir := t.TempDir()
	clock := newFakeClock()
	n := openNode(t, dir, clock)
	must[Item](t)(n.Restock(bg, "w", 10))
	must[Cart](t)(n.AddItem(bg, "c", "w", 1))
	must[Item](t)(n.Restock(bg, "other", 1))
	must[Reservation](t)(n.Reserve(bg, "other", 1, time.Minute, Idem{})) // reserves a block of ids
	before := fileSize(t, n.path)
	r := must[Reservation](t)(n.Reserve(bg, "w", 3, time.Minute, fp("torn")))
	n.close()
	full := filepath.Join(dir, "full.db")
	copyFile(t, n.path, full)
	ends := commandEnds(t, full, before)
	// The last command is the close marker (a transaction of its own that
	// a clean close appends); the reservation's commands come before it.
	ends = ends[:len(ends)-1]
	if len(ends) < 5 {
		t.Fatalf("a reservation should write several keys in one transaction, got %d commands", len(ends))
	}
	var cuts []int64
	prev := before
	for _, e := range ends {
		cuts = append(cuts, e, prev+(e-prev)/2)
		prev = e
	}
	for _, at := range cuts {
		t.Run(fmt.Sprintf("cut@%d", at-before), func(t *testing.T) {
			d := t.TempDir()
			p := filepath.Join(d, "us-east", "data.db")
			copyFile(t, full, p)
			if err := os.Truncate(p, at); err != nil {
				t.Fatal(err)
			}
			node, _, m := reopen(t, p, clock)
			complete := at == ends[len(ends)-1]
			it := must[Item](t)(node.GetItem(bg, "w", false))
			got, gerr := node.GetReservation(bg, r.ID)
			if complete {
				// The file lost its close marker (a new incarnation, caught
				// up at once, alone): the hold stays.
				if gerr != nil || got.State != StateHeld || it.Reserved != 3 || it.Stock != 10 {
					t.Fatalf("whole transaction lost: %+v %+v %v", it, got, gerr)
				}
				return
			}
			if it.Reserved != 0 || it.Stock != 10 {
				t.Fatalf("half-applied transaction: %+v", it)
			}
			wantCode(t, gerr, CodeNotFound)
			if c := must[Cart](t)(node.GetCart(bg, "c")); qtyOf(c, "w") != 1 {
				t.Fatalf("earlier write lost: %+v", c)
			}
			if got := testutil.ToFloat64(m.TornTails); got != 1 {
				t.Fatalf("torn tail metric = %v", got)
			}
			// The key was never used as far as the store knows.
			r2 := must[Reservation](t)(node.Reserve(bg, "w", 3, time.Minute, fp("torn")))
			if r2.State != StateHeld {
				t.Fatalf("retry after torn write: %+v", r2)
			}
		})
	}
}

// TestChecksumDamageIsRefused flips a byte inside a stored cart value: the
// region starts, reports the damage, refuses to serve or change that cart
// and serves the others.
func TestChecksumDamageIsRefused(t *testing.T) {
	dir := t.TempDir()
	clock := newFakeClock()
	n := openNode(t, dir, clock)
	must[Cart](t)(n.AddItem(bg, "victim", "apple", 2))
	must[Cart](t)(n.AddItem(bg, "other", "pear", 1))
	n.close()

	flipStoredByte(t, n.path, "c/victim")

	node, st, m := reopen(t, n.path, clock)
	if got := testutil.ToFloat64(m.ChecksumFailures); got != 1 {
		t.Fatalf("checksum failures = %v", got)
	}
	if c := st.Corrupt(); len(c) != 1 || c[0] != "c/victim" {
		t.Fatalf("corrupt keys: %v", c)
	}
	wantCode(t, second(node.GetCart(bg, "victim")), CodeUnavailable)
	wantCode(t, second(node.AddItem(bg, "victim", "apple", 1)), CodeUnavailable)
	if c := must[Cart](t)(node.GetCart(bg, "other")); qtyOf(c, "pear") != 1 {
		t.Fatalf("undamaged cart: %+v", c)
	}
	g, err := node.ReadObjects([]string{"victim", "other"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := g.Carts["victim"]; ok || g.Carts["other"] == nil {
		t.Fatalf("a damaged value must never be replicated: %v", g.Carts)
	}
}

func TestShrinkKeepsDataAndBoundsFile(t *testing.T) {
	dir := t.TempDir()
	st, err := OpenStore(filepath.Join(dir, "s.db"), StoreOptions{ShrinkMinBytes: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	val := bytes.Repeat([]byte("x"), 512)
	for i := range 2000 {
		if err := st.Update(func(tx *Tx) error {
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
	if err := st.Update(func(tx *Tx) error { tx.Set("after", []byte("shrink")); return nil }); err != nil {
		t.Fatal(err)
	}
	st.Close()
	st2, err := OpenStore(filepath.Join(dir, "s.db"), StoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer st2.Close()
	err = st2.View(func(r Reader) error {
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

// TestGroupCommitSharesFsyncs checks that concurrent durable writers are
// batched: fewer fsyncs than writes, and every write readable afterwards.
func TestGroupCommitSharesFsyncs(t *testing.T) {
	m := NewMetrics(nil)
	st, err := OpenStore(filepath.Join(t.TempDir(), "g.db"), StoreOptions{Metrics: m})
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
				if err := st.Update(func(tx *Tx) error {
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

// TestGroupCommitFsyncFailure checks that when fsync fails no durable
// write is acknowledged nor reported durable (OnDurable) and none is left
// waiting; that the store then refuses writes even once fsync would work
// again (after a failed fsync Linux may have dropped the unwritten pages,
// so a later fsync's success proves nothing); and that reopening the file
// gives a working store again.
func TestGroupCommitFsyncFailure(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f.db")
	st, err := OpenStore(path, StoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	broken, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	broken.Close() // Sync on a closed file fails
	st.fileMu.Lock()
	good := st.syncFile
	st.syncFile = broken
	st.fileMu.Unlock()

	var durable sync.Map // key → times its OnDurable ran
	write := func(w, i int) error {
		key := fmt.Sprintf("w/%d/%d", w, i)
		err := st.Update(func(tx *Tx) error {
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

	st.fileMu.Lock()
	st.syncFile = good
	st.fileMu.Unlock()
	if !st.Failed() {
		t.Fatal("the store did not fail on a failed fsync")
	}
	if err := write(0, each); !errors.Is(err, ErrStoreFailed) {
		t.Fatalf("write after a failed fsync: %v, want ErrStoreFailed", err)
	}
	st.Close()
	again, err := OpenStore(path, StoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	if err := again.Update(func(tx *Tx) error { tx.Set("after", []byte("restart")); return nil }); err != nil {
		t.Fatalf("write after reopening: %v", err)
	}
}

// TestFrameLayout checks the stored value layout: crc32c of the rest, the
// transaction id, the key count and the payload, and that unframe reads it
// back and refuses it once any byte changes.
func TestFrameLayout(t *testing.T) {
	for _, payload := range [][]byte{nil, {}, []byte("x"), bytes.Repeat([]byte("cart"), 100)} {
		v := []byte(frame(0x0102030405060708, 0x0a0b, payload))
		rest := binary.BigEndian.AppendUint64(nil, 0x0102030405060708)
		rest = binary.BigEndian.AppendUint16(rest, 0x0a0b)
		rest = append(rest, payload...)
		want := append(binary.BigEndian.AppendUint32(nil, crc32.Checksum(rest, crcTable)), rest...)
		if !bytes.Equal(v, want) {
			t.Fatalf("frame(%q) = %x, want %x", payload, v, want)
		}
		txid, n, p, err := unframe(v)
		if err != nil || txid != 0x0102030405060708 || n != 0x0a0b || !bytes.Equal(p, payload) {
			t.Fatalf("unframe(frame(%q)) = %x, %x, %q, %v", payload, txid, n, p, err)
		}
		for i := range v {
			bad := bytes.Clone(v)
			bad[i] ^= 0x40
			if _, _, _, err := unframe(bad); err == nil {
				t.Fatalf("unframe accepts %x, byte %d flipped", bad, i)
			}
		}
	}
}

// TestTxStagesOneValuePerKey checks that a transaction's reads see its own
// writes, that setting a key again replaces its staged value, whether the
// transaction stages a few keys or many, and that what was staged last is
// what is committed.
func TestTxStagesOneValuePerKey(t *testing.T) {
	st, err := OpenStore(filepath.Join(t.TempDir(), "s.db"), StoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	for _, keys := range []int{1, indexFrom, indexFrom + 1, 100} {
		want := map[string]string{}
		err := st.Update(func(tx *Tx) error {
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
		err = st.View(func(r Reader) error {
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

// TestDamageInLastTransactionIsNotTorn flips a byte in a value of the
// file's last transaction: recovery must not take the transaction for a
// torn one and cut it (which would lose the applied context written with
// it, so the region's next write would reuse a dot); the damaged value
// alone is refused.
func TestDamageInLastTransactionIsNotTorn(t *testing.T) {
	dir := t.TempDir()
	clock := newFakeClock()
	n := openNode(t, dir, clock)
	must[Cart](t)(n.AddItem(bg, "victim", "apple", 2))
	tok := n.Token()
	n.close()
	flipStoredByte(t, n.path, "c/victim")
	node, _, m := reopen(t, n.path, clock)
	if got := testutil.ToFloat64(m.TornTails); got != 0 {
		t.Fatalf("a damaged value was taken for a torn transaction (%v cut)", got)
	}
	if err := node.WaitToken(bg, tok); err != nil {
		t.Fatalf("the applied context lost the write's dot: %v", err)
	}
	wantCode(t, second(node.GetCart(bg, "victim")), CodeUnavailable)
}

// flipStoredByte flips a byte inside the CBOR payload of the last value
// stored under key in the BuntDB file at path.
func flipStoredByte(t *testing.T, path, key string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	head := []byte(key + "\r\n$")
	i := bytes.LastIndex(b, head)
	if i < 0 {
		t.Fatalf("%s not found in the file", key)
	}
	j := i + len(head) + bytes.Index(b[i+len(head):], []byte("\r\n")) + 2
	b[j+valueHeader+3] ^= 0x40
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// reopen opens the store file at path with fresh metrics and a region
// "us-east" on it, closed when the test ends.
func reopen(t *testing.T, path string, clock Clock) (*Node, *Store, *Metrics) {
	t.Helper()
	m := NewMetrics(nil)
	st, err := OpenStore(path, StoreOptions{Metrics: m})
	if err != nil {
		t.Fatal(err)
	}
	node, err := NewNode(Options{Name: "us-east", Store: st, Clock: clock, ExpiryInterval: time.Hour})
	if err != nil {
		st.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { node.Close(); st.Close() })
	return node, st, m
}
