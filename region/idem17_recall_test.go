package region

import (
	"errors"
	"testing"
	"time"
)

// TestKeyedReserveInProgressDuringRecall: a keyed reservation at the home
// that must recall rights from another region is still running while the
// recall is under way. Another request with the same key sent meanwhile
// must be answered 409 request_in_progress (docs/api.md, Idempotency,
// Concurrency), and the first request decides its own outcome; the second
// must not be decided in its place, leaving the first answered
// idempotency_mismatch.
func TestKeyedReserveInProgressDuringRecall(t *testing.T) {
	r := newHookRig(t)
	h, a := r.nodes["h"], r.nodes["a"]
	must[Item](t)(h.Restock(bg, "e1", 4))
	r.deliver(nil)
	// a takes rights to some units (and holds one of them): the home then
	// has fewer than 3 available without recalling a's unused rights.
	must[Reservation](t)(a.Reserve(bg, "e1", 1, time.Minute, Idem{}))
	r.deliver(nil)

	blocked := make(chan struct{})
	unblock := make(chan struct{})
	recalls := 0
	r.hook = func(from, home string, req *HomeRequest) error {
		if req.Op != OpRecall {
			return nil
		}
		r.hmu.Lock()
		recalls++
		first := recalls == 1
		r.hmu.Unlock()
		if first {
			close(blocked)
			<-unblock // the recall is on its way to a
		}
		return nil
	}
	type result struct {
		res Reservation
		err error
	}
	first := make(chan result, 1)
	go func() {
		res, err := h.Reserve(bg, "e1", 3, time.Minute, Idem{Key: "k", Fingerprint: [32]byte{1}})
		first <- result{res, err}
	}()
	select {
	case <-blocked:
	case f := <-first:
		close(unblock)
		t.Skipf("the keyed reservation was answered (%+v, %v) without a recall; the rig gave no rights to a", f.res, f.err)
	case <-time.After(10 * time.Second):
		t.Fatal("the keyed reservation neither recalled rights nor was answered within 10 s")
	}
	// Another request under the same key (another body) while the first runs.
	second, err2 := h.Reserve(bg, "e1", 2, time.Minute, Idem{Key: "k", Fingerprint: [32]byte{2}})
	close(unblock)
	var f result
	select {
	case f = <-first:
	case <-time.After(10 * time.Second):
		t.Fatal("the first keyed reservation was not answered within 10 s of its recall")
	}
	t.Logf("first: %+v %v; second while it ran: %+v %v", f.res, f.err, second, err2)
	var e *Error
	if !errors.As(err2, &e) || e.Code != CodeRequestInProgress {
		t.Errorf("a request under the key while the first ran at the home answered %+v, %v; want 409 request_in_progress", second, err2)
	}
	if errors.As(f.err, &e) && e.Code == CodeIdempotencyMismatch {
		t.Errorf("the first request under the key answered idempotency_mismatch: a later request was decided in its place")
	}
}
