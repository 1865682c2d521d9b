package bench

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"
)

// CartState is a cart as a region shows it: the quantity of each sku in
// it (skus with qty ≤ 0 are absent).
type CartState map[string]int64

// String formats c as "sku=qty " pairs in sku order, leaving out skus
// with qty ≤ 0, so that equal carts format equally.
func (c CartState) String() string {
	skus := make([]string, 0, len(c))
	for s, q := range c {
		if q > 0 {
			skus = append(skus, s)
		}
	}
	sort.Strings(skus)
	var b strings.Builder
	for _, s := range skus {
		fmt.Fprintf(&b, "%s=%d ", s, c[s])
	}
	return b.String()
}

// ItemState is an inventory item as a region shows it. Granted is an
// escrow sku's rights that regions other than its home hold (used by
// holds or not), 0 for other skus.
type ItemState struct {
	Stock    int64 `json:"stock"`
	Reserved int64 `json:"reserved"`
	Granted  int64 `json:"granted,omitempty"`
}

// RegionState is the final state of the benchmark's keys at one region.
type RegionState struct {
	Carts map[string]CartState
	Items map[string]ItemState
}

// CartLine names one sku of one cart.
type CartLine struct{ Cart, SKU string }

// AddModel is what the add-only carts must hold: per line, the units of
// the acknowledged adds, and of the adds whose outcome is unknown (the
// request failed without an answer, so the add may or may not have
// happened). Those carts receive nothing but adds, so a line's final
// quantity q must satisfy Acked ≤ q ≤ Acked + Unknown at every region.
//
// The mixed carts (adds, sets and removes) are held to a bound from above:
// Mixed is, per line, the units of every add and set that may have
// happened (acknowledged or of unknown outcome). Whatever order the
// regions merged them in, a line holds at most that; a line no add or set
// named holds nothing. MixedLower is a bound from below for the lines
// whose writes allow one (MixedBound): no remove, at most one set, and
// that one acknowledged.
type AddModel struct {
	Acked, Unknown map[CartLine]int64
	Mixed          map[CartLine]int64
	MixedLower     map[CartLine]int64
}

// NewAddModel returns an empty model.
func NewAddModel() *AddModel {
	return &AddModel{Acked: map[CartLine]int64{}, Unknown: map[CartLine]int64{},
		Mixed: map[CartLine]int64{}, MixedLower: map[CartLine]int64{}}
}

// MixWrite is one write of a mixed cart's line that may have happened
// (acknowledged, OK, or of unknown outcome), with when it was sent and
// answered.
type MixWrite struct {
	Kind       Kind
	Qty        int64
	OK         bool
	Sent, Done time.Time
	// Region is the index of the region the write was sent to.
	Region int
}

// removes reports whether w replaces the entries it observed (a remove,
// or a set, which removes them and adds its own).
func (w MixWrite) removes() bool { return w.Kind == CartRemove || w.Kind == CartSet }

// MixedCeil returns the most units a mixed cart's line may hold, given
// the writes of it that may have happened: every add and set, but those
// an acknowledged remove or set surely removed. A write acknowledged by a
// region is applied there before its answer, so a remove or set sent to
// the same region after that answer observed it and removed it (an
// observed-remove: removed entries never come back).
func MixedCeil(writes []MixWrite) int64 {
	var ceil int64
	for _, w := range writes {
		if w.Kind == CartRemove {
			continue
		}
		killed := false
		for _, r := range writes {
			if r.removes() && r.OK && r.Region == w.Region && w.OK && !r.Sent.Before(w.Done) && (r.Sent != w.Sent || r.Kind != w.Kind) {
				killed = true
				break
			}
		}
		if !killed {
			ceil += w.Qty
		}
	}
	return ceil
}

