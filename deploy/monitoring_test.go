package deploy

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"

	"github.com/latticedb/lattice/cmd/server"
	"github.com/latticedb/lattice/region/config"
	"github.com/latticedb/lattice/region/regiontest"
	"github.com/latticedb/lattice/sync/certs"
	"github.com/latticedb/lattice/sync/replication"
)

// scrapedNames starts a two-region cluster replicating over QUIC and
// returns the names of every series one region's GET /metrics serves
// (histograms also as NAME_bucket, NAME_sum and NAME_count), once its peer
// is connected.
func scrapedNames(t *testing.T) map[string]bool {
	t.Helper()
	dir := t.TempDir()
	cfg := config.DefaultConfig()
	cfg.Cluster = "deploytest"
	cfg.DataDir = filepath.Join(dir, "data")
	cfg.TLSDir = filepath.Join(dir, "certs")
	cfg.Emulate = config.Emulate{}
	cfg.Regions = cfg.Regions[:2]
	lns, peers := regiontest.Loopback(t, len(cfg.Regions))
	for i := range cfg.Regions {
		cfg.Regions[i].API, cfg.Regions[i].Peer = lns[i].Addr().String(), peers[i]
	}
	if err := certs.Generate(cfg.TLSDir, cfg.Cluster, cfg.RegionNames()); err != nil {
		t.Fatal(err)
	}
	var srvs []*server.Server
	for i, name := range cfg.RegionNames() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		s, err := server.Start(ctx, cfg, name, server.Options{Listener: lns[i], Replication: server.QUIC(replication.AttachOptions{}),
			Logger: slog.New(slog.DiscardHandler)})
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		srvs = append(srvs, s)
	}
	deadline := time.Now().Add(20 * time.Second)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for range tick.C {
		names, connected := scrape(t, srvs[0].URL())
		if connected {
			return names
		}
		if time.Now().After(deadline) {
			break
		}
	}
	t.Fatal("the regions did not connect within 20 s")
	return nil
}

// scrape returns the series names a region serves and whether its
// lattice_replication_peer_connected is 1 for every peer.
func scrape(t *testing.T, url string) (map[string]bool, bool) {
	t.Helper()
	resp, err := http.Get(url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(strings.NewReader(string(b)))
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	names := map[string]bool{}
	connected := mfs["lattice_replication_peer_connected"] != nil
	for name, mf := range mfs {
		names[name] = true
		if mf.GetType() == dto.MetricType_HISTOGRAM {
			names[name+"_bucket"], names[name+"_sum"], names[name+"_count"] = true, true, true
		}
		if name == "lattice_replication_peer_connected" {
			for _, m := range mf.GetMetric() {
				connected = connected && m.GetGauge().GetValue() == 1
			}
		}
	}
	return names, connected
}

// promqlParser is how Prometheus itself parses rule expressions.
var promqlParser = parser.NewParser(parser.Options{})

// metricNames returns the metric names an expression selects.
func metricNames(expr parser.Expr) []string {
	var out []string
	parser.Inspect(expr, func(n parser.Node, _ []parser.Node) error {
		if vs, ok := n.(*parser.VectorSelector); ok {
			name := vs.Name
			for _, m := range vs.LabelMatchers {
				if m.Name == model.MetricNameLabel {
					name = m.Value
				}
			}
			out = append(out, name)
		}
		return nil
	})
	return out
}

// generatedByPrometheus are series Prometheus makes itself, not scraped.
var generatedByPrometheus = map[string]bool{"up": true}

// TestAlertRules parses deploy/prometheus/alerts.yaml with Prometheus's
// own rule parser (unknown fields refused, every expression and template
// checked), checks the alerts operators rely on are there with their
// durations and labels, and that every metric an expression uses is one a
// real region serves.
func TestAlertRules(t *testing.T) {
	path := filepath.Join("prometheus", "alerts.yaml")
	groups, errs := rulefmt.ParseFile(path, false, model.UTF8Validation, promqlParser, slog.New(slog.DiscardHandler))
	for _, err := range errs {
		t.Errorf("%v", err)
	}
	if len(errs) > 0 {
		t.FailNow()
	}
	names := scrapedNames(t)
	type alert struct {
		expr   string
		forDur time.Duration
	}
	alerts := map[string]alert{}
	for _, g := range groups.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				continue
			}
			alerts[r.Alert] = alert{r.Expr, time.Duration(r.For)}
			if r.Labels["severity"] != "warning" && r.Labels["severity"] != "critical" {
				t.Errorf("alert %s: severity %q, want warning or critical", r.Alert, r.Labels["severity"])
			}
			if r.Annotations["summary"] == "" || r.Annotations["description"] == "" {
				t.Errorf("alert %s lacks a summary or description", r.Alert)
			}
			expr, err := promqlParser.ParseExpr(r.Expr)
			if err != nil {
				t.Errorf("alert %s: %v", r.Alert, err)
				continue
			}
			for _, n := range metricNames(expr) {
				if !names[n] && !generatedByPrometheus[n] {
					t.Errorf("alert %s uses %s, which a region's /metrics does not serve", r.Alert, n)
				}
			}
		}
	}
	for _, want := range []struct {
		name, metric string
		minFor       time.Duration
	}{
		{"LatticePeerDisconnected", "lattice_replication_peer_connected", time.Minute},
		{"LatticeReplicationLagHigh", "lattice_replication_lag_seconds", time.Minute},
		{"LatticeUnrepairedKeys", "lattice_antientropy_unrepaired_keys", time.Minute},
		{"LatticeRegionNotReady", "lattice_region_ready", 0},
		{"LatticeStoreChecksumFailures", "lattice_store_checksum_failures_total", 0},
		{"LatticeCertificateExpiresSoon", "lattice_tls_certificate_expiry_seconds", 0},
	} {
		a, ok := alerts[want.name]
		if !ok {
			t.Errorf("no alert %s", want.name)
			continue
		}
		if !strings.Contains(a.expr, want.metric) {
			t.Errorf("alert %s: expr %q does not use %s", want.name, a.expr, want.metric)
		}
		if a.forDur < want.minFor {
			t.Errorf("alert %s: for %v, want at least %v", want.name, a.forDur, want.minFor)
		}
	}
}

