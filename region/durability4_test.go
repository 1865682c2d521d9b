package region

import (
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/latticedb/lattice/crdt"
	"github.com/latticedb/lattice/region/config"
	"github.com/latticedb/lattice/region/store"
)

// TestStoreOfAnotherPartitionRefused: each partition of a region keeps a
// store of its own, a replica of that partition only (its dots, counters
// and keys). A store written as partition 0 of 4 and then opened as
// partition 1 of 4 (a restore of the wrong snapshot, a volume mounted
// under the wrong partition's directory) holds keys of another partition
// and goes on from partition 0's counters, so the node would answer its
// own keys as empty and issue dots that partition 1's peers already hold
// from partition 1's real store. NewNode refuses a store of another
// partition count for that reason; it must refuse a store of another
// partition of the same count too.
func TestStoreOfAnotherPartitionRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "us-east", "p0000", "data.db")
	open := func(part int) (*store.Store, *Node, error) {
		st, err := OpenStore(path, store.Options{})
		if err != nil {
			t.Fatal(err)
		}
		n, err := NewNode(Options{Name: "us-east", Store: st, ExpiryInterval: time.Hour, Partitions: 4, Partition: part})
		if err != nil {
			st.Close()
			return nil, nil, err
		}
		return st, n, nil
	}
	st, n, err := open(0)
	if err != nil {
		t.Fatal(err)
	}
	id := ""
	for i := 0; id == ""; i++ {
		if c := fmt.Sprintf("cart-%d", i); config.PartitionOf(c, 4) == 0 {
			id = c
		}
	}
	if _, err := n.AddItem(bg, id, "sku-1", 1); err != nil {
		t.Fatal(err)
	}
	n.Close()
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	st, n, err = open(1)
	if err == nil {
		defer st.Close()
		defer n.Close()
		t.Fatalf("NewNode opened as partition 1 of 4 a store written as partition 0 of 4 (applied context %v); want it refused, as a store of another partition count is", n.Applied())
	}
}

// TestDamagedReservationIsNotServedAsUnknown: a reservation record
// ("r/ID") exists only at its home, so operations.md promises that a
// request reading a damaged one answers 503 unavailable until the region
// is restored from a backup, never that the damage is served as
// something else. A GET, a commit and a release of a reservation whose
// stored record fails its checksum must not answer 404 not_found (a hold
// the store lost is unknown: its client would take its units for free).
func TestDamagedReservationIsNotServedAsUnknown(t *testing.T) {
	clock := newFakeClock()
	tn := openNode(t, t.TempDir(), clock)
	must[Item](t)(tn.Adjust(bg, "sku-1", 10, "stock"))
	res := must[Reservation](t)(tn.Reserve(bg, "sku-1", 2, time.Minute, Idem{}))
	tn.close()
	flipStoredByte(t, tn.path, "r/"+res.ID)
	n, _, _ := reopen(t, tn.path, clock)
	for _, op := range []struct {
		name string
		do   func() (Reservation, error)
	}{
		{"get", func() (Reservation, error) { return n.GetReservation(bg, res.ID) }},
		{"commit", func() (Reservation, error) { return n.Commit(bg, res.ID, Idem{}) }},
		{"release", func() (Reservation, error) { return n.Release(bg, res.ID, Idem{}) }},
	} {
		got, err := op.do()
		var e *Error
		if !errors.As(err, &e) || e.Code != CodeUnavailable {
			t.Errorf("%s of reservation %s whose stored record is damaged: %+v, %v; want %s", op.name, res.ID, got, err, CodeUnavailable)
		}
	}
}

// TestOpenSplitsManyLargeWholeCarts: a store written before carts were
// split holds each cart whole under "c/ID"; NewNode splits them into a
// head and one key per line on open. A store of 66 carts of 1,000 skus
// each (MaxCartSKUs) is valid content of such a store: the region must
// open it and serve every cart, whatever batches the conversion uses.
func TestOpenSplitsManyLargeWholeCarts(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "us-east", "data.db")
	st, err := OpenStore(path, store.Options{Durability: config.DurabilityEverySec})
	if err != nil {
		t.Fatal(err)
	}
	const carts, skus = 66, MaxCartSKUs
	for c := range carts {
		old := &crdt.Cart{Entries: map[crdt.Dot]crdt.Line{}}
		for i := range skus {
			d := crdt.Dot{Replica: "eu-west", Counter: uint64(c*skus + i + 1)}
			old.Entries[d] = crdt.Line{SKU: fmt.Sprintf("sku-%04d", i), Kind: crdt.KindAdd, N: 1}
			old.Ctx.Insert(d)
		}
		id := fmt.Sprintf("old-%02d", c)
		if err := st.Update([]string{"c/" + id}, func(tx *store.Tx) error {
			tx.Set("c/"+id, crdt.EncodeCart(old))
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	st, err = OpenStore(path, store.Options{Durability: config.DurabilityEverySec})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	n, err := NewNode(Options{Name: "us-east", Store: st, Clock: newFakeClock(), ExpiryInterval: time.Hour})
	if err != nil {
		t.Fatalf("opening a store of %d whole carts of %d skus each: %v; want the carts split and served", carts, skus, err)
	}
	defer n.Close()
	got := must[Cart](t)(n.GetCart(bg, "old-65"))
	if len(got.Items) != skus {
		t.Fatalf("cart old-65 after the split: %d skus, want %d", len(got.Items), skus)
	}
}
