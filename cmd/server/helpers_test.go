package server

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/latticedb/lattice/crdt"
	"github.com/latticedb/lattice/region/config"
	"github.com/latticedb/lattice/region/regiontest"
)

// testConfig is a two-region cluster in dir. Skus starting with "us-" are
// homed at us-east, the region the tests run; skus starting with "eu-" at
// eu-west, which no test runs, so requests that need it answer
// home_unavailable.
func testConfig(dir string, durability config.Durability) *config.Config {
	return &config.Config{
		Cluster:    "test",
		DataDir:    filepath.Join(dir, "data"),
		TLSDir:     filepath.Join(dir, "certs"),
		Durability: durability,
		Regions: []config.RegionConfig{
			{Name: "us-east", API: "127.0.0.1:7101", Peer: "127.0.0.1:7201"},
			{Name: "eu-west", API: "127.0.0.1:7102", Peer: "127.0.0.1:7202"},
		},
		Homes: []config.HomeRule{
			{Prefix: "us-", Region: "us-east"},
			{Prefix: "eu-", Region: "eu-west"},
		},
	}
}

// testRegion is a region served on a loopback port, with a client for it.
type testRegion struct {
	*client
	srv *Server
	cfg *config.Config
}

// startRegion starts region name of cfg on 127.0.0.1:0 and closes it when
// the test ends.
func startRegion(t *testing.T, cfg *config.Config, name string, opts Options) *testRegion {
	t.Helper()
	if opts.Listener == nil {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		opts.Listener = ln
	}
	if opts.Logger == nil {
		opts.Logger = testLogger(t)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	srv, err := Start(ctx, cfg, name, opts)
	if err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	t.Cleanup(func() {
		if err := srv.Close(); err != nil {
			t.Errorf("close %s: %v", name, err)
		}
	})
	return &testRegion{client: newClient(t, srv.URL()), srv: srv, cfg: cfg}
}

// testLogger logs errors to the test's output.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelError}))
}

// client sends requests to one region's API.
type client struct {
	t    *testing.T
	base string
	hc   *http.Client
}

func newClient(t *testing.T, base string) *client {
	tr := &http.Transport{MaxIdleConnsPerHost: 16}
	t.Cleanup(tr.CloseIdleConnections)
	return &client{t: t, base: base, hc: &http.Client{Transport: tr, Timeout: 30 * time.Second}}
}

// response is a whole HTTP response.
type response struct {
	method, path string
	status       int
	header       http.Header
	body         []byte
}

func (r response) String() string {
	return fmt.Sprintf("%s %s: %d %s", r.method, r.path, r.status, r.body)
}

// request is an HTTP request to send. A nil body sends none; chunked
// sends the body without a Content-Length.
type request struct {
	method, path string
	body         string
	header       map[string]string
	chunked      bool
}

func (c *client) send(r request) response {
	c.t.Helper()
	var body io.Reader
	if r.body != "" {
		body = strings.NewReader(r.body)
		if r.chunked {
			body = io.MultiReader(body) // hides the length
		}
	}
	req, err := http.NewRequest(r.method, c.base+r.path, body)
	if err != nil {
		c.t.Fatal(err)
	}
	if r.body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range r.header {
		req.Header[k] = []string{v}
	}
	res := doRaw(c, req)
	if res.status == 0 {
		c.t.Fatalf("%s %s: %s", r.method, r.path, res.body)
	}
	return res
}

// newRequest makes a request with a JSON body (none when empty) and
// headers.
func newRequest(method, url, body string, header map[string]string) (*http.Request, error) {
	var b io.Reader
	if body != "" {
		b = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, b)
	if err != nil {
		return nil, err
	}
	for k, v := range header {
		req.Header[k] = []string{v}
	}
	return req, nil
}

// doRaw sends req; it may run off the test goroutine, so a transport
// error comes back as status 0 with the error as the body.
func doRaw(c *client, req *http.Request) response {
	r := response{method: req.Method, path: req.URL.RequestURI()}
	res, err := c.hc.Do(req)
	if err != nil {
		r.body = []byte(err.Error())
		return r
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		r.body = []byte("reading the body: " + err.Error())
		return r
	}
	r.status, r.header, r.body = res.StatusCode, res.Header, b
	return r
}

// aheadToken is a causal token covering writes of eu-west that no test
// region ever applies.
func aheadToken() string {
	var ctx crdt.Context
	ctx.Insert(crdt.Dot{Replica: "eu-west", Counter: 3})
	return crdt.FormatToken(&ctx)
}

func (c *client) do(method, path, body string, header ...string) response {
	c.t.Helper()
	if len(header)%2 != 0 {
		c.t.Fatal("header wants name, value pairs")
	}
	h := map[string]string{}
	for i := 0; i < len(header); i += 2 {
		h[header[i]] = header[i+1]
	}
	return c.send(request{method: method, path: path, body: body, header: h})
}

