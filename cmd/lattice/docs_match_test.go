package main

// Tests that check facts the user-facing documents state (docs/*.md,
// README.md, bench/README.md) mechanically against the code.

import (
	"context"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	latticeapi "github.com/latticedb/lattice/api"
	"github.com/latticedb/lattice/cmd/server"
	"github.com/latticedb/lattice/region"
	"github.com/latticedb/lattice/region/config"
	"github.com/latticedb/lattice/region/regiontest"
	"github.com/latticedb/lattice/sync/certs"
	"github.com/latticedb/lattice/sync/replication"
)

func docRead(t *testing.T, rel string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", rel))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// docSection returns the lines of doc from the heading line matching
// heading up to the next heading of the same or a higher level.
func docSection(t *testing.T, doc, heading string) []string {
	t.Helper()
	lines := strings.Split(doc, "\n")
	start, level := -1, 0
	for i, l := range lines {
		if start < 0 {
			if strings.HasPrefix(l, "#") && strings.TrimSpace(strings.TrimLeft(l, "#")) == heading {
				start, level = i, len(l)-len(strings.TrimLeft(l, "#"))
			}
			continue
		}
		if strings.HasPrefix(l, "#") {
			if n := len(l) - len(strings.TrimLeft(l, "#")); n <= level {
				return lines[start+1 : i]
			}
		}
	}
	if start < 0 {
		t.Fatalf("no heading %q", heading)
	}
	return lines[start+1:]
}

// docRows returns the cells of the table rows among lines, header and
// separator rows left out. Escaped pipes (\|) stay in their cell.
func docRows(lines []string) [][]string {
	isSep := func(l string) bool { return strings.HasPrefix(strings.TrimSpace(strings.Trim(l, "|")), "---") }
	var rows [][]string
	for i, l := range lines {
		if !strings.HasPrefix(l, "|") || isSep(l) {
			continue
		}
		if i+1 < len(lines) && strings.HasPrefix(lines[i+1], "|") && isSep(lines[i+1]) {
			continue // a header row
		}
		l = strings.ReplaceAll(l, `\|`, "\x00")
		cells := strings.Split(strings.Trim(l, "|"), "|")
		for j := range cells {
			cells[j] = strings.TrimSpace(strings.ReplaceAll(cells[j], "\x00", "|"))
		}
		rows = append(rows, cells)
	}
	return rows
}

var docTick = regexp.MustCompile("`([^`]*)`")

func docTicks(s string) []string {
	var out []string
	for _, m := range docTick.FindAllStringSubmatch(s, -1) {
		out = append(out, m[1])
	}
	return out
}

// ---------------------------------------------------------------------
// Metrics: docs/operations.md's metrics table against a real region.

type docFamily struct {
	typ    string
	labels map[string]bool
	values map[string]map[string]bool // label → values served
}

// docScrape starts a two-region cluster replicating over QUIC and
// returns the lattice_* families one region serves once its peer is
// connected, with their types and label names.
func docScrape(t *testing.T) map[string]docFamily {
	t.Helper()
	dir := t.TempDir()
	cfg := config.DefaultConfig()
	cfg.Cluster = "docsmatch"
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
	for {
		resp, err := http.Get(srvs[0].URL() + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		tp := expfmt.NewTextParser(model.UTF8Validation)
		mfs, err := tp.TextToMetricFamilies(strings.NewReader(string(b)))
		if err != nil {
			t.Fatal(err)
		}
		connected := mfs["lattice_replication_peer_connected"] != nil
		if connected {
			for _, m := range mfs["lattice_replication_peer_connected"].GetMetric() {
				connected = connected && m.GetGauge().GetValue() == 1
			}
		}
		if connected || time.Now().After(deadline) {
			if !connected {
				t.Fatal("the regions did not connect within 20 s")
			}
			out := map[string]docFamily{}
			for name, mf := range mfs {
				if !strings.HasPrefix(name, "lattice_") {
					continue
				}
				f := docFamily{typ: strings.ToLower(mf.GetType().String()), labels: map[string]bool{}, values: map[string]map[string]bool{}}
				for _, m := range mf.GetMetric() {
					for _, lp := range m.GetLabel() {
						f.labels[lp.GetName()] = true
						if f.values[lp.GetName()] == nil {
							f.values[lp.GetName()] = map[string]bool{}
						}
						f.values[lp.GetName()][lp.GetValue()] = true
					}
				}
				if mf.GetType() == dto.MetricType_UNTYPED {
					f.typ = "untyped"
				}
				out[name] = f
			}
			return out
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestDocsMatchMetricsTable checks every row of docs/operations.md's
// metrics table (name, type, labels; `…_x` names expanded from the row's
// first name) against what a running region serves, with the `region`
// label every lattice_* metric is documented to carry; and that every
// lattice_* family a region serves has a row.
func TestDocsMatchMetricsTable(t *testing.T) {
	doc := docRead(t, "docs/operations.md")
	rows := docRows(docSection(t, doc, "Metrics"))
	type want struct {
		typ    string
		labels []string
		values map[string][]string // label → the values listed, when the row lists them all
	}
	documented := map[string]want{}
	for _, r := range rows {
		if len(r) != 4 || r[1] == "" || strings.Contains(r[0], "(gauge)") {
			continue // the renames table
		}
		names := docTicks(r[0])
		// Label names are the cell's backquoted words outside
		// parentheses (inside them: the label's values).
		var labels []string
		for _, l := range docTicks(regexp.MustCompile(`\([^)]*\)`).ReplaceAllString(r[2], "")) {
			labels = append(labels, l)
		}
		values := map[string][]string{}
		for _, m := range regexp.MustCompile("`([a-z_]+)` \\(([^)]*)\\)").FindAllStringSubmatch(r[2], -1) {
			if regexp.MustCompile("^`[a-z_]+`(, `[a-z_]+`)*$").MatchString(m[2]) {
				values[m[1]] = docTicks(m[2])
			}
		}
		var first string
		for i, n := range names {
			if i == 0 {
				first = n
			} else if strings.HasPrefix(n, "…") {
				// lattice_replication_bytes_sent_total, …_bytes_received_total
				suffix := strings.TrimPrefix(n, "…")
				stem := strings.TrimPrefix(suffix, "_")
				stemHead := strings.SplitN(stem, "_", 2)[0]
				idx := strings.Index(first, "_"+stemHead+"_")
				if idx < 0 {
					idx = strings.Index(first, "_"+stemHead)
				}
				if idx < 0 {
					t.Fatalf("cannot expand %q after %q", n, first)
				}
				n = first[:idx] + suffix
			}
			documented[n] = want{typ: r[1], labels: labels, values: values}
		}
	}
	if len(documented) < 30 {
		t.Fatalf("parsed %d metrics from the table: too few", len(documented))
	}
	served := docScrape(t)
	valueChecks := 0
	for name, w := range documented {
		f, ok := served[name]
		if !ok {
			t.Errorf("docs/operations.md metrics table lists %s, which a region does not serve", name)
			continue
		}
		if f.typ != w.typ {
			t.Errorf("%s: documented as a %s, served as a %s", name, w.typ, f.typ)
		}
		wantLabels := append([]string{"region"}, w.labels...)
		sort.Strings(wantLabels)
		var got []string
		for l := range f.labels {
			got = append(got, l)
		}
		sort.Strings(got)
		if !slices.Equal(got, wantLabels) {
			t.Errorf("%s: documented labels %v (with region), served %v", name, wantLabels, got)
		}
		// Every series is documented to exist from the start, so the
		// values a row lists are those served.
		for l, vs := range w.values {
			var served []string
			for v := range f.values[l] {
				served = append(served, v)
			}
			sort.Strings(served)
			vs = slices.Clone(vs)
			sort.Strings(vs)
			valueChecks++
			if !slices.Equal(served, vs) {
				t.Errorf("%s: label %s documented with the values %v, served %v", name, l, vs, served)
			}
		}
	}
	t.Logf("%d metrics documented, %d served, %d label value lists compared", len(documented), len(served), valueChecks)
	for name := range served {
		if _, ok := documented[name]; !ok {
			where := "nowhere else in docs/operations.md either"
			if strings.Contains(doc, "`"+name+"`") {
				where = "only in prose elsewhere in docs/operations.md"
			}
			t.Errorf("a region serves %s, which docs/operations.md's metrics table does not list (mentioned %s)", name, where)
		}
	}
}

// ---------------------------------------------------------------------
// Logs: docs/operations.md's Logs table against the log calls of the code.

// docLogCalls returns level+" "+message for every call X.Debug/Info/
// Warn/Error("literal", ...) in the module's non-test Go files.
func docLogCalls(t *testing.T) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	fset := token.NewFileSet()
	root := filepath.Join("..", "..")
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == ".git" || d.Name() == "node_modules") {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, 0)
		if err != nil {
			return err
		}
		ast.Inspect(f, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok || len(call.Args) == 0 {
				return true
			}
			sel, ok := call.Fun.(*ast.SelectorExpr)
			if !ok {
				return true
			}
			lvl := strings.ToUpper(strings.TrimSuffix(sel.Sel.Name, "Context"))
			if !slices.Contains([]string{"DEBUG", "INFO", "WARN", "ERROR"}, lvl) {
				return true
			}
			arg := call.Args[0]
			if strings.HasSuffix(sel.Sel.Name, "Context") && len(call.Args) > 1 {
				arg = call.Args[1]
			}
			if lit, ok := arg.(*ast.BasicLit); ok && lit.Kind == token.STRING {
				if s, err := strconv.Unquote(lit.Value); err == nil {
					out[lvl+" "+s] = true
				}
			}
			return true
		})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestDocsMatchLogMessages checks that every message of docs/operations.md's
// Logs table is logged by the code, verbatim and at the documented level.
func TestDocsMatchLogMessages(t *testing.T) {
	doc := docRead(t, "docs/operations.md")
	calls := docLogCalls(t)
	rows := docRows(docSection(t, doc, "Logs"))
	if len(rows) < 8 {
		t.Fatalf("parsed %d rows of the Logs table: too few", len(rows))
	}
	for _, r := range rows {
		lvl := r[0]
		// Only the leading backquoted messages of the cell: the
		// parenthesised remarks name attributes, not messages.
		cell := r[1]
		if i := strings.Index(cell, " ("); i >= 0 {
			cell = cell[:i]
		}
		for _, msg := range docTicks(cell) {
			if !calls[lvl+" "+msg] {
				t.Errorf("docs/operations.md Logs table: no %s log call with the message %q", lvl, msg)
			}
		}
	}
}

// ---------------------------------------------------------------------
// Problem codes: docs/api.md against api.ProblemFor and the Code* constants.

// docCodeConstants returns the values of every constant named Code* in
// the non-test files of the given package directories.
func docCodeConstants(t *testing.T, dirs ...string) map[string]string {
	t.Helper()
	out := map[string]string{}
	fset := token.NewFileSet()
	for _, dir := range dirs {
		matches, _ := filepath.Glob(filepath.Join("..", "..", dir, "*.go"))
		for _, path := range matches {
			if strings.HasSuffix(path, "_test.go") {
				continue
			}
			f, err := parser.ParseFile(fset, path, nil, 0)
			if err != nil {
				t.Fatal(err)
			}
			for _, d := range f.Decls {
				g, ok := d.(*ast.GenDecl)
				if !ok || g.Tok != token.CONST {
					continue
				}
				for _, s := range g.Specs {
					vs := s.(*ast.ValueSpec)
					for i, n := range vs.Names {
						if !strings.HasPrefix(n.Name, "Code") || i >= len(vs.Values) {
							continue
						}
						if lit, ok := vs.Values[i].(*ast.BasicLit); ok && lit.Kind == token.STRING {
							v, _ := strconv.Unquote(lit.Value)
							out[v] = dir + "." + n.Name
						}
					}
				}
			}
		}
	}
	return out
}

// TestDocsMatchProblemCodes checks docs/api.md's "Problem codes" table
// against the codes of the code (every Code* constant of packages region
// and api) and the status api.ProblemFor gives each, and that the
// status summary of "Status codes" lists each code under its status.
func TestDocsMatchProblemCodes(t *testing.T) {
	doc := docRead(t, "docs/api.md")
	consts := docCodeConstants(t, "region", "api")
	if len(consts) < 15 {
		t.Fatalf("found %d Code* constants: too few", len(consts))
	}
	table := map[string]int{}
	for _, r := range docRows(docSection(t, doc, "Problem codes")) {
		if len(r) < 3 {
			continue
		}
		codes := docTicks(r[0])
		st, err := strconv.Atoi(r[1])
		if len(codes) != 1 || err != nil {
			continue
		}
		table[codes[0]] = st
	}
	if len(table) < 15 {
		t.Fatalf("parsed %d codes from docs/api.md: too few", len(table))
	}
	for code, st := range table {
		if _, ok := consts[code]; !ok {
			t.Errorf("docs/api.md documents code %q, which no Code* constant of region or api defines", code)
			continue
		}
		if got := latticeapi.ProblemFor(&region.Error{Code: code}).Status; got != st {
			t.Errorf("docs/api.md: %q is %d; api.ProblemFor answers %d", code, st, got)
		}
	}
	for code, name := range consts {
		if _, ok := table[code]; !ok {
			t.Errorf("%s = %q is not in docs/api.md's Problem codes table", name, code)
		}
	}
	// The summary by status.
	summary := map[string]int{}
	for _, line := range strings.Split(doc, "\n") {
		m := regexp.MustCompile("^\\| ([0-9]{3}) \\| (.*)\\|$").FindStringSubmatch(line)
		if m == nil {
			continue
		}
		st, _ := strconv.Atoi(m[1])
		for _, c := range docTicks(m[2]) {
			if regexp.MustCompile(`^[a-z_]+$`).MatchString(c) {
				summary[c] = st
			}
		}
	}
	for code, st := range table {
		if got, ok := summary[code]; !ok {
			t.Errorf("docs/api.md: the status summary table does not list %q (%d)", code, st)
		} else if got != st {
			t.Errorf("docs/api.md: the status summary puts %q under %d, the codes table under %d", code, got, st)
		}
	}
}

// ---------------------------------------------------------------------
// Flags: docs/configuration.md's and bench/README.md's flag tables
// against each command's flags (as `lattice help COMMAND` prints them).

type docFlag struct {
	typ, def, usage string
}

// docFlags returns the flags `lattice help cmd` prints, with their
// defaults ("" when the usage line shows none).
func docFlags(t *testing.T, cmd string) map[string]docFlag {
	t.Helper()
	code, stdout, stderr := runCLI(t, "help", cmd)
	if code != 0 {
		t.Fatalf("lattice help %s: %d %s", cmd, code, stderr)
	}
	out := map[string]docFlag{}
	lines := strings.Split(stdout, "\n")
	head := regexp.MustCompile(`^  -([a-z0-9-]+)(?: (\S+))?$`)
	def := regexp.MustCompile(`\(default "?([^")]*)"?\)$`)
	for i, l := range lines {
		m := head.FindStringSubmatch(l)
		if m == nil {
			continue
		}
		f := docFlag{typ: m[2]}
		if i+1 < len(lines) {
			f.usage = lines[i+1]
			if d := def.FindStringSubmatch(lines[i+1]); d != nil && !strings.Contains(lines[i+1], "(default: ") {
				f.def = d[1]
			}
		}
		out[m[1]] = f
	}
	if len(out) == 0 {
		t.Fatalf("lattice help %s: no flags parsed from %q", cmd, stdout)
	}
	return out
}

// docSame says whether a documented default matches the code's.
func docSame(doc, code string) bool {
	doc = strings.Trim(doc, "`")
	if doc == code {
		return true
	}
	switch doc {
	case "—", "–", "-", "none", "":
		return code == "" || code == "-1"
	case "false", "off":
		return code == "" || code == "false"
	case "0":
		return code == "" || code == "0"
	}
	if dd, err := time.ParseDuration(doc); err == nil {
		if cd, err := time.ParseDuration(code); err == nil {
			return dd == cd
		}
	}
	return false
}

func docFlagTable(t *testing.T, where string, lines []string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, r := range docRows(lines) {
		if len(r) < 2 {
			continue
		}
		for _, tick := range docTicks(r[0]) {
			name, _, _ := strings.Cut(strings.TrimPrefix(tick, "--"), " ")
			if !strings.HasPrefix(tick, "--") {
				continue
			}
			d := r[1]
			if ds := docTicks(d); len(ds) > 0 && strings.Contains(r[0], ",") {
				// `--log-level`, `--log-format` | `info`, `text`
				idx := slices.Index(docTicks(r[0]), tick)
				if idx < len(ds) {
					d = ds[idx]
				}
			}
			out[name] = d
		}
	}
	if len(out) == 0 {
		t.Fatalf("%s: no flag rows", where)
	}
	return out
}

// TestDocsMatchFlagTables checks every flag row of the "Commands and
// flags" tables of docs/configuration.md (serve, dev, certs, backup,
// restore, bench) and of bench/README.md's flag table: the flag exists
// with the documented default, and every flag of the command has a row.
func TestDocsMatchFlagTables(t *testing.T) {
	cfgDoc := docRead(t, "docs/configuration.md")
	for _, cmd := range []string{"serve", "dev", "certs", "backup", "restore", "bench"} {
		where := "docs/configuration.md `lattice " + cmd + "`"
		t.Run(cmd, func(t *testing.T) {
			docCompareFlags(t, where, docFlagTable(t, where, docSection(t, cfgDoc, "`lattice "+cmd+"`")), docFlags(t, cmd))
		})
	}
	t.Run("bench/README", func(t *testing.T) {
		doc := docRead(t, "bench/README.md")
		lines := strings.Split(doc, "\n")
		// The first table of the file is the flags'.
		var tbl []string
		for _, l := range lines {
			if strings.HasPrefix(l, "|") {
				tbl = append(tbl, l)
			} else if len(tbl) > 0 {
				break
			}
		}
		docCompareFlags(t, "bench/README.md", docFlagTable(t, "bench/README.md", tbl), docFlags(t, "bench"))
	})
}

func docCompareFlags(t *testing.T, where string, doc map[string]string, code map[string]docFlag) {
	t.Helper()
	for name, d := range doc {
		f, ok := code[name]
		if !ok {
			t.Errorf("%s documents --%s, which the command does not accept", where, name)
			continue
		}
		// Documented defaults given as words ("a new temporary directory",
		// "`--dir`", "the region's only node") are not compared; a
		// default 0 the usage explains as "(0: N" is N.
		tok := strings.Fields(d + " x")[0]
		plain := strings.Trim(tok, "`")
		descriptive := strings.HasPrefix(plain, "--") || (!strings.HasPrefix(tok, "`") &&
			!regexp.MustCompile(`^[-—–0-9]`).MatchString(plain) &&
			!slices.Contains([]string{"false", "off", "none", "wan", "always", "text", "bench-out", "lattice", "info", "error"}, plain))
		effective := f.def
		if m := regexp.MustCompile(`\(0: ([0-9]+)`).FindStringSubmatch(f.usage); m != nil && f.def == "" {
			effective = m[1]
		}
		if !descriptive && !docSame(plain, f.def) && !docSame(plain, effective) {
			t.Errorf("%s: --%s default documented %q, the code's is %q", where, name, d, f.def)
		}
	}
	for name := range code {
		if _, ok := doc[name]; !ok {
			t.Errorf("the command accepts --%s (default %q), which %s does not document", name, code[name].def, where)
		}
	}
}

// ---------------------------------------------------------------------
// Config keys: docs/configuration.md's key table against config.Keys.

// TestDocsMatchConfigKeysExist checks that every key of
// docs/configuration.md's key table is one the config file accepts (the
// other direction is TestDocsCoverConfigAndRoutes').
func TestDocsMatchConfigKeysExist(t *testing.T) {
	doc := docRead(t, "docs/configuration.md")
	keys := config.Keys()
	var n int
	for _, l := range strings.Split(doc, "\n") {
		if !strings.HasPrefix(l, "| `") {
			continue
		}
		cells := strings.Split(strings.Trim(l, "|"), "|")
		if len(cells) != 5 {
			continue
		}
		ks := docTicks(cells[0])
		if len(ks) != 1 || strings.HasPrefix(ks[0], "--") || strings.Contains(ks[0], "/") {
			continue
		}
		n++
		if !slices.Contains(keys, ks[0]) {
			t.Errorf("docs/configuration.md documents the key `%s`, which the config file does not accept (keys: %v)", ks[0], keys)
		}
	}
	if n < 20 {
		t.Fatalf("parsed %d keys: too few", n)
	}
}
