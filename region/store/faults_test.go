package store

import (
	"fmt"
	"github.com/latticedb/lattice/region/config"
	"os"
	"path/filepath"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// faultStore opens a bare store at path with everysec durability.
func faultStore(t *testing.T, path string) *Store {
	t.Helper()
	st, err := Open(path, Options{LockKey: unlocked, Durability: config.DurabilityEverySec})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// faultWrite writes transaction i: i%3+1 keys w<i>/<j>.
func faultWrite(t *testing.T, st *Store, i int) {
	t.Helper()
	err := st.Update(nil, func(tx *Tx) error {
		for j := range i%3 + 1 {
			tx.Set(fmt.Sprintf("w%d/%d", i, j), []byte(fmt.Sprintf("value of write %d", i)))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// faultWrites returns which of the writes 0..n-1 the store holds, checking
// that each is there whole or not at all.
func faultWrites(t *testing.T, st *Store, n int) []int {
	t.Helper()
	var held []int
	err := st.View(nil, func(r Reader) error {
		for i := range n {
			got := 0
			for j := range i%3 + 1 {
				if _, ok, err := r.Get(fmt.Sprintf("w%d/%d", i, j)); err != nil {
					return err
				} else if ok {
					got++
				}
			}
			switch got {
			case 0:
			case i%3 + 1:
				held = append(held, i)
			default:
				t.Errorf("write %d is there in part: %d of %d keys", i, got, i%3+1)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return held
}

func faultFileSize(t *testing.T, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

// TestTransactionsListsEveryWrite checks that Transactions finds each
// write as one transaction of as many commands as it set keys, back to
// back up to the end of the file.
func TestTransactionsListsEveryWrite(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.db")
	st := faultStore(t, path)
	for i := range 10 {
		faultWrite(t, st, i)
	}
	if err := st.CloseUnclean(); err != nil {
		t.Fatal(err)
	}
	txs, err := Transactions(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(txs) < 10 {
		t.Fatalf("%d transactions, want at least the 10 writes", len(txs))
	}
	var pos int64
	for _, tx := range txs {
		if tx.Start != pos || tx.End <= tx.Start || tx.Torn || tx.Commands != tx.Declared {
			t.Fatalf("transaction %+v (the previous ended at %d)", tx, pos)
		}
		pos = tx.End
	}
	if size := faultFileSize(t, path); pos != size {
		t.Fatalf("the transactions end at %d, the file at %d", pos, size)
	}
	last := txs[len(txs)-10:]
	for i, tx := range last {
		if tx.Commands != i%3+1 {
			t.Fatalf("write %d is %d commands, want %d", i, tx.Commands, i%3+1)
		}
		if i > 0 && tx.TxID <= last[i-1].TxID {
			t.Fatalf("transaction ids %d then %d", last[i-1].TxID, tx.TxID)
		}
	}
}

// TestCutTransactions cuts the last k transactions off a store file, at a
// transaction boundary (a lost tail) and in the middle of one (a torn
// tail): the reopened store holds exactly the writes before them, each
// whole, and only the torn cut is one its recovery had to finish.
func TestCutTransactions(t *testing.T) {
	for _, torn := range []bool{false, true} {
		for _, k := range []int{1, 2, 5} {
			t.Run(fmt.Sprintf("torn=%v/k=%d", torn, k), func(t *testing.T) {
				path := filepath.Join(t.TempDir(), "s.db")
				st := faultStore(t, path)
				const n = 8
				for i := range n {
					faultWrite(t, st, i)
				}
				if err := st.CloseUnclean(); err != nil {
					t.Fatal(err)
				}
				before := faultFileSize(t, path)
				txs, err := Transactions(path)
				if err != nil {
					t.Fatal(err)
				}
				first := txs[len(txs)-k]
				cut, err := CutTransactions(path, k, torn)
				if err != nil {
					t.Fatal(err)
				}
				size := faultFileSize(t, path)
				if cut != before-size {
					t.Fatalf("reported %d bytes cut, the file lost %d", cut, before-size)
				}
				if !torn && size != first.Start {
					t.Fatalf("cut to %d, want the start of the transaction at %d", size, first.Start)
				}
				if torn {
					if size <= first.Start || size >= first.End {
						t.Fatalf("torn cut to %d, want inside [%d, %d)", size, first.Start, first.End)
					}
					after, err := Transactions(path)
					if err != nil {
						t.Fatal(err)
					}
					if l := after[len(after)-1]; !l.Torn || l.Start != first.Start || l.End != size {
						t.Fatalf("last transaction after a torn cut: %+v", l)
					}
				}
				m := newMetrics()
				st, err = Open(path, Options{LockKey: unlocked, Durability: config.DurabilityEverySec, Metrics: m})
				if err != nil {
					t.Fatal(err)
				}
				defer st.Close()
				if tornTails := testutil.ToFloat64(m.TornTails); (tornTails == 1) != torn {
					t.Fatalf("the open cut %v torn tails", tornTails)
				}
				held := faultWrites(t, st, n)
				if len(held) != n-k || (len(held) > 0 && held[len(held)-1] != n-k-1) {
					t.Fatalf("after cutting %d transactions the store holds writes %v", k, held)
				}
			})
		}
	}
}

// TestCutTransactionsPastTheStart empties a file that holds fewer
// transactions than asked.
func TestCutTransactionsPastTheStart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.db")
	st := faultStore(t, path)
	faultWrite(t, st, 0)
	if err := st.CloseUnclean(); err != nil {
		t.Fatal(err)
	}
	before := faultFileSize(t, path)
	cut, err := CutTransactions(path, 1000, false)
	if err != nil || cut != before || faultFileSize(t, path) != 0 {
		t.Fatalf("cut %d of %d bytes, err %v", cut, before, err)
	}
	if _, err := CutTransactions(path, 0, false); err == nil {
		t.Fatal("cut 0 transactions")
	}
}

// TestSyncNowIsAPowerLossPoint truncates a crashed store to the size SyncNow
// returned, as a power loss would leave it: the writes before the call
// are all there, none after it.
func TestSyncNowIsAPowerLossPoint(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.db")
	st := faultStore(t, path)
	for i := range 5 {
		faultWrite(t, st, i)
	}
	synced, err := st.SyncNow()
	if err != nil {
		t.Fatal(err)
	}
	if size := faultFileSize(t, path); synced != size {
		t.Fatalf("SyncNow covers %d bytes of a quiet file of %d", synced, size)
	}
	for i := 5; i < 9; i++ {
		faultWrite(t, st, i)
	}
	if err := st.CloseUnclean(); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, synced); err != nil {
		t.Fatal(err)
	}
	st = faultStore(t, path)
	if held := faultWrites(t, st, 9); fmt.Sprint(held) != "[0 1 2 3 4]" {
		t.Fatalf("after the power loss the store holds writes %v", held)
	}
	if _, err := st.SyncNow(); err != nil {
		t.Fatal(err)
	}
	mem, err := Open(":memory:", Options{LockKey: unlocked})
	if err != nil {
		t.Fatal(err)
	}
	defer mem.Close()
	if n, err := mem.SyncNow(); n != 0 || err != nil {
		t.Fatalf("SyncNow of a store in memory: %d, %v", n, err)
	}
}

// TestCloseUncleanIsACrash checks that the next open takes CloseUnclean
// for a crash: a run that issued a dot goes on as a new incarnation (a
// clean Close keeps it), and closing again does nothing.