// ok sends a request that must succeed with status want and returns the
// decoded JSON object of its body. It checks what every success carries:
// a JSON content type and a Lattice-Token.
func (c *client) ok(want int, method, path, body string, header ...string) map[string]any {
	c.t.Helper()
	r := c.do(method, path, body, header...)
	return expectOK(c.t, r, want)
}

func expectOK(t *testing.T, r response, want int) map[string]any {
	t.Helper()
	if r.status != want {
		t.Fatalf("%v, want status %d", r, want)
	}
	if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("%s %s: Content-Type %q, want application/json", r.method, r.path, ct)
	}
	if r.header.Get("Lattice-Token") == "" {
		t.Errorf("%s %s: success without a Lattice-Token", r.method, r.path)
	}
	return decode(t, r)
}

func decode(t *testing.T, r response) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatalf("%v: body is not a JSON object: %v", r, err)
	}
	return m
}

// expectProblem checks that r is an RFC 9457 problem with the given
// status, code and (when not empty) field, and returns it.
func expectProblem(t *testing.T, r response, status int, code, field string) map[string]any {
	t.Helper()
	if r.status != status {
		t.Fatalf("%v, want status %d (%s)", r, status, code)
	}
	if ct := r.header.Get("Content-Type"); ct != "application/problem+json" {
		t.Errorf("%s %s: Content-Type %q, want application/problem+json", r.method, r.path, ct)
	}
	if tok := r.header.Get("Lattice-Token"); tok != "" {
		t.Errorf("%s %s: an error carries Lattice-Token %q", r.method, r.path, tok)
	}
	p := decode(t, r)
	if p["code"] != code {
		t.Errorf("%v: code %v, want %s", r, p["code"], code)
	}
	if p["status"] != float64(status) {
		t.Errorf("%v: status member %v, want %d", r, p["status"], status)
	}
	if p["type"] != "urn:lattice:problem:"+code {
		t.Errorf("%v: type %v", r, p["type"])
	}
	if s, _ := p["title"].(string); s == "" {
		t.Errorf("%v: no title", r)
	}
	if field != "" && p["field"] != field {
		t.Errorf("%v: field %v, want %s", r, p["field"], field)
	}
	if status == http.StatusServiceUnavailable && r.header.Get("Retry-After") == "" {
		t.Errorf("%v: a 503 without Retry-After", r)
	}
	return p
}

// keysOf returns the sorted keys of a JSON object.
func keysOf(m any) []string {
	obj, ok := m.(map[string]any)
	if !ok {
		return nil
	}
	return slices.Sorted(maps.Keys(obj))
}

func sorted(s ...string) []string { slices.Sort(s); return s }

// Exact member sets of SPEC §6.
var (
	cartKeys        = sorted("cart_id", "region", "items")
	cartItemKeys    = sorted("sku", "qty")
	itemKeys        = sorted("sku", "home", "stock", "reserved", "available")
	reservationKeys = sorted("reservation_id", "sku", "qty", "home", "state", "expires_at")
	orderKeys       = sorted("order_id", "cart_id", "lines")
	orderLineKeys   = sorted("sku", "qty", "reservation_id", "home")
)

func checkKeys(t *testing.T, what string, m any, want []string) {
	t.Helper()
	if got := keysOf(m); !slices.Equal(got, want) {
		t.Errorf("%s has members %v, want exactly %v", what, got, want)
	}
}

// checkCart checks a cart's shape and that its items are items, sorted by
// sku.
func checkCart(t *testing.T, m map[string]any, id string, items ...any) {
	t.Helper()
	checkKeys(t, "cart", m, cartKeys)
	if m["cart_id"] != id || m["region"] != "us-east" {
		t.Errorf("cart %v: want cart_id %s, region us-east", m, id)
	}
	got, ok := m["items"].([]any)
	if !ok {
		t.Fatalf("cart %v: items is not an array", m)
	}
	if len(got) != len(items)/2 {
		t.Fatalf("cart items %v, want %v", got, items)
	}
	for i := range got {
		checkKeys(t, "cart item", got[i], cartItemKeys)
		it := got[i].(map[string]any)
		if it["sku"] != items[2*i] || it["qty"] != float64(items[2*i+1].(int)) {
			t.Errorf("cart item %d is %v, want sku %v qty %v (all: %v)", i, it, items[2*i], items[2*i+1], got)
		}
	}
}

// checkItem checks an inventory item's shape and numbers.
func checkItem(t *testing.T, m map[string]any, sku, home string, stock, reserved int) {
	t.Helper()
	checkKeys(t, "item", m, itemKeys)
	want := map[string]any{"sku": sku, "home": home, "stock": float64(stock),
		"reserved": float64(reserved), "available": float64(stock - reserved)}
	if !maps.Equal(m, want) {
		t.Errorf("item %v, want %v", m, want)
	}
}

// waitFor waits on a condition with a deadline (regiontest.WaitFor).
var waitFor = regiontest.WaitFor
