package console

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// plainCluster is GET /v1/cluster of a region of one node with no peers.
func plainCluster(region string) json.RawMessage {
	b, _ := json.Marshal(map[string]any{"region": region, "replica": region + ".r1", "catching_up": false,
		"divergent_keys": []string{}, "version_vector": map[string]uint64{region + ".r1": 1},
		"store": map[string]any{"file_bytes": 100, "live_bytes": 50, "durability": "always", "corrupt_keys": []string{}},
		"peers": []any{}})
	return b
}

// TestExplorerDoesNotShowAnotherCartsAnswer: the page asks for a
// snapshot of the cart shown (cart=old); while that request is under way
// the user shows another cart (new). The answer that then arrives is the
// old cart's, so the explorer must not show its lines as the new cart's
// ("cart new" with a line of book, which cart new never held).
func TestExplorerDoesNotShowAnotherCartsAnswer(t *testing.T) {
	var snap Snapshot
	snap.Region, snap.Time = "us-east", time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, name := range []string{"us-east", "eu-west"} {
		body, _ := json.Marshal(map[string]any{"cart_id": "old", "region": name, "items": []any{map[string]any{"sku": "book", "qty": 2}}})
		snap.Regions = append(snap.Regions, RegionView{RegionLink: RegionLink{Name: name},
			Local: &Local{Region: name, Convergence: []Convergence{}, Cluster: Answer{Status: 200, Body: plainCluster(name)},
				Cart: &Answer{Status: 200, Version: "0a0b0c0d", Body: body}}})
	}
	var res struct {
		Asked string        `json:"asked"`
		Rows  []explorerRow `json:"rows"`
	}
	runPage(t, snap, `
(async () => {
  let asked = "", answer = null;
  fetch = (u) => { asked = String(u); return new Promise(r => { answer = r; }); };
  state.cart = "old";
  poll();
  await null;
  // The user shows another cart while the snapshot of "old" is under way.
  state.cart = "new";
  $("cart-id").value = "new";
  answer({ ok: true, status: 200, json: async () => __snap });
  for (let i = 0; i < 50; i++) await null;
  return JSON.stringify({ asked, rows: $("compare").tBodies[0].children.map(r => ({ row: r.attrs["data-row"],
    diff: r.attrs["data-diff"], cells: r.children.slice(1).map(c => c.textContent) })) });
})()
`, &res)
	if !strings.Contains(res.Asked, "cart=old") {
		t.Fatalf("the page asked %q, want the snapshot of cart old", res.Asked)
	}
	labels := map[string]bool{}
	for _, r := range res.Rows {
		labels[r.Row] = true
	}
	if labels["cart new version"] && labels["qty of book"] {
		t.Errorf("the explorer shows cart old's answer as cart new's: rows %+v", res.Rows)
	}
}

// devSnapshot is a snapshot of a dev cluster of us-east and ap-south whose
// controls set latencyMS between them and lossPct.
func devSnapshot(at time.Time, latencyMS int64, lossPct float64) Snapshot {
	var snap Snapshot
	snap.Region, snap.Time = "us-east", at
	for _, name := range []string{"us-east", "ap-south"} {
		snap.Regions = append(snap.Regions, RegionView{RegionLink: RegionLink{Name: name},
			Local: &Local{Region: name, Convergence: []Convergence{}, Cluster: Answer{Status: 200, Body: plainCluster(name)}}})
	}
	snap.Controls = &ControlState{Cut: []string{}, LossPct: lossPct,
		Links: []LinkState{{A: "us-east", B: "ap-south", LatencyMS: latencyMS}}}
	return snap
}

// TestDevControlsShowTheCurrentLatencyAndLoss: the development controls
// show each pair's latency and the loss in their inputs. When the
// controls' state changes (another tab, or curl as docs/operations.md
// shows, set the latency to 500 ms and the loss to 5 %), the next
// snapshot's values are what the page shows, not the ones of the first
// snapshot it drew.
func TestDevControlsShowTheCurrentLatencyAndLoss(t *testing.T) {
	t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	var res struct {
		Latency []string `json:"latency"`
		Loss    string   `json:"loss"`
	}
	runPage(t, []Snapshot{devSnapshot(t0, 92, 0), devSnapshot(t0.Add(time.Second), 500, 5)}, `
for (const s of __snap) render(s);
const shown = e => String(e.value !== "" && e.value !== undefined ? e.value : (e.attrs.value || ""));
const latency = [];
const walk = e => { if (e.tag === "input") latency.push(shown(e)); for (const k of e.children || []) if (typeof k === "object") walk(k); };
walk($("dev-links"));
JSON.stringify({ latency, loss: shown($("loss")) });
`, &res)
	if len(res.Latency) != 1 || res.Latency[0] != "500" {
		t.Errorf("after the latency of us-east↔ap-south became 500 ms the page shows %q in its input, want 500", res.Latency)
	}
	if res.Loss != "5" {
		t.Errorf("after the loss became 5 %% the page shows %q in its input, want 5", res.Loss)
	}
}
