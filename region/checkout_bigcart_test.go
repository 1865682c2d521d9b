package region

import (
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/latticedb/lattice/crdt"
	"github.com/latticedb/lattice/region/config"
	"github.com/latticedb/lattice/region/store"
)

// newBigCartRig is a semRig whose regions' stores sync once a second
// (their durability plays no part here; it only keeps the thousands of
// cart writes below quick). The first region is the home of every cart
// and sku.
func newBigCartRig(t *testing.T, regions ...string) *semRig {
	t.Helper()
	r := &semRig{t: t, dir: t.TempDir(), clock: newFakeClock(), regions: regions, home: func(string) string { return regions[0] },
		nodes: map[string]*testNode{}, closed: map[string]bool{}, log: map[string][]Delta{}}
	for _, name := range regions {
		path := filepath.Join(r.dir, name, "data.db")
		st, err := OpenStore(path, store.Options{Durability: config.DurabilityEverySec})
		if err != nil {
			t.Fatal(err)
		}
		var peers []string
		for _, p := range regions {
			if p != name {
				peers = append(peers, p)
			}
		}
		n, err := NewNode(Options{Name: name, Store: st, Clock: r.clock, ExpiryInterval: time.Hour,
			IsRegion:  func(s string) bool { return slices.Contains(regions, s) },
			Publisher: semPub{r, name}, Forwarder: semFwd{r}, Home: r.home, PeerRegions: peers})
		if err != nil {
			t.Fatal(err)
		}
		tn := &testNode{Node: n, store: st, path: path, clock: r.clock}
		r.nodes[name] = tn
		t.Cleanup(tn.close)
	}
	return r
}

// fillBigCart has every region add one unit at a time to cart id, over
// skus in turn, up to the cart's limit of entries for local writes
// (4,096 in a cluster of up to four regions), and brings every region's
// adds to region to, as replication does. The joined cart is one every
// region must read and check out (docs/api.md, Carts).
func fillBigCart(r *semRig, to, id string, skus []string) {
	r.t.Helper()
	entries, _ := r.nodes[to].cartLimits()
	ctx := WithoutCartItems(bg)
	for _, name := range r.regions {
		for i := range entries {
			must[Cart](r.t)(r.nodes[name].AddItem(ctx, id, skus[i%len(skus)], 1))
		}
	}
	r.mu.Lock()
	logs := map[string][]Delta{}
	for k, v := range r.log {
		logs[k] = slices.Clone(v)
	}
	r.mu.Unlock()
	for _, from := range r.regions {
		if from != to {
			for _, d := range logs[from] {
				r.apply(to, d)
			}
		}
	}
}

func bigSkus(n, length int) []string {
	skus := make([]string, n)
	for i := range skus {
		skus[i] = fmt.Sprintf("%s%05d", strings.Repeat("s", length-5), i)
	}
	return skus
}

// TestForwardedCheckoutOfAFullCart: in the three regions of `lattice
// dev`, each region fills cart "big" to its local limit (4,096 adds of
// one unit, over 250 skus with 100-character names); eu-west holds the
// joined cart, 12,288 entries, which it reads. A checkout at eu-west
// (the cart's coordinator is us-east, which has the stock) must buy it:
// docs/api.md, Checkout, "buys every line of the cart", and Carts: "their
// join must stay a cart every region can read".
//
// Checkout sends the coordinator eu-west's whole copy of the cart in the
// canonical encoding (crdt.EncodeCart, every entry repeating its sku),
// about 1.5 MB here; serveCheckout decodes it with crdt.DecodeCart,
// which refuses anything over crdt.MaxObjectBytes (1 MiB). The checkout
// is refused 400 invalid_request naming a field ("cart") the client never
// sent, however often it is retried there.
func TestForwardedCheckoutOfAFullCart(t *testing.T) {
	r := newBigCartRig(t, "us-east", "eu-west", "ap-south")
	skus := bigSkus(250, 100)
	fillBigCart(r, "eu-west", "big", skus)
	for _, s := range skus {
		must[Item](t)(r.nodes["us-east"].Restock(bg, s, 1000))
	}
	at := r.nodes["eu-west"]
	c := must[Cart](t)(at.GetCart(bg, "big"))
	var units int64
	for _, it := range c.Items {
		units += it.Qty
	}
	if len(c.Items) != len(skus) || units != 3*4096 {
		t.Fatalf("test setup: eu-west's cart has %d lines, %d units", len(c.Items), units)
	}
	t.Logf("eu-west's copy of the cart: %d bytes encoded (crdt.MaxObjectBytes %d)", len(crdt.EncodeCart(mustLoadCart(t, at, "big"))), crdt.MaxObjectBytes)

	order, err := at.Checkout(bg, "big", time.Minute, fp("big"))
	if err != nil {
		t.Fatalf("checkout at eu-west of the cart it reads (%d lines, %d units, all in stock at the coordinator): %v", len(c.Items), units, err)
	}
	if len(order.Lines) != len(skus) {
		t.Fatalf("order of %d lines, want %d", len(order.Lines), len(skus))
	}
}

