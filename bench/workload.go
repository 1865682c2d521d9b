package bench

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/latticedb/lattice/region/config"
)

// Kind is the kind of one scheduled operation.
type Kind uint8

// Operation kinds. The cart kinds and Restock are local writes, answered by
// the region they are sent to; Reserve is a reservation decided at the
// sku's home, followed by its commit or release.
const (
	// CartAdd adds one unit of a catalog sku to an add-only cart: the
	// carts that only ever receive adds, so that every acknowledged add
	// can be checked at the end (see AddModel).
	CartAdd Kind = iota
	// CartMixAdd adds 1–3 units to a mixed cart (adds, sets and removes).
	CartMixAdd
	// CartSet sets the quantity of a sku of a mixed cart to 0–5.
	CartSet
	// CartRemove removes a sku from a mixed cart.
	CartRemove
	// Restock adds 1–3 units of stock to a hot sku at any region: a little
	// less, on average, than the reservations commit, so that stock runs
	// short and reservations compete for the last units.
	Restock
	// Reserve holds 1–3 units of a hot sku, then commits or releases the
	// hold (Op.Commit) if it was granted.
	Reserve
	numKinds
)

var kindNames = [numKinds]string{"cart_add", "cart_mix_add", "cart_set", "cart_remove", "restock", "reserve"}

