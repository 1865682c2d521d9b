package console

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/latticedb/lattice/api"
	"github.com/latticedb/lattice/region"
	"github.com/latticedb/lattice/region/config"
)

// partitionedService is the service of one node of a partitioned region
// that owns no partition: every cart and sku request is forwarded.
type partitionedService struct {
	api.Service
}

func (partitionedService) Region() string { return "us-east" }
func (partitionedService) Cluster() region.ClusterStatus {
	return region.ClusterStatus{Region: "us-east"}
}
func (partitionedService) TokenFor(context.Context) string { return "" }

// cuttingOwner is a node that starts its answer and drops the connection
// before the body is complete.
func cuttingOwner(t *testing.T) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, buf, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		buf.WriteString("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 400\r\n\r\n{\"cart_id\":\"c1\",")
		buf.Flush()
		conn.Close()
	}))
	t.Cleanup(srv.Close)
	return srv
}

// runSnapshotOverCutForward serves a snapshot of cart c1 at a node of a
// partitioned us-east whose owner node drops its answer midway, and
// reports the status and us-east's cart answer on stdout.
func runSnapshotOverCutForward(t *testing.T) {
	owner := cuttingOwner(t)
	quiet := slog.New(slog.DiscardHandler)
	h := api.New(partitionedService{}, api.Options{Logger: quiet, Partitioning: &api.Partitioning{
		Partitions: 2, Self: "us-east/n0", Owner: func(int) string { return owner.URL }}})
	cfg := config.DefaultConfig()
	for i := range cfg.Regions {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		cfg.Regions[i].API = ln.Addr().String()
		ln.Close()
	}
	c, err := New(Options{Region: "us-east", Config: cfg, API: h, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	rec := do(c, "GET", "/console/api/snapshot?cart=c1", "", nil)
	var snap Snapshot
	if err := json.Unmarshal(rec.Body.Bytes(), &snap); err != nil || rec.Code != 200 {
		t.Fatalf("snapshot %d: %v", rec.Code, err)
	}
	if len(snap.Regions) == 0 || snap.Regions[0].Local == nil || snap.Regions[0].Local.Cart == nil {
		t.Fatalf("snapshot without us-east's cart: %s", rec.Body)
	}
	fmt.Printf("snapshot %d, us-east cart %+v\n", rec.Code, *snap.Regions[0].Local.Cart)
}

// TestSnapshotSurvivesCutForwardedAnswer: at a node of a partitioned
// region, the snapshot reads the cart through the region's API, which
// forwards it to the owning node. When that node's answer is cut short,
// the snapshot shows the read as failed and the process keeps serving; it
// does not die.
func TestSnapshotSurvivesCutForwardedAnswer(t *testing.T) {
	if os.Getenv("LATTICE_CONSOLE_CUT_FORWARD") == "1" {
		runSnapshotOverCutForward(t)
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestSnapshotSurvivesCutForwardedAnswer$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), "LATTICE_CONSOLE_CUT_FORWARD=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		n := len(out)
		if n > 1500 {
			n = 1500
		}
		t.Fatalf("the process serving the snapshot died (%v) when the owning node cut its answer short:\n%s", err, out[:n])
	}
}

// pageHarness runs console.js (argv[2]) with a minimal DOM, with __snap
// set to the snapshot argv[3], then the script argv[4], and prints what
// that script returns, or what the promise it returns resolves to.
const pageHarness = `
const vm = require("vm"), fs = require("fs");
function mk(tag) {
  return { tag, attrs: {}, children: [], textContent: "", dataset: {}, hidden: false, value: "", options: [],
    append(...k) { this.children.push(...k); }, replaceChildren(...k) { this.children = k; },
    setAttribute(k, v) { this.attrs[k] = String(v); }, addEventListener() {} };
}
const ids = {};
const document = {
  getElementById(id) {
    if (!ids[id]) {
      ids[id] = mk("#" + id);
      if (id === "compare" || id === "links") { ids[id].tHead = mk("thead"); ids[id].tBodies = [mk("tbody")]; }
    }
    return ids[id];
  },
  createElement: mk, createElementNS: (ns, t) => mk(t), querySelectorAll: () => [], title: "",
};
const ctx = vm.createContext({ document, sessionStorage: { getItem: () => null }, location: { search: "" },
  history: {}, fetch: () => new Promise(() => {}), setTimeout: () => {}, URLSearchParams });
vm.runInContext(fs.readFileSync(process.argv[2], "utf8"), ctx);
ctx.__snap = JSON.parse(process.argv[3]);
Promise.resolve(vm.runInContext(process.argv[4], ctx)).then(v => console.log(v));
`

// runPage runs script in the page's script with __snap set to snap and
// decodes the JSON it returns into out.
func runPage(t *testing.T, snap any, script string, out any) {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("no node (Node.js) on PATH to run the page's script: apt-get install -y nodejs (.ci/run installs it)")
	}
	sj, err := json.Marshal(snap)
	if err != nil {
		t.Fatal(err)
	}
	h := t.TempDir() + "/harness.js"
	if err := os.WriteFile(h, []byte(pageHarness), 0o600); err != nil {
		t.Fatal(err)
	}
	b, err := exec.Command(node, h, "static/console.js", string(sj), script).CombinedOutput()
	if err != nil {
		t.Fatalf("node: %v\n%s", err, b)
	}
	if err := json.Unmarshal(b, out); err != nil {
		t.Fatalf("page script output %q: %v", b, err)
	}
}