// TestCheckoutOfAFullCartReplays: in a cluster of four regions (named
// as a cloud names its regions) each region fills cart "big" to its
// local limit (4,096 adds of one unit, over 1,000 skus with 128-character
// names, both the API's limits); the coordinator us-central1, the home of
// every sku, holds the join (16,384 entries) and checks it out with an
// Idempotency-Key: the order. A retry
// with the key must answer the same order, and the checkout's status
// must be readable (docs/checkout.md, Settled: "a retry through any
// region answers the same, for 24 hours").
//
// finishCheckout stores the order's record with the plan twice (Plan and
// Last) and the order: over 1 MiB here, which loadIdem, decoding with
// crdt.MaxObjectBytes as its limit, takes for a damaged value. Every
// retry (and the status) answers 503 "stored state of k/... is damaged
// and awaits repair from a peer", which no peer can ever repair (records
// are not replicated).
func TestCheckoutOfAFullCartReplays(t *testing.T) {
	r := newBigCartRig(t, "us-central1", "europe-west1", "asia-southeast1", "southamerica-east1")
	skus := bigSkus(1000, 128)
	fillBigCart(r, "us-central1", "big", skus)
	coord := r.nodes["us-central1"]
	for _, s := range skus {
		must[Item](t)(coord.Restock(bg, s, 1000))
	}
	key := fp("big")
	order, err := coord.Checkout(bg, "big", time.Minute, key)
	if err != nil {
		t.Fatalf("test setup: checkout at the coordinator: %v", err)
	}
	if len(order.Lines) != len(skus) {
		t.Fatalf("test setup: order of %d lines, want %d", len(order.Lines), len(skus))
	}
	if c := must[Cart](t)(coord.GetCart(bg, "big")); len(c.Items) != 0 {
		t.Fatalf("test setup: cart after the order: %d lines", len(c.Items))
	}
	_ = coord.store.View([]string{prefixIdem + key.Key}, func(r store.Reader) error {
		b, _, err := r.Get(prefixIdem + key.Key)
		t.Logf("the order's record: %d bytes (crdt.MaxObjectBytes %d)", len(b), crdt.MaxObjectBytes)
		return err
	})

	again, err := coord.Checkout(bg, "big", time.Minute, key)
	if err != nil || again.OrderID != order.OrderID || len(again.Lines) != len(order.Lines) {
		t.Errorf("retry with the key of the order %s: %d lines, %v; want the same order", order.OrderID, len(again.Lines), err)
	}
	st, err := coord.CheckoutStatusOf(bg, "big", key.Key)
	if err != nil || st.Phase != "settled" || st.Order == nil || st.Order.OrderID != order.OrderID {
		t.Errorf("status of the order %s: phase %q, %v", order.OrderID, st.Phase, err)
	}
}

func mustLoadCart(t *testing.T, tn *testNode, id string) *crdt.Cart {
	t.Helper()
	var c *crdt.Cart
	err := tn.store.View([]string{prefixCart + id}, func(r store.Reader) error {
		var err error
		c, err = loadCart(tn.cartReader(r), id)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}
