package console

import (
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/latticedb/lattice/api"
	"github.com/latticedb/lattice/region/config"
)

// fakeAPI records the requests the console makes of the region's API and
// answers each with its path.
type fakeAPI struct {
	got []string
}

func (f *fakeAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.got = append(f.got, r.Method+" "+r.URL.Path+" auth="+r.Header.Get("Authorization"))
	w.Header().Set(api.HeaderToken, "tok-"+r.URL.Path)
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]string{"path": r.URL.Path})
}

// testConsole returns the console of us-east in a config whose other
// regions listen on closed ports.
func testConsole(t *testing.T, tokens *api.Tokens, ctl Controls) (*Handler, *fakeAPI) {
	t.Helper()
	cfg := config.DefaultConfig()
	for i := range cfg.Regions {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		cfg.Regions[i].API = ln.Addr().String()
		ln.Close() // nothing answers there
	}
	f := &fakeAPI{}
	h, err := New(Options{Region: "us-east", Config: cfg, API: f, Tokens: tokens, Controls: ctl,
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	return h, f
}

func do(h http.Handler, method, target, body string, hdr map[string]string) *httptest.ResponseRecorder {
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req := httptest.NewRequest(method, target, rd)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

func TestPageIsEmbeddedAndSelfContained(t *testing.T) {
	h, f := testConsole(t, nil, nil)
	for _, p := range []string{"/console", "/console/", "/console/console.js", "/console/console.css"} {
		rec := do(h, "GET", p, "", nil)
		if rec.Code != 200 {
			t.Fatalf("GET %s: %d %s", p, rec.Code, rec.Body)
		}
		// The SVG namespace is a name, not a fetch.
		text := strings.ReplaceAll(rec.Body.String(), "http://www.w3.org/2000/svg", "")
		if strings.Contains(text, "http://") || strings.Contains(text, "https://") || strings.Contains(text, "//cdn") {
			t.Errorf("GET %s: the page refers to another origin", p)
		}
	}
	if rec := do(h, "GET", "/console", "", nil); !strings.Contains(rec.Header().Get("Content-Security-Policy"), "default-src 'none'") {
		t.Errorf("the page has no content security policy: %q", rec.Header())
	}
	for _, p := range []string{"/console/nope.js", "/console/../go.mod", "/console/api/nope"} {
		if rec := do(h, "GET", p, "", nil); rec.Code != 404 {
			t.Errorf("GET %s: %d, want 404", p, rec.Code)
		}
	}
	if rec := do(h, "POST", "/console", "", nil); rec.Code != 405 {
		t.Errorf("POST /console: %d, want 405", rec.Code)
	}
	// Everything else is the API's.
	do(h, "GET", "/v1/carts/c1", "", nil)
	if len(f.got) != 1 || f.got[0] != "GET /v1/carts/c1 auth=" {
		t.Errorf("the API got %q, want the cart read", f.got)
	}
}

func TestSnapshotReadsThroughTheAPIAndReportsUnreachableRegions(t *testing.T) {
	h, f := testConsole(t, nil, nil)
	rec := do(h, "GET", "/console/api/snapshot?cart=c1&sku=book", "", nil)
	if rec.Code != 200 {
		t.Fatalf("snapshot: %d %s", rec.Code, rec.Body)
	}
	var snap Snapshot
	if err := json.Unmarshal(rec.Body.Bytes(), &snap); err != nil {
		t.Fatal(err)
	}
	if len(snap.Regions) != 3 || snap.Region != "us-east" || snap.Controls != nil || snap.Auth {
		t.Fatalf("snapshot %+v", snap)
	}
	self := snap.Regions[0]
	if self.Name != "us-east" || self.Local == nil || self.Local.Cart == nil || self.Local.Stock == nil {
		t.Fatalf("us-east's view %+v", self)
	}
	if self.Local.Cart.Token != "tok-/v1/carts/c1" || len(self.Local.Cart.Version) != 8 || self.Local.Cluster.Status != 200 {
		t.Errorf("us-east's cart answer %+v", self.Local.Cart)
	}
	want := []string{"GET /v1/cluster auth=", "GET /v1/carts/c1 auth=", "GET /v1/inventory/book auth="}
	if strings.Join(f.got, ",") != strings.Join(want, ",") {
		t.Errorf("the API got %q, want %q", f.got, want)
	}
	for _, v := range snap.Regions[1:] {
		if v.Error == "" || v.Local != nil {
			t.Errorf("%s, which does not answer: %+v", v.Name, v)
		}
	}
	for _, q := range []string{"?cart=a/b", "?other=1", "?cart=a&cart=b", "?sku=" + strings.Repeat("x", 129)} {
		if rec := do(h, "GET", "/console/api/snapshot"+q, "", nil); rec.Code != 400 {
			t.Errorf("snapshot%s: %d, want 400", q, rec.Code)
		}
	}
}

func TestRelayCarriesOnlyEdits(t *testing.T) {
	h, f := testConsole(t, nil, nil)
	js := map[string]string{"Content-Type": "application/json"}
	rec := do(h, "POST", "/console/api/regions/us-east/v1/carts/c1/items", `{"sku":"book","qty":1}`, js)
	if rec.Code != 200 || rec.Header().Get(api.HeaderToken) != "tok-/v1/carts/c1/items" {
		t.Fatalf("relayed add: %d %q %s", rec.Code, rec.Header(), rec.Body)
	}
	if rec := do(h, "DELETE", "/console/api/regions/us-east/v1/carts/c1/items/book", "", nil); rec.Code != 200 {
		t.Fatalf("relayed remove: %d %s", rec.Code, rec.Body)
	}
	n := len(f.got)
	for _, c := range []struct {
		method, path, body string
		hdr                map[string]string
		want               int
	}{
		{"GET", "/console/api/regions/us-east/v1/carts/c1", "", nil, 405},
		{"POST", "/console/api/regions/us-east/v1/reservations", "{}", js, 404},
		{"POST", "/console/api/regions/us-east/metrics", "{}", js, 404},
		{"POST", "/console/api/regions/nowhere/v1/carts/c1/items", "{}", js, 404},
		{"POST", "/console/api/regions/us-east/v1/carts/c%2F1/items", "{}", js, 400},
		{"POST", "/console/api/regions/us-east/v1/carts/c!/items", "{}", js, 400},
		{"POST", "/console/api/regions/us-east/v1/carts/c1/items", "{}", map[string]string{"Content-Type": "text/plain"}, 415},
		{"POST", "/console/api/regions/us-east/v1/carts/c1/items?x=1", "{}", js, 400},
		{"POST", "/console/api/regions/us-east/v1/carts/c1/items", strings.Repeat(" ", MaxBodyBytes+1), js, 413},
	} {
		if rec := do(h, c.method, c.path, c.body, c.hdr); rec.Code != c.want {
			t.Errorf("%s %s: %d, want %d (%s)", c.method, c.path, rec.Code, c.want, rec.Body)
		}
	}
	if len(f.got) != n {
		t.Errorf("refused requests reached the API: %q", f.got[n:])
	}
	rec = do(h, "POST", "/console/api/regions/eu-west/v1/inventory/book/restock", `{"qty":1}`, js)
	if rec.Code != http.StatusBadGateway {
		t.Errorf("an edit at a region that does not answer: %d, want 502", rec.Code)
	}
}

func TestTokensAreNeededAndPassedOn(t *testing.T) {
	toks := api.NewTokens()
	const read, write = "read-token-0123456789", "write-token-0123456789"
	if err := toks.Set([]string{read}, []string{write}); err != nil {
		t.Fatal(err)
	}
	h, f := testConsole(t, toks, &fakeControls{})
	js := func(tok string) map[string]string {
		return map[string]string{"Content-Type": "application/json", "Authorization": "Bearer " + tok}
	}
	if rec := do(h, "GET", "/console", "", nil); rec.Code != 200 {
		t.Errorf("the page without a token: %d, want 200 (it holds no data)", rec.Code)
	}
	for _, c := range []struct {
		method, path string
		hdr          map[string]string
		want         int
	}{
		{"GET", "/console/api/snapshot", nil, 401},
		{"GET", "/console/api/snapshot", map[string]string{"Authorization": "Bearer not-a-valid-token-at-all"}, 401},
		{"GET", "/console/api/local", nil, 401},
		{"GET", "/console/dev/state", nil, 401},
		{"POST", "/console/api/regions/us-east/v1/carts/c1/items", js(read), 403},
		{"POST", "/console/dev/cut", js(read), 403},
	} {
		if rec := do(h, c.method, c.path, `{"region":"us-east"}`, c.hdr); rec.Code != c.want {
			t.Errorf("%s %s: %d, want %d", c.method, c.path, rec.Code, c.want)
		}
	}
	if len(f.got) != 0 {
		t.Fatalf("refused requests reached the API: %q", f.got)
	}
	if rec := do(h, "GET", "/console/api/snapshot", "", js(read)); rec.Code != 200 {
		t.Fatalf("snapshot with a read token: %d", rec.Code)
	}
	if rec := do(h, "POST", "/console/api/regions/us-east/v1/carts/c1/items", `{"sku":"a","qty":1}`, js(write)); rec.Code != 200 {
		t.Fatalf("edit with a write token: %d", rec.Code)
	}
	for _, g := range f.got {
		if !strings.HasSuffix(g, "auth=Bearer "+read) && !strings.HasSuffix(g, "auth=Bearer "+write) {
			t.Errorf("the API got %q without the request's token", g)
		}
	}
}

// fakeControls records the controls used.
type fakeControls struct {
	cut     []string
	latency time.Duration
	loss    float64
}

func (c *fakeControls) State() ControlState { return ControlState{Cut: c.cut, LossPct: c.loss} }
func (c *fakeControls) Cut(r string) error  { c.cut = append(c.cut, r); return nil }
func (c *fakeControls) Heal(r string) error { c.cut = nil; return nil }
func (c *fakeControls) SetLatency(a, b string, d time.Duration) error {
	c.latency = d
	return nil
}
func (c *fakeControls) SetLoss(pct float64) error { c.loss = pct; return nil }

func TestDevControlsOnlyWhenEnabled(t *testing.T) {
	off, _ := testConsole(t, nil, nil)
	js := map[string]string{"Content-Type": "application/json"}
	if rec := do(off, "POST", "/console/dev/cut", `{"region":"us-east"}`, js); rec.Code != 404 {
		t.Errorf("cut without controls: %d, want 404", rec.Code)
	}
	ctl := &fakeControls{}
	on, _ := testConsole(t, nil, ctl)
	for _, c := range []struct {
		path, body string
		want       int
	}{
		{"/console/dev/cut", `{"region":"ap-south"}`, 200},
		{"/console/dev/latency", `{"a":"us-east","b":"eu-west","latency_ms":120}`, 200},
		{"/console/dev/loss", `{"loss_pct":2.5}`, 200},
		{"/console/dev/cut", `{"region":"ap-south","extra":1}`, 400},
		{"/console/dev/cut", `{}`, 400},
		{"/console/dev/latency", `{"a":"us-east","b":"eu-west","latency_ms":-1}`, 400},
		{"/console/dev/latency", `{"a":"us-east","b":"eu-west","latency_ms":60001}`, 400},
		{"/console/dev/loss", `{"loss_pct":101}`, 400},
		{"/console/dev/reboot", `{}`, 404},
	} {
		if rec := do(on, "POST", c.path, c.body, js); rec.Code != c.want {
			t.Errorf("POST %s %s: %d, want %d (%s)", c.path, c.body, rec.Code, c.want, rec.Body)
		}
	}
	if strings.Join(ctl.cut, ",") != "ap-south" || ctl.latency != 120*time.Millisecond || ctl.loss != 2.5 {
		t.Errorf("controls %+v", ctl)
	}
	if rec := do(on, "POST", "/console/dev/cut", `{"region":"eu-west"}`, map[string]string{"Content-Type": "text/plain"}); rec.Code != 415 {
		t.Errorf("a control without a JSON body: %d, want 415", rec.Code)
	}
	if rec := do(on, "GET", "/console/api/snapshot", "", nil); !strings.Contains(rec.Body.String(), `"controls":{"cut":["ap-south"]`) {
		t.Errorf("the snapshot does not carry the controls' state: %s", rec.Body)
	}
}
