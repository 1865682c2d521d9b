package bench

import (
	"reflect"
	"testing"
	"time"
)

func TestAnalyzeBuildsTheModelsFromOutcomes(t *testing.T) {
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	sec := func(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }
	ok := func(lat int) call {
		return call{Outcome: OK, Status: 200, Latency: time.Duration(lat) * time.Millisecond}
	}
	unknown := call{Outcome: Unknown, Status: 503, Code: "home_unavailable"}
	sched := &Schedule{Ops: []Op{
		{Kind: CartAdd, At: sec(0.5), Cart: "add-0", SKU: "x", Qty: 1},                // warm-up, acked
		{Kind: CartAdd, At: sec(1), Cart: "add-0", SKU: "x", Qty: 1},                  // acked
		{Kind: CartAdd, At: sec(1.1), Cart: "add-0", SKU: "x", Qty: 1},                // unknown
		{Kind: CartAdd, At: sec(1.2), Cart: "add-0", SKU: "x", Qty: 1},                // refused
		{Kind: Restock, At: sec(1.3), SKU: "h", Qty: 4},                               // acked
		{Kind: Restock, At: sec(1.4), SKU: "h", Qty: 2},                               // unknown
		{Kind: Reserve, At: sec(1.5), SKU: "h", Qty: 3, Commit: true, FromHome: true}, // committed
		{Kind: Reserve, At: sec(1.6), SKU: "h", Qty: 2, Commit: true},                 // commit unknown
		{Kind: Reserve, At: sec(1.7), SKU: "h", Qty: 1, Commit: false},                // released
		{Kind: Reserve, At: sec(1.8), SKU: "h", Qty: 5, Commit: true, FromHome: true}, // insufficient
		{Kind: Reserve, At: sec(1.9), SKU: "h", Qty: 1, Commit: true},                 // hold unknown
		{Kind: CartRemove, At: sec(2.0), Cart: "mix-0", SKU: "x"},                     // not run
	}}
	res := []opResult{
		{First: ok(1)},
		{First: ok(2)},
		{First: unknown},
		{First: call{Outcome: Refused, Status: 400, Code: "invalid_request"}},
		{First: ok(3)},
		{First: call{Outcome: Unknown, Code: "transport"}},
		{First: ok(4), Second: ok(5)},
		{First: ok(6), Second: unknown},
		{First: ok(7), Second: ok(8)},
		{First: call{Outcome: Refused, Status: 409, Code: "insufficient_stock", Latency: 9 * time.Millisecond}},
		{First: unknown},
		{},
	}
	for i := range res {
		if res[i].First.Outcome != NotRun {
			res[i].Sent = start.Add(sched.Ops[i].At + time.Millisecond)
			res[i].Done = res[i].Sent.Add(10 * time.Millisecond)
		}
	}
	stock := StockModel{}
	stock.Ledger("h").RestockAcked = 50
	a := analyze(sched, res, start, time.Second, time.Second, stock)

	if got := a.adds.Acked[CartLine{"add-0", "x"}]; got != 2 {
		t.Errorf("acked adds %d, want 2 (warm-up included)", got)
	}
	if got := a.adds.Unknown[CartLine{"add-0", "x"}]; got != 1 {
		t.Errorf("unknown adds %d, want 1", got)
	}
	want := StockLedger{RestockAcked: 54, RestockUnknown: 2, CommitAcked: 3, CommitUnknown: 2,
		UnknownRestocks: []int64{2}, UnknownCommits: []int64{2}}
	if got := *a.stock.Ledger("h"); !reflect.DeepEqual(got, want) {
		t.Errorf("ledger %+v, want %+v", got, want)
	}
	o := a.ops
	if o.WarmupOps != 1 || o.Scheduled != 11 || o.Answered != 10 || o.OK != 5 || o.Refused != 2 || o.Unknown != 3 || o.NotRun != 1 {
		t.Errorf("ops %+v", o)
	}
	if o.Codes["home_unavailable"] != 3 || o.Codes["insufficient_stock"] != 1 || o.Codes["transport"] != 1 {
		t.Errorf("codes %v", o.Codes)
	}
	if a.write.Count != 2 || a.write.Max != 3 {
		t.Errorf("write latency %+v, want the acked add (2 ms) and restock (3 ms)", a.write)
	}
	r := a.res
	if r.Granted != 3 || r.Insufficient != 1 || r.Unavailable != 1 {
		t.Errorf("reservations %+v", r)
	}
	if r.Home.Count != 2 || r.Home.Max != 9 || r.NonHome.Count != 2 {
		t.Errorf("home %+v, non-home %+v: want the granted and refused holds", r.Home, r.NonHome)
	}
	if r.Commit.Count != 1 || r.Release.Count != 1 {
		t.Errorf("commit %+v, release %+v", r.Commit, r.Release)
	}
	// 10 answered operations from 1 s to 2 s (the warm-up's ended
	// before), 5 of them 2xx.
	if a.throughput != 10 || a.throughputOK != 5 {
		t.Errorf("throughput %v (2xx %v), want 10 (5)", a.throughput, a.throughputOK)
	}
}
