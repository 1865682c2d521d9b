package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/latticedb/lattice/api/client"
	"github.com/latticedb/lattice/crdt"
	"github.com/latticedb/lattice/region"
)

// latency is a WAN slow enough that a read at another region right after
// a write misses it unless it waits for the write's causal token.
var latency = map[string]int{"us-east/eu-west": 300, "us-east/ap-south": 300, "eu-west/ap-south": 300}

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func must[T any](t *testing.T) func(T, error) T {
	return func(v T, err error) T {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
}

func items(c *region.Cart) string {
	var b strings.Builder
	for _, it := range c.Items {
		b.WriteString(it.SKU + "=" + itoa(it.Qty) + " ")
	}
	return b.String()
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

func problemOf(t *testing.T, err error, status int, code string) *client.Problem {
	t.Helper()
	var p *client.Problem
	if !errors.As(err, &p) {
		t.Fatalf("got %v (%T), want a *client.Problem %s", err, err, code)
	}
	if p.Status != status || p.Code != code || p.Type != "urn:lattice:problem:"+code || p.Title == "" {
		t.Fatalf("got problem %+v, want %d %s", p, status, code)
	}
	return p
}

func TestClientAgainstRealRegions(t *testing.T) {
	c := newCluster(t, latency)
	ctx := ctxT(t, 60*time.Second)

	t.Run("every operation", func(t *testing.T) {
		cl := c.client(client.DefaultOptions(), "us-east")
		cart := must[*region.Cart](t)(cl.AddItem(ctx, "ops", "book", 2))
		if cart.CartID != "ops" || cart.Region != "us-east" || items(cart) != "book=2 " {
			t.Fatalf("add: %+v", cart)
		}
		must[*region.Cart](t)(cl.AddItem(ctx, "ops", "pen", 1))
		if cart = must[*region.Cart](t)(cl.SetItem(ctx, "ops", "book", 5)); items(cart) != "book=5 pen=1 " {
			t.Fatalf("set: %s", items(cart))
		}
		if cart = must[*region.Cart](t)(cl.Cart(ctx, "ops")); items(cart) != "book=5 pen=1 " {
			t.Fatalf("get: %s", items(cart))
		}
		if cart = must[*region.Cart](t)(cl.RemoveItem(ctx, "ops", "pen")); items(cart) != "book=5 " {
			t.Fatalf("remove: %s", items(cart))
		}
		if cart = must[*region.Cart](t)(cl.ClearCart(ctx, "ops")); len(cart.Items) != 0 || cart.Items == nil {
			t.Fatalf("clear: %+v", cart)
		}

		// Stock of a sku homed elsewhere, restocked at its home.
		sku := c.skuAt("ink", "eu-west")
		home := cl.Prefer(c.url("eu-west"))
		it := must[*region.Item](t)(home.Restock(ctx, sku, 10))
		if it.SKU != sku || it.Home != "eu-west" || it.Stock != 10 || it.Available != 10 {
			t.Fatalf("restock: %+v", it)
		}
		if it = must[*region.Item](t)(cl.Adjust(ctx, sku, -1, "damaged")); it.SKU != sku {
			t.Fatalf("adjust: %+v", it)
		}
		if it = must[*region.Item](t)(cl.Item(ctx, sku, true)); it.Stock != 9 || it.Home != "eu-west" {
			t.Fatalf("consistent read: %+v", it)
		}
		if it = must[*region.Item](t)(cl.Item(ctx, sku, false)); it.SKU != sku {
			t.Fatalf("read: %+v", it)
		}

		r := must[*region.Reservation](t)(cl.Reserve(ctx, sku, 2, client.KeyOptions{TTL: time.Minute}))
		if r.State != region.StateHeld || r.Home != "eu-west" || r.Qty != 2 || !strings.HasPrefix(r.ID, "eu-west:") {
			t.Fatalf("reserve: %+v", r)
		}
		if got := must[*region.Reservation](t)(cl.Reservation(ctx, r.ID)); got.State != region.StateHeld || got.ID != r.ID {
			t.Fatalf("get reservation: %+v", got)
		}
		if got := must[*region.Reservation](t)(cl.Commit(ctx, r.ID, client.KeyOptions{})); got.State != region.StateCommitted {
			t.Fatalf("commit: %+v", got)
		}
		r2 := must[*region.Reservation](t)(cl.Reserve(ctx, sku, 1, client.KeyOptions{IdempotencyKey: "rel-1"}))
		if got := must[*region.Reservation](t)(cl.Release(ctx, r2.ID, client.KeyOptions{})); got.State != region.StateReleased {
			t.Fatalf("release: %+v", got)
		}
		// The same key returns the first outcome.
		if again := must[*region.Reservation](t)(cl.Reserve(ctx, sku, 1, client.KeyOptions{IdempotencyKey: "rel-1"})); again.ID != r2.ID {
			t.Fatalf("replay with the same key: %+v, want %s", again, r2.ID)
		}

		// Checkout, and its status at the cart's coordinator.
		must[*region.Cart](t)(cl.AddItem(ctx, "buyer", sku, 3))
		key := client.NewIdempotencyKey()
		order := must[*region.Order](t)(cl.Checkout(ctx, "buyer", client.KeyOptions{IdempotencyKey: key}))
		if order.CartID != "buyer" || len(order.Lines) != 1 || order.Lines[0].SKU != sku || order.Lines[0].Qty != 3 {
			t.Fatalf("checkout: %+v", order)
		}
		coord := cl.Prefer(c.url(c.cfg.Home("buyer")))
		st := must[*region.CheckoutStatus](t)(coord.CheckoutStatus(ctx, "buyer", key))
		if st.OrderID != order.OrderID || st.Order == nil || st.Phase != "settled" {
			t.Fatalf("checkout status: %+v", st)
		}
		if cart = must[*region.Cart](t)(cl.Cart(ctx, "buyer")); len(cart.Items) != 0 {
			t.Fatalf("cart after checkout: %s", items(cart))
		}

		cs := must[*client.ClusterStatus](t)(cl.Cluster(ctx))
		if cs.Region != "us-east" || len(cs.Peers) != 2 || !cs.Peers[0].Connected || cs.Store.Durability == "" || len(cs.VersionVector) == 0 {
			t.Fatalf("cluster: %+v", cs)
		}
		if h := must[*client.Health](t)(cl.Health(ctx)); h.Status != "ok" || h.Region != "us-east" {
			t.Fatalf("healthz: %+v", h)
		}
		if h := must[*client.Health](t)(cl.Ready(ctx)); h.Status != "ready" || h.Region != "us-east" {
			t.Fatalf("readyz: %+v", h)
		}
		if m := must[string](t)(cl.Metrics(ctx)); !strings.Contains(m, "lattice_") {
			t.Fatalf("metrics without lattice_ metrics: %.200s", m)
		}
		var doc struct {
			OpenAPI string `json:"openapi"`
		}
		if err := json.Unmarshal(must[json.RawMessage](t)(cl.OpenAPI(ctx)), &doc); err != nil || doc.OpenAPI != "3.1.0" {
			t.Fatalf("openapi: %v %q", err, doc.OpenAPI)
		}
	})

	t.Run("token carried across regions", func(t *testing.T) {
		a := c.client(client.DefaultOptions(), "us-east")
		b := a.Prefer(c.url("eu-west"))
		for i := range 3 {
			cart := "ryw" + itoa(int64(i))
			must[*region.Cart](t)(a.AddItem(ctx, cart, "x", 1))
			before := a.Token()
			got := must[*region.Cart](t)(b.Cart(ctx, cart))
			if got.Region != "eu-west" || items(got) != "x=1 " {
				t.Fatalf("read at eu-west right after the write at us-east: %+v, want x=1", got)
			}
			// The token only moves forward.
			prev, err1 := crdt.ParseToken(before)
			now, err2 := crdt.ParseToken(b.Token())
			if err1 != nil || err2 != nil || !now.Covers(&prev) {
				t.Fatalf("token went back: %v %v", err1, err2)
			}
		}
		// A client handed the token (say, by a web session) reads its
		// writes too.
		other := c.client(client.DefaultOptions(), "ap-south")
		must[*region.Cart](t)(a.AddItem(ctx, "ryw-session", "y", 2))
		other.SetToken(a.Token())
		if got := must[*region.Cart](t)(other.Cart(ctx, "ryw-session")); items(got) != "y=2 " {
			t.Fatalf("read at ap-south with the token: %s", items(got))
		}
	})

	t.Run("problems", func(t *testing.T) {
		cl := c.client(client.DefaultOptions(), "us-east")
		_, err := cl.Reservation(ctx, "eu-west:zzzzzz")
		problemOf(t, err, 404, "not_found")

		sku := c.skuAt("scarce", "ap-south")
		must[*region.Item](t)(cl.Prefer(c.url("ap-south")).Restock(ctx, sku, 3))
		_, err = cl.Reserve(ctx, sku, 5, client.KeyOptions{})
		p := problemOf(t, err, 409, "insufficient_stock")
		if p.Available == nil || *p.Available != 3 {
			t.Fatalf("available: %+v", p)
		}

		must[*region.Cart](t)(cl.AddItem(ctx, "toomuch", sku, 5))
		_, err = cl.Checkout(ctx, "toomuch", client.KeyOptions{})
		p = problemOf(t, err, 409, "insufficient_stock")
		if len(p.Lines) != 1 || p.Lines[0].SKU != sku || p.Lines[0].Available != 3 || p.Lines[0].Home != "ap-south" {
			t.Fatalf("lines: %+v", p.Lines)
		}

		must[*region.Reservation](t)(cl.Reserve(ctx, sku, 1, client.KeyOptions{IdempotencyKey: "twice"}))
		_, err = cl.Reserve(ctx, sku, 2, client.KeyOptions{IdempotencyKey: "twice"})
		problemOf(t, err, 422, "idempotency_mismatch")

		_, err = cl.AddItem(ctx, "c", "x", 0)
		if p = problemOf(t, err, 400, "invalid_request"); p.Field != "qty" || p.Error() != "invalid_request: "+p.Detail {
			t.Fatalf("invalid_request: %+v (%q)", p, p.Error())
		}
	})

	t.Run("failover", func(t *testing.T) {
		// A dead preferred region: every operation moves on to the next.
		cl := must[*client.Client](t)(client.New([]string{deadURL(t), c.url("eu-west")}, client.DefaultOptions()))
		cart := must[*region.Cart](t)(cl.AddItem(ctx, "fo", "x", 1))
		if cart.Region != "eu-west" || items(cart) != "x=1 " {
			t.Fatalf("add through failover: %+v", cart)
		}
		must[*region.Cart](t)(cl.SetItem(ctx, "fo", "x", 4))
		if cart = must[*region.Cart](t)(cl.Cart(ctx, "fo")); cart.Region != "eu-west" || items(cart) != "x=4 " {
			t.Fatalf("read through failover: %+v", cart)
		}
		sku := c.skuAt("fo", "eu-west")                // restocked and decided at eu-west
		must[*region.Item](t)(cl.Restock(ctx, sku, 2)) // not sent to the dead region, so moved on
		r := must[*region.Reservation](t)(cl.Reserve(ctx, sku, 1, client.KeyOptions{}))
		must[*region.Reservation](t)(cl.Commit(ctx, r.ID, client.KeyOptions{}))

		// Only dead regions: a transport error, not a problem.
		dead := must[*client.Client](t)(client.New([]string{deadURL(t)}, client.Options{MaxAttempts: 2, Backoff: time.Millisecond}))
		_, err := dead.Cart(ctx, "fo")
		var p *client.Problem
		if err == nil || errors.As(err, &p) {
			t.Fatalf("dead region: %v", err)
		}

		// A region that refuses with 503: the client moves on at once,
		// with the same Idempotency-Key.
		var hits atomic.Int32
		refusing := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			hits.Add(1)
			w.Header().Set("Content-Type", "application/problem+json")
			w.Header().Set("Retry-After", "5")
			w.WriteHeader(503)
			w.Write([]byte(`{"type":"urn:lattice:problem:unavailable","title":"Service unavailable","status":503,"code":"unavailable","detail":"busy"}`))
		}))
		defer refusing.Close()
		rec := &recorder{}
		cl = must[*client.Client](t)(client.New([]string{refusing.URL, c.url("ap-south")}, client.Options{HTTPClient: &http.Client{Transport: rec}}))
		r = must[*region.Reservation](t)(cl.Reserve(ctx, sku, 1, client.KeyOptions{}))
		if hits.Load() != 1 || r.State != region.StateHeld {
			t.Fatalf("refusing region hit %d times; reservation %+v", hits.Load(), r)
		}
		reqs := rec.requests()
		if len(reqs) != 2 || reqs[0].Header.Get("Idempotency-Key") == "" || reqs[1].Header.Get("Idempotency-Key") != reqs[0].Header.Get("Idempotency-Key") {
			t.Fatalf("%d attempts, want 2 with one key", len(reqs))
		}
		// Restock is not retried after a 503: it would count twice.
		_, err = cl.Restock(ctx, sku, 1)
		problemOf(t, err, 503, "unavailable")
		if hits.Load() != 2 {
			t.Fatalf("restock tried %d times at the refusing region", hits.Load()-1)
		}
	})

	t.Run("openapi does not drift", func(t *testing.T) { testOpenAPIDrift(t, c) })
}

