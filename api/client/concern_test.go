package client_test

import (
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/latticedb/lattice/api/client"
	"github.com/latticedb/lattice/region"
)

func TestParseConcern(t *testing.T) {
	for _, s := range []string{"1", "2", "17", "9999", "majority", "all"} {
		if c, err := client.ParseConcern(s); err != nil || string(c) != s {
			t.Errorf("ParseConcern(%q) = %q, %v", s, c, err)
		}
	}
	for _, s := range []string{"", "0", "-1", "02", "1.5", "two", "Majority", "ALL", "10000", " 2"} {
		if c, err := client.ParseConcern(s); err == nil {
			t.Errorf("ParseConcern(%q) = %q, want an error", s, c)
		}
	}
	if client.Regions(3) != "3" {
		t.Fatalf("Regions(3) = %q", client.Regions(3))
	}
}

// concernLatency is a WAN whose round trips are long enough to tell a
// write concern of 2 from one of 1.
var concernLatency = map[string]int{"us-east/eu-west": 40, "us-east/ap-south": 80, "eu-west/ap-south": 60}

// TestConcernsAgainstRealRegions checks that WithReplicas and WithQuorum
// reach the API as Lattice-Replicas and ?quorum= on the calls that take
// them, that a write concern of 2 costs at least the round trip to the
// nearest other region and a read of quorum 2 at another region sees the
// write, and, with the two other regions stopped, that neither an add
// nor a keyed reservation is repeated after replication_timeout (each
// was applied, once), that a quorum read fails with
// ErrQuorumUnavailable after its retries, and that the writes reach
// the other regions once they are back.
func TestConcernsAgainstRealRegions(t *testing.T) {
	c := newCluster(t, concernLatency)
	ctx := ctxT(t, 60*time.Second)
	rec := &recorder{}
	cl := c.client(client.Options{HTTPClient: &http.Client{Transport: rec}, MaxAttempts: 2, Backoff: 10 * time.Millisecond}, "us-east")

	w2 := client.WithReplicas(ctx, client.Regions(2))
	start := time.Now()
	cart := must[*region.Cart](t)(cl.AddItem(w2, "wc", "book", 1))
	took := time.Since(start)
	if items(cart) != "book=1 " {
		t.Fatalf("add with replicas 2: %+v", cart)
	}
	// us-east's nearest peer is eu-west, 40 ms away one way.
	if took < 80*time.Millisecond {
		t.Fatalf("add with replicas 2 answered in %v, under the 80 ms round trip to eu-west", took)
	}
	t.Logf("add with Lattice-Replicas: 2 at us-east: %v (round trip to eu-west 80 ms)", took)
	reqs := rec.requests()
	if len(reqs) != 1 || reqs[0].Header.Get("Lattice-Replicas") != "2" || reqs[0].URL.RawQuery != "" {
		t.Fatalf("add sent %d requests, Lattice-Replicas %q, query %q", len(reqs), reqs[0].Header.Get("Lattice-Replicas"), reqs[0].URL.RawQuery)
	}

	// A quorum read at ap-south, with a fresh client (no causal token):
	// it sees the write acknowledged with 2 regions.
	rec.reset()
	far := must[*client.Client](t)(client.New([]string{c.url("ap-south")}, client.Options{HTTPClient: &http.Client{Transport: rec}}))
	both := client.WithQuorum(w2, client.Majority)
	if got := must[*region.Cart](t)(far.Cart(both, "wc")); items(got) != "book=1 " || got.Region != "ap-south" {
		t.Fatalf("quorum read at ap-south: %+v", got)
	}
	reqs = rec.requests()
	if len(reqs) != 1 || reqs[0].URL.Query().Get("quorum") != "majority" || reqs[0].Header.Get("Lattice-Replicas") != "" || reqs[0].Header.Get("Lattice-Token") != "" {
		t.Fatalf("quorum read sent %d requests: query %q, Lattice-Replicas %q", len(reqs), reqs[0].URL.RawQuery, reqs[0].Header.Get("Lattice-Replicas"))
	}
	// A read that takes no quorum (a reservation) does not send it.
	rec.reset()
	_, err := far.Reservation(both, "us-east:zz")
	problemOf(t, err, 404, "not_found")
	if reqs = rec.requests(); len(reqs) != 1 || reqs[0].URL.RawQuery != "" {
		t.Fatalf("reservation read sent query %q", reqs[0].URL.RawQuery)
	}

	// Stock with quorum: all three regions answer.
	sku := c.skuAt("wc", "us-east")
	must[*region.Item](t)(cl.Restock(client.WithReplicas(ctx, client.All), sku, 5))
	if it := must[*region.Item](t)(far.Item(client.WithQuorum(ctx, client.All), sku, false)); it.Stock != 5 {
		t.Fatalf("quorum-all stock read at ap-south after a restock with all: %+v", it)
	}

	// A bad concern is refused before anything is sent.
	rec.reset()
	for _, bad := range []client.Concern{"0", "most", ""} {
		_, err := cl.AddItem(client.WithReplicas(ctx, bad), "wc", "book", 1)
		if bad == "" {
			if err != nil {
				t.Fatalf("an empty write concern (none): %v", err)
			}
			continue
		}
		var p *client.Problem
		if err == nil || errors.As(err, &p) {
			t.Fatalf("write concern %q: %v, want a client error", bad, err)
		}
		if _, err := cl.Cart(client.WithQuorum(ctx, bad), "wc"); err == nil {
			t.Fatalf("read concern %q: no error", bad)
		}
	}
	if n := len(rec.requests()); n != 1 {
		t.Fatalf("%d requests sent with bad concerns, want only the one without", n)
	}
	// A number above the cluster's size is the region's to refuse.
	_, err = cl.AddItem(client.WithReplicas(ctx, client.Regions(4)), "wc", "book", 1)
	if p := problemOf(t, err, 400, "invalid_request"); p.Field != "Lattice-Replicas" {
		t.Fatalf("replicas 4 of 3: %+v", p)
	}

	// us-east alone.
	c.stop("eu-west")
	c.stop("ap-south")
	rec.reset()
	_, err = cl.AddItem(w2, "alone", "pen", 1)
	if !errors.Is(err, client.ErrReplicationTimeout) || errors.Is(err, client.ErrQuorumUnavailable) {
		t.Fatalf("add with replicas 2 and no peer: %v, want ErrReplicationTimeout", err)
	}
	p := problemOf(t, err, 503, "replication_timeout")
	if p.Temporary() {
		t.Fatal("a replication_timeout is Temporary: its write was applied")
	}
	if n := len(rec.requests()); n != 1 {
		t.Fatalf("the add was sent %d times after replication_timeout, want once", n)
	}
	if got := must[*region.Cart](t)(cl.Cart(ctx, "alone")); items(got) != "pen=1 " {
		t.Fatalf("the add that timed out is not applied once at us-east: %s", items(got))
	}

	// Nor is a keyed operation: its repeat would answer the recorded
	// hold at once, as if the concern had been met.
	rec.reset()
	_, err = cl.Reserve(w2, sku, 2, client.KeyOptions{})
	problemOf(t, err, 503, "replication_timeout")
	if n := len(rec.requests()); n != 1 {
		t.Fatalf("the reservation was sent %d times after replication_timeout, want once", n)
	}
	if it := must[*region.Item](t)(cl.Item(ctx, sku, true)); it.Reserved != 2 {
		t.Fatalf("after the repeated reserve: %+v, want 2 reserved", it)
	}

	// A quorum read with too few regions: retried, then the error.
	rec.reset()
	_, err = cl.Cart(client.WithQuorum(ctx, client.Regions(2)), "alone")
	if !errors.Is(err, client.ErrQuorumUnavailable) {
		t.Fatalf("quorum read with no peer: %v, want ErrQuorumUnavailable", err)
	}
	if p := problemOf(t, err, 503, "quorum_unavailable"); !p.Temporary() {
		t.Fatal("quorum_unavailable is not Temporary")
	}
	if n := len(rec.requests()); n != 2 {
		t.Fatalf("quorum read sent %d times, want 2 (MaxAttempts)", n)
	}

	// Back together: the write that timed out reaches the others.
	c.start("eu-west")
	c.start("ap-south")
	for _, r := range regionNames {
		c.waitConnected(r)
	}
	back := c.client(client.DefaultOptions(), "eu-west")
	back.SetToken(cl.Token())
	if got := must[*region.Cart](t)(back.Cart(ctx, "alone")); items(got) != "pen=1 " {
		t.Fatalf("eu-west after the restart: %s", items(got))
	}
	if got := must[*region.Cart](t)(back.Cart(client.WithQuorum(ctx, client.All), "alone")); items(got) != "pen=1 " {
		t.Fatalf("quorum-all read after the restart: %s", items(got))
	}
}

