package region

import (
	"errors"
	"fmt"
	"github.com/latticedb/lattice/region/store"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/latticedb/lattice/crdt"
)

func qtyOf(c Cart, sku string) int64 {
	for _, it := range c.Items {
		if it.SKU == sku {
			return it.Qty
		}
	}
	return 0
}

func TestCartOperations(t *testing.T) {
	n := newNode(t)
	mc := must[Cart](t)
	c := mc(n.AddItem(bg, "c1", "book", 2))
	c = mc(n.AddItem(bg, "c1", "book", 1))
	if qtyOf(c, "book") != 3 || c.Region != "us-east" || c.CartID != "c1" {
		t.Fatalf("after two adds: %+v", c)
	}
	c = mc(n.AddItem(bg, "c1", "apple", 5))
	if len(c.Items) != 2 || c.Items[0].SKU != "apple" {
		t.Fatalf("items not sorted by sku: %+v", c.Items)
	}
	c = mc(n.SetItem(bg, "c1", "book", 7))
	if qtyOf(c, "book") != 7 {
		t.Fatalf("set: %+v", c)
	}
	c = mc(n.SetItem(bg, "c1", "book", 0))
	if qtyOf(c, "book") != 0 || len(c.Items) != 1 {
		t.Fatalf("set 0 should remove: %+v", c)
	}
	c = mc(n.RemoveItem(bg, "c1", "apple"))
	if len(c.Items) != 0 {
		t.Fatalf("remove: %+v", c)
	}
	mc(n.AddItem(bg, "c1", "x", 1))
	c = mc(n.ClearCart(bg, "c1"))
	if len(c.Items) != 0 || c.Items == nil {
		t.Fatalf("clear must give an empty, non-nil item list: %#v", c.Items)
	}
	c = mc(n.GetCart(bg, "never-touched"))
	if len(c.Items) != 0 {
		t.Fatalf("untouched cart: %+v", c)
	}
}

func TestCartRejectsBadInputAndWritesNothing(t *testing.T) {
	n := newNode(t)
	before := n.Token()
	cases := []struct {
		name  string
		err   error
		field string
	}{
		{"bad cart id", second(n.AddItem(bg, "bad/id", "book", 1)), "cart_id"},
		{"empty sku", second(n.AddItem(bg, "c1", "", 1)), "sku"},
		{"long sku", second(n.AddItem(bg, "c1", string(make([]byte, 129)), 1)), "sku"},
		{"zero add", second(n.AddItem(bg, "c1", "book", 0)), "qty"},
		{"huge add", second(n.AddItem(bg, "c1", "book", 1_000_001)), "qty"},
		{"negative set", second(n.SetItem(bg, "c1", "book", -1)), "qty"},
		{"zero restock", second2(n.Restock(bg, "book", 0)), "qty"},
		{"zero adjust", second2(n.Adjust(bg, "book", 0, "")), "delta"},
		{"short ttl", second3(n.Reserve(bg, "book", 1, 10*time.Millisecond, Idem{})), "ttl_ms"},
	}
	for _, tc := range cases {
		e := wantCode(t, tc.err, CodeInvalidRequest)
		if e.Field != tc.field {
			t.Errorf("%s: field %q, want %q", tc.name, e.Field, tc.field)
		}
	}
	if n.Token() != before {
		t.Fatal("a rejected request advanced the applied context")
	}
}

func second(_ Cart, err error) error         { return err }
func second2(_ Item, err error) error        { return err }
func second3(_ Reservation, err error) error { return err }

func TestCartFull(t *testing.T) {
	n := newNode(t)
	for i := range MaxCartSKUs {
		if _, err := n.AddItem(bg, "big", fmt.Sprintf("sku-%04d", i), 1); err != nil {
			t.Fatal(err)
		}
	}
	wantCode(t, second(n.AddItem(bg, "big", "one-more", 1)), CodeCartFull)
	wantCode(t, second(n.SetItem(bg, "big", "one-more", 2)), CodeCartFull)
	// Lines already in the cart can still grow.
	if _, err := n.AddItem(bg, "big", "sku-0000", 1); err != nil {
		t.Fatal(err)
	}
}