// clientOps maps every operationId of the served OpenAPI document to the
// Client method that calls it, with a call of it.
var clientOps = map[string]struct {
	method string
	call   func(context.Context, *client.Client) error
}{
	"getCart":   {"Cart", func(ctx context.Context, c *client.Client) error { _, err := c.Cart(ctx, "d"); return err }},
	"clearCart": {"ClearCart", func(ctx context.Context, c *client.Client) error { _, err := c.ClearCart(ctx, "d"); return err }},
	"addItem":   {"AddItem", func(ctx context.Context, c *client.Client) error { _, err := c.AddItem(ctx, "d", "s", 1); return err }},
	"setItem":   {"SetItem", func(ctx context.Context, c *client.Client) error { _, err := c.SetItem(ctx, "d", "s", 2); return err }},
	"removeItem": {"RemoveItem", func(ctx context.Context, c *client.Client) error {
		_, err := c.RemoveItem(ctx, "d", "s")
		return err
	}},
	"checkout": {"Checkout", func(ctx context.Context, c *client.Client) error {
		_, err := c.Checkout(ctx, "d", client.KeyOptions{})
		return err
	}},
	"checkoutStatus": {"CheckoutStatus", func(ctx context.Context, c *client.Client) error {
		_, err := c.CheckoutStatus(ctx, "d", "k")
		return err
	}},
	"getItem": {"Item", func(ctx context.Context, c *client.Client) error { _, err := c.Item(ctx, "s", true); return err }},
	"restock": {"Restock", func(ctx context.Context, c *client.Client) error { _, err := c.Restock(ctx, "s", 1); return err }},
	"adjust":  {"Adjust", func(ctx context.Context, c *client.Client) error { _, err := c.Adjust(ctx, "s", 1, "r"); return err }},
	"reserve": {"Reserve", func(ctx context.Context, c *client.Client) error {
		_, err := c.Reserve(ctx, "s", 1, client.KeyOptions{})
		return err
	}},
	"getReservation": {"Reservation", func(ctx context.Context, c *client.Client) error {
		_, err := c.Reservation(ctx, "us-east:zz")
		return err
	}},
	"commitReservation": {"Commit", func(ctx context.Context, c *client.Client) error {
		_, err := c.Commit(ctx, "us-east:zz", client.KeyOptions{})
		return err
	}},
	"releaseReservation": {"Release", func(ctx context.Context, c *client.Client) error {
		_, err := c.Release(ctx, "us-east:zz", client.KeyOptions{})
		return err
	}},
	"getCluster": {"Cluster", func(ctx context.Context, c *client.Client) error { _, err := c.Cluster(ctx); return err }},
	"getOpenAPI": {"OpenAPI", func(ctx context.Context, c *client.Client) error { _, err := c.OpenAPI(ctx); return err }},
	"healthz":    {"Health", func(ctx context.Context, c *client.Client) error { _, err := c.Health(ctx); return err }},
	"readyz":     {"Ready", func(ctx context.Context, c *client.Client) error { _, err := c.Ready(ctx); return err }},
	"metrics":    {"Metrics", func(ctx context.Context, c *client.Client) error { _, err := c.Metrics(ctx); return err }},
}