// MixedBound returns the units a mixed cart's line must hold at least,
// given the writes of it that may have happened, and whether it can say:
// with no remove (nor set to 0) and no set, the acknowledged adds; with
// one acknowledged set of q and no remove, q and the acknowledged adds
// sent after the set was answered (the set removed only entries it had
// seen; its own survives, since nothing removes it); with removes and
// sets, all of them acknowledged, the acknowledged adds sent after the
// last of them was answered (no remove or set observed those). A line
// with a remove or set of unknown outcome (which may have been applied
// late, after any add) has no bound from below.
func MixedBound(writes []MixWrite) (int64, bool) {
	var set *MixWrite
	sets, removes := 0, 0
	var last time.Time
	for i, w := range writes {
		if !w.removes() {
			continue
		}
		if !w.OK {
			return 0, false
		}
		if w.Done.After(last) {
			last = w.Done
		}
		if w.Kind == CartRemove || w.Qty == 0 {
			removes++
		} else {
			sets++
			set = &writes[i]
		}
	}
	if removes > 0 || sets > 1 {
		var lower int64
		for _, w := range writes {
			if w.Kind == CartMixAdd && w.OK && !w.Sent.Before(last) {
				lower += w.Qty
			}
		}
		return lower, true
	}
	var lower int64
	if set != nil {
		lower = set.Qty
	}
	for _, w := range writes {
		if w.Kind == CartMixAdd && w.OK && (set == nil || !w.Sent.Before(set.Done)) {
			lower += w.Qty
		}
	}
	return lower, true
}

// Check compares the carts of every region with m. lost counts the units
// of acknowledged adds missing from a line, at the region where the most
// are missing (every add of an add-only cart is one unit, so this is the
// number of lost acknowledged adds); phantom counts units beyond every
// add that may have happened, likewise. Only the lines of addCarts are
// compared for lost units; the lines of mixCarts are compared with their
// bound from above (phantom units).
func (m *AddModel) Check(states []RegionState, addCarts, mixCarts []string) (lost, phantom int64) {
	lines := map[CartLine]bool{}
	for l := range m.Acked {
		lines[l] = true
	}
	for l := range m.Unknown {
		lines[l] = true
	}
	for _, st := range states {
		for _, c := range addCarts {
			for sku := range st.Carts[c] {
				lines[CartLine{c, sku}] = true
			}
		}
	}
	for l := range lines {
		var worstLost, worstPhantom int64
		for _, st := range states {
			q := st.Carts[l.Cart][l.SKU]
			worstLost = max(worstLost, m.Acked[l]-q)
			worstPhantom = max(worstPhantom, q-m.Acked[l]-m.Unknown[l])
		}
		lost += worstLost
		phantom += worstPhantom
	}
	mixed := map[CartLine]bool{}
	for _, st := range states {
		for _, c := range mixCarts {
			for sku := range st.Carts[c] {
				mixed[CartLine{c, sku}] = true
			}
		}
	}
	for l := range m.MixedLower {
		mixed[l] = true
	}
	for l := range mixed {
		var worstPhantom, worstLost int64
		for _, st := range states {
			q := st.Carts[l.Cart][l.SKU]
			worstPhantom = max(worstPhantom, q-m.Mixed[l])
			if lower, ok := m.MixedLower[l]; ok {
				worstLost = max(worstLost, lower-q)
			}
		}
		phantom += worstPhantom
		lost += worstLost
	}
	return lost, phantom
}

// StockLedger is what the benchmark knows of one sku's stock: units of
// acknowledged restocks and commits, and of those whose outcome is
// unknown.
type StockLedger struct {
	RestockAcked   int64 `json:"restock_acked"`
	RestockUnknown int64 `json:"restock_unknown"`
	CommitAcked    int64 `json:"commit_acked"`
	CommitUnknown  int64 `json:"commit_unknown"`
	// UnknownRestocks and UnknownCommits are the quantities of the
	// restocks and commits of unknown outcome, one by one (their sums are
	// RestockUnknown and CommitUnknown), when they were recorded so.
	UnknownRestocks []int64 `json:"-"`
	UnknownCommits  []int64 `json:"-"`
	// Overheld is the most units by which the holds and commits the
	// client knows were in force at one instant exceeded every restock
	// that may have happened by then (HoldTimeline): held and committed
	// beyond stock even if the final state no longer shows it (the holds
	// since released or expired).
	Overheld int64 `json:"-"`
}

// maxExplained bounds the distinct stock values explains works out; past
// it, it tells only whether the stock lies between the least and the most.
const maxExplained = 1 << 16

