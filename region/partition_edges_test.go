package region

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/latticedb/lattice/crdt"
	"github.com/latticedb/lattice/region/config"
	"github.com/latticedb/lattice/region/store"
)

// peParts is the number of partitions of the partitioned test cluster.
const peParts = 2

// peDeltas keeps the deltas one partition of one region published, for
// the test to deliver to the same partition of the other region.
type peDeltas struct {
	mu sync.Mutex
	ds []Delta
}

func (l *peDeltas) Publish(d Delta) {
	l.mu.Lock()
	l.ds = append(l.ds, d)
	l.mu.Unlock()
}

func (l *peDeltas) take() []Delta {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := l.ds
	l.ds = nil
	return out
}

// peCluster is two regions, us-east and eu-west, each one process serving
// both partitions of a cluster of peParts (a region without nodes). Keys
// beginning "eu-" are homed at eu-west, every other key at us-east. Home
// requests travel as replication.Partitioned carries them: to the node of
// the request's partition in the home region (in line within a region,
// as over the wire between regions), a home token of another partition
// than the asking node's noted for the answer's partitioned token.
// Replication deltas are kept until the test delivers them.
type peCluster struct {
	t      *testing.T
	clock  *fakeClock
	nodes  map[string]map[int]*Node
	parts  map[string]*Partitions
	deltas map[string]map[int]*peDeltas
}

type peForwarder struct {
	c      *peCluster
	region string
	part   int
}

func (f peForwarder) Forward(ctx context.Context, home string, req *HomeRequest) (*HomeResponse, error) {
	target, ok := req.Partition(peParts)
	if !ok {
		target = f.part
	}
	n := f.c.nodes[home][target]
	if n == nil {
		return nil, &Error{Code: CodeHomeUnavailable, RetryAfter: 1, Detail: "no such home"}
	}
	var resp *HomeResponse
	if home == f.region {
		resp = n.ServeForwarded(ctx, req)
	} else {
		// Over the wire: the home sees a copy of the request and a
		// context of its own, bounded by the request's deadline.
		c := *req
		rctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		r := *n.ServeForwarded(rctx, &c)
		resp = &r
	}
	return TakePartitionAnswer(ctx, resp, f.part, target, peParts), nil
}

func peHome(key string) string {
	if strings.HasPrefix(key, "eu-") {
		return "eu-west"
	}
	return "us-east"
}

func newPECluster(t *testing.T) *peCluster {
	t.Helper()
	c := &peCluster{t: t, clock: newFakeClock(), nodes: map[string]map[int]*Node{},
		parts: map[string]*Partitions{}, deltas: map[string]map[int]*peDeltas{}}
	dir := t.TempDir()
	regions := []string{"us-east", "eu-west"}
	for _, r := range regions {
		c.nodes[r] = map[int]*Node{}
		c.deltas[r] = map[int]*peDeltas{}
		var list []*Node
		for p := range peParts {
			st, err := OpenStore(filepath.Join(dir, r, fmt.Sprintf("p%04d", p), "data.db"), store.Options{})
			if err != nil {
				t.Fatal(err)
			}
			log := &peDeltas{}
			n, err := NewNode(Options{Name: r, Home: peHome, Store: st, Clock: c.clock, ExpiryInterval: time.Hour,
				Publisher: log, Forwarder: peForwarder{c, r, p}, Partition: p, Partitions: peParts,
				IsRegion: func(name string) bool { return name == "us-east" || name == "eu-west" }})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { n.Close(); st.Close() })
			c.nodes[r][p], c.deltas[r][p] = n, log
			list = append(list, n)
		}
		ps, err := NewPartitions(r, r, peParts, list)
		if err != nil {
			t.Fatal(err)
		}
		c.parts[r] = ps
	}
	return c
}

