package crdt

import (
	"maps"
	"math"
)

// MaxCount bounds one replica's increments or decrements of a PN-counter
// (and a register value), so that sums over MaxReplicas never overflow.
const MaxCount = 1 << 55

// PNCounter is a counter of per-replica increments P and decrements N; its
// value is ΣP − ΣN and join takes the pointwise maximum. The zero
// PNCounter is 0 and ready to use.
type PNCounter struct {
	P map[ReplicaID]uint64
	N map[ReplicaID]uint64
}

func one(r ReplicaID, v uint64) map[ReplicaID]uint64 { return map[ReplicaID]uint64{r: v} }

// Inc returns the delta of replica r adding n to the counter.
func (c *PNCounter) Inc(r ReplicaID, n uint64) *PNCounter {
	return &PNCounter{P: one(r, c.P[r]+n)}
}

// Dec returns the delta of replica r subtracting n from the counter.
func (c *PNCounter) Dec(r ReplicaID, n uint64) *PNCounter {
	return &PNCounter{N: one(r, c.N[r]+n)}
}

func joinMax(dst *map[ReplicaID]uint64, src map[ReplicaID]uint64) {
	for r, v := range src {
		if v > (*dst)[r] {
			if *dst == nil {
				*dst = make(map[ReplicaID]uint64, len(src))
			}
			(*dst)[r] = v
		}
	}
}

// Join makes c the pointwise maximum of c and o.
func (c *PNCounter) Join(o *PNCounter) {
	joinMax(&c.P, o.P)
	joinMax(&c.N, o.N)
}

// Value returns ΣP − ΣN. Each sum is at most MaxReplicas × MaxCount =
// 2⁶³, which fits a uint64 but not an int64: the difference is taken in
// uint64 and held to the int64 range.
func (c *PNCounter) Value() int64 {
	var p, n uint64
	for _, v := range c.P {
		p += v
	}
	for _, v := range c.N {
		n += v
	}
	if p >= n {
		return int64(min(p-n, math.MaxInt64))
	}
	return -int64(min(n-p, math.MaxInt64))
}

func greaterAny(a, b map[ReplicaID]uint64) bool {
	for r, v := range b {
		if v > a[r] {
			return true
		}
	}
	return false
}

// Brings reports whether joining delta into c would change c.
func (c *PNCounter) Brings(delta *PNCounter) bool {
	return greaterAny(c.P, delta.P) || greaterAny(c.N, delta.N)
}

// Clone returns a deep copy of c.
func (c *PNCounter) Clone() PNCounter {
	return PNCounter{P: maps.Clone(c.P), N: maps.Clone(c.N)}
}

// Register is a last-writer-wins register ordered by (Version, Replica).
// Lattice writes it from one replica only (the sku's home region), each
// write with the next version, so the order is the writer's own order and
// no write is lost. The zero Register holds 0 at version 0.
type Register struct {
	Version uint64
	Replica ReplicaID
	Value   int64
}

// Write returns the delta of replica r writing v.
func (g *Register) Write(r ReplicaID, v int64) *Register {
	return &Register{Version: g.Version + 1, Replica: r, Value: v}
}

func (g *Register) less(o *Register) bool {
	if g.Version != o.Version {
		return g.Version < o.Version
	}
	return g.Replica < o.Replica
}

// Join keeps the greater of g and o.
func (g *Register) Join(o *Register) {
	if g.less(o) {
		*g = *o
	}
}

// Brings reports whether joining delta into g would change g.
func (g *Register) Brings(delta *Register) bool { return g.less(delta) }

// Item is the replicated state of one inventory sku: Stock, a PN-counter
// that every region increments (restocks) and the home region decrements
// (commits, negative adjustments), and Held, the units held by open
// reservations as last published by the home region.
type Item struct {
	Stock PNCounter
	Held  Register
	// Escrow is the item's stock rights (escrow.go): units the home
	// granted each region, and what each region used or returned of
	// them; nil for an item without escrow.
	Escrow map[EscrowKey]uint64
}

// Restock returns the delta of replica r adding n units of stock.
func (it *Item) Restock(r ReplicaID, n uint64) *Item {
	return &Item{Stock: *it.Stock.Inc(r, n)}
}

// Consume returns the delta of replica r (the home) removing n units of
// stock.
func (it *Item) Consume(r ReplicaID, n uint64) *Item {
	return &Item{Stock: *it.Stock.Dec(r, n)}
}

// SetHeld returns the delta of replica r (the home) publishing held units.
func (it *Item) SetHeld(r ReplicaID, held int64) *Item {
	return &Item{Held: *it.Held.Write(r, held)}
}

// Join makes it the join of it and o.
func (it *Item) Join(o *Item) {
	it.Stock.Join(&o.Stock)
	it.Held.Join(&o.Held)
	for k, v := range o.Escrow {
		if v > it.Escrow[k] {
			if it.Escrow == nil {
				it.Escrow = make(map[EscrowKey]uint64, len(o.Escrow))
			}
			it.Escrow[k] = v
		}
	}
}

// Brings reports whether joining delta into it would change it.
func (it *Item) Brings(delta *Item) bool {
	if it.Stock.Brings(&delta.Stock) || it.Held.Brings(&delta.Held) {
		return true
	}
	for k, v := range delta.Escrow {
		if v > it.Escrow[k] {
			return true
		}
	}
	return false
}

// Clone returns a deep copy of it.
func (it *Item) Clone() *Item {
	return &Item{Stock: it.Stock.Clone(), Held: it.Held, Escrow: maps.Clone(it.Escrow)}
}

// Empty reports whether it holds no stock operation and no held value.
func (it *Item) Empty() bool {
	return len(it.Stock.P) == 0 && len(it.Stock.N) == 0 && it.Held.Version == 0 && len(it.Escrow) == 0
}
