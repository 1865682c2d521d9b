package region

import (
	"context"
	"crypto/sha256"
	"errors"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/latticedb/lattice/crdt"
)

// con6Reach stands for replication in a cluster where only some regions
// are connected: a write concern of at most reach regions is met at once,
// a larger one is refused at once, as replication refuses a concern the
// connected regions cannot meet (ErrTooFewRegions).
type con6Reach struct{ reach atomic.Int32 }

func (w *con6Reach) WaitReplicas(ctx context.Context, d crdt.Dot, n int) error {
	if n <= int(w.reach.Load()) {
		return nil
	}
	return errors.New("too few regions connected to meet the write concern")
}

func (w *con6Reach) WaitReplicasThrough(ctx context.Context, d crdt.Dot, n int) error {
	return w.WaitReplicas(ctx, d, n)
}

// con6Regions opens us-east (the cart's coordinator) and eu-west (the home
// of sku "x") of a cluster of three; ap-south is never opened (down).
func con6Regions(t *testing.T, w ReplicaWaiter) (east, west *Node) {
	t.Helper()
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
	home := func(key string) string {
		if key == "x" {
			return "eu-west"
		}
		return "us-east"
	}
	tweak := func(o *Options) { o.Home = home; o.Replicas = w }
	east = ceOpen(t, s, filepath.Join(dir, "us-east.db"), "us-east", peersOf("us-east"), tweak)
	west = ceOpen(t, s, filepath.Join(dir, "eu-west.db"), "eu-west", peersOf("eu-west"), tweak)
	return east, west
}

// TestCheckoutConcernTimeoutAtHomeIsNotAFailure: a checkout sent with
// Lattice-Replicas: all while one region of three is down. The sku's
// home (eu-west, another region than the coordinator) makes the
// reservation and answers replication_timeout, since the write cannot
// reach 3 regions yet. Per docs/api.md ("Write and read concerns"), a
// replication_timeout means the write was applied and will still
// replicate, is not rolled back, and a retry with the same
// Idempotency-Key answers the recorded result (an answer with
// Retry-After is never recorded as the outcome). So once the third region
// is back, the retry must answer the order; and at no point may the home
// keep units held for a checkout that did not buy them.
func TestCheckoutConcernTimeoutAtHomeIsNotAFailure(t *testing.T) {
	w := &con6Reach{}
	w.reach.Store(2)
	east, west := con6Regions(t, w)
	must[Item](t)(west.Restock(bg, "x", 5))
	must[Cart](t)(east.AddItem(bg, "cart1", "x", 2))

	key := Idem{Key: "k-concern", Fingerprint: sha256.Sum256([]byte("checkout cart1"))}
	checkout := func() (Order, error) {
		ctx, cancel := context.WithTimeout(WithReplicas(WithAnswer(bg), 3), 2*time.Second)
		defer cancel()
		o, err := east.Checkout(ctx, "cart1", time.Minute, key)
		if err != nil {
			return o, err
		}
		return o, east.AwaitReplicas(ctx)
	}
	_, err1 := checkout()
	var e1 *Error
	if !errors.As(err1, &e1) || e1.Code != CodeReplicationTimeout {
		t.Fatalf("test setup: checkout with a write concern of 3 and one region down answered %v, want replication_timeout", err1)
	}
	afterFirst := must[Item](t)(west.GetItem(bg, "x", false))

	// ap-south is back: 3 regions can hold the writes.
	w.reach.Store(3)
	order, err2 := checkout()
	cart := must[Cart](t)(east.GetCart(bg, "cart1"))
	home := must[Item](t)(west.GetItem(bg, "x", false))
	t.Logf("first answer: %v; home after it: stock %d reserved %d available %d", err1, afterFirst.Stock, afterFirst.Reserved, afterFirst.Available)
	t.Logf("retry with the same key once 3 regions are reachable: order %+v, err %v; cart %+v; home: stock %d reserved %d available %d",
		order, err2, cart.Items, home.Stock, home.Reserved, home.Available)
	if err2 != nil {
		t.Errorf("the retry with the same Idempotency-Key, once the write concern can be met, answered %v: the replication_timeout of the home's reservation was recorded as the checkout's outcome", err2)
	}
	if err2 != nil && home.Reserved > 0 {
		t.Errorf("the home holds %d units for a checkout that bought nothing (reservation left held after its replication_timeout)", home.Reserved)
	}
}

