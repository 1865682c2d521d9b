package deploy

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"

	"github.com/latticedb/lattice/cmd/server"
	"github.com/latticedb/lattice/region/config"
	"github.com/latticedb/lattice/region/regiontest"
	"github.com/latticedb/lattice/sync/certs"
	"github.com/latticedb/lattice/sync/replication"
)

// scrapedLabels starts a two-region cluster replicating over QUIC, with
// a few requests served, and returns, for every series name one region's
// GET /metrics serves, the label names its series carry (histogram
// buckets also carry le).
func scrapedLabels(t *testing.T) map[string]map[string]bool {
	t.Helper()
	return scrapedLabelsOf(t, 1)
}

// scrapedLabelsOf is scrapedLabels for a cluster of the given number of
// partitions (each region one node owning them all).
func scrapedLabelsOf(t *testing.T, partitions int) map[string]map[string]bool {
	t.Helper()
	dir := t.TempDir()
	cfg := config.DefaultConfig()
	cfg.Cluster = "deploytest4"
	cfg.DataDir = filepath.Join(dir, "data")
	cfg.TLSDir = filepath.Join(dir, "certs")
	cfg.Emulate = config.Emulate{}
	cfg.Regions = cfg.Regions[:2]
	cfg.Partitions = partitions
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
			PartitionedReplication: server.QUICPartitioned(replication.AttachOptions{}),
			Logger:                 slog.New(slog.DiscardHandler)})
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		srvs = append(srvs, s)
	}
	// A write so that request and replication series exist.
	resp, err := http.Post(srvs[0].URL()+"/v1/carts/m4/items", "application/json", strings.NewReader(`{"sku":"s","qty":1}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	deadline := time.Now().Add(20 * time.Second)
	for {
		labels, connected := scrapeLabels(t, srvs[0].URL())
		if connected {
			return labels
		}
		if time.Now().After(deadline) {
			t.Fatal("the regions did not connect within 20 s")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func scrapeLabels(t *testing.T, url string) (map[string]map[string]bool, bool) {
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
	tp := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := tp.TextToMetricFamilies(strings.NewReader(string(b)))
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	out := map[string]map[string]bool{}
	add := func(name, label string) {
		if out[name] == nil {
			out[name] = map[string]bool{}
		}
		out[name][label] = true
	}
	connected, first := false, true
	for name, mf := range mfs {
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				add(name, lp.GetName())
				add(name+"_bucket", lp.GetName())
				add(name+"_sum", lp.GetName())
				add(name+"_count", lp.GetName())
			}
			if name == "lattice_replication_peer_connected" {
				connected = m.GetGauge().GetValue() == 1 && (connected || first)
				first = false
			}
		}
		if out[name] == nil {
			out[name] = map[string]bool{}
		}
		add(name+"_bucket", "le")
	}
	return out, connected
}

func keys(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// exprLabels returns, per metric an expression selects, the label names
// it matches on, and the label names of every by/without grouping.
func exprLabels(expr parser.Expr) (map[string][]string, []string) {
	sel := map[string][]string{}
	var grouping []string
	parser.Inspect(expr, func(n parser.Node, _ []parser.Node) error {
		switch v := n.(type) {
		case *parser.VectorSelector:
			name := v.Name
			var ls []string
			for _, m := range v.LabelMatchers {
				if m.Name == model.MetricNameLabel {
					name = m.Value
					continue
				}
				ls = append(ls, m.Name)
			}
			sel[name] = append(sel[name], ls...)
		case *parser.AggregateExpr:
			grouping = append(grouping, v.Grouping...)
		}
		return nil
	})
	return sel, grouping
}

var templateLabel = regexp.MustCompile(`\$labels\.([a-zA-Z_][a-zA-Z0-9_]*)`)

// TestAlertLabelsExistOnScrapedSeries checks that every label an alert's
// annotations name ({{ $labels.X }}) is a label of the series its
// expression selects, as a real region serves them: an alert whose
// summary names a label the series lack tells the operator nothing about
// which region or peer is affected.
func TestAlertLabelsExistOnScrapedSeries(t *testing.T) {
	groups, errs := rulefmt.ParseFile(filepath.Join("prometheus", "alerts.yaml"), false, model.UTF8Validation, promqlParser, slog.New(slog.DiscardHandler))
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	labels := scrapedLabels(t)
	for _, g := range groups.Groups {
		for _, r := range g.Rules {
			expr, err := promqlParser.ParseExpr(r.Expr)
			if err != nil {
				t.Fatal(err)
			}
			sel, _ := exprLabels(expr)
			for metric, ls := range sel {
				have := labels[metric]
				for _, l := range ls {
					if !have[l] {
						t.Errorf("alert %s matches label %q on %s, whose series carry %v", r.Alert, l, metric, keys(have))
					}
				}
				for _, text := range r.Annotations {
					for _, m := range templateLabel.FindAllStringSubmatch(text, -1) {
						if !have[m[1]] {
							t.Errorf("alert %s: annotation names $labels.%s, but %s series carry only %v", r.Alert, m[1], metric, keys(have))
						}
					}
				}
			}
		}
	}
}

var legendLabel = regexp.MustCompile(`\{\{\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\}\}`)

// TestDashboardLabelsExistOnScrapedSeries checks that every label a
// dashboard query matches on or groups by, and every label its legends
// print, is a label of the series a real region serves: a matcher on a
// missing label selects nothing, a grouping by one merges every series.
func TestDashboardLabelsExistOnScrapedSeries(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("grafana", "lattice.json"))
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Templating struct {
			List []struct {
				Name  string `json:"name"`
				Query any    `json:"query"`
			} `json:"list"`
		} `json:"templating"`
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr         string `json:"expr"`
				LegendFormat string `json:"legendFormat"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatal(err)
	}
	labels := scrapedLabels(t)
	for _, v := range d.Templating.List {
		q, _ := v.Query.(string)
		if m := regexp.MustCompile(`label_values\((\w+),\s*(\w+)\)`).FindStringSubmatch(q); m != nil {
			if !labels[m[1]][m[2]] {
				t.Errorf("variable %s: label_values(%s, %s), but %s series carry %v", v.Name, m[1], m[2], m[1], keys(labels[m[1]]))
			}
		}
	}
	for _, p := range d.Panels {
		for _, tg := range p.Targets {
			expr, err := promqlParser.ParseExpr(grafanaVariables.Replace(tg.Expr))
			if err != nil {
				t.Fatal(err)
			}
			sel, grouping := exprLabels(expr)
			for metric, ls := range sel {
				have := labels[metric]
				for _, l := range append(append(ls, grouping...), legendNames(tg.LegendFormat)...) {
					if !have[l] {
						t.Errorf("panel %q: %q uses label %q, but %s series carry %v", p.Title, tg.Expr, l, metric, keys(have))
					}
				}
			}
		}
	}
}

