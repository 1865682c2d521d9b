package region

import (
	"bytes"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/latticedb/lattice/region/store"
)

// TestRemovedRegionRestartedOnItsStoreDoesNotDecideWithTheNewHome: p1
// (stock 10) is homed at c. c is removed as docs/operations.md says
// (no open holds, its peers hold its writes; stop it, remove it from
// the config, restart the others), which moves p1 to b; h and b agree
// on the new homes and b sells the 10 units. Then c's machine starts c
// again, cleanly, on its own store and its own (old) config file, as a
// supervisor or a reboot does. Its peers refuse it (it is not in their
// config), so it never completes a round that would show it their homes.
// The promise: two regions on different configs never both decide a
// sku, so c, on the old config, must not sell p1 while b, on the new
// one, does (c must refuse: 503). What happens: c's store still says
// that h and b ran its homes, so it decides at once, and 20 of 10 are
// sold.
func TestRemovedRegionRestartedOnItsStoreDoesNotDecideWithTheNewHome(t *testing.T) {
	r := newReconfRig(t, []string{"h", "b", "c"}, homeAt("c"), escrowOnE(false))
	_, _, c := r.open("h"), r.open("b"), r.open("c")
	must[Item](t)(c.Restock(bg, "p1", 10))
	r.deliver()

	// Remove c: stop it, then every other region restarts on the new
	// config, in which p1's home is b.
	r.stop("c")
	r.regions = []string{"h", "b"}
	r.home = homeAt("b")
	r.stop("h")
	h := r.open("h")
	r.stop("b")
	b := r.open("b")
	r.antiEntropy("h", "b", nil, []string{"p1"})
	h.SyncedWith("b", b.HomesID(), []string{"b"})
	b.SyncedWith("h", h.HomesID(), []string{"h"})
	sold := must[Reservation](t)(b.Reserve(bg, "p1", 10, time.Minute, Idem{}))
	must[Reservation](t)(b.Commit(bg, sold.ID, Idem{}))

	// c starts again on its store with the config it always had.
	r.regions = []string{"h", "b", "c"}
	r.home = homeAt("c")
	c = r.open("c")
	r.regions = []string{"h", "b"}
	r.home = homeAt("b")
	got, err := c.Reserve(bg, "p1", 10, time.Minute, Idem{})
	if err == nil {
		must[Reservation](t)(c.Commit(bg, got.ID, Idem{}))
		t.Fatalf("c, removed and started again on its old config, sold 10 of p1 while b, p1's home on the new config, had sold 10: 20 committed of 10 (c's warnings: %q)",
			c.Warnings())
	}
	wantCode(t, err, CodeUnavailable)
}

// TestCaughtUpLogDoesNotSayDecidesWhileHomesDisagree: b restarts first
// on new homes (p1 moves from h to b) and completes its catch-up with h,
// which still runs the old ones. b does not decide (its peer runs other
// homes: 503), so its log must not say it "decides reservations again"
// (docs/operations.md lists that INFO line as the sign that a region
// decides again after a catch-up). What happens: it logs it.
func TestCaughtUpLogDoesNotSayDecidesWhileHomesDisagree(t *testing.T) {
	r := newReconfRig(t, []string{"h", "b"}, homeAt("h"), escrowOnE(false))
	h, _ := r.open("h"), r.open("b")
	must[Item](t)(h.Restock(bg, "p1", 10))
	r.deliver()
	r.stop("b")
	r.home = homeAt("b")
	var logs syncBuffer
	b := openLogged(r, "b", slog.New(slog.NewTextHandler(&logs, nil)))
	r.antiEntropy("h", "b", nil, []string{"p1"})
	b.SyncedWith("h", h.HomesID(), []string{"h"})
	if b.CatchingUp() {
		t.Fatal("b still catches up after a complete round with its one peer")
	}
	_, err := b.Reserve(bg, "p1", 1, time.Minute, Idem{})
	wantCode(t, err, CodeUnavailable)
	if out := logs.String(); strings.Contains(out, "decides reservations again") {
		t.Fatalf("b refuses reservations (its peer h runs other homes) but logged that it decides again:\n%s", out)
	}
}