// TestCheckoutConcernCoversCartRemovalOfOneLine: a checkout of a cart of
// one line, coordinated and decided here, asks for a write concern of 2.
// Its writes here are the reservation, the commit and the removal of the
// bought line from the cart; the one peer holds every delta of this
// region but the cart's. docs/api.md: "A checkout waits for the
// coordinator's writes and each home's decisions", so the concern must
// not be reported met while the peer lacks the cart removal (a client
// reading the cart there would see the bought line still in it).
func TestCheckoutConcernCoversCartRemovalOfOneLine(t *testing.T) {
	s := &regionSet{}
	rec := &deltaRecorder{}
	n := ceOpen(t, s, filepath.Join(t.TempDir(), "us-east.db"), "us-east", []string{"eu-west"}, func(o *Options) {
		o.Publisher = rec
		o.Replicas = peerMissingCart{rec: rec, cart: "one"}
	})
	must[Item](t)(n.Restock(bg, "book", 5))
	must[Cart](t)(n.AddItem(bg, "one", "book", 1))
	before := n.Applied().VV[n.Self()]
	ctx, cancel := context.WithTimeout(WithReplicas(WithAnswer(bg), 2), time.Second)
	defer cancel()
	if _, err := n.Checkout(ctx, "one", time.Minute, Idem{}); err != nil {
		t.Fatalf("checkout: %v", err)
	}
	after := n.Applied().VV[n.Self()]
	var cartDots []uint64
	for k := before + 1; k <= after; k++ {
		if rec.touchesCart(k, "one") {
			cartDots = append(cartDots, k)
		}
	}
	if len(cartDots) == 0 {
		t.Fatalf("test setup: the checkout wrote no cart delta (dots %d..%d)", before+1, after)
	}
	if err := n.AwaitReplicas(ctx); err == nil {
		t.Fatalf("checkout (writes %d..%d here) with a write concern of 2 reported met, though the peer lacks its removal of the bought line (dots %v)",
			before+1, after, cartDots)
	} else {
		wantCode(t, err, CodeReplicationTimeout)
	}
}

// TestPartitionTokenKeepsTouchedPartitionOfManyIncarnations: in a
// partitioned cluster whose regions (long names, as docs/api.md allows)
// went through many incarnations, one partition's context names well
// over a hundred replica ids. A plain token of such a context is sent
// compressed ("z."); docs/api.md promises for a partitioned token that
// read-your-writes holds for the partitions a client touched last. After
// a write at that partition, the answer's token must still hold the
// partition's entry, covering the write; then another region serves a
// read of the cart with it only once it has the write.
func TestPartitionTokenKeepsTouchedPartitionOfManyIncarnations(t *testing.T) {
	a := "asia-pacific-southeast-production-region-01"
	b := "europe-west-central-production-region-02"
	r := newPartRig(t, partRigSpec{regions: []string{a, b}, parts: 4, home: func(string) string { return a }})
	cart := r.key("cart-", 2)
	// Partition 2 of region a has applied writes of 120 incarnations of
	// region b (each unclean stop of a node starts one).
	var dots crdt.Context
	for k := uint64(1); k <= 120; k++ {
		dots.Insert(crdt.Dot{Replica: crdt.Incarnation(b, 1796000000+k), Counter: 1})
	}
	if err := r.nodes[a][2].ApplyRemote(&dots, &crdt.Group{}); err != nil {
		t.Fatal(err)
	}
	if plain := r.nodes[a][2].Token(); len(plain) == 0 {
		t.Fatal("test setup: no plain token")
	} else if _, err := crdt.ParseToken(plain); err != nil {
		t.Fatalf("test setup: the plain token of the context is refused: %v", err)
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
	t.Logf("token of %d characters, partitions %v", len(tok), back.parts)
	if c := back.get(2); c == nil || !c.Contains(write) {
		t.Fatalf("the token of the answer to a write at partition 2 (%d characters) does not cover the write %v: its partitions are %v", len(tok), write, back.parts)
	}

	// Read-your-writes at region b, which has not received the write.
	rctx, rcancel := r.request(2, 5*time.Second)
	defer rcancel()
	wctx, wcancel := context.WithTimeout(rctx, 200*time.Millisecond)
	defer wcancel()
	if err := r.parts[b].WaitToken(wctx, tok); err == nil {
		c := must[Cart](t)(r.parts[b].GetCart(rctx, cart))
		t.Fatalf("region %s served the cart with the client's token before it had the client's write: %+v", b, c.Items)
	}
}
