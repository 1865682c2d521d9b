package region

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
)

// crash19BreakFsync makes every later fsync of the store file at path fail
// while its writes still reach the file: the store's own descriptor for
// fsyncs (the one of the file's descriptors never read or written: its
// offset is 0) is replaced by a pipe, on which fsync fails (EINVAL) and
// fstat works, as an fsync that meets a disk error (EIO) fails.
func crash19BreakFsync(t *testing.T, path string) {
	t.Helper()
	abs, err := filepath.Abs(path)
	if err != nil {
		t.Fatal(err)
	}
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("no /proc/self/fd: %v", err)
	}
	target := -1
	for _, e := range ents {
		fd, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if l, err := os.Readlink("/proc/self/fd/" + e.Name()); err != nil || l != abs {
			continue
		}
		info, err := os.ReadFile("/proc/self/fdinfo/" + e.Name())
		if err != nil {
			continue
		}
		if strings.Contains(string(info), "pos:\t0\n") {
			target = fd
		}
	}
	if target < 0 {
		t.Fatalf("no fsync descriptor of %s found", abs)
	}
	var p [2]int
	if err := syscall.Pipe(p[:]); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Dup3(p[1], target, syscall.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	syscall.Close(p[0])
	syscall.Close(p[1])
}

// crash19FsyncFault forwards to the homes; before the first reservation
// goes out (the plan in phase reserve stored and synced) it breaks the
// coordinator's fsyncs.
type crash19FsyncFault struct {
	inner Forwarder
	once  sync.Once
	arm   func()
}

func (f *crash19FsyncFault) Forward(ctx context.Context, home string, req *HomeRequest) (*HomeResponse, error) {
	if req.Op == OpReserve {
		f.once.Do(f.arm)
	}
	return f.inner.Forward(ctx, home, req)
}

// TestCrash19PlanSyncFailureAnswersUnavailable: with durability everysec
// the coordinator stores its plan in phase commit and syncs it
// (savePlan, Store.Sync); the fsync fails. The plan reached the file and
// may be there after the restart, so the checkout must answer 500
// internal, not 503 (docs/api.md: a write whose fsync failed "is not a
// 503"); 0738dd0 meant to do so. But reservePhase goes on to release the
// holds and finishCheckout records the attempt on the store that the
// failed fsync failed: that write is refused (ErrStoreFailed) and its 503
// is what the client gets. After a restart, the retry with the key finds
// the plan in phase commit and makes the order: the shopper was told
// nothing was decided, and is charged.
func TestCrash19PlanSyncFailureAnswersUnavailable(t *testing.T) {
	r := newSagaRig(t)
	r.fill()
	r.coord.close()
	path := filepath.Join(r.dir, "us-east", "data.db")
	r.coord = crash18OpenCoordVia(r, &crash19FsyncFault{inner: r.homes, arm: func() { crash19BreakFsync(t, path) }})
	st := r.coord.store

	_, err := r.checkout()
	if !st.Failed() {
		t.Skipf("test setup: the fsync did not fail the store (answer %v)", err)
	}
	var e *Error
	if !asErr(err, &e) {
		t.Fatalf("checkout whose plan's fsync failed answered %v (%T)", err, err)
	}
	code := e.Code

	// What the 503 hides: the plan in phase commit is in the file.
	r.coord.crash()
	r.coord = crash18OpenCoord(r)
	order, rerr := crash18Retry(t, r)
	if rerr != nil {
		t.Skipf("test setup: the plan in phase commit was not stored (the everysec ticker's fsync failed the store first): retry %v", rerr)
	}
	if code != CodeInternal {
		t.Errorf("a checkout whose plan's fsync failed answered %s (%v), want %s: the plan in phase commit reached the file, and the retry with the key after the restart answers order %+v (err %v)",
			code, e, CodeInternal, order.OrderID, rerr)
	}
	for home, sku := range map[string]string{"h1": "a", "h2": "b"} {
		if it := r.item(home, sku); it.Stock != 9 {
			t.Fatalf("%s at %s after the retry: %+v, want the order's unit taken", sku, home, it)
		}
	}
}
