package region

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/latticedb/lattice/region/store"
)

// sagattlRig is a coordinator us-east (home of every cart and of every
// sku but a and b) and homes h1 (a) and h2 (b), each on its own file and
// with its own fake clock, joined by co4Homes.
type sagattlRig struct {
	t      *testing.T
	dir    string
	clocks map[string]*fakeClock
	sh     *co4Homes
	coord  *testNode
}

func newSagattlRig(t *testing.T) *sagattlRig {
	r := &sagattlRig{t: t, dir: t.TempDir(), clocks: map[string]*fakeClock{}, sh: &co4Homes{nodes: map[string]*testNode{}}}
	for _, n := range []string{"us-east", "h1", "h2"} {
		r.clocks[n] = newFakeClock()
	}
	for _, h := range []string{"h1", "h2"} {
		r.sh.nodes[h] = r.open(h, nil)
	}
	r.coord = r.open("us-east", r.sh)
	return r
}

func (r *sagattlRig) open(name string, fw Forwarder) *testNode {
	r.t.Helper()
	path := filepath.Join(r.dir, name, "data.db")
	st, err := OpenStore(path, store.Options{})
	if err != nil {
		r.t.Fatal(err)
	}
	opts := Options{Name: name, Store: st, Clock: r.clocks[name], ExpiryInterval: time.Hour}
	if fw != nil {
		opts.Forwarder = fw
		opts.Home = func(key string) string {
			switch key {
			case "a":
				return "h1"
			case "b":
				return "h2"
			}
			return "us-east"
		}
	}
	n, err := NewNode(opts)
	if err != nil {
		r.t.Fatal(err)
	}
	tn := &testNode{Node: n, store: st, path: path, clock: r.clocks[name]}
	r.t.Cleanup(tn.close)
	return tn
}

func (r *sagattlRig) crashCoordinator() {
	r.coord.crash()
	r.coord = r.open("us-east", r.sh)
}

func (r *sagattlRig) home(sku string) *testNode {
	return map[string]*testNode{"a": r.sh.nodes["h1"], "b": r.sh.nodes["h2"]}[sku]
}

// item reads sku at its home after expiring what is due there.
func (r *sagattlRig) item(sku string) Item {
	r.t.Helper()
	n := r.home(sku)
	if err := n.ExpireDue(); err != nil {
		r.t.Fatal(err)
	}
	return must[Item](r.t)(n.GetItem(bg, sku, false))
}

// advance moves the clocks of the named nodes.
func (r *sagattlRig) advance(d time.Duration, names ...string) {
	for _, n := range names {
		r.clocks[n].Advance(d)
	}
}

func (r *sagattlRig) fill(cart string) {
	for _, s := range []string{"a", "b"} {
		must[Item](r.t)(r.home(s).Restock(bg, s, 10))
		must[Cart](r.t)(r.coord.AddItem(bg, cart, s, 1))
	}
}
