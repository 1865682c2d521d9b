package region

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/latticedb/lattice/crdt"
	"github.com/latticedb/lattice/region/config"
	"github.com/latticedb/lattice/region/store"
)

// partRigSpec describes the regions of a partRig.
type partRigSpec struct {
	// regions names the regions of the cluster.
	regions []string
	// parts is the number of partitions of every region.
	parts int
	// home places a key at its home region.
	home func(key string) string
	// escrow, when set, reports the escrow skus (Options.Escrow); the
	// work a node then starts off a request's path runs in line, to keep
	// the test deterministic. nil: no sku is an escrow sku.
	escrow func(sku string) bool
	// peers makes every region name the others as its PeerRegions.
	peers bool
	// wrap, when set, wraps the forwarder of each node of region (to
	// drop or lose chosen home requests).
	wrap func(region string, f Forwarder) Forwarder
	// replicas, when set, gives each node its ReplicaWaiter (for write
	// concerns).
	replicas func(r *partRig, region string, part int) ReplicaWaiter
}

// prefixHome places the keys beginning prefix at region at, every other
// key at region rest.
func prefixHome(prefix, at, rest string) func(key string) string {
	return func(key string) string {
		if strings.HasPrefix(key, prefix) {
			return at
		}
		return rest
	}
}

// partRig is several partitioned regions in one process, each serving
// every partition of a cluster of spec.parts (a region without nodes). Home requests travel as replication.Partitioned carries them:
// to the node of the request's partition in the home region (in line
// within a region, as over the wire between regions), a home token of
// another partition than the asking node's noted for the answer's
// partitioned token. A region marked in cut reaches no other region's
// home. Deltas are queued per region and partition until the test
// delivers them to the same partition of other regions.
type partRig struct {
	t     *testing.T
	spec  partRigSpec
	dir   string
	clock *fakeClock
	nodes map[string]map[int]*testNode
	parts map[string]*Partitions

	mu    sync.Mutex
	queue map[string]map[int][]Delta
	cut   map[string]bool
}

type partRigPub struct {
	r      *partRig
	region string
	part   int
}

func (p partRigPub) Publish(d Delta) {
	p.r.mu.Lock()
	p.r.queue[p.region][p.part] = append(p.r.queue[p.region][p.part], d)
	p.r.mu.Unlock()
}

type partRigFwd struct {
	r      *partRig
	region string
	part   int
}

func (f partRigFwd) Forward(ctx context.Context, home string, req *HomeRequest) (*HomeResponse, error) {
	parts := f.r.spec.parts
	target, ok := req.Partition(parts)
	if !ok {
		target = f.part
	}
	f.r.mu.Lock()
	cut := home != f.region && (f.r.cut[f.region] || f.r.cut[home])
	tn := f.r.nodes[home][target]
	f.r.mu.Unlock()
	if cut {
		return nil, &Error{Code: CodeHomeUnavailable, RetryAfter: 1, Detail: "cut off"}
	}
	if tn == nil {
		return nil, &Error{Code: CodeHomeUnavailable, RetryAfter: 1, Detail: "no such home"}
	}
	var resp *HomeResponse
	if home == f.region {
		resp = tn.ServeForwarded(ctx, req)
	} else {
		// Over the wire: the home sees a copy of the request, without
		// the fields that never travel, and a context of its own,
		// bounded by the request's deadline.
		c := *req
		c.Escrow = false
		rctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		r := *tn.ServeForwarded(rctx, &c)
		resp = &r
	}
	return TakePartitionAnswer(ctx, resp, f.part, target, parts), nil
}

func newPartRig(t *testing.T, spec partRigSpec) *partRig {
	t.Helper()
	r := &partRig{t: t, spec: spec, dir: t.TempDir(), clock: newFakeClock(), nodes: map[string]map[int]*testNode{},
		parts: map[string]*Partitions{}, queue: map[string]map[int][]Delta{}, cut: map[string]bool{}}
	for _, name := range spec.regions {
		r.nodes[name] = map[int]*testNode{}
		r.queue[name] = map[int][]Delta{}
		for p := range spec.parts {
			r.open(name, p)
		}
		r.regroup(name)
	}
	return r
}

