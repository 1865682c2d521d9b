package region

import (
	"context"
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

// cxParts is the number of partitions of the partitioned escrow cluster.
const cxParts = 2

var cxRegions = []string{"h", "a", "b"}

// cxRig is three partitioned regions in one process, each serving both
// partitions: h is the home of every sku and of carts not beginning
// "ca-", a the home of carts beginning "ca-"; skus beginning "e" are
// escrow skus. Home requests travel as replication.Partitioned carries
// them (to the node of the request's partition in the home region);
// deltas are queued per region and partition until the test delivers
// them to the same partition of the other regions.
type cxRig struct {
	t     *testing.T
	dir   string
	clock *fakeClock
	nodes map[string]map[int]*testNode
	parts map[string]*Partitions

	mu    sync.Mutex
	queue map[string]map[int][]Delta
	cut   map[string]bool
}

type cxPub struct {
	r      *cxRig
	region string
	part   int
}

func (p cxPub) Publish(d Delta) {
	p.r.mu.Lock()
	p.r.queue[p.region][p.part] = append(p.r.queue[p.region][p.part], d)
	p.r.mu.Unlock()
}

type cxFwd struct {
	r      *cxRig
	region string
	part   int
}

func (f cxFwd) Forward(ctx context.Context, home string, req *HomeRequest) (*HomeResponse, error) {
	target, ok := req.Partition(cxParts)
	if !ok {
		target = f.part
	}
	f.r.mu.Lock()
	cut := home != f.region && (f.r.cut[f.region] || f.r.cut[home])
	tn := f.r.nodes[home][target]
	f.r.mu.Unlock()
	if cut || tn == nil {
		return nil, &Error{Code: CodeHomeUnavailable, RetryAfter: 1, Detail: "cut off"}
	}
	var resp *HomeResponse
	if home == f.region {
		resp = tn.ServeForwarded(ctx, req)
	} else {
		c := *req
		c.Escrow = false // never travels
		rctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		r := *tn.ServeForwarded(rctx, &c)
		resp = &r
	}
	return TakePartitionAnswer(ctx, resp, f.part, target, cxParts), nil
}

func cxHome(key string) string {
	if strings.HasPrefix(key, "ca-") {
		return "a"
	}
	return "h"
}

func newCXRig(t *testing.T) *cxRig {
	t.Helper()
	r := &cxRig{t: t, dir: t.TempDir(), clock: newFakeClock(), nodes: map[string]map[int]*testNode{},
		parts: map[string]*Partitions{}, queue: map[string]map[int][]Delta{}, cut: map[string]bool{}}
	for _, name := range cxRegions {
		r.nodes[name] = map[int]*testNode{}
		r.queue[name] = map[int][]Delta{}
		for p := range cxParts {
			r.open(name, p)
		}
		r.regroup(name)
	}
	return r
}

func (r *cxRig) path(name string, part int) string {
	return filepath.Join(r.dir, name, fmt.Sprintf("p%04d", part), "data.db")
}

// open opens partition part of region name on its store file.
func (r *cxRig) open(name string, part int) *testNode {
	r.t.Helper()
	path := r.path(name, part)
	st, err := OpenStore(path, store.Options{})
	if err != nil {
		r.t.Fatal(err)
	}
	var peers []string
	for _, p := range cxRegions {
		if p != name {
			peers = append(peers, p)
		}
	}
	n, err := NewNode(Options{Name: name, Store: st, Clock: r.clock, ExpiryInterval: time.Hour,
		Home:        cxHome,
		Escrow:      func(sku string) bool { return strings.HasPrefix(sku, "e") },
		IsRegion:    func(s string) bool { return s == "h" || s == "a" || s == "b" },
		Publisher:   cxPub{r, name, part},
		Forwarder:   cxFwd{r, name, part},
		PeerRegions: peers,
		Partition:   part, Partitions: cxParts,
		Background: func(f func()) { f() },
	})
	if err != nil {
		r.t.Fatal(err)
	}
	tn := &testNode{Node: n, store: st, path: path, clock: r.clock}
	r.mu.Lock()
	r.nodes[name][part] = tn
	r.mu.Unlock()
	r.t.Cleanup(tn.close)
	return tn
}

func (r *cxRig) regroup(name string) {
	r.t.Helper()
	var list []*Node
	for p := range cxParts {
		list = append(list, r.nodes[name][p].Node)
	}
	ps, err := NewPartitions(name, name, cxParts, list)
	if err != nil {
		r.t.Fatal(err)
	}
	r.parts[name] = ps
}

// deliver applies every queued delta at the same partition of every other
// region not cut off from its origin (the others stay queued).
func (r *cxRig) deliver() {
	r.t.Helper()
	for _, from := range cxRegions {
		for p := range cxParts {
			r.mu.Lock()
			q := r.queue[from][p]
			r.queue[from][p] = nil
			r.mu.Unlock()
			var keep []Delta
			for _, d := range q {
				held := false
				for _, to := range cxRegions {
					if to == from {
						continue
					}
					if r.cut[to] || r.cut[from] {
						held = true
						continue
					}
					dots := &crdt.Context{}
					dots.Insert(crdt.Dot{Replica: d.Origin, Counter: d.Seq})
					if err := r.nodes[to][p].ApplyRemote(dots, d.Group); err != nil {
						r.t.Fatalf("apply at %s/%d: %v", to, p, err)
					}
				}
				if held {
					keep = append(keep, d)
				}
			}
			r.mu.Lock()
			r.queue[from][p] = append(keep, r.queue[from][p]...)
			r.mu.Unlock()
		}
	}
}

// req returns the context of an API request routed to key's partition.
func cxReq(key string) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	return WithAnswer(WithPartition(ctx, config.PartitionOf(key, cxParts))), cancel
}

