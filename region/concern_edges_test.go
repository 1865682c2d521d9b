package region

import (
	"context"
	"fmt"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/latticedb/lattice/crdt"
	"github.com/latticedb/lattice/region/store"
)

// regionSet is a few regions in process, each on its own store, that reach
// each other through ceForwarder (as replication's forwarding does).
type regionSet struct {
	mu    sync.Mutex
	nodes map[string]*Node
	down  map[string]bool
}

type ceForwarder struct{ s *regionSet }

func (f ceForwarder) Forward(ctx context.Context, to string, req *HomeRequest) (*HomeResponse, error) {
	f.s.mu.Lock()
	n, down := f.s.nodes[to], f.s.down[to]
	f.s.mu.Unlock()
	if n == nil || down {
		return nil, fmt.Errorf("%s unreachable", to)
	}
	return n.ServeForwarded(context.Background(), req), nil
}

// ceOpen opens region name with peers on a store file at path.
func ceOpen(t *testing.T, s *regionSet, path, name string, peers []string, tweak func(*Options)) *Node {
	t.Helper()
	st, err := OpenStore(path, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	o := Options{Name: name, Store: st, ExpiryInterval: time.Hour, PeerRegions: peers, Forwarder: ceForwarder{s}}
	if tweak != nil {
		tweak(&o)
	}
	n, err := NewNode(o)
	if err != nil {
		st.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close(); st.Close() })
	s.mu.Lock()
	if s.nodes == nil {
		s.nodes, s.down = map[string]*Node{}, map[string]bool{}
	}
	s.nodes[name] = n
	s.mu.Unlock()
	return n
}

// deltaRecorder keeps every delta a region publishes.
type deltaRecorder struct {
	mu     sync.Mutex
	deltas map[uint64]Delta
}

func (r *deltaRecorder) Publish(d Delta) {
	r.mu.Lock()
	if r.deltas == nil {
		r.deltas = map[uint64]Delta{}
	}
	r.deltas[d.Seq] = d
	r.mu.Unlock()
}

func (r *deltaRecorder) touchesCart(seq uint64, id string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	d, ok := r.deltas[seq]
	if !ok || d.Group == nil {
		return false
	}
	_, has := d.Group.Carts[id]
	return has
}

// peerMissingCart stands for replication to one peer that has received
// every delta of this region except those that touch one cart (its
// messages still in flight): a write concern of 2 is met for a write once
// that peer holds it, and not before.
type peerMissingCart struct {
	rec  *deltaRecorder
	cart string
}

func (p peerMissingCart) holds(d crdt.Dot) bool { return !p.rec.touchesCart(d.Counter, p.cart) }

func (p peerMissingCart) WaitReplicas(ctx context.Context, d crdt.Dot, n int) error {
	if n <= 1 || p.holds(d) {
		return nil
	}
	<-ctx.Done()
	return ctx.Err()
}

func (p peerMissingCart) WaitReplicasThrough(ctx context.Context, d crdt.Dot, n int) error {
	if n <= 1 {
		return nil
	}
	for k := uint64(1); k <= d.Counter; k++ {
		if !p.holds(crdt.Dot{Replica: d.Replica, Counter: k}) {
			<-ctx.Done()
			return ctx.Err()
		}
	}
	return nil
}

// TestCheckoutWriteConcernCoversCartRemoval: a checkout with a write
// concern of 2 answers success only once another region holds every write
// it made here, the removal of the bought lines from the cart included.
// The region is the home of every sku of a cart of 80 lines, so the
// checkout reserves and commits each line here before it removes them;
// the one peer has every delta but the cart's. The concern must not be
// reported met.
func TestCheckoutWriteConcernCoversCartRemoval(t *testing.T) {
	s := &regionSet{}
	rec := &deltaRecorder{}
	n := ceOpen(t, s, filepath.Join(t.TempDir(), "us-east.db"), "us-east", []string{"eu-west"}, func(o *Options) {
		o.Publisher = rec
		o.Replicas = peerMissingCart{rec: rec, cart: "big"}
	})
	const lines = 80
	for i := range lines {
		sku := fmt.Sprintf("sku-%02d", i)
		must[Item](t)(n.Restock(bg, sku, 5))
		must[Cart](t)(n.AddItem(bg, "big", sku, 1))
	}
	before := n.Applied().VV[n.Self()]
	ctx, cancel := context.WithTimeout(WithReplicas(WithAnswer(bg), 2), 2*time.Second)
	defer cancel()
	order, err := n.Checkout(ctx, "big", time.Minute, Idem{})
	if err != nil {
		t.Fatalf("checkout: %v", err)
	}
	after := n.Applied().VV[n.Self()]
	var cartDots []uint64
	for k := before + 1; k <= after; k++ {
		if rec.touchesCart(k, "big") {
			cartDots = append(cartDots, k)
		}
	}
	if len(cartDots) == 0 {
		t.Fatalf("test setup: the checkout of %d lines wrote no cart delta (dots %d..%d)", len(order.Lines), before+1, after)
	}
	start := time.Now()
	err = n.AwaitReplicas(ctx)
	if err == nil {
		t.Fatalf("checkout of %d lines (writes %d..%d here) with a write concern of 2 reported met in %v, though the peer lacks its cart removal (dots %v)",
			len(order.Lines), before+1, after, time.Since(start), cartDots)
	}
	wantCode(t, err, CodeReplicationTimeout)
}