// grafanaVariables stand in for the dashboard's variables so that its
// expressions parse as PromQL.
var grafanaVariables = strings.NewReplacer("$__rate_interval", "5m", "$__interval", "1m", "$region", ".*")

// TestGrafanaDashboard checks deploy/grafana/lattice.json structurally:
// a dashboard with a title, uid and schema version, a Prometheus data
// source variable, panels that each have a type, title, position, that
// data source and targets whose expressions parse as PromQL over metrics
// a real region serves; and panels for what operators watch.
func TestGrafanaDashboard(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("grafana", "lattice.json"))
	if err != nil {
		t.Fatal(err)
	}
	type datasource struct {
		Type string `json:"type"`
		UID  string `json:"uid"`
	}
	var d struct {
		Title         string `json:"title"`
		UID           string `json:"uid"`
		SchemaVersion int    `json:"schemaVersion"`
		Templating    struct {
			List []struct {
				Name  string `json:"name"`
				Type  string `json:"type"`
				Query string `json:"query"`
			} `json:"list"`
		} `json:"templating"`
		Panels []struct {
			ID         int         `json:"id"`
			Type       string      `json:"type"`
			Title      string      `json:"title"`
			Datasource *datasource `json:"datasource"`
			GridPos    *struct {
				X, Y, W, H int
			} `json:"gridPos"`
			Targets []struct {
				RefID      string      `json:"refId"`
				Expr       string      `json:"expr"`
				Datasource *datasource `json:"datasource"`
			} `json:"targets"`
		} `json:"panels"`
	}
	dec := json.NewDecoder(strings.NewReader(string(b)))
	if err := dec.Decode(&d); err != nil {
		t.Fatalf("lattice.json: %v", err)
	}
	if d.Title == "" || d.UID == "" || d.SchemaVersion < 30 {
		t.Errorf("title %q, uid %q, schemaVersion %d", d.Title, d.UID, d.SchemaVersion)
	}
	hasDS := slices.ContainsFunc(d.Templating.List, func(v struct {
		Name  string `json:"name"`
		Type  string `json:"type"`
		Query string `json:"query"`
	}) bool {
		return v.Name == "datasource" && v.Type == "datasource" && v.Query == "prometheus"
	})
	if !hasDS {
		t.Error("no datasource variable of type prometheus")
	}
	names := scrapedNames(t)
	used := map[string]bool{}
	ids := map[int]bool{}
	if len(d.Panels) == 0 {
		t.Fatal("no panels")
	}
	for _, p := range d.Panels {
		if p.Type == "" || p.Title == "" || p.GridPos == nil || p.GridPos.W <= 0 || p.GridPos.H <= 0 || p.GridPos.X+p.GridPos.W > 24 {
			t.Errorf("panel %d %q: type %q, gridPos %+v", p.ID, p.Title, p.Type, p.GridPos)
		}
		if ids[p.ID] {
			t.Errorf("panel id %d twice", p.ID)
		}
		ids[p.ID] = true
		if p.Datasource == nil || p.Datasource.Type != "prometheus" || p.Datasource.UID != "${datasource}" {
			t.Errorf("panel %q: datasource %+v, want the prometheus ${datasource}", p.Title, p.Datasource)
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no targets", p.Title)
		}
		for _, tg := range p.Targets {
			if tg.RefID == "" || tg.Datasource == nil || tg.Datasource.UID != "${datasource}" {
				t.Errorf("panel %q: target %+v lacks a refId or the datasource", p.Title, tg)
			}
			expr, err := promqlParser.ParseExpr(grafanaVariables.Replace(tg.Expr))
			if err != nil {
				t.Errorf("panel %q: %q: %v", p.Title, tg.Expr, err)
				continue
			}
			for _, n := range metricNames(expr) {
				used[n] = true
				if !names[n] {
					t.Errorf("panel %q uses %s, which a region's /metrics does not serve", p.Title, n)
				}
			}
		}
	}
	for _, m := range []string{
		"lattice_http_requests_total",                    // write rate
		"lattice_http_request_duration_seconds_bucket",   // latency
		"lattice_replication_convergence_seconds_bucket", // convergence
		"lattice_replication_lag_seconds",
		"lattice_replication_pending_deltas",
		"lattice_antientropy_rounds_total",
		"lattice_antientropy_keys_total",
		"lattice_replication_peer_connected",
	} {
		if !used[m] {
			t.Errorf("no panel shows %s", m)
		}
	}
}