func TestInventoryRestockAdjust(t *testing.T) {
	n := newNode(t)
	mi := must[Item](t)
	it := mi(n.GetItem(bg, "widget", false))
	if it.Stock != 0 || it.Home != "us-east" || it.Available != 0 {
		t.Fatalf("untouched item: %+v", it)
	}
	it = mi(n.Restock(bg, "widget", 10))
	if it.Stock != 10 || it.Available != 10 {
		t.Fatalf("restock: %+v", it)
	}
	it = mi(n.Adjust(bg, "widget", -4, "damaged"))
	if it.Stock != 6 {
		t.Fatalf("adjust: %+v", it)
	}
	e := wantCode(t, second2(n.Adjust(bg, "widget", -7, "")), CodeInsufficientStock)
	if e.Available == nil || *e.Available != 6 {
		t.Fatalf("available in error: %+v", e)
	}
	it = mi(n.Adjust(bg, "widget", 3, "found"))
	if it.Stock != 9 {
		t.Fatalf("positive adjust: %+v", it)
	}
}

func TestReservationLifecycle(t *testing.T) {
	n := newNode(t)
	mr := must[Reservation](t)
	must[Item](t)(n.Restock(bg, "w", 5))
	r := mr(n.Reserve(bg, "w", 3, time.Minute, Idem{}))
	if r.State != StateHeld || r.Home != "us-east" || r.Qty != 3 || !r.ExpiresAt.Equal(n.clock.Now().Add(time.Minute)) {
		t.Fatalf("reserve: %+v", r)
	}
	it := must[Item](t)(n.GetItem(bg, "w", false))
	if it.Reserved != 3 || it.Available != 2 || it.Stock != 5 {
		t.Fatalf("item after reserve: %+v", it)
	}
	e := wantCode(t, second3(n.Reserve(bg, "w", 3, time.Minute, Idem{})), CodeInsufficientStock)
	if *e.Available != 2 {
		t.Fatalf("available: %d", *e.Available)
	}
	r = mr(n.Commit(bg, r.ID, Idem{}))
	if r.State != StateCommitted {
		t.Fatalf("commit: %+v", r)
	}
	if again := mr(n.Commit(bg, r.ID, Idem{})); again.State != StateCommitted {
		t.Fatalf("repeated commit must be a no-op: %+v", again)
	}
	wantCode(t, second3(n.Release(bg, r.ID, Idem{})), CodeReservationCommit)
	it = must[Item](t)(n.GetItem(bg, "w", false))
	if it.Stock != 2 || it.Reserved != 0 || it.Available != 2 {
		t.Fatalf("committed units must leave stock: %+v", it)
	}

	r2 := mr(n.Reserve(bg, "w", 2, time.Minute, Idem{}))
	r2 = mr(n.Release(bg, r2.ID, Idem{}))
	if r2.State != StateReleased {
		t.Fatalf("release: %+v", r2)
	}
	mr(n.Release(bg, r2.ID, Idem{}))
	wantCode(t, second3(n.Commit(bg, r2.ID, Idem{})), CodeReservationReleased)
	if got := mr(n.GetReservation(bg, r2.ID)); got.State != StateReleased {
		t.Fatalf("get: %+v", got)
	}
	wantCode(t, second3(n.GetReservation(bg, "us-east:zzzz")), CodeNotFound)
	wantCode(t, second3(n.GetReservation(bg, "garbage")), CodeNotFound)
	wantCode(t, second3(n.Commit(bg, "eu-west:1", Idem{})), CodeHomeUnavailable)
}

