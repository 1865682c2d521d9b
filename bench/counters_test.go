package bench

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// Tests of the correctness counters' reach: each feeds the checking and
// analysis functions an input holding exactly the fault a counter names,
// and asserts the counter sees it.

// TestLostMixedCartWrite: acknowledged writes to the mixed carts count
// too. An acknowledged set and an acknowledged add, each the only write
// its line ever got, missing at every region, are lost writes (the lines'
// bounds from below, MixedBound), and a line no request ever wrote is
// phantom units (the bound from above); every region agrees, so
// Divergence alone would be silent.
func TestLostMixedCartWrite(t *testing.T) {
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	sched := &Schedule{
		AddCarts: []string{"add-0000"},
		MixCarts: []string{"mix-0000", "mix-0001", "mix-0002"},
		Ops: []Op{
			{Index: 0, Kind: CartSet, At: time.Second, Cart: "mix-0000", SKU: "sku-001", Qty: 3},
			{Index: 1, Kind: CartMixAdd, At: 2 * time.Second, Cart: "mix-0001", SKU: "sku-002", Qty: 2},
		},
	}
	results := make([]opResult, len(sched.Ops))
	for i, op := range sched.Ops {
		results[i] = opResult{Sent: start.Add(op.At), Done: start.Add(op.At + 5*time.Millisecond),
			First: call{Outcome: OK, Status: 200, Latency: 5 * time.Millisecond}}
	}
	a := analyze(sched, results, start, 0, 3*time.Second, StockModel{})

	// Every region: the acknowledged set and add lost, and a line nobody
	// wrote (mix-0002 / sku-009 = 7).
	state := func() RegionState {
		return RegionState{Carts: map[string]CartState{
			"add-0000": {}, "mix-0000": {}, "mix-0001": {}, "mix-0002": {"sku-009": 7},
		}, Items: map[string]ItemState{}}
	}
	states := []RegionState{state(), state(), state()}

	lost, phantom := a.adds.Check(states, sched.AddCarts, sched.MixCarts)
	regions, _ := Divergence(states)
	if lost == 0 {
		t.Errorf("lost cart writes = 0 with an acknowledged set (3 units) and an acknowledged add (2 units) of mixed carts missing at every region (regions not converged: %d)", len(regions))
	}
	if phantom == 0 {
		t.Errorf("phantom cart units = 0 with 7 units of a mixed-cart line no request wrote at every region")
	}
}

// TestOversoldAgainstRestocks: oversold (at the home, and in a region's
// view) compares reserved + granted with the stock the restocks and
// commits allow, not only with the stock the same read shows: a home that
// counted a restock twice (stock 12, 10 ever restocked) and held 12 units
// has held 2 beyond everything ever restocked, and the escrow goal
// "oversold units" is not met.
func TestOversoldAgainstRestocks(t *testing.T) {
	ledger := func() *StockLedger { return &StockLedger{RestockAcked: 10} }
	// hot-0 home-decided: 12 units held; esc-us-east-0 escrow: 2 held at
	// the home and 10 units of rights granted out.
	home := map[string]ItemState{
		"hot-0":         {Stock: 12, Reserved: 12},
		"esc-us-east-0": {Stock: 12, Reserved: 2, Granted: 10},
	}
	m := StockModel{"hot-0": ledger(), "esc-us-east-0": ledger()}
	oversold, mismatches := CheckStock(m, home)
	if oversold < 4 {
		t.Errorf("oversold units = %d, want ≥ 4 (12 units held of each sku, 10 ever restocked; stock mismatches %d)", oversold, mismatches)
	}

	// Every region shows what the home does: no divergence, and each
	// view is consistent with itself.
	states := []RegionState{{Items: home}, {Items: home}, {Items: home}}
	var inViews int64
	for _, u := range ViewOversold(states, m) {
		inViews += u
	}
	if inViews < 4 {
		t.Errorf("oversold units in views = %d, want ≥ 4", inViews)
	}

	sched := &Schedule{Hot: []string{"hot-0", "esc-us-east-0"}, Escrow: []string{"esc-us-east-0"}}
	homeOver := map[string]int64{}
	for sku, it := range home {
		homeOver[sku] = skuOversold(m.Ledger(sku), it)
	}
	e := analyzeEscrow(sched, nil, []string{"us-east", "eu-west", "ap-south"}, func(int, int) float64 { return 0 },
		0, homeOver, ViewOversold(states, m))
	for _, g := range e.Goals {
		if g.Goal == "oversold units" && g.Met {
			t.Errorf("escrow goal %q (%s) met with 2 units held beyond every restock", g.Goal, g.Kind)
		}
	}
}