// String returns the kind's name as results.json spells it.
func (k Kind) String() string {
	if k < numKinds {
		return kindNames[k]
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// Kinds returns every kind, in order.
func Kinds() []Kind {
	ks := make([]Kind, numKinds)
	for i := range ks {
		ks[i] = Kind(i)
	}
	return ks
}

// Local reports whether k is a local write (a cart write or a restock),
// answered by the region it is sent to without asking another.
func (k Kind) Local() bool { return k != Reserve }

// Mix is the share of each kind of operation, and how reservations are
// made. Shares are relative weights: they need not add up to 1.
type Mix struct {
	CartAdd, CartMixAdd, CartSet, CartRemove, Restock, Reserve float64
	// CommitFrac is the fraction of granted reservations that are
	// committed; the others are released.
	CommitFrac float64
	// HomeFrac is the fraction of reservations sent to the sku's home
	// region; the others go to a non-home region drawn at random.
	HomeFrac float64
}

// DefaultMix is the mix `lattice bench` runs: 70 % cart writes (half of
// them on add-only carts), 10 % restocks and 20 % reservations, 70 % of
// granted holds committed, half of the reservations sent to the home.
func DefaultMix() Mix {
	return Mix{CartAdd: 0.35, CartMixAdd: 0.15, CartSet: 0.10, CartRemove: 0.10, Restock: 0.10, Reserve: 0.20,
		CommitFrac: 0.7, HomeFrac: 0.5}
}

// Share returns the weight of kind k.
func (m Mix) Share(k Kind) float64 {
	switch k {
	case CartAdd:
		return m.CartAdd
	case CartMixAdd:
		return m.CartMixAdd
	case CartSet:
		return m.CartSet
	case CartRemove:
		return m.CartRemove
	case Restock:
		return m.Restock
	case Reserve:
		return m.Reserve
	}
	return 0
}

func (m Mix) validate() error {
	total := 0.0
	for _, k := range Kinds() {
		s := m.Share(k)
		if !(s >= 0) || math.IsInf(s, 0) {
			return fmt.Errorf("bench: share of %s is %v, want ≥ 0", k, s)
		}
		total += s
	}
	if total <= 0 {
		return errors.New("bench: every share of the mix is 0")
	}
	if !(m.CommitFrac >= 0 && m.CommitFrac <= 1) || !(m.HomeFrac >= 0 && m.HomeFrac <= 1) {
		return fmt.Errorf("bench: CommitFrac %v and HomeFrac %v must be in [0, 1]", m.CommitFrac, m.HomeFrac)
	}
	return nil
}

// Workload describes a schedule to generate. Generate makes the same
// schedule from the same Workload.
type Workload struct {
	// Seed seeds every random choice.
	Seed uint64
	// Rate is the mean number of operations per second; arrivals are a
	// Poisson process.
	Rate float64
	// Span is how long the schedule lasts (warm-up included).
	Span time.Duration
	// Regions names the regions operations are sent to.
	Regions []string
	// Home returns the home region of a sku (a pure function, as the
	// config's).
	Home func(sku string) string
	// Mix is the share of each kind; the zero Mix means DefaultMix.
	Mix Mix
	// Carts is the number of carts of each of the two sets (add-only and
	// mixed); 0 means DefaultCarts. Generate raises it so that an
	// add-only cart receives about 1,000 adds at most, well below a
	// cart's entry limit.
	Carts int
	// CatalogSKUs is the number of skus put in carts; 0 means
	// DefaultCatalogSKUs.
	CatalogSKUs int
	// HotPerRegion is the number of hot skus homed at each region, those
	// restocked and reserved; 0 means DefaultHotPerRegion.
	HotPerRegion int
	// Escrow adds, for every hot sku, an escrow sku homed at the same
	// region (EscrowSKU; Home must place it there, as the rules of
	// EscrowHomes do), and sends each restock and reservation of a hot
	// sku to the sku or to its escrow twin, at even odds, by a random
	// stream of its own: the operations, their target times and regions
	// are those of the same Workload without Escrow, only the sku of
	// about half the restocks and reservations changes. Both kinds of
	// sku so see the same contention, from the same regions.
	Escrow bool
}

// Defaults of a Workload.
const (
	DefaultCarts        = 100
	DefaultCatalogSKUs  = 16
	DefaultHotPerRegion = 1
	// maxAddsPerCart bounds the expected adds to one add-only cart.
	maxAddsPerCart = 1000
)

// Op is one scheduled operation.
type Op struct {
	// Index is the operation's position in the schedule.
	Index int
	// At is the operation's target start, from the start of the schedule.
	At time.Duration
	// Region is the index (in Workload.Regions) of the region the request
	// is sent to.
	Region int
	Kind   Kind
	// Cart is the cart of a cart kind.
	Cart string
	// SKU is the sku of every kind but none.
	SKU string
	// Qty is the units added, set, restocked or reserved.
	Qty int64
	// Commit says whether a granted reservation is committed (else it is
	// released).
	Commit bool
	// FromHome says whether a reservation is sent to the sku's home.
	FromHome bool
	// Home is the index of the sku's home region, for a restock or a
	// reservation.
	Home int
	// Escrow says whether the sku of a restock or reservation is an
	// escrow sku (Workload.Escrow).
	Escrow bool
}

// Schedule is a generated workload: its operations in order of target
// time, and the keys they touch.
type Schedule struct {
	Ops []Op
	// AddCarts are the add-only carts, MixCarts the others.
	AddCarts, MixCarts []string
	// Catalog are the skus put in carts.
	Catalog []string
	// Hot are the skus restocked and reserved, HotPerRegion homed at each
	// region in region order; with Workload.Escrow, followed by as many
	// escrow skus, likewise.
	Hot []string
	// Escrow are the escrow skus of Hot (Workload.Escrow): Escrow[i] is
	// homed where Hot[i] is.
	Escrow []string
}

// Generate returns the schedule of w. It is a pure function of w: the
// same Workload gives the same operations at the same target times.
func Generate(w Workload) (*Schedule, error) {
	if w.Mix == (Mix{}) {
		w.Mix = DefaultMix()
	}
	if err := w.Mix.validate(); err != nil {
		return nil, err
	}
	switch {
	case !(w.Rate > 0) || math.IsInf(w.Rate, 0):
		return nil, fmt.Errorf("bench: rate %v, want > 0", w.Rate)
	case w.Span <= 0:
		return nil, fmt.Errorf("bench: span %v, want > 0", w.Span)
	case len(w.Regions) == 0:
		return nil, errors.New("bench: no regions")
	case w.Home == nil:
		return nil, errors.New("bench: no home function")
	case w.Carts < 0 || w.CatalogSKUs < 0 || w.HotPerRegion < 0:
		return nil, errors.New("bench: negative Carts, CatalogSKUs or HotPerRegion")
	}
	if w.Carts == 0 {
		w.Carts = DefaultCarts
	}
	if w.CatalogSKUs == 0 {
		w.CatalogSKUs = DefaultCatalogSKUs
	}
	if w.HotPerRegion == 0 {
		w.HotPerRegion = DefaultHotPerRegion
	}
	total := 0.0
	for _, k := range Kinds() {
		total += w.Mix.Share(k)
	}
	expectedAdds := w.Rate * w.Span.Seconds() * w.Mix.CartAdd / total
	w.Carts = max(w.Carts, int(math.Ceil(expectedAdds/maxAddsPerCart)))

	s := &Schedule{}
	for i := range w.Carts {
		s.AddCarts = append(s.AddCarts, fmt.Sprintf("add-%04d", i))
		s.MixCarts = append(s.MixCarts, fmt.Sprintf("mix-%04d", i))
	}
	for i := range w.CatalogSKUs {
		s.Catalog = append(s.Catalog, fmt.Sprintf("sku-%03d", i))
	}
	hot, err := hotSKUs(w.Regions, w.Home, w.HotPerRegion)
	if err != nil {
		return nil, err
	}
	s.Hot = hot
	twin := map[string]string{}
	if w.Escrow {
		for i, sku := range hot {
			r := w.Home(sku)
			e := EscrowSKU(r, i%w.HotPerRegion)
			if got := w.Home(e); got != r {
				return nil, fmt.Errorf("bench: escrow sku %s is homed at %q, want %s (the homes rules of EscrowHomes)", e, got, r)
			}
			twin[sku] = e
			s.Escrow = append(s.Escrow, e)
		}
		s.Hot = append(slices.Clone(hot), s.Escrow...)
	}
	regionOf := make(map[string]int, len(w.Regions))
	for i, r := range w.Regions {
		regionOf[r] = i
	}

	rng := rand.New(rand.NewPCG(w.Seed, 0x6c617474696365)) // "lattice"
	// Which of a hot sku and its escrow twin an operation takes: a
	// stream of its own, so that the other choices are the same with and
	// without escrow skus.
	kindRng := rand.New(rand.NewPCG(w.Seed, 0x657363726f77)) // "escrow"
	hotOrTwin := func(op *Op) {
		op.SKU = hot[rng.IntN(len(hot))]
		if w.Escrow && kindRng.IntN(2) == 1 {
			op.SKU, op.Escrow = twin[op.SKU], true
		}
		op.Home = regionOf[w.Home(op.SKU)]
	}
	var cum [numKinds]float64
	acc := 0.0
	for _, k := range Kinds() {
		acc += w.Mix.Share(k) / total
		cum[k] = acc
	}
	cum[numKinds-1] = 1
	pick := func() Kind {
		u := rng.Float64()
		for _, k := range Kinds() {
			if u < cum[k] {
				return k
			}
		}
		return numKinds - 1
	}
	n := len(w.Regions)
	t := 0.0 // seconds
	span := w.Span.Seconds()
	for {
		t += rng.ExpFloat64() / w.Rate
		if t >= span {
			break
		}
		op := Op{Index: len(s.Ops), At: time.Duration(t * float64(time.Second)), Kind: pick(), Region: rng.IntN(n)}
		switch op.Kind {
		case CartAdd:
			op.Cart = s.AddCarts[rng.IntN(len(s.AddCarts))]
			op.SKU = s.Catalog[rng.IntN(len(s.Catalog))]
			op.Qty = 1
		case CartMixAdd:
			op.Cart = s.MixCarts[rng.IntN(len(s.MixCarts))]
			op.SKU = s.Catalog[rng.IntN(len(s.Catalog))]
			op.Qty = 1 + rng.Int64N(3)
		case CartSet:
			op.Cart = s.MixCarts[rng.IntN(len(s.MixCarts))]
			op.SKU = s.Catalog[rng.IntN(len(s.Catalog))]
			op.Qty = rng.Int64N(6)
		case CartRemove:
			op.Cart = s.MixCarts[rng.IntN(len(s.MixCarts))]
			op.SKU = s.Catalog[rng.IntN(len(s.Catalog))]
		case Restock:
			hotOrTwin(&op)
			op.Qty = 1 + rng.Int64N(3)
		case Reserve:
			hotOrTwin(&op)
			op.Qty = 1 + rng.Int64N(3)
			op.Commit = rng.Float64() < w.Mix.CommitFrac
			home := op.Home
			if n == 1 || rng.Float64() < w.Mix.HomeFrac {
				op.Region = home
			} else {
				op.Region = (home + 1 + rng.IntN(n-1)) % n
			}
			op.FromHome = op.Region == home
		}
		s.Ops = append(s.Ops, op)
	}
	return s, nil
}

// EscrowSKU returns the name of the i-th escrow sku homed at region:
// "esc-REGION-i", which the rule of EscrowHomes for region matches.
func EscrowSKU(region string, i int) string { return fmt.Sprintf("esc-%s-%d", region, i) }

// EscrowHomes returns the homes rules that make the escrow skus of the
// regions names (EscrowSKU) escrow skus homed at their region: one rule
// a region, prefix "esc-REGION-" (the final "-" keeps the prefix of
// region-1 from matching the skus of region-10).
func EscrowHomes(names []string) []config.HomeRule {
	rules := make([]config.HomeRule, len(names))
	for i, r := range names {
		rules[i] = config.HomeRule{Prefix: "esc-" + r + "-", Region: r, Escrow: true}
	}
	return rules
}

// hotSKUs returns perRegion skus homed at each region, in region order:
// the first names hot-0, hot-1, … that home places there.
func hotSKUs(regions []string, home func(string) string, perRegion int) ([]string, error) {
	want := make(map[string]int, len(regions))
	for _, r := range regions {
		want[r] = perRegion
	}
	found := make(map[string][]string, len(regions))
	left := perRegion * len(regions)
	for i := 0; left > 0; i++ {
		if i > 100_000*len(regions) {
			return nil, fmt.Errorf("bench: found no hot sku homed at some region among %d names", i)
		}
		sku := fmt.Sprintf("hot-%d", i)
		r := home(sku)
		if want[r] > 0 {
			want[r]--
			found[r] = append(found[r], sku)
			left--
		}
	}
	var out []string
	for _, r := range regions {
		out = append(out, found[r]...)
	}
	return out, nil
}