type explorerRow struct {
	Row   string   `json:"row"`
	Diff  string   `json:"diff"`
	Cells []string `json:"cells"`
}

// renderExplorer renders the page's explorer for cart with each region's
// cart answer holding items (region name -> cart lines).
func renderExplorer(t *testing.T, cart string, items map[string][]map[string]any) (string, []explorerRow) {
	t.Helper()
	var snap Snapshot
	for _, name := range []string{"us-east", "eu-west"} {
		body, _ := json.Marshal(map[string]any{"cart_id": cart, "region": name, "items": items[name]})
		snap.Regions = append(snap.Regions, RegionView{RegionLink: RegionLink{Name: name},
			Local: &Local{Region: name, Cluster: Answer{Status: 200, Body: json.RawMessage(`{}`)},
				Cart: &Answer{Status: 200, Version: "0a0b0c0d", Body: body}}})
	}
	cj, _ := json.Marshal(cart)
	var res struct {
		Status string        `json:"status"`
		Rows   []explorerRow `json:"rows"`
	}
	runPage(t, snap, `
state.cart = `+string(cj)+`;
renderExplorer(__snap);
JSON.stringify({ status: $("explorer-status").textContent,
  rows: $("compare").tBodies[0].children.map(r => ({ row: r.attrs["data-row"], diff: r.attrs["data-diff"],
    cells: r.children.slice(1).map(c => c.textContent) })) });
`, &res)
	return res.Status, res.Rows
}

// TestExplorerShowsEverySku: the explorer shows a row per sku of the cart
// at any region, with each region's quantity (0 where the cart lacks the
// sku), and highlights the rows where the regions differ. Skus are any
// id of [A-Za-z0-9._:-]{1,128}, "__proto__" and "constructor" included.
func TestExplorerShowsEverySku(t *testing.T) {
	for _, sku := range []string{"__proto__", "constructor"} {
		status, rows := renderExplorer(t, "c1", map[string][]map[string]any{
			"us-east": {{"sku": sku, "qty": 2}},
			"eu-west": {},
		})
		var got *explorerRow
		for i := range rows {
			if rows[i].Row == "qty of "+sku {
				got = &rows[i]
			}
		}
		if got == nil {
			t.Errorf("sku %q in us-east's cart only: no row for it (rows %+v, status %q); want a highlighted row 2 vs 0",
				sku, rows, status)
			continue
		}
		if strings.Join(got.Cells, ",") != "2,0" || got.Diff != "yes" {
			t.Errorf("sku %q in us-east's cart only: row %+v, want cells 2,0 highlighted", sku, *got)
		}
	}
}

