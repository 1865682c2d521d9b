package region

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/latticedb/lattice/region/store"
)

// manyHome carries a coordinator's home requests to one in-process home
// h1 (the home of every sku but the carts'), as over the wire. While
// loseAnswers is set, every request is served and its answer lost.
type manyHome struct {
	mu          sync.Mutex
	home        *testNode
	loseAnswers bool
}

func (h *manyHome) Forward(ctx context.Context, home string, req *HomeRequest) (*HomeResponse, error) {
	h.mu.Lock()
	lose := h.loseAnswers
	h.mu.Unlock()
	c := *req
	resp := h.home.ServeForwarded(ctx, &c)
	if lose {
		return nil, &Error{Code: CodeHomeUnavailable, RetryAfter: 1, Detail: "the answer of home " + home + " was lost"}
	}
	return resp, nil
}

func openManyNode(t *testing.T, dir, name string, clock *fakeClock, fw Forwarder) *testNode {
	t.Helper()
	path := filepath.Join(dir, name, "data.db")
	st, err := OpenStore(path, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	opts := Options{Name: name, Store: st, Clock: clock, ExpiryInterval: time.Hour}
	if fw != nil {
		opts.Forwarder = fw
		opts.Home = func(key string) string {
			if key == "c" {
				return "us-east"
			}
			return "h1"
		}
	}
	n, err := NewNode(opts)
	if err != nil {
		t.Fatal(err)
	}
	tn := &testNode{Node: n, store: st, path: path, clock: clock}
	t.Cleanup(tn.close)
	return tn
}

// TestCheckoutOfManyLinesNotRefusedByItsOwnLostHolds: a keyed checkout of
// a cart of 70 lines (a cart may hold 1,000 skus), each the last unit of
// its sku at home h1, has every reservation made at h1 but every answer
// lost: 503, and every line may hold. checkout.md: "the plan keeps them,
// and the next retry with the key first sends that reservation again
// under its key ... and releases it, before it reserves anything", and a
// checkout refused for good first releases such reservations ("a settled
// failure holds nothing"). With every home reachable, the retry must
// therefore release all 70 holds and buy the cart. The plan keeps only
// the latest 64 loose holds (maxLoose), so the retry never releases the
// holds of the first 6 lines, finds those lines short (held by nobody but
// this checkout) and settles the checkout, for good under its key, as
// insufficient_stock, with its own holds still holding the units.
func TestCheckoutOfManyLinesNotRefusedByItsOwnLostHolds(t *testing.T) {
	const lines = 70
	dir, clock := t.TempDir(), newFakeClock()
	fw := &manyHome{}
	fw.home = openManyNode(t, dir, "h1", clock, nil)
	coord := openManyNode(t, dir, "us-east", clock, fw)
	for i := range lines {
		sku := fmt.Sprintf("s%02d", i)
		must[Item](t)(fw.home.Restock(bg, sku, 1))
		must[Cart](t)(coord.AddItem(bg, "c", sku, 1))
	}
	idem := fp("many-lost")

	fw.mu.Lock()
	fw.loseAnswers = true
	fw.mu.Unlock()
	_, err := coord.Checkout(bg, "c", sagaTTL, idem)
	wantCode(t, err, CodeHomeUnavailable)
	if it := must[Item](t)(fw.home.GetItem(bg, "s00", false)); it.Reserved != 1 {
		t.Fatalf("setup: s00 at h1 %+v, want its unit held by the checkout's lost reservation", it)
	}

	fw.mu.Lock()
	fw.loseAnswers = false
	fw.mu.Unlock()
	order, err := coord.Checkout(bg, "c", sagaTTL, idem)
	if err != nil {
		var held []string
		for i := range lines {
			sku := fmt.Sprintf("s%02d", i)
			if it := must[Item](t)(fw.home.GetItem(bg, sku, false)); it.Reserved != 0 {
				held = append(held, sku)
			}
		}
		// Once those holds have expired, the key still replays the refusal.
		clock.Advance(2 * sagaTTL)
		if err := fw.home.ExpireDue(); err != nil {
			t.Fatal(err)
		}
		_, later := coord.Checkout(bg, "c", sagaTTL, idem)
		t.Fatalf("retry with every home reachable: %v, want the order; skus still held at h1 by the checkout's first attempt: %v "+
			"(nobody else ever reserved them); a retry once they expired: %v", err, held, later)
	}
	if len(order.Lines) != lines {
		t.Fatalf("order has %d lines, want %d", len(order.Lines), lines)
	}
}