// TestQuorumReadSkipsDamagedCart: a region whose stored cart fails its
// checksum must not answer a quorum read of it as if the cart were empty.
// us-east and eu-west both hold a line (eu-west got it by replication),
// then eu-west's copy is damaged; ap-south, which never received it,
// reads the cart with quorum=2 while us-east is unreachable. The answer
// must show the line or be 503 quorum_unavailable, never the empty cart.
func TestQuorumReadSkipsDamagedCart(t *testing.T) {
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
	east := ceOpen(t, s, filepath.Join(dir, "us-east.db"), "us-east", peersOf("us-east"), nil)
	westPath := filepath.Join(dir, "eu-west.db")
	west := ceOpen(t, s, westPath, "eu-west", peersOf("eu-west"), nil)
	south := ceOpen(t, s, filepath.Join(dir, "ap-south.db"), "ap-south", peersOf("ap-south"), nil)

	must[Cart](t)(east.AddItem(bg, "c1", "book", 2))
	g, ctx, err := east.Read([]string{prefixCart + "c1"})
	if err != nil {
		t.Fatal(err)
	}
	// eu-west receives the write as a delta would bring it.
	if err := west.ApplyRemote(&ctx, g); err != nil {
		t.Fatal(err)
	}
	if c := must[Cart](t)(west.GetCart(bg, "c1")); qtyOf(c, "book") != 2 {
		t.Fatalf("test setup: eu-west has %+v", c.Items)
	}
	// Damage eu-west's stored line and reopen it.
	s.mu.Lock()
	delete(s.nodes, "eu-west")
	s.mu.Unlock()
	west.Close()
	west.store.Close()
	flipStoredByte(t, westPath, "e/c1/book")
	west = ceOpen(t, s, westPath, "eu-west", peersOf("eu-west"), nil)
	if _, err := west.GetCart(bg, "c1"); err == nil {
		t.Fatal("test setup: the damaged cart is served at eu-west")
	}

	s.mu.Lock()
	s.down["us-east"] = true
	s.mu.Unlock()
	qctx, cancel := context.WithTimeout(WithQuorum(WithAnswer(bg), 2), 2*time.Second)
	defer cancel()
	c, err := south.GetCart(qctx, "c1")
	if err == nil && qtyOf(c, "book") != 2 {
		t.Fatalf("quorum=2 read at ap-south answered %+v: eu-west's damaged cart counted as an empty answer", c.Items)
	}
	if err != nil {
		wantCode(t, err, CodeQuorumUnavailable)
	}
}

// TestCausalTokenMemoryBounded: a request waiting for a causal token
// holds memory in proportion to the documented bounds of a token (8 KiB
// decoded, 64 KiB inflated), not many times more. The token here is a
// valid compressed one of about 1 KiB naming out-of-order dots of many
// replicas, none of which the region has applied.
func TestCausalTokenMemoryBounded(t *testing.T) {
	n := newNode(t)
	// Many replicas, each with the same cloud of out-of-order dots: the
	// context inflates to under 64 KiB and compresses to about 1 KiB.
	c := crdt.Context{Cloud: map[crdt.Dot]struct{}{}}
	for r := 0; r < crdt.MaxReplicas; r++ {
		id := crdt.ReplicaID(fmt.Sprintf("r%03d", r))
		for k := uint64(2); k < 256; k++ {
			c.Cloud[crdt.Dot{Replica: id, Counter: k}] = struct{}{}
		}
		if len(crdt.EncodeContext(&c)) > crdt.MaxTokenContextBytes {
			for k := uint64(2); k < 256; k++ {
				delete(c.Cloud, crdt.Dot{Replica: id, Counter: k})
			}
			break
		}
	}
	tok := crdt.FormatToken(&c)
	if _, err := crdt.ParseToken(tok); err != nil {
		t.Fatalf("test setup: token refused: %v", err)
	}
	var before, during, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	ctx, cancel := context.WithCancel(bg)
	done := make(chan struct{})
	go func() {
		defer close(done)
		n.WaitToken(ctx, tok)
	}()
	// The waiter has parsed the token once it waits for the applied
	// context to grow.
	waitUntil(t, 5*time.Second, "the request waits", func() bool {
		n.amu.Lock()
		defer n.amu.Unlock()
		return len(n.appliedWaits) > 0
	})
	runtime.GC()
	runtime.ReadMemStats(&during)
	cancel()
	<-done
	runtime.ReadMemStats(&after)
	held := int64(during.HeapAlloc) - int64(before.HeapAlloc)
	alloc := after.TotalAlloc - before.TotalAlloc
	t.Logf("token of %d characters (%d dots, %d bytes inflated): the waiting request holds %d bytes, allocated %d",
		len(tok), len(c.Cloud), len(crdt.EncodeContext(&c)), held, alloc)
	if limit := int64(4 * crdt.MaxTokenContextBytes); held > limit {
		t.Errorf("a request waiting with a %d-character token holds %d bytes, past %d (4 × the 64 KiB a token may inflate to)",
			len(tok), held, limit)
	}
}

