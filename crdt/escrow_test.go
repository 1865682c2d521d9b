package crdt

import (
	"bytes"
	"math/rand/v2"
	"strings"
	"testing"
)

// randomEscrowItem makes an item of random stock operations and escrow
// counters of three regions, some through a second incarnation.
func randomEscrowItem(r *rand.Rand) *Item {
	it := &Item{}
	home := []ReplicaID{"us-east", Incarnation("us-east", 7)}
	regions := []string{"eu-west", "ap-south"}
	for range 1 + r.IntN(8) {
		switch r.IntN(4) {
		case 0:
			it.Join(it.Restock(home[r.IntN(2)], uint64(1+r.IntN(50))))
		case 1:
			it.Join(it.Grant(home[r.IntN(2)], regions[r.IntN(2)], uint64(1+r.IntN(20))))
		case 2:
			rep := ReplicaID(regions[r.IntN(2)])
			if r.IntN(2) == 0 {
				rep = Incarnation(string(rep), 3)
			}
			it.Join(it.UseRights(rep, uint64(1+r.IntN(5))))
		case 3:
			it.Join(it.ReturnRights(ReplicaID(regions[r.IntN(2)]), uint64(1+r.IntN(5))))
		}
	}
	return it
}

// TestEscrowJoinLaws checks that items with escrow join as a semilattice
// (commutative, associative, idempotent, compared by canonical encoding)
// and survive the encoding unchanged.
func TestEscrowJoinLaws(t *testing.T) {
	const seed = 20261205
	t.Logf("seed %d", seed)
	r := rand.New(rand.NewPCG(seed, 0))
	for range 2000 {
		a, b, c := randomEscrowItem(r), randomEscrowItem(r), randomEscrowItem(r)
		ab, ba := joinItems(a, b), joinItems(b, a)
		if !bytes.Equal(EncodeItem(ab), EncodeItem(ba)) {
			t.Fatal("join is not commutative")
		}
		if !bytes.Equal(EncodeItem(joinItems(ab, c)), EncodeItem(joinItems(a, joinItems(b, c)))) {
			t.Fatal("join is not associative")
		}
		if !bytes.Equal(EncodeItem(joinItems(a, a)), EncodeItem(a)) {
			t.Fatal("join is not idempotent")
		}
		if ab.Brings(a) || !(a.Brings(b) || bytes.Equal(EncodeItem(joinItems(a, b)), EncodeItem(a))) {
			t.Fatal("Brings disagrees with Join")
		}
		enc := EncodeItem(ab)
		back, err := DecodeItem(enc)
		if err != nil {
			t.Fatalf("DecodeItem: %v", err)
		}
		if !bytes.Equal(EncodeItem(back), enc) || back.Outstanding("eu-west") != ab.Outstanding("eu-west") {
			t.Fatal("the round trip changed the item")
		}
	}
}

// TestEscrowArithmetic checks the rights a state shows, and that a use
// decrements stock in the same delta.
func TestEscrowArithmetic(t *testing.T) {
	it := &Item{}
	it.Join(it.Restock("us-east", 100))
	it.Join(it.Grant("us-east", "eu-west", 30))
	it.Join(it.Grant("us-east", "ap-south", 10))
	u := it.UseRights("eu-west", 4)
	if u.Stock.Value() != -4 || u.Used("eu-west") != 4 {
		t.Fatalf("a use's delta: stock %d, used %d", u.Stock.Value(), u.Used("eu-west"))
	}
	it.Join(u)
	it.Join(it.ReturnRights("eu-west", 6))
	// A new incarnation of eu-west counts toward the same region.
	it.Join(it.UseRights(Incarnation("eu-west", 2), 5))
	if got := it.Outstanding("eu-west"); got != 30-4-6-5 {
		t.Fatalf("eu-west outstanding %d", got)
	}
	if got := it.OutstandingAll("us-east"); got != 15+10 {
		t.Fatalf("outstanding everywhere %d", got)
	}
	if it.Stock.Value() != 91 {
		t.Fatalf("stock %d", it.Stock.Value())
	}
	// Over-returned rights count as none, never negative.
	it.Join(it.ReturnRights("ap-south", 50))
	if it.Outstanding("ap-south") != 0 {
		t.Fatalf("ap-south outstanding %d", it.Outstanding("ap-south"))
	}
	// An item without escrow encodes as before (four fields).
	plain := (&Item{}).Restock("us-east", 1)
	if b := EncodeItem(plain); b[0] != 0x84 {
		t.Fatalf("an item without escrow starts with %#x", b[0])
	}
}

// TestEscrowDecodeRejects checks that malformed escrow records are
// refused.
func TestEscrowDecodeRejects(t *testing.T) {
	good := (&Item{}).Grant("us-east", "eu-west", 3)
	enc := EncodeItem(good)
	if _, err := DecodeItem(enc); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		it   *Item
		want string
	}{
		{"use written by another region", &Item{Escrow: map[EscrowKey]uint64{{Kind: EscrowUsed, Region: "eu-west", Replica: "us-east"}: 1}}, "written by"},
		{"unknown kind", &Item{Escrow: map[EscrowKey]uint64{{Kind: 9, Region: "eu-west", Replica: "us-east"}: 1}}, "kind"},
		{"region with an incarnation", &Item{Escrow: map[EscrowKey]uint64{{Kind: EscrowGrant, Region: "eu-west+2", Replica: "us-east"}: 1}}, "region"},
		{"out of range", &Item{Escrow: map[EscrowKey]uint64{{Kind: EscrowGrant, Region: "eu-west", Replica: "us-east"}: MaxCount + 1}}, "out of range"},
	} {
		_, err := DecodeItem(EncodeItem(tc.it))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error containing %q", tc.name, err, tc.want)
		}
	}
	// An empty escrow array is not canonical.
	plain := EncodeItem(&Item{})
	emptyEscrow := append(append([]byte{0x85}, plain[1:]...), 0x80)
	if _, err := DecodeItem(emptyEscrow); err == nil {
		t.Error("an item with an empty escrow array decoded")
	}
}
