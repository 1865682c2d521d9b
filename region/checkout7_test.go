package region

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestKeylessCheckoutReturnReleasesItsUnansweredHold: a checkout of a:1
// and b:1 without an Idempotency-Key holds both lines; both holds expire
// before their commits, so it rolls forward and reserves both again. h1
// makes a's new hold but its answer is lost (h1 is reachable: only that
// one answer is lost). A keyless checkout does not wait in phase commit:
// it undoes itself (phase return) and settles as a failure.
//
// docs/checkout.md, Return: "a line being reserved again whose answer was
// lost is sent again under its key and released"; The rule: a settled
// failure holds nothing (only "a hold that a release could not reach"
// expires by its ttl). Keyed or not, the line carries its derived key,
// so the hold can be found and released. Expected: a holds 0 once the
// checkout has settled. The return phase skips the line of a keyless
// checkout instead, and its unit stays held until the ttl.
func TestKeylessCheckoutReturnReleasesItsUnansweredHold(t *testing.T) {
	r := newCo4Rig(t)
	must[Item](t)(r.nodeOf("a").Restock(bg, "a", 1))
	must[Item](t)(r.nodeOf("b").Restock(bg, "b", 1))
	must[Cart](t)(r.coord.AddItem(bg, "c", "a", 1))
	must[Cart](t)(r.coord.AddItem(bg, "c", "b", 1))

	var once sync.Once
	r.sh.setHook(func(req *HomeRequest) {
		if req.Op != OpCommit {
			return
		}
		once.Do(func() {
			// Both holds expire before their commits arrive, and the
			// answer to a's next reservation will be lost.
			r.clock.Advance(2 * sagaTTL)
			r.sh.set("reserve a lose")
		})
	})
	_, err := r.coord.Checkout(bg, "c", sagaTTL, Idem{})
	r.sh.setHook(nil)
	r.sh.set()
	if err == nil {
		t.Fatal("test setup: the checkout was answered with an order")
	}
	// Whatever the coordinator still does by itself.
	for range 2 {
		r.clock.Advance(settleAfter + time.Second)
		r.coord.SettleCheckouts()
	}
	if _, held := r.stockOf("b"); held != 0 {
		t.Fatalf("test setup: b holds %d", held)
	}
	if _, held := r.stockOf("a"); held != 0 {
		_, rerr := r.nodeOf("a").Reserve(bg, "a", 1, time.Minute, Idem{})
		t.Errorf("the keyless checkout failed (%v) and settled, yet %d unit(s) of a stay held at h1 by its own "+
			"re-reservation whose answer was lost (h1 reachable); another buyer of a's only unit: %v", err, held, rerr)
	}
}

// c7Hang makes every request to home h1 hang until its caller gives up
// (a home cut off by a network that drops packets), and passes the others
// on.
type c7Hang struct {
	inner *co4Homes
	hang  atomic.Bool
}

func (h *c7Hang) Forward(ctx context.Context, home string, req *HomeRequest) (*HomeResponse, error) {
	if home == "h1" && h.hang.Load() {
		<-ctx.Done()
		return nil, &Error{Code: CodeHomeUnavailable, RetryAfter: 1, Detail: "home h1 did not answer"}
	}
	return h.inner.Forward(ctx, home, req)
}

// TestRefusedCheckoutAnswersWithinItsDeadline: a keyed checkout of a:1
// and b:1, with b sold out, while h1 (a's home) does not answer at all.
// The checkout is refused (b is short, and a's hold may exist), so it
// tries to release a's possible hold before it settles; h1 still does
// not answer. releaseLoose's contract (region/checkout.go): it "takes at
// most a quarter of the time ctx has left ...: a home still out of reach
// must not cost the attempt its own deadline" (docs/checkout.md: "using
// at most a quarter of its time"). Expected: the answer (503 or 409)
// comes within the request's 400 ms deadline (plus slack), and the
// cart's checkout claim is free by then. The final refusal's
// releaseLoose runs on a context stripped of the deadline, so h1's
// silence costs a further compensateTimeout (2 s) past it, holding the
// cart's claim all along.
func TestRefusedCheckoutAnswersWithinItsDeadline(t *testing.T) {
	r := newCo4Rig(t)
	hang := &c7Hang{inner: r.sh}
	r.coord.close()
	r.coord = r.open("us-east", hang)
	must[Item](t)(r.nodeOf("a").Restock(bg, "a", 1))
	must[Cart](t)(r.coord.AddItem(bg, "c", "a", 1))
	must[Cart](t)(r.coord.AddItem(bg, "c", "b", 1)) // b: no stock

	hang.hang.Store(true)
	const deadline = 400 * time.Millisecond
	ctx, cancel := context.WithTimeout(bg, deadline)
	defer cancel()
	start := time.Now()
	_, err := r.coord.Checkout(ctx, "c", sagaTTL, fp("refused-hang"))
	took := time.Since(start)
	if err == nil {
		t.Fatal("test setup: the checkout was answered with an order")
	}
	if took > deadline+600*time.Millisecond {
		t.Errorf("a checkout with a %v deadline (b short, h1 silent) answered %v after %v: the release of its possible "+
			"hold at h1 ran past the request's deadline (holding the cart's checkout claim meanwhile)", deadline, co4Code(err), took.Round(time.Millisecond))
	}
}

// TestCheckoutRetryAfterConcernTimeoutWaitsForHomes: a keyed checkout of
// a and b with a write concern of 2 (Lattice-Replicas: 2); h2 commits b
// but its write cannot reach a second region, so the checkout records
// the order and answers replication_timeout. The client retries with
// the key while h2's commit still has not reached a second region.
// docs/api.md, Write concern: "A retry with the same Idempotency-Key
// (where the route takes one) answers the recorded result and waits
// again", and "A checkout waits for the coordinator's writes and each
// home's decisions". So the retry must not be acknowledged with the
// concern met while b's commit is at one region only: it must answer
// replication_timeout again (until h2's write replicates). Instead the
// coordinator replays the order and waits for its own writes only: the
// retry is a success with Lattice-Replicas: 2 for a decision held by one
// region.
func TestCheckoutRetryAfterConcernTimeoutWaitsForHomes(t *testing.T) {
	r := newC6Rig(t)
	r.fill()
	idem := fp("concern-retry")
	r.homes.setFail("h2", "*") // h2's writes reach no second region
	// As the API answers: the checkout, then the answering region's own
	// wait for its writes.
	checkout := func() (Order, error) {
		ctx, cancel := context.WithTimeout(WithReplicas(WithAnswer(bg), 2), 2*time.Second)
		defer cancel()
		o, err := r.coord.Checkout(ctx, "c", sagaTTL, idem)
		if err != nil {
			return o, err
		}
		return o, r.coord.AwaitReplicas(ctx)
	}
	_, err := checkout()
	wantCode(t, err, CodeReplicationTimeout)
	order, err := checkout()
	if err == nil {
		t.Errorf("a retry with the key, while h2's commit of b still reaches no second region, answered the order %s "+
			"with Lattice-Replicas: 2 met; want replication_timeout again (the retry waits again for each home's decision)", order.OrderID)
	}
}
