package region

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/latticedb/lattice/crdt"
)

// TestQuorumReadTokenAfterCleanRestart: us-east reads a cart with
// quorum=2 while ap-south is unreachable; eu-west's answer brings an add
// that has not replicated yet, and the read's token covers it (the read
// shows it). us-east is then stopped cleanly and started again on its
// store: it still shows the add, from its store, so the token of every
// later answer of the cart must still cover it. A client that reads the
// cart at us-east and takes the answer's token to ap-south must not be
// served there before ap-south holds the add (docs/api.md: monotonic
// reads across regions; the token covers what the answer shows).
func TestQuorumReadTokenAfterCleanRestart(t *testing.T) {
	s := &regionSet{}
	dir := t.TempDir()
	all := []string{"us-east", "eu-west", "ap-south"}
	peersOf := func(me string) []string {
		var out []string
		for _, r := range all {
			if r != me {
				out = append(out, r)
			}
		}
		return out
	}
	eastPath := filepath.Join(dir, "us-east.db")
	east := ceOpen(t, s, eastPath, "us-east", peersOf("us-east"), nil)
	west := ceOpen(t, s, filepath.Join(dir, "eu-west.db"), "eu-west", peersOf("eu-west"), nil)
	south := ceOpen(t, s, filepath.Join(dir, "ap-south.db"), "ap-south", peersOf("ap-south"), nil)

	// eu-west's add, which no region has received (no publisher).
	must[Cart](t)(west.AddItem(bg, "c1", "book", 2))
	add := crdt.Dot{Replica: west.Self(), Counter: west.Applied().VV[west.Self()]}

	s.mu.Lock()
	s.down["ap-south"] = true
	s.mu.Unlock()
	qctx, cancel := context.WithTimeout(WithQuorum(WithAnswer(bg), 2), 2*time.Second)
	defer cancel()
	c, err := east.GetCart(qctx, "c1")
	if err != nil || qtyOf(c, "book") != 2 {
		t.Fatalf("test setup: quorum=2 read at us-east: %+v, %v", c.Items, err)
	}
	if tok, err := crdt.ParseToken(east.TokenFor(qctx)); err != nil || !tok.Contains(add) {
		t.Fatalf("test setup: the quorum read's token does not cover eu-west's add %v (%v)", add, err)
	}

	// A clean stop and start of us-east on its store.
	s.mu.Lock()
	delete(s.nodes, "us-east")
	s.down["ap-south"] = false
	s.mu.Unlock()
	east.Close()
	east.store.Close()
	east = ceOpen(t, s, eastPath, "us-east", peersOf("us-east"), nil)

	rctx := WithAnswer(bg)
	c, err = east.GetCart(rctx, "c1")
	if err != nil || qtyOf(c, "book") != 2 {
		t.Fatalf("restarted us-east reads %+v, %v; want book:2 from its store", c.Items, err)
	}
	tokStr := east.TokenFor(rctx)
	tok, err := crdt.ParseToken(tokStr)
	if err != nil {
		t.Fatal(err)
	}
	wctx, wcancel := context.WithTimeout(bg, 200*time.Millisecond)
	defer wcancel()
	if err := south.WaitToken(wctx, tokStr); err == nil {
		got := must[Cart](t)(south.GetCart(WithAnswer(bg), "c1"))
		if qtyOf(got, "book") != 2 {
			t.Fatalf("after a clean restart, us-east answered book:2 with a token that does not cover eu-west's add %v (token %v): "+
				"ap-south served the token at once and showed %+v (a stale read)", add, tok.VV, got.Items)
		}
	}
}