// explains reports whether some combination of the restocks and commits
// of unknown outcome (each happened or not) and all the acknowledged ones
// leaves the stock at stock. Without the quantities one by one (or with
// too many combinations) it tells only whether stock lies between the
// least and the most they could leave.
func (l *StockLedger) explains(stock int64) bool {
	lo := l.RestockAcked - (l.CommitAcked + l.CommitUnknown)
	hi := l.RestockAcked + l.RestockUnknown - l.CommitAcked
	if stock < lo || stock > hi {
		return false
	}
	if sum(l.UnknownRestocks) != l.RestockUnknown || sum(l.UnknownCommits) != l.CommitUnknown {
		return true
	}
	// The changes the unknown operations may make, from no change.
	reach := map[int64]bool{0: true}
	step := func(q int64) bool {
		next := make(map[int64]bool, 2*len(reach))
		for v := range reach {
			next[v], next[v+q] = true, true
		}
		reach = next
		return len(reach) <= maxExplained
	}
	for _, q := range l.UnknownRestocks {
		if !step(q) {
			return true
		}
	}
	for _, q := range l.UnknownCommits {
		if !step(-q) {
			return true
		}
	}
	return reach[stock-(l.RestockAcked-l.CommitAcked)]
}

func sum(qs []int64) int64 {
	var s int64
	for _, q := range qs {
		s += q
	}
	return s
}

// StockModel is the ledger of every hot sku.
type StockModel map[string]*StockLedger

// Ledger returns sku's ledger, made on first use.
func (m StockModel) Ledger(sku string) *StockLedger {
	l := m[sku]
	if l == nil {
		l = &StockLedger{}
		m[sku] = l
	}
	return l
}

// CheckStock compares the final state of each sku at its home (a
// consistent read) with m. oversold counts, per sku, the units by which
// what is held and committed exceeds what was ever restocked: the larger
// of reserved + granted − stock at the home (stock already has the
// commits subtracted; granted, an escrow sku's rights held by other
// regions, bounds the holds they decided) and acknowledged commits −
// every restock that may have happened. mismatches counts the skus whose home stock is outside what
// the acknowledged and unknown restocks and commits allow (a lost or
// doubled restock or commit).
func CheckStock(m StockModel, home map[string]ItemState) (oversold int64, mismatches int) {
	skus := make([]string, 0, len(m))
	for s := range m {
		skus = append(skus, s)
	}
	for s := range home {
		if m[s] == nil {
			skus = append(skus, s)
		}
	}
	for _, s := range skus {
		l := m.Ledger(s)
		it := home[s]
		oversold += skuOversold(l, it)
		if !l.explains(it.Stock) {
			mismatches++
		}
	}
	return oversold, mismatches
}

// skuOversold is the units of a sku held and committed beyond what was
// ever restocked, by the ledger l and the item it as its home shows it:
// the larger of reserved + granted − stock (stock has the commits
// subtracted; an escrow sku's holds decided from rights are within the
// rights granted) and acknowledged commits − every restock that may have
// happened.
func skuOversold(l *StockLedger, it ItemState) int64 {
	return max(0, it.Reserved+it.Granted-l.bound(it.Stock), l.CommitAcked-(l.RestockAcked+l.RestockUnknown), l.Overheld)
}

// HoldSpan is a hold the client knows was in force (held, or committed)
// from From (its grant was answered by then) until To, both included (the
// instant its release or a refused commit was sent, which ended it no
// sooner, or the last before its expiry; never, for a hold whose commit
// was acknowledged).
type HoldSpan struct {
	Qty      int64
	From, To time.Time
}

// StockStep is a restock that may have happened from At (when it was
// sent) on.
type StockStep struct {
	Qty int64
	At  time.Time
}