func TestReservationExpiry(t *testing.T) {
	n := newNode(t)
	mr := must[Reservation](t)
	must[Item](t)(n.Restock(bg, "w", 4))
	r := mr(n.Reserve(bg, "w", 4, 2*time.Second, Idem{}))
	wantCode(t, second3(n.Reserve(bg, "w", 1, time.Minute, Idem{})), CodeInsufficientStock)
	n.clock.Advance(2 * time.Second)
	// Lazily expired on read, before any background work.
	if got := mr(n.GetReservation(bg, r.ID)); got.State != StateExpired {
		t.Fatalf("state after ttl: %+v", got)
	}
	if it := must[Item](t)(n.GetItem(bg, "w", false)); it.Available != 4 {
		t.Fatalf("expired units must be available: %+v", it)
	}
	wantCode(t, second3(n.Commit(bg, r.ID, Idem{})), CodeReservationExpired)
	// Releasing an expired hold changes nothing and is not an error.
	if got := mr(n.Release(bg, r.ID, Idem{})); got.State != StateExpired {
		t.Fatalf("release after expiry: %+v", got)
	}
	r2 := mr(n.Reserve(bg, "w", 4, time.Second, Idem{}))
	n.clock.Advance(time.Second)
	if err := n.ExpireDue(); err != nil {
		t.Fatal(err)
	}
	held := publishedHeld(t, n, "w")
	if held != 0 {
		t.Fatalf("published held after ExpireDue = %d, want 0 (reservation %s)", held, r2.ID)
	}
}

// TestConcurrentReservationsNeverOversell races many goroutines for the
// last units of one sku over a durable store.
func TestConcurrentReservationsNeverOversell(t *testing.T) {
	n := newNode(t)
	const stock, workers, tries = 37, 32, 8
	must[Item](t)(n.Restock(bg, "hot", stock))
	var got atomic.Int64
	var mu sync.Mutex
	var ids []string
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range tries {
				qty := int64(1 + (w+i)%3)
				r, err := n.Reserve(bg, "hot", qty, time.Minute, Idem{})
				if err != nil {
					wantCode(t, err, CodeInsufficientStock)
					continue
				}
				got.Add(r.Qty)
				mu.Lock()
				ids = append(ids, r.ID)
				mu.Unlock()
				if i%2 == 0 {
					if _, err := n.Commit(bg, r.ID, Idem{}); err != nil {
						t.Error(err)
					}
				}
			}
		})
	}
	wg.Wait()
	if got.Load() > stock {
		t.Fatalf("reserved %d units of %d", got.Load(), stock)
	}
	it := must[Item](t)(n.GetItem(bg, "hot", false))
	if it.Available < 0 || it.Reserved > it.Stock {
		t.Fatalf("inconsistent item: %+v", it)
	}
	var held, committed int64
	for _, id := range ids {
		r := must[Reservation](t)(n.GetReservation(bg, id))
		switch r.State {
		case StateHeld:
			held += r.Qty
		case StateCommitted:
			committed += r.Qty
		}
	}
	if held+committed != got.Load() || held != it.Reserved || stock-committed != it.Stock {
		t.Fatalf("ledger: held %d committed %d reserved %d, item %+v", held, committed, got.Load(), it)
	}
}

func fp(s string) Idem {
	var f [32]byte
	copy(f[:], s)
	return Idem{Key: "key-" + s, Fingerprint: f}
}

func TestIdempotentReservations(t *testing.T) {
	n := newNode(t)
	must[Item](t)(n.Restock(bg, "w", 3))
	k := fp("a")
	r1 := must[Reservation](t)(n.Reserve(bg, "w", 2, time.Minute, k))
	r2 := must[Reservation](t)(n.Reserve(bg, "w", 2, time.Minute, k))
	if r1 != r2 {
		t.Fatalf("replay returned %+v, first %+v", r2, r1)
	}
	if it := must[Item](t)(n.GetItem(bg, "w", false)); it.Reserved != 2 {
		t.Fatalf("replay reserved again: %+v", it)
	}
	other := Idem{Key: k.Key, Fingerprint: [32]byte{9}}
	wantCode(t, second3(n.Reserve(bg, "w", 1, time.Minute, other)), CodeIdempotencyMismatch)
	// A refused reservation is an outcome too: replaying it refuses again
	// even after stock arrives.
	k2 := fp("b")
	wantCode(t, second3(n.Reserve(bg, "w", 3, time.Minute, k2)), CodeInsufficientStock)
	must[Item](t)(n.Restock(bg, "w", 10))
	wantCode(t, second3(n.Reserve(bg, "w", 3, time.Minute, k2)), CodeInsufficientStock)
	// In progress.
	release, err := n.claim(fp("c").Key)
	if err != nil {
		t.Fatal(err)
	}
	wantCode(t, second3(n.Reserve(bg, "w", 1, time.Minute, fp("c"))), CodeRequestInProgress)
	release()
	must[Reservation](t)(n.Reserve(bg, "w", 1, time.Minute, fp("c")))
	// Retention: after 24 h the key is free again.
	n.clock.Advance(IdempotencyRetention + time.Minute)
	if err := n.CollectIdempotency(); err != nil {
		t.Fatal(err)
	}
	r3 := must[Reservation](t)(n.Reserve(bg, "w", 2, time.Hour, k))
	if r3.ID == r1.ID {
		t.Fatal("a key past retention replayed its old outcome")
	}
}