// peerHoldsThrough stands for replication to one peer that holds this
// region's writes up to a seq and none after it (later messages lost or
// the link down, still reported connected).
type peerHoldsThrough struct {
	mu   sync.Mutex
	upTo uint64
}

func (p *peerHoldsThrough) set(k uint64) { p.mu.Lock(); p.upTo = k; p.mu.Unlock() }

func (p *peerHoldsThrough) holds(d crdt.Dot) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return d.Counter <= p.upTo
}

func (p *peerHoldsThrough) WaitReplicas(ctx context.Context, d crdt.Dot, n int) error {
	if n <= 1 || p.holds(d) {
		return nil
	}
	<-ctx.Done()
	return ctx.Err()
}

func (p *peerHoldsThrough) WaitReplicasThrough(ctx context.Context, d crdt.Dot, n int) error {
	return p.WaitReplicas(ctx, d, n)
}

// TestRepeatedCommitWaitsForWriteConcern: a commit with Lattice-Replicas:
// 2 that timed out (the peer does not hold it) is retried as the same
// transition. The retry must not answer that 2 regions hold the commit
// while the peer still lacks it: it waits again and times out again.
func TestRepeatedCommitWaitsForWriteConcern(t *testing.T) {
	s := &regionSet{}
	peer := &peerHoldsThrough{}
	n := ceOpen(t, s, filepath.Join(t.TempDir(), "us-east.db"), "us-east", []string{"eu-west"}, func(o *Options) {
		o.Replicas = peer
	})
	must[Item](t)(n.Restock(bg, "book", 5))
	res := must[Reservation](t)(n.Reserve(WithAnswer(bg), "book", 2, time.Minute, Idem{}))
	peer.set(n.Applied().VV[n.Self()]) // the peer holds the restock and the reservation

	commit := func() (Reservation, error) {
		ctx, cancel := context.WithTimeout(WithReplicas(WithAnswer(bg), 2), 300*time.Millisecond)
		defer cancel()
		r, err := n.Commit(ctx, res.ID, Idem{})
		if err != nil {
			return r, err
		}
		return r, n.AwaitReplicas(ctx)
	}
	if _, err := commit(); err == nil {
		t.Fatal("test setup: the first commit met a write concern of 2 the peer does not hold")
	} else {
		wantCode(t, err, CodeReplicationTimeout)
	}
	r, err := commit()
	if err == nil {
		t.Fatalf("the repeated commit (state %s) answered that 2 regions hold it; the peer holds writes up to %d, the commit is at %d",
			r.State, peer.upTo, n.Applied().VV[n.Self()])
	}
	wantCode(t, err, CodeReplicationTimeout)
}

// TestRepeatedRemoveWaitsForWriteConcern: a cart remove with
// Lattice-Replicas: 2 that timed out is retried (a client's ordinary
// response to replication_timeout). The line is already gone here, so the
// retry changes nothing; it must still not answer that 2 regions hold the
// removal while the peer lacks it.
func TestRepeatedRemoveWaitsForWriteConcern(t *testing.T) {
	s := &regionSet{}
	peer := &peerHoldsThrough{}
	n := ceOpen(t, s, filepath.Join(t.TempDir(), "us-east.db"), "us-east", []string{"eu-west"}, func(o *Options) {
		o.Replicas = peer
	})
	must[Cart](t)(n.AddItem(bg, "c1", "book", 2))
	peer.set(n.Applied().VV[n.Self()]) // the peer holds the add

	remove := func() (Cart, error) {
		ctx, cancel := context.WithTimeout(WithReplicas(WithAnswer(bg), 2), 300*time.Millisecond)
		defer cancel()
		c, err := n.RemoveItem(ctx, "c1", "book")
		if err != nil {
			return c, err
		}
		return c, n.AwaitReplicas(ctx)
	}
	if _, err := remove(); err == nil {
		t.Fatal("test setup: the first remove met a write concern of 2 the peer does not hold")
	} else {
		wantCode(t, err, CodeReplicationTimeout)
	}
	c, err := remove()
	if err == nil {
		t.Fatalf("the repeated remove (cart now %+v) answered that 2 regions hold it; the peer holds writes up to %d, the removal is at %d",
			c.Items, peer.upTo, n.Applied().VV[n.Self()])
	}
	wantCode(t, err, CodeReplicationTimeout)
}
