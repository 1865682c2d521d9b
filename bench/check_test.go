package bench

import (
	"reflect"
	"testing"
)

func TestAddModelCountsLostAndPhantomAdds(t *testing.T) {
	carts := []string{"a", "b"}
	m := NewAddModel()
	m.Acked[CartLine{"a", "x"}] = 3
	m.Acked[CartLine{"a", "y"}] = 1
	m.Acked[CartLine{"b", "x"}] = 2
	m.Unknown[CartLine{"b", "x"}] = 1 // may or may not have happened

	good := RegionState{Carts: map[string]CartState{"a": {"x": 3, "y": 1}, "b": {"x": 2}}}
	alsoGood := RegionState{Carts: map[string]CartState{"a": {"x": 3, "y": 1}, "b": {"x": 3}}}
	if lost, phantom := m.Check([]RegionState{good, alsoGood}, carts, nil); lost != 0 || phantom != 0 {
		t.Fatalf("consistent carts: lost %d, phantom %d", lost, phantom)
	}

	// One region lost an add of a/x and all of a/y; another has an extra
	// unit of b/x beyond the unknown one, and a line nobody added.
	lossy := RegionState{Carts: map[string]CartState{"a": {"x": 2}, "b": {"x": 2}}}
	extra := RegionState{Carts: map[string]CartState{"a": {"x": 3, "y": 1, "z": 1}, "b": {"x": 4}}}
	lost, phantom := m.Check([]RegionState{good, lossy, extra}, carts, nil)
	if lost != 2 {
		t.Errorf("lost %d, want 2 (a/x at the lossy region, a/y there)", lost)
	}
	if phantom != 2 {
		t.Errorf("phantom %d, want 2 (b/x beyond acked + unknown, a/z)", phantom)
	}

	// A missing cart loses everything acknowledged in it.
	empty := RegionState{Carts: map[string]CartState{}}
	if lost, _ := m.Check([]RegionState{empty}, carts, nil); lost != 6 {
		t.Errorf("an empty region: lost %d, want 6", lost)
	}
	// Lines of carts outside the add-only set are not the model's.
	mixed := RegionState{Carts: map[string]CartState{"a": {"x": 3, "y": 1}, "b": {"x": 2}, "m": {"q": 9}}}
	if _, phantom := m.Check([]RegionState{mixed}, carts, nil); phantom != 0 {
		t.Errorf("a mixed cart's line counted as phantom: %d", phantom)
	}
}

func TestCheckStockCountsOversold(t *testing.T) {
	cases := []struct {
		name       string
		ledger     StockLedger
		home       ItemState
		oversold   int64
		mismatches int
	}{
		{"consistent", StockLedger{RestockAcked: 10, CommitAcked: 6}, ItemState{Stock: 4, Reserved: 3}, 0, 0},
		{"everything committed", StockLedger{RestockAcked: 10, CommitAcked: 10}, ItemState{Stock: 0}, 0, 0},
		{"held beyond stock", StockLedger{RestockAcked: 10, CommitAcked: 6}, ItemState{Stock: 4, Reserved: 5}, 1, 0},
		{"negative stock", StockLedger{RestockAcked: 10, CommitAcked: 12}, ItemState{Stock: -2}, 2, 0},
		{"commits beyond restocks, stock hiding it", StockLedger{RestockAcked: 5, CommitAcked: 8}, ItemState{Stock: 0}, 3, 1},
		{"unknown restock may explain commits", StockLedger{RestockAcked: 5, RestockUnknown: 3, CommitAcked: 8}, ItemState{Stock: 0}, 0, 0},
		{"lost restock", StockLedger{RestockAcked: 10, CommitAcked: 2}, ItemState{Stock: 5}, 0, 1},
		{"doubled restock", StockLedger{RestockAcked: 10}, ItemState{Stock: 12}, 0, 1},
		{"unknown commit in range", StockLedger{RestockAcked: 10, CommitAcked: 2, CommitUnknown: 3}, ItemState{Stock: 5}, 0, 0},
		{"rights granted within stock", StockLedger{RestockAcked: 10, CommitAcked: 2}, ItemState{Stock: 8, Reserved: 3, Granted: 5}, 0, 0},
		{"rights granted beyond stock", StockLedger{RestockAcked: 10, CommitAcked: 2}, ItemState{Stock: 8, Reserved: 3, Granted: 7}, 2, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			l := c.ledger
			m := StockModel{"s": &l}
			oversold, mismatches := CheckStock(m, map[string]ItemState{"s": c.home})
			if oversold != c.oversold || mismatches != c.mismatches {
				t.Fatalf("oversold %d, mismatches %d; want %d, %d", oversold, mismatches, c.oversold, c.mismatches)
			}
		})
	}
	// A sku read at its home that the model never saw is checked too: no
	// restock of it is known, so all 4 held units are beyond what was ever
	// restocked, whatever stock the home shows.
	if over, _ := CheckStock(StockModel{}, map[string]ItemState{"u": {Stock: 1, Reserved: 4}}); over != 4 {
		t.Fatalf("unknown sku: oversold %d, want 4", over)
	}
	// A home that counted a restock twice and held the units it invented.
	if over, _ := CheckStock(StockModel{"d": {RestockAcked: 10}}, map[string]ItemState{"d": {Stock: 12, Reserved: 12}}); over != 2 {
		t.Fatalf("doubled restock, all held: oversold %d, want 2", over)
	}
}