// TestEscrowFastGoalCountsUnanswered: the share of holds at a non-home
// region answered within 5 ms counts the holds left without an answer as
// not answered in time: nineteen of twenty that time out after 10 s and
// one granted in 1 ms do not meet the goal.
func TestEscrowFastGoalCountsUnanswered(t *testing.T) {
	names := []string{"us-east", "eu-west", "ap-south"}
	sched := &Schedule{Hot: []string{"hot-0", "esc-us-east-0"}, Escrow: []string{"esc-us-east-0"}}
	var results []opResult
	for i := range 20 {
		op := Op{Index: i, Kind: Reserve, At: time.Second, SKU: "esc-us-east-0", Region: 1 + i%2, Home: 0, Escrow: true, Qty: 1, Commit: true}
		sched.Ops = append(sched.Ops, op)
		r := opResult{First: call{Outcome: Unknown, Code: "transport", Latency: 10 * time.Second}}
		if i == 0 {
			r = opResult{First: call{Outcome: OK, Status: 201, Latency: time.Millisecond}, ID: "eu-west:1",
				Second: call{Outcome: OK, Status: 200, Latency: time.Millisecond}}
		}
		results = append(results, r)
	}
	e := analyzeEscrow(sched, results, names, func(int, int) float64 { return 68 }, 0, nil, nil)
	for _, g := range e.Goals {
		if g.Kind == "escrow" && strings.Contains(g.Goal, "within") && g.Met {
			t.Errorf("goal %q met (value %v) though 19 of 20 non-home escrow holds got no answer within 10 s", g.Goal, g.Value)
		}
	}
}

// TestDuplicateCartLineCounted: a region whose cart view lists sku-001
// twice (1 unit, then 2) shows the customer 3 units where 2 adds were
// acknowledged: the final read adds the lines up (it kept the last one),
// so the phantom unit is seen.
func TestDuplicateCartLineCounted(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		switch {
		case r.URL.Path == "/v1/carts/add-0000":
			io.WriteString(w, `{"cart_id":"add-0000","items":[{"sku":"sku-001","qty":1},{"sku":"sku-001","qty":2}]}`)
		case strings.HasPrefix(r.URL.Path, "/v1/carts/"):
			io.WriteString(w, `{"items":[]}`)
		default:
			io.WriteString(w, `{"stock":10}`)
		}
	}))
	defer srv.Close()
	cl := newClient([][]string{{srv.URL}}, 1, 5*time.Second)
	defer cl.close()
	sched := &Schedule{AddCarts: []string{"add-0000"}, Hot: []string{"hot-0"}}
	states, err := readStates(context.Background(), cl, 1, sched)
	if err != nil {
		t.Fatal(err)
	}
	m := NewAddModel()
	m.Acked[CartLine{"add-0000", "sku-001"}] = 2
	lost, phantom := m.Check(states, sched.AddCarts, sched.MixCarts)
	if phantom == 0 {
		t.Errorf("phantom cart units = 0 (lost %d) for a cart listing sku-001 twice, 3 units in all, 2 adds acknowledged; read as %v",
			lost, states[0].Carts["add-0000"])
	}
}
