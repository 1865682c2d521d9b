package protocol_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/latticedb/lattice/crdt"
	"github.com/latticedb/lattice/sync/protocol"
)

// TestRoundsShowEachSidesHomes: each side of a complete anti-entropy
// round learns the homes the other runs (Config.Homes): the initiator
// from the answer to its first digest, the responder from the objects
// that close the round. Ready.Synced reports them with the peer, which
// is what region.Node.SyncedWith decides from.
func TestRoundsShowEachSidesHomes(t *testing.T) {
	cfg := protocol.DefaultConfig()
	cfg.Buckets = 64
	a, b := newMemStore(cfg.Buckets), newMemStore(cfg.Buckets)
	r := crdt.ReplicaID("us-east")
	for i := range 20 {
		s := crdt.EncodeCart(cartWith(r, string(rune('a'+i)), 2))
		a.put("c/cart-"+string(rune('a'+i)), s)
		if i%2 == 0 {
			b.put("c/cart-"+string(rune('a'+i)), s)
		}
	}
	ca, cb := cfg, cfg
	ca.Homes, cb.Homes = "homes-of-a", "homes-of-b"
	p := newAEPairOf(t, [2]protocol.Config{ca, cb}, a, b)
	p.run(5 * time.Second)
	want := [2]protocol.Synced{{Peer: "eu-west", Homes: "homes-of-b"}, {Peer: "us-east", Homes: "homes-of-a"}}
	for i := range 2 {
		if len(p.synced[i]) == 0 {
			t.Fatalf("%s reported no completed round", p.names[i])
		}
		for _, s := range p.synced[i] {
			if s != want[i] {
				t.Fatalf("%s reported %+v, want %+v", p.names[i], s, want[i])
			}
		}
	}
}

// TestHomesNameBounded: a message naming homes longer than
// MaxHomesBytes is refused whole.
func TestHomesNameBounded(t *testing.T) {
	for _, n := range []int{protocol.MaxHomesBytes, protocol.MaxHomesBytes + 1} {
		m := &protocol.Message{Kind: protocol.KindObjects, Round: 1, Step: 1, Homes: strings.Repeat("h", n)}
		b, err := protocol.Encode(m)
		if err != nil {
			t.Fatal(err)
		}
		_, err = protocol.Decode(b, 64)
		if ok := n <= protocol.MaxHomesBytes; ok != (err == nil) {
			t.Fatalf("homes of %d bytes: decode error %v", n, err)
		}
	}
}

// TestHomesShownWithTheRound: the initiator of a round reports the
// peer's homes (Ready.Homes) once the comparison and its pulls are done,
// no later than the round itself completes.
func TestHomesShownWithTheRound(t *testing.T) {
	cfg := protocol.DefaultConfig()
	cfg.Buckets = 64
	a, b := newMemStore(cfg.Buckets), newMemStore(cfg.Buckets)
	r := crdt.ReplicaID("us-east")
	for i := range 200 {
		a.put(fmt.Sprintf("c/cart-%04d", i), crdt.EncodeCart(cartWith(r, fmt.Sprint(i), 3)))
	}
	ca, cb := cfg, cfg
	ca.Homes, cb.Homes = "homes-1", "homes-2"
	p := newAEPairOf(t, [2]protocol.Config{ca, cb}, a, b)
	p.run(3 * time.Second)
	for i, want := range []protocol.Synced{{Peer: "eu-west", Homes: "homes-2"}, {Peer: "us-east", Homes: "homes-1"}} {
		if len(p.homes[i]) == 0 || p.homes[i][0] != want {
			t.Fatalf("%s reported homes %+v, want %+v", p.names[i], p.homes[i], want)
		}
	}
}