// TestWithoutCart checks client.WithoutCart against real regions: cart
// writes send Prefer: return=minimal, return a nil cart and no error,
// and are applied (a later read with the client's causal token at
// another region shows them); reads made with the context are as
// before.
func TestWithoutCart(t *testing.T) {
	c := newCluster(t, nil)
	ctx := ctxT(t, 30*time.Second)
	rec := &recorder{}
	cl := c.client(client.Options{HTTPClient: &http.Client{Transport: rec}}, "us-east")
	bare := client.WithoutCart(ctx)
	for _, w := range []func() (*region.Cart, error){
		func() (*region.Cart, error) { return cl.AddItem(bare, "nc", "book", 2) },
		func() (*region.Cart, error) { return cl.AddItem(bare, "nc", "pen", 1) },
		func() (*region.Cart, error) { return cl.SetItem(bare, "nc", "book", 5) },
		func() (*region.Cart, error) { return cl.RemoveItem(bare, "nc", "pen") },
	} {
		rec.reset()
		got, err := w()
		if err != nil || got != nil {
			t.Fatalf("a cart write without the cart: %+v, %v; want nil, nil", got, err)
		}
		if reqs := rec.requests(); len(reqs) != 1 || reqs[0].Header.Get("Prefer") != "return=minimal" {
			t.Fatalf("the write sent %d requests, Prefer %q", len(reqs), reqs[0].Header.Get("Prefer"))
		}
	}
	// The read, with the same context, gets the cart, and the client's
	// token carries the writes to another region.
	rec.reset()
	if got := must[*region.Cart](t)(cl.Cart(bare, "nc")); items(got) != "book=5 " {
		t.Fatalf("cart after the writes: %+v", got)
	}
	if reqs := rec.requests(); len(reqs) != 1 || reqs[0].Header.Get("Prefer") != "" {
		t.Fatalf("the read sent Prefer %q", reqs[0].Header.Get("Prefer"))
	}
	far := must[*client.Client](t)(client.New([]string{c.url("ap-south")}, client.Options{}))
	far.SetToken(cl.Token())
	if got := must[*region.Cart](t)(far.Cart(ctx, "nc")); items(got) != "book=5 " {
		t.Fatalf("cart at ap-south with the token: %+v", got)
	}
	// A refused write is refused as before.
	_, err := cl.AddItem(bare, "nc", "book", 0)
	problemOf(t, err, 400, "invalid_request")
	must[*region.Cart](t)(cl.ClearCart(ctx, "nc"))
	if got, err := cl.ClearCart(bare, "nc"); err != nil || got != nil {
		t.Fatalf("clear without the cart: %+v, %v", got, err)
	}
}
