package api_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/latticedb/lattice/api"
	"github.com/latticedb/lattice/cmd/server"
	"github.com/latticedb/lattice/region/config"
	"github.com/latticedb/lattice/region/regiontest"
	"github.com/latticedb/lattice/sync/certs"
	"github.com/latticedb/lattice/sync/replication"
)

// startPair starts us-east and eu-west of a two-region cluster in a
// temporary directory, replicating over QUIC on 127.0.0.1, and returns
// their base URLs.
func startPair(t *testing.T) (east, west string) {
	t.Helper()
	dir := t.TempDir()
	cfg := &config.Config{
		Cluster:    "openapi",
		DataDir:    filepath.Join(dir, "data"),
		TLSDir:     filepath.Join(dir, "certs"),
		Durability: config.DurabilityAlways,
		Regions:    []config.RegionConfig{{Name: "us-east"}, {Name: "eu-west"}},
		Homes:      []config.HomeRule{{Prefix: "us-", Region: "us-east"}, {Prefix: "eu-", Region: "eu-west"}},
	}
	lns, peers := regiontest.Loopback(t, len(cfg.Regions))
	for i := range cfg.Regions {
		cfg.Regions[i].API, cfg.Regions[i].Peer = lns[i].Addr().String(), peers[i]
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	if err := certs.Generate(cfg.TLSDir, cfg.Cluster, cfg.RegionNames()); err != nil {
		t.Fatal(err)
	}
	var urls []string
	for i, name := range cfg.RegionNames() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		srv, err := server.Start(ctx, cfg, name, server.Options{Listener: lns[i], Logger: slog.New(slog.DiscardHandler),
			Replication: server.QUIC(replication.AttachOptions{})})
		cancel()
		if err != nil {
			t.Fatalf("start %s: %v", name, err)
		}
		t.Cleanup(func() {
			if err := srv.Close(); err != nil {
				t.Errorf("close %s: %v", name, err)
			}
		})
		urls = append(urls, srv.URL())
	}
	return urls[0], urls[1]
}

type answer struct {
	status int
	header http.Header
	body   []byte
}

func send(t *testing.T, method, url, body string) answer {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	c := &http.Client{Timeout: 30 * time.Second}
	res, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return answer{res.StatusCode, res.Header, b}
}

// servedDocument is the OpenAPI document a region serves, decoded for
// api.SchemaErrors.
func servedDocument(t *testing.T, base string) map[string]any {
	t.Helper()
	a := send(t, http.MethodGet, base+"/v1/openapi.json", "")
	if a.status != http.StatusOK {
		t.Fatalf("GET /v1/openapi.json: %d %s", a.status, a.body)
	}
	doc, err := api.DecodeJSON(a.body)
	if err != nil {
		t.Fatal(err)
	}
	return doc.(map[string]any)
}

// TestClusterAnswerConforms checks a real region's GET /v1/cluster,
// with a connected peer that has acknowledged a write, against the Cluster
// schema of the document the region serves: every member declared, every
// required member present, every type right.
func TestClusterAnswerConforms(t *testing.T) {
	east, west := startPair(t)
	doc := servedDocument(t, east)
	if a := send(t, http.MethodPost, east+"/v1/carts/c1/items", `{"sku":"us-a","qty":2}`); a.status != http.StatusOK {
		t.Fatalf("add: %d %s", a.status, a.body)
	}

	// Wait until us-east's peer is connected and has acknowledged the
	// write, so that the optional last_ack is in the answer too.
	deadline := time.Now().Add(20 * time.Second)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var body []byte
	for {
		a := send(t, http.MethodGet, east+"/v1/cluster", "")
		if a.status != http.StatusOK {
			t.Fatalf("GET /v1/cluster: %d %s", a.status, a.body)
		}
		var st struct {
			Peers []struct {
				Connected     bool       `json:"connected"`
				PendingDeltas int        `json:"pending_deltas"`
				LastAck       *time.Time `json:"last_ack"`
			} `json:"peers"`
		}
		if err := json.Unmarshal(a.body, &st); err != nil {
			t.Fatal(err)
		}
		body = a.body
		if len(st.Peers) == 1 && st.Peers[0].Connected && st.Peers[0].LastAck != nil && st.Peers[0].PendingDeltas == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("us-east's peer is not connected with the write acknowledged after 20 s: %s", a.body)
		}
		<-tick.C
	}

	for name, b := range map[string][]byte{"us-east": body, "eu-west": send(t, http.MethodGet, west+"/v1/cluster", "").body} {
		v, err := api.DecodeJSON(b)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		for _, e := range api.SchemaErrors(doc, "#/components/schemas/Cluster", v) {
			t.Errorf("%s /v1/cluster: %s", name, e)
		}
		peers, _ := v.(map[string]any)["peers"].([]any)
		if len(peers) != 1 {
			t.Errorf("%s /v1/cluster peers %v, want the other region", name, peers)
		}
		if testing.Verbose() {
			t.Logf("%s /v1/cluster: %s", name, b)
		}
	}
}

// TestMethodNotAllowedAsDocumented sends every path of the document a
// real region serves each method the path lacks, and checks the answer is
// the 405 problem the document declares, with its Allow header; and that
// OPTIONS answers 204 with the same Allow.
func TestMethodNotAllowedAsDocumented(t *testing.T) {
	east, _ := startPair(t)
	doc := servedDocument(t, east)
	param := regexp.MustCompile(`\{[a-z_]+\}`)
	paths := doc["paths"].(map[string]any)
	checked := 0
	for _, path := range slices.Sorted(maps.Keys(paths)) {
		item := paths[path].(map[string]any)
		var allow any
		for _, o := range item {
			r := o.(map[string]any)["responses"].(map[string]any)["405"].(map[string]any)
			allow = r["headers"].(map[string]any)["Allow"].(map[string]any)["schema"].(map[string]any)["const"]
		}
		url := east + param.ReplaceAllString(path, "x1")
		for _, method := range []string{http.MethodGet, http.MethodPost, http.MethodPut, http.MethodDelete, http.MethodPatch, http.MethodHead} {
			if item[strings.ToLower(method)] != nil {
				continue
			}
			checked++
			a := send(t, method, url, "")
			if a.status != http.StatusMethodNotAllowed || a.header.Get("Allow") != allow || a.header.Get("Content-Type") != api.ProblemContentType {
				t.Errorf("%s %s: %d, Allow %q, Content-Type %q; the document says 405, Allow %q, a problem",
					method, path, a.status, a.header.Get("Allow"), a.header.Get("Content-Type"), allow)
				continue
			}
			if method == http.MethodHead {
				continue
			}
			v, err := api.DecodeJSON(a.body)
			if err != nil {
				t.Fatalf("%s %s: %v", method, path, err)
			}
			for _, e := range api.SchemaErrors(doc, "#/components/schemas/Problem", v) {
				t.Errorf("%s %s: %s", method, path, e)
			}
			if code := v.(map[string]any)["code"]; code != api.CodeMethodNotAllowed {
				t.Errorf("%s %s: code %v", method, path, code)
			}
		}
		if a := send(t, http.MethodOptions, url, ""); a.status != http.StatusNoContent || a.header.Get("Allow") != allow {
			t.Errorf("OPTIONS %s: %d, Allow %q, want 204 and %q", path, a.status, a.header.Get("Allow"), allow)
		}
	}
	if checked < 60 {
		t.Errorf("only %d wrong methods checked", checked)
	}
}