// testOpenAPIDrift checks that every operation of the OpenAPI document a
// real region serves is called by a Client method with its method and
// path, and that the table names no operation the document lacks.
func testOpenAPIDrift(t *testing.T, c *cluster) {
	ctx := ctxT(t, 30*time.Second)
	rec := &recorder{}
	cl := c.client(client.Options{HTTPClient: &http.Client{Transport: rec}, MaxAttempts: 1}, "us-east")
	var doc struct {
		Paths map[string]map[string]struct {
			OperationID string `json:"operationId"`
		} `json:"paths"`
	}
	if err := json.Unmarshal(must[json.RawMessage](t)(cl.OpenAPI(ctx)), &doc); err != nil {
		t.Fatal(err)
	}
	type route struct{ method, path string }
	served := map[string]route{}
	for path, ops := range doc.Paths {
		for method, op := range ops {
			served[op.OperationID] = route{strings.ToUpper(method), path}
		}
	}
	if len(served) < 19 {
		t.Fatalf("the document has only %d operations", len(served))
	}
	ct := reflect.TypeOf(cl)
	for id, r := range served {
		op, ok := clientOps[id]
		if !ok {
			t.Errorf("operation %s (%s %s) has no client method in clientOps", id, r.method, r.path)
			continue
		}
		if _, ok := ct.MethodByName(op.method); !ok {
			t.Errorf("operation %s: client.Client has no method %s", id, op.method)
			continue
		}
		rec.reset()
		err := op.call(ctx, cl)
		var p *client.Problem
		if err != nil && !errors.As(err, &p) {
			t.Errorf("operation %s: %s: %v", id, op.method, err)
			continue
		}
		reqs := rec.requests()
		if len(reqs) != 1 {
			t.Errorf("operation %s: %s sent %d requests", id, op.method, len(reqs))
			continue
		}
		pattern := "^" + regexp.MustCompile(`\\\{[a-z_]+\\\}`).ReplaceAllString(regexp.QuoteMeta(r.path), `[^/]+`) + "$"
		if got := reqs[0]; got.Method != r.method || !regexp.MustCompile(pattern).MatchString(got.URL.EscapedPath()) {
			t.Errorf("operation %s is %s %s; %s sent %s %s", id, r.method, r.path, op.method, got.Method, got.URL.EscapedPath())
		}
	}
	var extra []string
	for id := range clientOps {
		if _, ok := served[id]; !ok {
			extra = append(extra, id)
		}
	}
	slices.Sort(extra)
	if len(extra) > 0 {
		t.Errorf("clientOps names operations the served document lacks: %v", extra)
	}
}