func TestCheckout(t *testing.T) {
	n := newNode(t)
	mc := must[Cart](t)
	must[Item](t)(n.Restock(bg, "a", 5))
	must[Item](t)(n.Restock(bg, "b", 1))
	wantCode(t, second4(n.Checkout(bg, "empty", 0, Idem{})), CodeCartEmpty)

	mc(n.AddItem(bg, "c", "a", 2))
	mc(n.AddItem(bg, "c", "b", 2))
	e := wantCode(t, second4(n.Checkout(bg, "c", 0, Idem{})), CodeInsufficientStock)
	if len(e.Lines) != 1 || e.Lines[0].SKU != "b" || e.Lines[0].Available != 1 {
		t.Fatalf("failing lines: %+v", e.Lines)
	}
	if it := must[Item](t)(n.GetItem(bg, "a", false)); it.Reserved != 0 || it.Available != 5 {
		t.Fatalf("a failed checkout must release what it reserved: %+v", it)
	}
	mc(n.SetItem(bg, "c", "b", 1))
	k := fp("checkout")
	o := must[Order](t)(n.Checkout(bg, "c", 0, k))
	if len(o.Lines) != 2 || o.CartID != "c" || o.Lines[0].ReservationID == "" {
		t.Fatalf("order: %+v", o)
	}
	if c := mc(n.GetCart(bg, "c")); len(c.Items) != 0 {
		t.Fatalf("checked-out lines must leave the cart: %+v", c)
	}
	if it := must[Item](t)(n.GetItem(bg, "a", false)); it.Stock != 3 || it.Reserved != 0 {
		t.Fatalf("stock after checkout: %+v", it)
	}
	again := must[Order](t)(n.Checkout(bg, "c", 0, k))
	if again.OrderID != o.OrderID || len(again.Lines) != 2 {
		t.Fatalf("replay: %+v vs %+v", again, o)
	}
	if it := must[Item](t)(n.GetItem(bg, "a", false)); it.Stock != 3 {
		t.Fatalf("replayed checkout bought again: %+v", it)
	}
}

func second4(_ Order, err error) error { return err }

