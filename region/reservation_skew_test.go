package region

import (
	"context"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/latticedb/lattice/region/store"
)

// skewRig is two regions in one process, each with its own fake clock:
// "h", the home of every sku, and "a", which forwards home requests to h
// (answered at once, in line). calls counts the forwarded requests; down
// makes the home unreachable.
type skewRig struct {
	t     *testing.T
	nodes map[string]*testNode
	mu    sync.Mutex
	calls int
	down  bool
}

type skewFwd struct {
	r *skewRig
}

func (f skewFwd) Forward(ctx context.Context, home string, req *HomeRequest) (*HomeResponse, error) {
	f.r.mu.Lock()
	f.r.calls++
	down := f.r.down
	f.r.mu.Unlock()
	if down || f.r.nodes[home] == nil {
		return nil, &Error{Code: CodeHomeUnavailable, RetryAfter: 1, Detail: "unreachable"}
	}
	c := *req
	return f.r.nodes[home].ServeForwarded(ctx, &c), nil
}

func newSkewRig(t *testing.T, clocks map[string]*fakeClock) *skewRig {
	r := &skewRig{t: t, nodes: map[string]*testNode{}}
	dir := t.TempDir()
	for _, name := range []string{"h", "a"} {
		path := filepath.Join(dir, name, "data.db")
		st, err := OpenStore(path, store.Options{})
		if err != nil {
			t.Fatal(err)
		}
		peer := "a"
		if name == "a" {
			peer = "h"
		}
		n, err := NewNode(Options{Name: name, Store: st, Clock: clocks[name], ExpiryInterval: time.Hour,
			Home:        func(string) string { return "h" },
			IsRegion:    func(r string) bool { return r == "h" || r == "a" },
			Forwarder:   skewFwd{r},
			PeerRegions: []string{peer},
		})
		if err != nil {
			t.Fatal(err)
		}
		tn := &testNode{Node: n, store: st, path: path, clock: clocks[name]}
		r.nodes[name] = tn
		t.Cleanup(tn.close)
	}
	return r
}

// TestForwardedReservationUsesHomeClock: the state of a reservation read
// through a region that is not its home is its state at the home, by the
// home's clock, so that what GET shows agrees with what a commit sent the
// same way does, with the forwarding region's clock 300 ms behind or
// ahead of the home's (well within a second).
func TestForwardedReservationUsesHomeClock(t *testing.T) {
	for _, skew := range []time.Duration{-300 * time.Millisecond, 300 * time.Millisecond} {
		t.Run(skew.String(), func(t *testing.T) {
			hc := newFakeClock()
			ac := newFakeClock()
			ac.Advance(skew) // a's clock = home's + skew
			r := newSkewRig(t, map[string]*fakeClock{"h": hc, "a": ac})
			ctx := context.Background()
			if _, err := r.nodes["h"].Restock(ctx, "sku1", 10); err != nil {
				t.Fatal(err)
			}
			res, err := r.nodes["a"].Reserve(ctx, "sku1", 1, time.Second, Idem{})
			if err != nil {
				t.Fatal(err)
			}
			// On the home's clock: 100 ms past expiry when a is behind,
			// 100 ms before it when a is ahead (a's clock on the other
			// side of expires_at either way).
			step := time.Second + 100*time.Millisecond
			if skew > 0 {
				step = time.Second - 100*time.Millisecond
			}
			hc.Advance(step)
			ac.Advance(step)
			got, err := r.nodes["a"].GetReservation(ctx, res.ID)
			if err != nil {
				t.Fatal(err)
			}
			atHome, err := r.nodes["h"].GetReservation(ctx, res.ID)
			if err != nil {
				t.Fatal(err)
			}
			c, cerr := r.nodes["a"].Commit(ctx, res.ID, Idem{})
			t.Logf("GET via a: %s; GET at home: %s; commit via a: %+v err %v", got.State, atHome.State, c.State, cerr)
			if got.State != atHome.State {
				t.Fatalf("GET of %s through a reads %q, at its home %q (commit through a then: state %q, err %v)",
					res.ID, got.State, atHome.State, c.State, cerr)
			}
		})
	}
}

// TestMalformedReservationIDNoRoundTrip: an id not of the cluster's form
// is 404 not_found at once, without asking anyone: in an unpartitioned
// cluster "h:3:5" (the partitioned form) names no reservation, and is not
// forwarded to the home (unreachable here: it would answer 503).
func TestMalformedReservationIDNoRoundTrip(t *testing.T) {
	r := newSkewRig(t, map[string]*fakeClock{"h": newFakeClock(), "a": newFakeClock()})
	r.mu.Lock()
	r.down = true
	r.mu.Unlock()
	ctx := context.Background()
	for _, id := range []string{"h:3:5", "h:0:5"} {
		_, err := r.nodes["a"].Commit(ctx, id, Idem{})
		r.mu.Lock()
		calls := r.calls
		r.calls = 0
		r.mu.Unlock()
		var e *Error
		if !asErr(err, &e) || e.Code != CodeNotFound || calls != 0 {
			t.Errorf("commit of %q (unpartitioned cluster): err %v after %d forwarded calls, want 404 not_found without a round trip", id, err, calls)
		}
	}
}

func asErr(err error, e **Error) bool {
	x, ok := err.(*Error)
	if ok {
		*e = x
	}
	return ok
}