func legendNames(s string) []string {
	var out []string
	for _, m := range legendLabel.FindAllStringSubmatch(s, -1) {
		out = append(out, m[1])
	}
	return out
}

// TestRegionManifestCertsCommandWorks runs the `lattice certs` command
// each REGION.yaml's head gives for making the region's Secret (the
// command README.md step 2 and docs/operations.md also give) with the
// certs package the command calls: it must succeed and issue a
// certificate for every region of the ConfigMap's config, each named
// once, so an operator following the region's file gets the files the
// Secret is created from.
func TestRegionManifestCertsCommandWorks(t *testing.T) {
	_, cfg := clusterConfig(t)
	want := cfg.RegionNames()
	sort.Strings(want)
	for _, region := range cfg.RegionNames() {
		path := filepath.Join("kubernetes", region+".yaml")
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		var line string
		for _, l := range strings.Split(string(b), "\n") {
			if i := strings.Index(l, "lattice certs "); strings.HasPrefix(l, "#") && i >= 0 {
				line = l[i:]
				break
			}
		}
		if line == "" {
			t.Errorf("%s: no lattice certs command in its head", path)
			continue
		}
		f := strings.Fields(line)[2:]
		var cluster, dir string
		var regions []string
		for i := 0; i < len(f); i++ {
			switch f[i] {
			case "--cluster":
				i++
				cluster = f[i]
			case "--dir":
				i++
				dir = f[i]
			default:
				regions = append(regions, f[i])
			}
		}
		if cluster != cfg.Cluster || dir == "" {
			t.Errorf("%s: %q: cluster %q, dir %q; want --cluster %s and a --dir", path, line, cluster, dir, cfg.Cluster)
		}
		got := slices.Clone(regions)
		sort.Strings(got)
		if !slices.Equal(got, want) {
			t.Errorf("%s: %q names regions %v, want every region of the config once, %v", path, line, regions, want)
		}
		if err := certs.Generate(filepath.Join(t.TempDir(), dir), cluster, regions); err != nil {
			t.Errorf("%s: %q fails: %v", path, line, err)
		}
	}
}