func TestDivergence(t *testing.T) {
	st := func(cart CartState, stock int64) RegionState {
		return RegionState{Carts: map[string]CartState{"c": cart}, Items: map[string]ItemState{"s": {Stock: stock}}}
	}
	same := []RegionState{st(CartState{"x": 1}, 5), st(CartState{"x": 1}, 5), st(CartState{"x": 1}, 5)}
	if r, k := Divergence(same); r != nil || k != nil {
		t.Fatalf("equal states: regions %v, keys %v", r, k)
	}
	// A qty of 0 is no line.
	zero := []RegionState{st(CartState{"x": 1}, 5), st(CartState{"x": 1, "y": 0}, 5)}
	if r, _ := Divergence(zero); r != nil {
		t.Fatalf("a zero line counted as a difference: %v", r)
	}
	third := []RegionState{st(CartState{"x": 1}, 5), st(CartState{"x": 1}, 5), st(CartState{"x": 2}, 5)}
	r, k := Divergence(third)
	if !reflect.DeepEqual(r, []int{2}) || !reflect.DeepEqual(k, []string{"cart:c"}) {
		t.Fatalf("third region's cart differs: regions %v, keys %v", r, k)
	}
	// The majority wins even when the first region is the odd one out;
	// a key missing at a region reads as empty.
	first := []RegionState{st(CartState{}, 4), st(CartState{"x": 1}, 5), st(CartState{"x": 1}, 5)}
	first[0].Carts = map[string]CartState{}
	r, k = Divergence(first)
	if !reflect.DeepEqual(r, []int{0}) || !reflect.DeepEqual(k, []string{"cart:c", "item:s"}) {
		t.Fatalf("first region differs: regions %v, keys %v", r, k)
	}
	// A tie goes to the earlier region.
	tie := []RegionState{st(CartState{"x": 1}, 5), st(CartState{"x": 2}, 5)}
	if r, _ := Divergence(tie); !reflect.DeepEqual(r, []int{1}) {
		t.Fatalf("tie: regions %v, want [1]", r)
	}
	// So is the rights granted.
	granted := []RegionState{st(CartState{}, 5), st(CartState{}, 5)}
	granted[1].Items["s"] = ItemState{Stock: 5, Granted: 2}
	if _, k := Divergence(granted); !reflect.DeepEqual(k, []string{"item:s"}) {
		t.Fatalf("granted differs: keys %v", k)
	}
	// A held count differing is a difference too.
	held := []RegionState{st(CartState{}, 5), st(CartState{}, 5)}
	held[1].Items["s"] = ItemState{Stock: 5, Reserved: 1}
	if _, k := Divergence(held); !reflect.DeepEqual(k, []string{"item:s"}) {
		t.Fatalf("reserved differs: keys %v", k)
	}
}

func TestViewOversold(t *testing.T) {
	states := []RegionState{
		{Items: map[string]ItemState{"a": {Stock: 10, Reserved: 2, Granted: 8}, "b": {Stock: 3, Reserved: 1}}},
		{Items: map[string]ItemState{"a": {Stock: 10, Reserved: 4, Granted: 8}, "b": {Stock: 3, Reserved: 5}}},
		{Items: map[string]ItemState{"a": {Stock: 10, Reserved: 3, Granted: 8}}},
	}
	m := StockModel{"a": {RestockAcked: 10}, "b": {RestockAcked: 3}}
	// The worst view of each sku: a by 2 at the second region, b by 2
	// there too; a sku at 0 everywhere is left out.
	if got, want := ViewOversold(states, m), map[string]int64{"a": 2, "b": 2}; !reflect.DeepEqual(got, want) {
		t.Fatalf("ViewOversold = %v, want %v", got, want)
	}
	if got := ViewOversold(states[:1], m); len(got) != 0 {
		t.Fatalf("consistent view: %v", got)
	}
}