func (r *partRig) path(name string, part int) string {
	return filepath.Join(r.dir, name, fmt.Sprintf("p%04d", part), "data.db")
}

// open opens partition part of region name on its store file.
func (r *partRig) open(name string, part int) *testNode {
	r.t.Helper()
	path := r.path(name, part)
	st, err := OpenStore(path, store.Options{})
	if err != nil {
		r.t.Fatal(err)
	}
	opts := Options{Name: name, Store: st, Clock: r.clock, ExpiryInterval: time.Hour,
		Home:      r.spec.home,
		IsRegion:  func(s string) bool { return slices.Contains(r.spec.regions, s) },
		Publisher: partRigPub{r, name, part},
		Forwarder: partRigFwd{r, name, part},
		Partition: part, Partitions: r.spec.parts,
	}
	if r.spec.wrap != nil {
		opts.Forwarder = r.spec.wrap(name, opts.Forwarder)
	}
	if r.spec.replicas != nil {
		opts.Replicas = r.spec.replicas(r, name, part)
	}
	if r.spec.escrow != nil {
		opts.Escrow = r.spec.escrow
		opts.Background = func(f func()) { f() }
	}
	if r.spec.peers {
		for _, p := range r.spec.regions {
			if p != name {
				opts.PeerRegions = append(opts.PeerRegions, p)
			}
		}
	}
	n, err := NewNode(opts)
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

// regroup makes the partitions of region name one region again.
func (r *partRig) regroup(name string) {
	r.t.Helper()
	var list []*Node
	for p := range r.spec.parts {
		list = append(list, r.nodes[name][p].Node)
	}
	ps, err := NewPartitions(name, name, r.spec.parts, list)
	if err != nil {
		r.t.Fatal(err)
	}
	r.parts[name] = ps
}

// apply applies d at partition part of region to.
func (r *partRig) apply(to string, part int, d Delta) {
	r.t.Helper()
	dots := &crdt.Context{}
	dots.Insert(crdt.Dot{Replica: d.Origin, Counter: d.Seq})
	if err := r.nodes[to][part].ApplyRemote(dots, d.Group); err != nil {
		r.t.Fatalf("apply at %s/%d: %v", to, part, err)
	}
}

// deliverTo applies every delta partition part of region from published
// so far at the same partition of region to.
func (r *partRig) deliverTo(from, to string, part int) {
	r.t.Helper()
	r.mu.Lock()
	q := r.queue[from][part]
	r.queue[from][part] = nil
	r.mu.Unlock()
	for _, d := range q {
		r.apply(to, part, d)
	}
}

// deliver applies every queued delta at the same partition of every other
// region not cut off from its origin (the others stay queued).
func (r *partRig) deliver() {
	r.t.Helper()
	for _, from := range r.spec.regions {
		for p := range r.spec.parts {
			r.mu.Lock()
			q := r.queue[from][p]
			r.queue[from][p] = nil
			r.mu.Unlock()
			var keep []Delta
			for _, d := range q {
				held := false
				for _, to := range r.spec.regions {
					if to == from {
						continue
					}
					if r.cut[to] || r.cut[from] {
						held = true
						continue
					}
					r.apply(to, p, d)
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

// request returns the context of an API request routed to partition part
// (as the API's route and begin make it), bounded by d.
func (r *partRig) request(part int, d time.Duration) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	return WithAnswer(WithPartition(ctx, part)), cancel
}

// keyRequest returns the context of an API request routed to key's
// partition, bounded by 5s.
func (r *partRig) keyRequest(key string) (context.Context, context.CancelFunc) {
	return r.request(config.PartitionOf(key, r.spec.parts), 5*time.Second)
}

// key returns the first key prefix-N of partition part.
func (r *partRig) key(prefix string, part int) string {
	for i := 0; ; i++ {
		if k := fmt.Sprintf("%s%d", prefix, i); config.PartitionOf(k, r.spec.parts) == part {
			return k
		}
	}
}

// reserve reserves qty of sku for a minute through region name.
func (r *partRig) reserve(name, sku string, qty int64, idem Idem) (Reservation, error) {
	ctx, cancel := r.keyRequest(sku)
	defer cancel()
	return r.parts[name].Reserve(ctx, sku, qty, time.Minute, idem)
}