// deliver applies every delta partition part of region from published
// so far at the same partition of region to.
func (c *peCluster) deliver(from, to string, part int) {
	c.t.Helper()
	for _, d := range c.deltas[from][part].take() {
		dots := &crdt.Context{}
		dots.Insert(crdt.Dot{Replica: d.Origin, Counter: d.Seq})
		if err := c.nodes[to][part].ApplyRemote(dots, d.Group); err != nil {
			c.t.Fatal(err)
		}
	}
}

// request returns the context of an API request routed to partition part
// (as the API's route and begin make it), bounded by d.
func peRequest(part int, d time.Duration) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	return WithAnswer(WithPartition(ctx, part)), cancel
}

// peKey returns the first key prefix-N of partition part.
func peKey(prefix string, part int) string {
	for i := 0; ; i++ {
		if k := fmt.Sprintf("%s%d", prefix, i); config.PartitionOf(k, peParts) == part {
			return k
		}
	}
}

// TestCheckoutTokenCoversLinesOfOtherPartitions: in a partitioned
// cluster, a checkout's answer carries a token with the entries of the
// partitions whose homes the checkout reserved at (docs/api.md, causal
// tokens), whichever region coordinates the checkout. Here the cart is
// homed at eu-west, so us-east, where the client checks out, forwards the
// checkout to eu-west; the sku is homed at us-east in the other partition,
// so the order's commit lowers the stock at us-east itself. A client that
// then reads the sku at eu-west with the checkout's token must see the
// commit (or wait for it and get causal_timeout), never the stock from
// before its own order.
func TestCheckoutTokenCoversLinesOfOtherPartitions(t *testing.T) {
	c := newPECluster(t)
	cart := peKey("eu-cart-", 0)
	sku := peKey("sku-", 1)
	if peHome(cart) != "eu-west" || peHome(sku) != "us-east" {
		t.Fatal("placement")
	}
	us, eu := c.parts["us-east"], c.parts["eu-west"]

	ctx, cancel := peRequest(1, 5*time.Second)
	if _, err := us.Restock(ctx, sku, 5); err != nil {
		t.Fatal(err)
	}
	cancel()
	c.deliver("us-east", "eu-west", 1) // eu-west knows the stock
	ctx, cancel = peRequest(0, 5*time.Second)
	if _, err := us.AddItem(ctx, cart, sku, 2); err != nil {
		t.Fatal(err)
	}
	cancel()

	ctx, cancel = peRequest(0, 5*time.Second)
	order, err := us.Checkout(ctx, cart, 30*time.Second, Idem{})
	if err != nil {
		t.Fatalf("checkout: %v", err)
	}
	tok := us.TokenFor(ctx)
	cancel()
	if len(order.Lines) != 1 {
		t.Fatalf("order %+v", order)
	}
	home, err := c.nodes["us-east"][1].GetItem(context.Background(), sku, false)
	if err != nil {
		t.Fatal(err)
	}
	if home.Stock != 3 {
		t.Fatalf("at its home after the order, %s has stock %d, want 3", sku, home.Stock)
	}

	// The commit's delta has not reached eu-west yet (replication lag).
	rctx, rcancel := peRequest(1, 5*time.Second)
	defer rcancel()
	wctx, wcancel := context.WithTimeout(rctx, 300*time.Millisecond)
	err = eu.WaitToken(wctx, tok)
	wcancel()
	var e *Error
	if errors.Is(err, context.DeadlineExceeded) || errors.As(err, &e) && e.Code == CodeCausalTimeout {
		return // the token covers the commit: eu-west waits for it
	}
	if err != nil {
		t.Fatalf("wait for the checkout's token at eu-west: %v", err)
	}
	it, err := eu.GetItem(rctx, sku, false)
	if err != nil {
		t.Fatal(err)
	}
	if it.Stock != home.Stock {
		t.Fatalf("with the token of its checkout (%s), a client reads %s at eu-west as stock %d: the order's commit at us-east (stock %d) is not covered by the token",
			tok, sku, it.Stock, home.Stock)
	}
}
