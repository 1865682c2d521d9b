package console

import (
	"encoding/json"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/latticedb/lattice/region/config"
)

// consoleWithPeer returns the console of us-east whose peer eu-west's API is
// peer (ap-south listens on a closed port).
func consoleWithPeer(t *testing.T, peer http.Handler) (*Handler, *fakeAPI) {
	t.Helper()
	srv := httptest.NewServer(peer)
	t.Cleanup(srv.Close)
	cfg := config.DefaultConfig()
	for i := range cfg.Regions {
		switch cfg.Regions[i].Name {
		case "eu-west":
			cfg.Regions[i].API = strings.TrimPrefix(srv.URL, "http://")
		default:
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			cfg.Regions[i].API = ln.Addr().String()
			ln.Close()
		}
	}
	f := &fakeAPI{}
	h, err := New(Options{Region: "us-east", Config: cfg, API: f, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	return h, f
}

// TestRelayedEditWaitsItsDeadline: an edit relayed to another region is
// given PeerTimeout plus the API's own operation deadline; a peer that
// applies the edit and answers after 2.3 s is passed on, not reported as
// 502 region_unreachable (the user would retry, adding the items twice).
func TestRelayedEditWaitsItsDeadline(t *testing.T) {
	applied := make(chan struct{}, 1)
	h, _ := consoleWithPeer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		applied <- struct{}{}
		time.Sleep(PeerTimeout + 300*time.Millisecond) // the scripted peer answers late

		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"id":"c1","items":[{"sku":"book","qty":1}]}`))
	}))
	rec := do(h, "POST", "/console/api/regions/eu-west/v1/carts/c1/items", `{"sku":"book","qty":1}`,
		map[string]string{"Content-Type": "application/json"})
	select {
	case <-applied:
	default:
		t.Fatal("the edit never reached eu-west")
	}
	if rec.Code != http.StatusOK {
		t.Fatalf("an edit eu-west applied and answered after %v (the relay allows %v): %d %s, want eu-west's 200",
			PeerTimeout+300*time.Millisecond, PeerTimeout+2*time.Second, rec.Code, rec.Body)
	}
}

// TestOversizedPeerAnswerIsAShortError: a peer's answer over 8 MiB is a
// short error in the view, not 8 MiB of the peer's text carried
// (JSON-escaped, several times larger) to the page once a second.
func TestOversizedPeerAnswerIsAShortError(t *testing.T) {
	big := `{"region":"eu-west","pad":"` + strings.Repeat("<", 9<<20) + `"}`
	h, _ := consoleWithPeer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(big))
	}))
	rec := do(h, "GET", "/console/api/snapshot", "", nil)
	if rec.Code != 200 {
		t.Fatalf("snapshot: %d", rec.Code)
	}
	var snap Snapshot
	if err := json.Unmarshal(rec.Body.Bytes(), &snap); err != nil {
		t.Fatal(err)
	}
	for _, v := range snap.Regions {
		if v.Name != "eu-west" {
			continue
		}
		if len(v.Error) > 64<<10 {
			t.Errorf("eu-west's error is %d bytes of its truncated answer (the snapshot is %d bytes); want a short 'answer too large'",
				len(v.Error), rec.Body.Len())
		}
		return
	}
	t.Fatal("no eu-west in the snapshot")
}

// TestRelayKeepsNonJSONErrorBody: when the region asked answers an edit
// with a body that is not JSON (a proxy's text/plain error), the relay
// answers a problem that carries its status and the start of its text,
// not an empty application/problem+json body.
func TestRelayKeepsNonJSONErrorBody(t *testing.T) {
	h, _ := consoleWithPeer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "upstream connect error: eu-west api overloaded", http.StatusServiceUnavailable)
	}))
	rec := do(h, "POST", "/console/api/regions/eu-west/v1/carts/c1/items", `{"sku":"book","qty":1}`,
		map[string]string{"Content-Type": "application/json"})
	if rec.Code != http.StatusServiceUnavailable && rec.Code != http.StatusBadGateway {
		t.Fatalf("relay: %d %s", rec.Code, rec.Body)
	}
	ct := rec.Header().Get("Content-Type")
	if strings.Contains(ct, "json") && !json.Valid(rec.Body.Bytes()) {
		t.Errorf("relay answered %d %s with a body that is not JSON: %q (eu-west's text %q is lost)",
			rec.Code, ct, rec.Body.String(), "upstream connect error: eu-west api overloaded")
	}
}