// TestRetryAfterHomeStopped reserves a sku whose home is stopped: the
// region asked refuses with 503 and Retry-After, and the client retries
// with the same key until the home is back.
func TestRetryAfterHomeStopped(t *testing.T) {
	c := newCluster(t, nil)
	ctx := ctxT(t, 90*time.Second)
	sku := c.skuAt("retry", "eu-west")
	must[*region.Item](t)(c.client(client.DefaultOptions(), "eu-west").Restock(ctx, sku, 5))

	refused := make(chan string, 1)
	rec := &recorder{on503: func(r *http.Response) {
		select {
		case refused <- r.Header.Get("Retry-After"):
		default:
		}
	}}
	cl := c.client(client.Options{HTTPClient: &http.Client{Transport: rec}, MaxAttempts: 100}, "us-east")

	c.stop("eu-west")
	type result struct {
		r   *region.Reservation
		err error
	}
	done := make(chan result, 1)
	go func() {
		r, err := cl.Reserve(ctx, sku, 2, client.KeyOptions{})
		done <- result{r, err}
	}()
	select {
	case ra := <-refused:
		if ra == "" {
			t.Fatal("a 503 without Retry-After")
		}
	case res := <-done:
		t.Fatalf("reserve with its home stopped ended without a 503: %+v %v", res.r, res.err)
	case <-ctx.Done():
		t.Fatal("no 503 while the home was stopped")
	}
	c.start("eu-west")

	var res result
	select {
	case res = <-done:
	case <-ctx.Done():
		t.Fatal("reserve did not finish after the home came back")
	}
	if res.err != nil {
		t.Fatalf("reserve after the home came back: %v", res.err)
	}
	if res.r.State != region.StateHeld || res.r.Home != "eu-west" {
		t.Fatalf("reservation: %+v", res.r)
	}
	reqs := rec.requests()
	if len(reqs) < 2 {
		t.Fatalf("%d attempts, want a retry", len(reqs))
	}
	key := reqs[0].Header.Get("Idempotency-Key")
	for i, r := range reqs {
		if k := r.Header.Get("Idempotency-Key"); k == "" || k != key {
			t.Fatalf("attempt %d had key %q, the first %q", i, k, key)
		}
	}
	// Exactly one reservation was made: the home holds 2 of 5.
	it := must[*region.Item](t)(cl.Item(ctx, sku, true))
	if it.Reserved != 2 || it.Available != 3 {
		t.Fatalf("item after the retried reserve: %+v", it)
	}
}