// TestAlertsAndDashboardOnPartitionedRegion checks the alert rules and
// the dashboard against what a node of a partitioned region serves (the
// deployments in kubernetes/ and compose/ run partitions: 16 and 8):
// every metric they use is served, and every label they match on, group
// by, or print is on its series. An alert on a metric a partitioned node
// does not serve never fires there.
func TestAlertsAndDashboardOnPartitionedRegion(t *testing.T) {
	labels := scrapedLabelsOf(t, 2)
	groups, errs := rulefmt.ParseFile(filepath.Join("prometheus", "alerts.yaml"), false, model.UTF8Validation, promqlParser, slog.New(slog.DiscardHandler))
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	for _, g := range groups.Groups {
		for _, r := range g.Rules {
			expr, err := promqlParser.ParseExpr(r.Expr)
			if err != nil {
				t.Fatal(err)
			}
			sel, _ := exprLabels(expr)
			for metric, ls := range sel {
				have, ok := labels[metric]
				if !ok && !generatedByPrometheus[metric] {
					t.Errorf("alert %s uses %s, which a node of a partitioned region does not serve", r.Alert, metric)
					continue
				}
				for _, l := range ls {
					if !have[l] {
						t.Errorf("alert %s matches label %q on %s, whose series carry %v", r.Alert, l, metric, keys(have))
					}
				}
				for _, text := range r.Annotations {
					for _, m := range templateLabel.FindAllStringSubmatch(text, -1) {
						if !have[m[1]] {
							t.Errorf("alert %s: annotation names $labels.%s, but %s series carry only %v", r.Alert, m[1], metric, keys(have))
						}
					}
				}
			}
		}
	}
	b, err := os.ReadFile(filepath.Join("grafana", "lattice.json"))
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr         string `json:"expr"`
				LegendFormat string `json:"legendFormat"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatal(err)
	}
	for _, p := range d.Panels {
		for _, tg := range p.Targets {
			expr, err := promqlParser.ParseExpr(grafanaVariables.Replace(tg.Expr))
			if err != nil {
				t.Fatal(err)
			}
			sel, grouping := exprLabels(expr)
			for metric, ls := range sel {
				have, ok := labels[metric]
				if !ok {
					t.Errorf("panel %q uses %s, which a node of a partitioned region does not serve", p.Title, metric)
					continue
				}
				for _, l := range append(append(ls, grouping...), legendNames(tg.LegendFormat)...) {
					if !have[l] {
						t.Errorf("panel %q: %q uses label %q, but %s series carry %v", p.Title, tg.Expr, l, metric, keys(have))
					}
				}
			}
		}
	}
}

// seriesSum returns the sum of the counter samples of metric in a
// /metrics text whose labels satisfy every matcher.
func seriesSum(t *testing.T, url, metric string, matchers []*labels.Matcher) float64 {
	t.Helper()
	resp, err := http.Get(url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	tp := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := tp.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	mf := mfs[metric]
	if mf == nil {
		return 0
	}
	for _, m := range mf.GetMetric() {
		lv := map[string]string{}
		for _, lp := range m.GetLabel() {
			lv[lp.GetName()] = lp.GetValue()
		}
		ok := true
		for _, mt := range matchers {
			if mt.Name == model.MetricNameLabel {
				continue
			}
			if !mt.Matches(lv[mt.Name]) {
				ok = false
			}
		}
		if ok {
			sum += m.GetCounter().GetValue()
		}
	}
	return sum
}

// TestDashboardWriteRateCountsEachWriteOnce runs a region of two nodes
// (partitions: 4, as the deployments here cut each region), sends every
// write to one node (as the API Service does to any ready pod), and sums
// the series the dashboard's "Write rate" panel adds up over the region's
// nodes: that sum must be the number of writes the clients made, not
// count a write again at the node it was forwarded to.
func TestDashboardWriteRateCountsEachWriteOnce(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("grafana", "lattice.json"))
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatal(err)
	}
	var sel *parser.VectorSelector
	for _, p := range d.Panels {
		if p.Title != "Write rate" || len(p.Targets) == 0 {
			continue
		}
		expr, err := promqlParser.ParseExpr(strings.NewReplacer("$__rate_interval", "5m", "$region", ".*").Replace(p.Targets[0].Expr))
		if err != nil {
			t.Fatal(err)
		}
		parser.Inspect(expr, func(n parser.Node, _ []parser.Node) error {
			if vs, ok := n.(*parser.VectorSelector); ok {
				sel = vs
			}
			return nil
		})
	}
	if sel == nil {
		t.Fatal("no Write rate panel with a selector")
	}

	dir := t.TempDir()
	free := func(network string) string {
		if network == "udp" {
			pc, err := net.ListenPacket("udp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer pc.Close()
			return pc.LocalAddr().String()
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		return ln.Addr().String()
	}
	api0, api1, peer0, peer1 := free("tcp"), free("tcp"), free("udp"), free("udp")
	if err := certs.Generate(filepath.Join(dir, "certs"), "wr", []string{"us-east"}); err != nil {
		t.Fatal(err)
	}
	doc := fmt.Sprintf("cluster: wr\ndata_dir: %s\ntls_dir: %s\npartitions: 4\nregions:\n  - name: us-east\n    nodes:\n"+
		"      - {name: n-0, api: %q, peer: %q, partitions: \"0-1\"}\n      - {name: n-1, api: %q, peer: %q, partitions: \"2-3\"}\n",
		filepath.Join(dir, "data"), filepath.Join(dir, "certs"), api0, peer0, api1, peer1)
	cfg, err := config.Parse([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	var urls []string
	for _, node := range []string{"n-0", "n-1"} {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		s, err := server.Start(ctx, cfg, "us-east", server.Options{Node: node, Logger: slog.New(slog.DiscardHandler),
			Replication:            server.QUIC(replication.AttachOptions{}),
			PartitionedReplication: server.QUICPartitioned(replication.AttachOptions{})})
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		urls = append(urls, s.URL())
	}
	const writes = 8
	for i := range writes {
		resp, err := http.Post(fmt.Sprintf("%s/v1/carts/wr-%d/items", urls[0], i), "application/json", strings.NewReader(`{"sku":"s","qty":1}`))
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("write %d: status %d", i, resp.StatusCode)
		}
	}
	var total float64
	for _, u := range urls {
		total += seriesSum(t, u, sel.Name, sel.LabelMatchers)
	}
	if total != writes {
		t.Errorf("the region's nodes count %v writes in the series of the Write rate panel (%s) for %d writes made by clients: a write forwarded to its partition's owner is counted at both nodes", total, sel, writes)
	}
}
