package region

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/latticedb/lattice/region/store"
)

// TestReleaseOfManyHeldBackKeysEnds: us-east's store opens with a damaged
// cart line and 33,000 stock values that fail their checksums (a damaged
// stretch of its disk). It holds them all back while it catches up. Once every
// peer's round has completed, releaseHeldBack applies one group of empty
// states, every held-back cart and item in it; ApplyGroup gives the carts
// MaxApplyKeys - 2×JoinCartEntries - len(items) - 2 sets per transaction,
// which is below zero with more than 32,764 items: no cart is ever
// written and the loop runs empty transactions for good, under the locks
// of every held-back key, inside the replication's SyncedWith.
//
// The scenario runs in a child process (the loop never ends and cannot
// be stopped from here); the test fails if it does not finish in time.
func TestReleaseOfManyHeldBackKeysEnds(t *testing.T) {
	if os.Getenv("LATTICE_HELDBACK10_CHILD") == "1" {
		heldBack10ReleaseMany(t)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestReleaseOfManyHeldBackKeysEnds$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), "LATTICE_HELDBACK10_CHILD=1")
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("the release of the keys us-east held back (33,000 items and a cart) had not ended after 30 s: SyncedWith loops in ApplyGroup")
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		t.Fatalf("the scenario failed:\n%s", heldBack10Tail(out, 2000))
	} else if err != nil {
		t.Fatal(err)
	}
}

func heldBack10Tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

func heldBack10ReleaseMany(t *testing.T) {
	const items = 33000
	r := newSemRig(t, "us-east", "eu-west")
	a := r.nodes["us-east"]
	must[Cart](t)(a.AddItem(bg, "v", "apple", 1))
	must[Cart](t)(a.AddItem(bg, "v", "pear", 1))
	must[Cart](t)(a.AddItem(bg, "other", "fig", 1))
	a.close()
	r.closed["us-east"] = true
	st, err := OpenStore(a.path, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	keys := make([]string, items)
	for i := range keys {
		keys[i] = prefixItem + fmt.Sprintf("sku-%05d", i)
	}
	if err := st.Update(keys, func(tx *store.Tx) error {
		for _, k := range keys {
			tx.Set(k, bytes.Repeat([]byte{0x5a}, 32))
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	flipStoredByte(t, a.path, cartLineKey("v", "pear"))
	heldBack10FlipAll(t, a.path, prefixItem+"sku-")
	a = r.open("us-east")
	if !a.CatchingUp() {
		t.Fatal("us-east is not catching up")
	}
	if !a.isHeldBack(prefixCart+"v") || !a.isHeldBack(keys[0]) {
		t.Fatal("us-east does not hold back the damaged keys")
	}
	a.SyncedWith("eu-west", "", []string{"eu-west"})
	if _, err := a.GetCart(bg, "v"); err != nil {
		t.Errorf("after the release, cart v is refused: %v", err)
	}
}

// heldBack10FlipAll flips, as flipStoredByte does, a byte of the payload
// of every value whose key starts with prefix, in one pass over the file.
func heldBack10FlipAll(t *testing.T, path, prefix string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for i := 0; ; {
		k := bytes.Index(b[i:], []byte("\r\n"+prefix))
		if k < 0 {
			break
		}
		i += k + 2
		e := bytes.Index(b[i:], []byte("\r\n$"))
		j := i + e + 3
		j += bytes.Index(b[j:], []byte("\r\n")) + 2
		b[j+14+3] ^= 0x40
		n++
		i = j
	}
	if n == 0 {
		t.Fatalf("no value of %s found in the file", prefix)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}