// partitionedCluster is GET /v1/cluster of a node of a partitioned
// us-east that owns partitions 0 and 1, as docs/api.md describes it: an
// empty version vector at the top, each partition's own replica and
// version vector under partitions.
func partitionedCluster(writes0, writes1 uint64) json.RawMessage {
	part := func(p int, replica string, writes uint64) map[string]any {
		return map[string]any{"partition": p, "region": "us-east", "replica": replica, "catching_up": false,
			"divergent_keys": []string{}, "version_vector": map[string]uint64{replica: writes, "eu-west.r1": 7},
			"store": map[string]any{"file_bytes": 100, "live_bytes": 50, "durability": "always", "corrupt_keys": []string{}},
			"peers": []any{}}
	}
	b, _ := json.Marshal(map[string]any{"region": "us-east", "replica": "", "catching_up": false,
		"divergent_keys": []string{}, "version_vector": map[string]uint64{},
		"store": map[string]any{"file_bytes": 200, "live_bytes": 100, "durability": "always", "corrupt_keys": []string{}},
		"peers": []any{}, "node": "n0", "partition_count": 2,
		"partitions": []any{part(0, "us-east.p0", writes0), part(1, "us-east.p1", writes1)}})
	return b
}

// TestRegionCardCountsPartitionedRegionsWrites: a region's card shows its
// local writes and write rate from its version vector. For a node of a
// partitioned region, whose top-level version vector is empty by design,
// they are its partitions' own writes: 5 + 3 local writes, and after 8
// more writes in one second, a rate of 8 /s.
func TestRegionCardCountsPartitionedRegionsWrites(t *testing.T) {
	snap := func(at time.Time, w0, w1 uint64) Snapshot {
		return Snapshot{Region: "us-east", Time: at, Regions: []RegionView{{RegionLink: RegionLink{Name: "us-east"},
			Local: &Local{Region: "us-east", Convergence: []Convergence{}, Cluster: Answer{Status: 200, Body: partitionedCluster(w0, w1)}}}}}
	}
	t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	var card map[string]string
	runPage(t, []Snapshot{snap(t0, 5, 3), snap(t0.Add(time.Second), 9, 7)}, `
for (const s of __snap) render(s);
const dl = $("regions").children[0].children[1], out = {};
for (let i = 0; i + 1 < dl.children.length; i += 2) out[dl.children[i].textContent] = dl.children[i + 1].textContent;
JSON.stringify(out);
`, &card)
	if card["local writes"] != "16" || card["writes"] != "8.0 /s" {
		t.Errorf("card of a partitioned region whose partitions wrote 9+7, 8 in the last second: local writes %q, writes %q; want 16 and 8.0 /s",
			card["local writes"], card["writes"])
	}
}

// TestPeerErrorAnswerIsAShortError: when another region answers the
// snapshot's request with an error whose body is JSON but not a problem
// (a gateway's error document), the region's view carries a short error,
// not the whole body, which the page would fetch again once a second.
func TestPeerErrorAnswerIsAShortError(t *testing.T) {
	big := `{"message":"gateway error","trace":"` + strings.Repeat("x", 4<<20) + `"}`
	h, _ := consoleWithPeer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadGateway)
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
		if v.Name == "eu-west" {
			if v.Error == "" || len(v.Error) > 64<<10 {
				t.Errorf("eu-west's error is %d bytes (the snapshot is %d bytes); want a short error", len(v.Error), rec.Body.Len())
			}
			return
		}
	}
	t.Fatal("no eu-west in the snapshot")
}
