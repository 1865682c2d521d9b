package region

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/latticedb/lattice/crdt"
)

// TestPartitionTokenKeepsTouchedPartitionWithinReplicaBudget: docs/api.md
// and operations.md allow region names of 64 characters and a lifetime
// budget of 256 replica ids that write; a plain token is sized to hold
// such a context ("room for MaxReplicas replica ids of the longest region
// names"). A partitioned token must then still cover the partition a
// write touched: read-your-writes holds "for the 64 partitions a client
// touched last", and the one just written is the last touched. Here one
// partition's context names 200 replica ids (within the budget) of
// 64-character names; the answer to a write at that partition must carry
// its entry, covering the write, and another region must not serve a read
// with that token before it has the write.
func TestPartitionTokenKeepsTouchedPartitionWithinReplicaBudget(t *testing.T) {
	a := strings.Repeat("a", 63) + "1"
	b := strings.Repeat("b", 63) + "2"
	r := newPartRig(t, partRigSpec{regions: []string{a, b}, parts: 4, home: func(string) string { return a }})
	cart := r.key("cart-", 2)
	var dots crdt.Context
	for k := uint64(1); k <= 200; k++ {
		dots.Insert(crdt.Dot{Replica: crdt.Incarnation(b, 179600000000+k), Counter: 1})
	}
	if err := r.nodes[a][2].ApplyRemote(&dots, &crdt.Group{}); err != nil {
		t.Fatal(err)
	}
	if _, err := crdt.ParseToken(r.nodes[a][2].Token()); err != nil {
		t.Fatalf("test setup: the region's plain token of the context is refused: %v", err)
	}

	ctx, cancel := r.request(2, 5*time.Second)
	defer cancel()
	must[Cart](t)(r.parts[a].AddItem(ctx, cart, "book", 1))
	tok := r.parts[a].TokenFor(ctx)
	write := crdt.Dot{Replica: r.nodes[a][2].Self(), Counter: r.nodes[a][2].Applied().VV[r.nodes[a][2].Self()]}
	back, err := parsePartitionToken(tok, 4)
	if err != nil {
		t.Fatalf("the answer's token is refused: %v", err)
	}
	if c := back.get(2); c == nil || !c.Contains(write) {
		t.Errorf("the token of the answer to a write at partition 2 (%d characters) does not cover the write %v: it holds partitions %v (200 replica ids of 64-character names, within the 256-id budget)", len(tok), write, back.parts)
	}

	rctx, rcancel := r.request(2, 5*time.Second)
	defer rcancel()
	wctx, wcancel := context.WithTimeout(rctx, 200*time.Millisecond)
	defer wcancel()
	if err := r.parts[b].WaitToken(wctx, tok); err == nil {
		c := must[Cart](t)(r.parts[b].GetCart(rctx, cart))
		t.Fatalf("region b served the cart with the token of the client's add before it had the add: items %+v", c.Items)
	}
}