// HoldTimeline returns the most units by which the holds of spans in
// force at one instant exceed base (the stock before the run) and the
// restocks of steps sent by then: at the instant each hold's grant was
// answered, every hold whose span holds that instant was surely held or
// committed, and no restock sent later had happened. 0 if never.
func HoldTimeline(base int64, spans []HoldSpan, steps []StockStep) int64 {
	// A sweep over the instants in time order: the holds begun by an
	// instant, less those ended before it, and the restocks sent by it
	// (O(n log n); a long run's tens of thousands of holds a sku made the
	// check of every span against every other take minutes).
	// A span that ends before it begins is in force at no instant, but
	// its grant's instant is still one to look at.
	at := make([]time.Time, len(spans))
	var from []HoldSpan
	for i, h := range spans {
		at[i] = h.From
		if !h.To.Before(h.From) {
			from = append(from, h)
		}
	}
	n := len(from)
	to := slices.Clone(from)
	slices.SortFunc(at, time.Time.Compare)
	slices.SortFunc(from, func(a, b HoldSpan) int { return a.From.Compare(b.From) })
	slices.SortFunc(to, func(a, b HoldSpan) int { return a.To.Compare(b.To) })
	st := slices.Clone(steps)
	slices.SortFunc(st, func(a, b StockStep) int { return a.At.Compare(b.At) })
	var (
		worst, held, stock = int64(0), int64(0), base
		fi, ti, si         int
	)
	for _, t := range at {
		for ; fi < n && !from[fi].From.After(t); fi++ {
			held += from[fi].Qty
		}
		for ; ti < n && to[ti].To.Before(t); ti++ {
			held -= to[ti].Qty
		}
		for ; si < len(st) && !st[si].At.After(t); si++ {
			stock += st[si].Qty
		}
		worst = max(worst, held-stock)
	}
	return worst
}

// bound is the stock a region may rightly show when it shows stock: no
// more than every restock that may have happened less the acknowledged
// commits. Held units are checked against it, not against the stock the
// same read shows, which a fault may have raised (a restock counted
// twice) along with them.
func (l *StockLedger) bound(stock int64) int64 {
	return min(stock, l.RestockAcked+l.RestockUnknown-l.CommitAcked)
}

// ViewOversold returns, per sku, the most units by which reserved +
// granted exceeds stock in one region's view of states: held and
// committed beyond stock as that region sees it (and beyond what the
// restocks and commits of m allow, StockLedger.bound), the holds decided
// from rights being within the rights granted. Skus at 0 everywhere are
// left out.
func ViewOversold(states []RegionState, m StockModel) map[string]int64 {
	out := map[string]int64{}
	for _, st := range states {
		for sku, it := range st.Items {
			l := m[sku]
			if l == nil {
				l = &StockLedger{} // no restock known: no stock rightly shown
			}
			if over := it.Reserved + it.Granted - l.bound(it.Stock); over > out[sku] {
				out[sku] = over
			}
		}
	}
	return out
}

// Divergence compares the regions' final states key by key. For each key
// (a cart or an item) the value most regions show is taken as agreed (a
// tie goes to the earliest region); regions lists, in order, the indices
// of the regions that differ from it on at least one key, keys the keys
// they differ on ("cart:ID" or "item:SKU"), sorted. A key absent at a
// region reads as an empty cart or an item with nothing.
func Divergence(states []RegionState) (regions []int, keys []string) {
	cartKeys, itemKeys := map[string]bool{}, map[string]bool{}
	for _, st := range states {
		for k := range st.Carts {
			cartKeys[k] = true
		}
		for k := range st.Items {
			itemKeys[k] = true
		}
	}
	bad := make([]bool, len(states))
	compare := func(key string, value func(RegionState) string) {
		vals := make([]string, len(states))
		count := map[string]int{}
		for i, st := range states {
			vals[i] = value(st)
			count[vals[i]]++
		}
		agreed := vals[0]
		for _, v := range vals {
			if count[v] > count[agreed] {
				agreed = v
			}
		}
		differs := false
		for i, v := range vals {
			if v != agreed {
				bad[i], differs = true, true
			}
		}
		if differs {
			keys = append(keys, key)
		}
	}
	for k := range cartKeys {
		compare("cart:"+k, func(st RegionState) string { return st.Carts[k].String() })
	}
	for k := range itemKeys {
		compare("item:"+k, func(st RegionState) string {
			it := st.Items[k]
			return fmt.Sprintf("%d/%d/%d", it.Stock, it.Reserved, it.Granted)
		})
	}
	for i, b := range bad {
		if b {
			regions = append(regions, i)
		}
	}
	slices.Sort(keys)
	return regions, keys
}
