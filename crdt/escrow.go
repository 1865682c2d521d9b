package crdt

import (
	"cmp"
	"fmt"
	"math"
	"strings"
)

// Escrow: stock rights a sku's home hands out ahead of time, so that a
// region can decide reservations of the sku alone (the bounded counter of
// AntidoteDB; Balegas et al., "Extending eventually consistent cloud
// databases for enforcing numeric invariants").
//
// An item's escrow is three families of grow-only counters, each entry
// written by one replica only (so joins take the maximum and lose
// nothing):
//
//   - Grant[R] by the home's replica: units the home granted region R;
//   - Used[R] by R's replica: units of R's rights R committed — each
//     such commit also decrements Stock by as much in the same delta, so
//     any state that shows the commit's stock decrement shows its use;
//   - Returned[R] by R's replica: units of its rights R gave back.
//
// R's outstanding rights are Grant[R] − Used[R] − Returned[R]. The home
// never grants more than Stock − (units held at the home) − Σ outstanding
// as it sees them; it sees its own grants exactly, every other region's
// uses together with their stock decrements, and returns late (which
// only makes it grant less). A region decides within Grant[R] as it sees
// it (late: less) minus what it used, returned and holds, all of which it
// wrote itself. So held + committed never exceeds stock.

// EscrowKind is the family of an escrow counter.
type EscrowKind uint8

// Escrow counter families.
const (
	EscrowGrant    EscrowKind = 1
	EscrowUsed     EscrowKind = 2
	EscrowReturned EscrowKind = 3
)

// MaxRegions bounds the regions of a cluster (the config's limit).
const MaxRegions = 64

// MaxEscrowRecords bounds the escrow records of one item: each replica
// writes at most a use and a return record, and, as an incarnation of a
// sku's home, a grant record for each other region it grants rights to.
// An item's size (MaxObjectBytes) bounds it too; a home grants no rights
// that would take an item past half of that (GrantFits).
const MaxEscrowRecords = MaxReplicas * (MaxRegions + 1)

// GrantFits reports whether replica h may grant region rights to sku's
// item it: the grant's record, if new, keeps the item within half of
// MaxObjectBytes and its records within MaxEscrowRecords less the use
// and return records every replica may still add. A home that may not
// grants nothing: the region sends its reservations to the home instead.
func (it *Item) GrantFits(h ReplicaID, region string) bool {
	k := EscrowKey{Kind: EscrowGrant, Region: region, Replica: h}
	if _, ok := it.Escrow[k]; ok {
		return true
	}
	if len(it.Escrow)+1 > MaxEscrowRecords-2*MaxReplicas {
		return false
	}
	// The new record: its kind, two names and a counter, framed.
	return len(EncodeItem(it))+len(region)+len(h)+16 <= MaxObjectBytes/2
}

// EscrowKey names one escrow counter: its family, the region whose rights
// it counts, and the replica that writes it (the home's for grants, the
// region's own for uses and returns).
type EscrowKey struct {
	Kind    EscrowKind
	Region  string
	Replica ReplicaID
}

func (k EscrowKey) compare(o EscrowKey) int {
	if c := cmp.Compare(k.Kind, o.Kind); c != 0 {
		return c
	}
	if c := strings.Compare(k.Region, o.Region); c != 0 {
		return c
	}
	return strings.Compare(string(k.Replica), string(o.Replica))
}

func (k EscrowKey) validate() error {
	switch {
	case k.Kind < EscrowGrant || k.Kind > EscrowReturned:
		return fmt.Errorf("crdt: item: escrow kind %d", k.Kind)
	case !validReplica(k.Replica):
		return fmt.Errorf("crdt: item: escrow writer %q", k.Replica)
	case !validReplica(ReplicaID(k.Region)) || strings.ContainsRune(k.Region, IncarnationSep):
		return fmt.Errorf("crdt: item: escrow region %q", k.Region)
	case k.Kind != EscrowGrant && k.Replica.Region() != k.Region:
		return fmt.Errorf("crdt: item: escrow record of %s written by %s", k.Region, k.Replica)
	}
	return nil
}

// escrowSum returns the sum of the counters of kind for region, held to
// MaxCount: no region is granted, uses or returns more than a stock can
// hold, and a state that says otherwise (MaxEscrowRecords counters of up
// to MaxCount each would pass 2⁶⁴) must not wrap around into a small or
// negative count of rights.
func (it *Item) escrowSum(kind EscrowKind, region string) uint64 {
	var s uint64
	for k, v := range it.Escrow {
		if k.Kind == kind && k.Region == region {
			s = min(s+min(v, MaxCount), MaxCount)
		}
	}
	return s
}

// Granted returns the units granted to region.
func (it *Item) Granted(region string) uint64 { return it.escrowSum(EscrowGrant, region) }

// Used returns the units of its rights region committed.
func (it *Item) Used(region string) uint64 { return it.escrowSum(EscrowUsed, region) }

// Returned returns the units of its rights region gave back.
func (it *Item) Returned(region string) uint64 { return it.escrowSum(EscrowReturned, region) }

// Outstanding returns the rights region holds as this state shows them:
// granted, less used and returned (never below 0).
func (it *Item) Outstanding(region string) int64 {
	return max(0, int64(it.Granted(region))-int64(it.Used(region))-int64(it.Returned(region)))
}

// OutstandingAll returns the rights every region but home holds.
func (it *Item) OutstandingAll(home string) int64 {
	regions := map[string]bool{}
	for k := range it.Escrow {
		if k.Region != home {
			regions[k.Region] = true
		}
	}
	var s int64
	for r := range regions {
		s = min(s+it.Outstanding(r), math.MaxInt64-MaxCount) // each at most MaxCount: no overflow
	}
	return s
}

// Grant returns the delta of the home's replica h granting n more units
// to region.
func (it *Item) Grant(h ReplicaID, region string, n uint64) *Item {
	k := EscrowKey{Kind: EscrowGrant, Region: region, Replica: h}
	return &Item{Escrow: map[EscrowKey]uint64{k: it.Escrow[k] + n}}
}

// UseRights returns the delta of replica r committing n units of its
// region's rights: the use and the stock decrement, together.
func (it *Item) UseRights(r ReplicaID, n uint64) *Item {
	k := EscrowKey{Kind: EscrowUsed, Region: r.Region(), Replica: r}
	d := it.Consume(r, n)
	d.Escrow = map[EscrowKey]uint64{k: it.Escrow[k] + n}
	return d
}

// ReturnRights returns the delta of replica r giving n units of its
// region's rights back to the home.
func (it *Item) ReturnRights(r ReplicaID, n uint64) *Item {
	k := EscrowKey{Kind: EscrowReturned, Region: r.Region(), Replica: r}
	return &Item{Escrow: map[EscrowKey]uint64{k: it.Escrow[k] + n}}
}