func cxKey(prefix string, part int) string {
	for i := 0; ; i++ {
		if k := fmt.Sprintf("%s%d", prefix, i); config.PartitionOf(k, cxParts) == part {
			return k
		}
	}
}

// TestEscrowKeyedRetryAfterCheckoutUnderSameKey: a client checks out a
// cart coordinated at a under key K, then reserves an escrow sku under
// the same key K through b (decided at the sku's home h: another region,
// so an independent record, docs/api.md Idempotency), and retries that
// reservation through a. The retry must answer the reservation h
// recorded, as a retry through any region does; the checkout's record at
// a is no record of the reservation.
func TestEscrowKeyedRetryAfterCheckoutUnderSameKey(t *testing.T) {
	r := newCXRig(t)
	sku := cxKey("e-", 1)
	cart := cxKey("ca-", 1) // coordinated at a, in the sku's partition
	ctx, cancel := cxReq(sku)
	must[Item](t)(r.parts["h"].Restock(ctx, sku, 10))
	cancel()
	r.deliver()

	ctx, cancel = cxReq(cart)
	must[Cart](t)(r.parts["a"].AddItem(ctx, cart, sku, 1))
	cancel()
	ctx, cancel = cxReq(cart)
	if _, err := r.parts["a"].Checkout(ctx, cart, time.Minute, Idem{Key: "K", Fingerprint: [32]byte{1}}); err != nil {
		t.Fatalf("checkout: %v", err)
	}
	cancel()
	r.deliver()

	key := Idem{Key: "K", Fingerprint: [32]byte{2}}
	first, err := r.reserve("b", sku, 2, key)
	if err != nil {
		t.Fatalf("reservation under K through b: %v", err)
	}
	if !strings.HasPrefix(first.ID, "h:") {
		t.Fatalf("keyed reservation decided at %s, want at the home h", first.ID)
	}
	again, err := r.reserve("a", sku, 2, key)
	if err != nil || again.ID != first.ID {
		t.Fatalf("the same keyed reservation retried through a: %+v, %v; through b it was %s", again, err, first.ID)
	}
}

func (r *cxRig) reserve(name, sku string, qty int64, idem Idem) (Reservation, error) {
	ctx, cancel := cxReq(sku)
	defer cancel()
	return r.parts[name].Reserve(ctx, sku, qty, time.Minute, idem)
}