// syncBuffer is a bytes.Buffer safe for the node's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// openLogged is reconfRig.open with the node's log going to log.
func openLogged(r *reconfRig, name string, log *slog.Logger) *testNode {
	r.t.Helper()
	return openLoggedWith(r, name, log, 0)
}

// openLoggedWith is openLogged with Options.CatchUpWait wait; it shows
// the region no peer's homes (the test does).
func openLoggedWith(r *reconfRig, name string, log *slog.Logger, wait time.Duration) *testNode {
	r.t.Helper()
	path := filepath.Join(r.dir, name, "data.db")
	st, err := OpenStore(path, store.Options{})
	if err != nil {
		r.t.Fatal(err)
	}
	var peers []string
	for _, p := range r.regions {
		if p != name {
			peers = append(peers, p)
		}
	}
	regions := slices.Clone(r.regions)
	n, err := NewNode(Options{Name: name, Store: st, Clock: r.clock, ExpiryInterval: time.Hour,
		Home:        r.home,
		HomesID:     fmt.Sprint(r.home("p1"), r.home("e1"), regions),
		Escrow:      r.escrow,
		IsRegion:    func(x string) bool { return slices.Contains(regions, x) },
		Publisher:   reconfPub{r, name},
		Forwarder:   reconfFwd{r, name},
		PeerRegions: peers,
		Background:  func(f func()) { f() },
		Logger:      log,
		CatchUpWait: wait,
	})
	if err != nil {
		r.t.Fatal(err)
	}
	tn := &testNode{Node: n, store: st, path: path, clock: r.clock}
	r.nodes[name] = tn
	r.cfg[name] = regions
	r.t.Cleanup(tn.close)
	return tn
}

// TestHomesWaiterWakesWhenPeersAgreeAfterCatchUp: a reservation waiting
// (CatchUpWait) at a region whose homes changed waits through the end of
// its catch-up while its peer still shows other homes — woken, it waits
// again rather than answering 503 or spinning — and is decided as soon as
// the peer shows the same homes.
func TestHomesWaiterWakesWhenPeersAgreeAfterCatchUp(t *testing.T) {
	r := newReconfRig(t, []string{"h", "b"}, homeAt("h"), escrowOnE(false))
	h, _ := r.open("h"), r.open("b")
	must[Item](t)(h.Restock(bg, "p1", 10))
	r.stop("b")
	r.stop("h")
	// e1 moves to b, p1 stays at h: h's homes changed.
	r.home = func(sku string) string {
		if sku == "e1" {
			return "b"
		}
		return "h"
	}
	h = openLoggedWith(r, "h", nil, 10*time.Second)
	if !h.CatchingUp() {
		t.Fatal("h does not catch up after its homes changed")
	}
	waiting := func() bool {
		h.dmu.Lock()
		defer h.dmu.Unlock()
		return h.caughtUp != nil
	}
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		for end := time.Now().Add(5 * time.Second); !cond(); time.Sleep(time.Millisecond) {
			if time.Now().After(end) {
				t.Fatalf("timed out waiting until %s", what)
			}
		}
	}
	type result struct {
		res Reservation
		err error
	}
	done := make(chan result, 1)
	go func() {
		res, err := h.Reserve(bg, "p1", 1, time.Minute, Idem{})
		done <- result{res, err}
	}()
	waitFor("the reservation waits", waiting)

	// A complete round with b, which still runs the old homes: the
	// catch-up ends, the waiter wakes and must wait again.
	h.SyncedWith("b", "the old homes", []string{"b"})
	if h.CatchingUp() {
		t.Fatal("h still catches up after a round with its one peer")
	}
	waitFor("the reservation waits again", func() bool {
		select {
		case got := <-done:
			t.Fatalf("the reservation was answered while b shows other homes: %+v", got)
		default:
		}
		return waiting()
	})

	h.SyncedWith("b", h.HomesID(), []string{"b"})
	select {
	case got := <-done:
		if got.err != nil {
			t.Fatalf("refused once every peer shows h's homes: %v", got.err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the waiting reservation was not woken when every peer came to show h's homes")
	}
}
