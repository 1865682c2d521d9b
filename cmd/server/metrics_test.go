package server

import (
	"context"
	"io"
	"net/http"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	dto "github.com/prometheus/client_model/go"

	"github.com/latticedb/lattice/region/config"
	"github.com/latticedb/lattice/region/regiontest"
	"github.com/latticedb/lattice/sync/certs"
	"github.com/latticedb/lattice/sync/replication"
)

// startQUICPair starts us-east and eu-west of a two-region cluster in a
// temporary directory, replicating over QUIC on 127.0.0.1.
func startQUICPair(t *testing.T) (east, west *testRegion) {
	t.Helper()
	dir := t.TempDir()
	cfg := testConfig(dir, config.DurabilityAlways)
	lns, peers := regiontest.Loopback(t, len(cfg.Regions))
	for i := range cfg.Regions {
		cfg.Regions[i].API, cfg.Regions[i].Peer = lns[i].Addr().String(), peers[i]
	}
	if err := certs.Generate(filepath.Join(dir, "certs"), cfg.Cluster, cfg.RegionNames()); err != nil {
		t.Fatal(err)
	}
	attach := QUIC(replication.AttachOptions{})
	east = startRegion(t, cfg, "us-east", Options{Listener: lns[0], Replication: attach})
	west = startRegion(t, cfg, "eu-west", Options{Listener: lns[1], Replication: attach})
	return east, west
}

// scrape returns the metric families a region's GET /metrics serves, and
// the text as served.
func scrape(t *testing.T, url string) (map[string]*dto.MetricFamily, string) {
	t.Helper()
	resp, err := http.Get(url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %s", resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(strings.NewReader(string(body)))
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	return mfs, string(body)
}

// gaugeOf returns the value of name's series whose labels include want,
// and whether there is one.
func gaugeOf(mfs map[string]*dto.MetricFamily, name string, want map[string]string) (float64, bool) {
	mf := mfs[name]
	if mf == nil {
		return 0, false
	}
next:
	for _, m := range mf.GetMetric() {
		have := map[string]string{}
		for _, l := range m.GetLabel() {
			have[l.GetName()] = l.GetValue()
		}
		for k, v := range want {
			if have[k] != v {
				continue next
			}
		}
		switch {
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		case m.Untyped != nil:
			return m.Untyped.GetValue(), true
		}
	}
	return 0, false
}

// TestMetricsLintAndSeries scrapes a real region replicating with a peer
// over QUIC: the exposition passes promlint (the checks of promtool check
// metrics), carries lattice_build_info, has every per-peer series from the
// start, writes bucket bounds without float noise, and
// lattice_replication_peer_connected follows the peer going away.
func TestMetricsLintAndSeries(t *testing.T) {
	east, west := startQUICPair(t)
	mfs, text := scrape(t, east.srv.URL())

	problems, err := promlint.NewWithMetricFamilies(sortedFamilies(mfs)).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}

	b := Build()
	if v, ok := gaugeOf(mfs, "lattice_build_info", map[string]string{"region": "us-east", "version": b.Version,
		"commit": b.Commit, "goversion": b.GoVersion}); !ok || v != 1 {
		t.Errorf("lattice_build_info{version=%q,commit=%q,goversion=%q} = %v, %v; want 1", b.Version, b.Commit, b.GoVersion, v, ok)
	}

	// Present before any write or anti-entropy round has happened.
	for _, s := range []struct {
		name   string
		labels map[string]string
	}{
		{"lattice_replication_bytes_sent_total", map[string]string{"peer": "eu-west"}},
		{"lattice_replication_delta_bytes_total", nil},
		{"lattice_replication_send_errors_total", map[string]string{"peer": "eu-west"}},
		{"lattice_replication_rejected_messages_total", map[string]string{"peer": "eu-west"}},
		{"lattice_replication_messages_sent_total", map[string]string{"peer": "eu-west", "kind": "delta"}},
		{"lattice_replication_lag_seconds", map[string]string{"peer": "eu-west"}},
		{"lattice_replication_pending_deltas", map[string]string{"peer": "eu-west"}},
		{"lattice_antientropy_rounds_total", map[string]string{"peer": "eu-west"}},
		{"lattice_antientropy_keys_total", map[string]string{"peer": "eu-west", "direction": "pulled"}},
		{"lattice_antientropy_unrepaired_keys", map[string]string{"peer": "eu-west"}},
		{"lattice_replication_peer_connected", map[string]string{"peer": "eu-west"}},
		{"lattice_reservations_total", map[string]string{"op": "reserve", "result": "ok"}},
		{"lattice_store_checksum_failures_total", nil},
	} {
		if _, ok := gaugeOf(mfs, s.name, s.labels); !ok && mfs[s.name] == nil {
			t.Errorf("%s%v is not exposed from the start", s.name, s.labels)
		} else if !ok && s.labels != nil {
			t.Errorf("%s has no series %v from the start", s.name, s.labels)
		}
	}
	if mf := mfs["lattice_replication_convergence_seconds"]; mf == nil || len(mf.GetMetric()) == 0 {
		t.Error("lattice_replication_convergence_seconds{origin=\"eu-west\"} is not exposed from the start")
	}
	if mf := mfs["lattice_http_request_duration_seconds"]; mf == nil || len(mf.GetMetric()) < 10 {
		t.Error("lattice_http_request_duration_seconds lacks its routes' series from the start")
	}
	for _, old := range []string{"lattice_antientropy_rounds", "lattice_antientropy_keys"} {
		if mfs[old] != nil {
			t.Errorf("%s is still exposed (renamed to %s_total)", old, old)
		}
	}

	// Bucket bounds as written: no float noise such as 0.005000000000000001.
	for _, m := range regexp.MustCompile(`le="([^"]+)"`).FindAllStringSubmatch(text, -1) {
		if m[1] == "+Inf" {
			continue
		}
		v, err := strconv.ParseFloat(m[1], 64)
		if err != nil {
			t.Fatalf("bucket bound %q: %v", m[1], err)
		}
		if short := strconv.FormatFloat(v, 'g', 6, 64); m[1] != strconv.FormatFloat(v, 'g', -1, 64) || len(m[1]) > len(short)+1 {
			t.Errorf("bucket bound %s is not written exactly (%s)", m[1], short)
		}
	}

	waitConnected(t, east, "eu-west", 1)
	if err := west.srv.Close(); err != nil {
		t.Fatal(err)
	}
	waitConnected(t, east, "eu-west", 0)
}

// waitConnected waits up to 20 s for r's lattice_replication_peer_connected
// of peer to read want.
func waitConnected(t *testing.T, r *testRegion, peer string, want float64) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		mfs, _ := scrape(t, r.srv.URL())
		v, ok := gaugeOf(mfs, "lattice_replication_peer_connected", map[string]string{"peer": peer})
		if ok && v == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("lattice_replication_peer_connected{peer=%q} = %v (present %v), want %v after 20 s", peer, v, ok, want)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		<-ctx.Done()
		cancel()
	}
}

func sortedFamilies(mfs map[string]*dto.MetricFamily) []*dto.MetricFamily {
	out := make([]*dto.MetricFamily, 0, len(mfs))
	for _, mf := range mfs {
		out = append(out, mf)
	}
	return out
}