// TestCheckoutKeepsConcurrentAdds removes exactly the entries the
// checkout read: a line that arrives from another region in between stays.
func TestCheckoutKeepsConcurrentAdds(t *testing.T) {
	n := newNode(t)
	must[Item](t)(n.Restock(bg, "a", 5))
	must[Cart](t)(n.AddItem(bg, "c", "a", 1))
	plan, err := n.readPlan(bg, "c", DefaultTTL, Idem{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	// eu-west's concurrent add arrives before the checkout finishes.
	var remote crdt.Cart
	d := remote.Add("eu-west", "a", 4)
	var dots crdt.Context
	dots.Insert(crdt.Dot{Replica: "eu-west", Counter: 1})
	if err := n.ApplyRemote(&dots, &crdt.Group{Carts: map[string]*crdt.Cart{"c": d}}); err != nil {
		t.Fatal(err)
	}
	o, err := n.runCheckout(bg, "c", plan, Idem{})
	if err != nil || o.Lines[0].Qty != 1 {
		t.Fatalf("checkout: %+v %v", o, err)
	}
	if c := must[Cart](t)(n.GetCart(bg, "c")); qtyOf(c, "a") != 4 {
		t.Fatalf("concurrent add lost or checked-out entry kept: %+v", c)
	}
}

func TestRestartKeepsEverything(t *testing.T) {
	dir := t.TempDir()
	clock := newFakeClock()
	n := openNode(t, dir, clock)
	must[Cart](t)(n.AddItem(bg, "c", "a", 2))
	must[Item](t)(n.Restock(bg, "a", 5))
	r := must[Reservation](t)(n.Reserve(bg, "a", 2, time.Minute, fp("x")))
	tok := n.Token()
	n.close()

	n = openNode(t, dir, clock)
	if c := must[Cart](t)(n.GetCart(bg, "c")); qtyOf(c, "a") != 2 {
		t.Fatalf("cart after restart: %+v", c)
	}
	if it := must[Item](t)(n.GetItem(bg, "a", false)); it.Reserved != 2 || it.Stock != 5 {
		t.Fatalf("item after restart: %+v", it)
	}
	if again := must[Reservation](t)(n.Reserve(bg, "a", 2, time.Minute, fp("x"))); again.ID != r.ID {
		t.Fatal("idempotency record lost on restart")
	}
	if err := n.WaitToken(bg, tok); err != nil {
		t.Fatalf("token from before the restart: %v", err)
	}
	r2 := must[Reservation](t)(n.Reserve(bg, "a", 1, time.Minute, Idem{}))
	if r2.ID == r.ID {
		t.Fatal("reservation id reused after restart")
	}
}

func TestCausalToken(t *testing.T) {
	n := newNode(t)
	must[Cart](t)(n.AddItem(bg, "c", "a", 1))
	tok := n.Token()
	if err := n.WaitToken(bg, tok); err != nil {
		t.Fatal(err)
	}
	wantCode(t, n.WaitToken(bg, "!!not-a-token"), CodeInvalidToken)
	future := crdt.Context{VV: map[crdt.ReplicaID]uint64{"eu-west": 3}}
	ctx, cancel := contextWithTimeout(20 * time.Millisecond)
	defer cancel()
	wantCode(t, n.WaitToken(ctx, crdt.FormatToken(&future)), CodeCausalTimeout)

	done := make(chan error, 1)
	go func() {
		ctx, cancel := contextWithTimeout(10 * time.Second)
		defer cancel()
		done <- n.WaitToken(ctx, crdt.FormatToken(&future))
	}()
	if err := n.ApplyRemote(&future, nil); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("token wait after apply: %v", err)
	}
}

// TestTokenIsOfApplied checks that Token, which is encoded once per state
// of the applied context, is the token of the applied context after local
// writes, remote deltas (in and out of order) and writes that change
// nothing.
func TestTokenIsOfApplied(t *testing.T) {
	n := newNode(t)
	check := func(step string) {
		t.Helper()
		applied := n.Applied()
		if got, want := n.Token(), crdt.FormatToken(&applied); got != want {
			t.Fatalf("%s: Token() = %q, want %q", step, got, want)
		}
		if got := n.Token(); got != crdt.FormatToken(&applied) {
			t.Fatalf("%s: second Token() = %q", step, got)
		}
	}
	check("empty")
	must[Cart](t)(n.AddItem(bg, "c", "a", 1))
	check("local write")
	must[Cart](t)(n.RemoveItem(bg, "c", "zz"))
	check("write that changes nothing")
	out := crdt.Context{Cloud: map[crdt.Dot]struct{}{{Replica: "eu-west", Counter: 3}: {}}}
	if err := n.ApplyRemote(&out, nil); err != nil {
		t.Fatal(err)
	}
	check("remote dot out of order")
	in := crdt.Context{VV: map[crdt.ReplicaID]uint64{"eu-west": 2}}
	if err := n.ApplyRemote(&in, nil); err != nil {
		t.Fatal(err)
	}
	check("remote dots that fill the gap")
	must[Cart](t)(n.AddItem(bg, "c", "b", 2))
	check("second local write")
}

func TestStoreFileKept(t *testing.T) {
	n := newNode(t)
	must[Cart](t)(n.AddItem(bg, "c", "a", 1))
	if fi, err := os.Stat(n.path); err != nil || fi.Size() == 0 {
		t.Fatalf("store file: %v %v", fi, err)
	}
}

// TestManyOpenHolds holds hundreds of reservations of one sku at once:
// the ledger stays readable, and past the bound reservations are refused
// cleanly until holds are released.
func TestManyOpenHolds(t *testing.T) {
	const MaxOpenHolds = 300 // above the 256 entries a CBOR map may decode to
	n := newNode(t)
	n.opts.MaxOpenHolds = MaxOpenHolds
	must[Item](t)(n.Restock(bg, "hot", MaxOpenHolds+10))
	var first Reservation
	for i := range MaxOpenHolds {
		r := must[Reservation](t)(n.Reserve(bg, "hot", 1, time.Hour, Idem{}))
		if i == 0 {
			first = r
		}
	}
	if it := must[Item](t)(n.GetItem(bg, "hot", false)); it.Reserved != MaxOpenHolds {
		t.Fatalf("reserved %d, want %d", it.Reserved, MaxOpenHolds)
	}
	e := wantCode(t, second3(n.Reserve(bg, "hot", 1, time.Hour, Idem{})), CodeUnavailable)
	if e.RetryAfter == 0 {
		t.Fatal("no Retry-After on a full ledger")
	}
	must[Reservation](t)(n.Release(bg, first.ID, Idem{}))
	must[Reservation](t)(n.Reserve(bg, "hot", 1, time.Hour, Idem{}))
}

// TestConcurrentCheckoutsBuyOnce races checkouts of one cart, with no key
// and with different keys: the cart is bought once.
func TestConcurrentCheckoutsBuyOnce(t *testing.T) {
	n := newNode(t)
	must[Item](t)(n.Restock(bg, "a", 100))
	must[Cart](t)(n.AddItem(bg, "c", "a", 1))
	var wg sync.WaitGroup
	var orders atomic.Int64
	for i := range 16 {
		wg.Go(func() {
			idem := Idem{}
			if i%2 == 1 {
				idem = fp(fmt.Sprintf("race-%d", i))
			}
			_, err := n.Checkout(bg, "c", 0, idem)
			if err == nil {
				orders.Add(1)
				return
			}
			var e *Error
			if !errors.As(err, &e) || (e.Code != CodeRequestInProgress && e.Code != CodeCartEmpty) {
				t.Errorf("concurrent checkout: %v", err)
			}
		})
	}
	wg.Wait()
	if orders.Load() != 1 {
		t.Fatalf("%d orders for one cart", orders.Load())
	}
	if it := must[Item](t)(n.GetItem(bg, "a", false)); it.Stock != 99 || it.Reserved != 0 {
		t.Fatalf("stock after racing checkouts: %+v", it)
	}
}

// TestExpiryAfterRestart holds units, restarts the region and lets the
// ttl pass: the background expiry, which visits only skus it knows have
// holds, still frees them and publishes the new held total.
func TestExpiryAfterRestart(t *testing.T) {
	dir := t.TempDir()
	clock := newFakeClock()
	n := openNode(t, dir, clock)
	must[Item](t)(n.Restock(bg, "w", 3))
	must[Reservation](t)(n.Reserve(bg, "w", 3, time.Second, Idem{}))
	n.close()
	n = openNode(t, dir, clock)
	clock.Advance(2 * time.Second)
	if err := n.ExpireDue(); err != nil {
		t.Fatal(err)
	}
	held := publishedHeld(t, n, "w")
	if held != 0 {
		t.Fatalf("held after the ttl passed across a restart: %d", held)
	}
}

// publishedHeld returns the held units the node has published for sku
// (its item's register, what other regions see).
func publishedHeld(t *testing.T, n *testNode, sku string) int64 {
	t.Helper()
	var held int64
	if err := n.store.View([]string{prefixItem + sku}, func(r store.Reader) error {
		it, err := loadItem(r, sku)
		held = it.Held.Value
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return held
}
