package region

import (
	"bytes"
	"fmt"
	"github.com/latticedb/lattice/region/store"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

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
	var ends []int64
	err := store.Commands(path, func(_ [][]byte, end int64) bool {
		if end > from {
			ends = append(ends, end)
		}
		return true
	})
	if err != nil {
		t.Fatal(err)
	}
	return ends
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
	if len(ends) < 4 {
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

// TestGroupCommitSharesFsyncs checks that concurrent durable writers are
// batched: fewer fsyncs than writes, and every write readable afterwards.
// TestGroupCommitFsyncFailure checks that when fsync fails no durable
// write is acknowledged nor reported durable (OnDurable) and none is left
// waiting; that the store then refuses writes even once fsync would work
// again (after a failed fsync Linux may have dropped the unwritten pages,
// so a later fsync's success proves nothing); and that reopening the file
// gives a working store again.
// TestFrameLayout checks the stored value layout: crc32c of the rest, the
// transaction id, the key count and the payload, and that unframe reads it
// back and refuses it once any byte changes.
// TestTxStagesOneValuePerKey checks that a transaction's reads see its own
// writes, that setting a key again replaces its staged value, whether the
// transaction stages a few keys or many, and that what was staged last is
// what is committed.
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
	b[j+14+3] ^= 0x40 // in the payload, past the 14-byte frame header (store/frame.go)
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// reopen opens the store file at path with fresh metrics and a region
// "us-east" on it, closed when the test ends.
func reopen(t *testing.T, path string, clock Clock) (*Node, *store.Store, *Metrics) {
	t.Helper()
	m := NewMetrics(nil)
	st, err := OpenStore(path, store.Options{Metrics: m.Store()})
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
