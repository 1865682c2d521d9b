// Package crdt holds the replicated data types of Lattice: dots and causal
// contexts, the add-wins OR-Set of cart lines, the PN-counter of stock, the
// single-writer register of held units, their delta mutators and joins, and
// a canonical CBOR codec.
//
// The package is pure: it reads no clock, draws no random number, starts no
// goroutine, logs nothing and does no I/O. Mutators never change their
// receiver; they return a delta that the caller joins into the state (and
// ships to other replicas). Dots come from per-replica counters kept in each
// object's causal context, never from wall clocks or random ids.
//
// None of the types are safe for concurrent use; the caller serialises.
package crdt

import (
	"fmt"
	"maps"
	"slices"
)

// ReplicaID names the replica (region) that made an operation. Lattice uses
// region names, which are stable across restarts and config reloads.
type ReplicaID string

// Limits on identifiers and counters. A decoded value outside them is
// refused.
const (
	// MaxReplicaIDLen bounds the region name of a replica id in bytes (an
	// incarnation suffix may follow it, see Incarnation).
	MaxReplicaIDLen = 64
	// MaxReplicas bounds how many replicas (region incarnations) one
	// object or context may mention.
	MaxReplicas = 256
	// MaxCounter bounds dot counters and version-vector entries.
	MaxCounter = 1 << 62
	// MaxIDLen bounds a cart id or sku.
	MaxIDLen = 128
)

// Dot identifies one operation: the replica that made it and that
// replica's counter for the object.
type Dot struct {
	Replica ReplicaID
	Counter uint64
}

// String formats d as replica:counter.
func (d Dot) String() string { return fmt.Sprintf("%s:%d", d.Replica, d.Counter) }

// Less orders dots by replica, then counter.
func (d Dot) Less(o Dot) bool {
	if d.Replica != o.Replica {
		return d.Replica < o.Replica
	}
	return d.Counter < o.Counter
}

func compareDots(a, b Dot) int {
	switch {
	case a.Less(b):
		return -1
	case b.Less(a):
		return 1
	}
	return 0
}

// Context is a causal context: the set of dots a replica has seen, kept as
// a version vector (every counter up to VV[r] of replica r) plus a cloud of
// dots seen out of order. Compact keeps the cloud free of dots the vector
// covers, so its size is O(replicas) once deliveries catch up.
//
// The zero Context is empty and ready to use.
type Context struct {
	VV    map[ReplicaID]uint64
	Cloud map[Dot]struct{}
}

// Contains reports whether d is in the context.
func (c *Context) Contains(d Dot) bool {
	if d.Counter <= c.VV[d.Replica] {
		return true
	}
	_, ok := c.Cloud[d]
	return ok
}

// Max returns the largest counter of replica r in the context.
func (c *Context) Max(r ReplicaID) uint64 {
	m := c.VV[r]
	for d := range c.Cloud {
		if d.Replica == r && d.Counter > m {
			m = d.Counter
		}
	}
	return m
}

// Next returns the dot replica r uses for its next operation.
func (c *Context) Next(r ReplicaID) Dot { return Dot{Replica: r, Counter: c.Max(r) + 1} }

// Insert adds d to the context and compacts it.
func (c *Context) Insert(d Dot) {
	if c.Contains(d) {
		return
	}
	if v := c.VV[d.Replica]; d.Counter == v+1 {
		// The common case: the next dot of a replica extends its entry.
		if c.VV == nil {
			c.VV = make(map[ReplicaID]uint64, 4)
		}
		c.VV[d.Replica] = d.Counter
		if len(c.Cloud) > 0 {
			c.Compact()
		}
		return
	}
	if c.Cloud == nil {
		c.Cloud = make(map[Dot]struct{})
	}
	c.Cloud[d] = struct{}{}
	c.Compact()
}

// Ceil returns the version vector that covers c: each replica's entry
// raised to its highest dot in c (its cloud folded in). It covers c and,
// of each replica, every dot below c's highest: a token over-approximated
// so stays small, and is still kept by a region once it has applied every
// dot up to there (region-level dots are issued one after the other, so
// those dots exist).
func (c *Context) Ceil() Context {
	out := Context{VV: make(map[ReplicaID]uint64, len(c.VV))}
	for r, v := range c.VV {
		out.VV[r] = v
	}
	for d := range c.Cloud {
		if d.Counter > out.VV[d.Replica] {
			out.VV[d.Replica] = d.Counter
		}
	}
	return out
}

// Join makes c the union of c and o. It does not keep references to o.
func (c *Context) Join(o *Context) {
	for r, n := range o.VV {
		if n > c.VV[r] {
			if c.VV == nil {
				c.VV = make(map[ReplicaID]uint64, len(o.VV))
			}
			c.VV[r] = n
		}
	}
	for d := range o.Cloud {
		if !c.Contains(d) {
			if c.Cloud == nil {
				c.Cloud = make(map[Dot]struct{}, len(o.Cloud))
			}
			c.Cloud[d] = struct{}{}
		}
	}
	if len(c.Cloud) > 0 {
		c.Compact()
	}
}

// Compact moves cloud dots that extend the version vector into it and drops
// cloud dots the vector already covers. It takes time linear in the size
// of the cloud: the dot that extends a replica's vector entry starts one
// walk along the run of dots that follows it.
func (c *Context) Compact() {
	for d := range c.Cloud {
		v := c.VV[d.Replica]
		if d.Counter != v+1 {
			continue
		}
		for {
			if _, ok := c.Cloud[Dot{d.Replica, v + 1}]; !ok {
				break
			}
			v++
		}
		if c.VV == nil {
			c.VV = make(map[ReplicaID]uint64)
		}
		c.VV[d.Replica] = v
	}
	for d := range c.Cloud {
		if d.Counter <= c.VV[d.Replica] {
			delete(c.Cloud, d)
		}
	}
	if len(c.Cloud) == 0 {
		c.Cloud = nil
	}
	for r, v := range c.VV {
		if v == 0 {
			delete(c.VV, r)
		}
	}
}

// Covers reports whether every dot of o is in c.
func (c *Context) Covers(o *Context) bool {
	for r, n := range o.VV {
		if n <= c.VV[r] {
			continue
		}
		for k := c.VV[r] + 1; k <= n; k++ {
			if _, ok := c.Cloud[Dot{r, k}]; !ok {
				return false
			}
		}
	}
	for d := range o.Cloud {
		if !c.Contains(d) {
			return false
		}
	}
	return true
}

// Clone returns a deep copy of c.
func (c *Context) Clone() Context {
	return Context{VV: maps.Clone(c.VV), Cloud: maps.Clone(c.Cloud)}
}

// Equal reports whether c and o hold the same dots.
func (c *Context) Equal(o *Context) bool { return c.Covers(o) && o.Covers(c) }

// Empty reports whether the context holds no dot.
func (c *Context) Empty() bool { return len(c.VV) == 0 && len(c.Cloud) == 0 }

// Replicas returns the replicas the context mentions, sorted.
func (c *Context) Replicas() []ReplicaID {
	seen := make(map[ReplicaID]struct{}, len(c.VV))
	for r := range c.VV {
		seen[r] = struct{}{}
	}
	for d := range c.Cloud {
		seen[d.Replica] = struct{}{}
	}
	return slices.Sorted(maps.Keys(seen))
}

// ValidID reports whether s is a valid cart id or sku: 1–128 characters of
// [A-Za-z0-9._:-].
func ValidID(s string) bool {
	if len(s) == 0 || len(s) > MaxIDLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		ch := s[i]
		switch {
		case ch >= 'a' && ch <= 'z', ch >= 'A' && ch <= 'Z', ch >= '0' && ch <= '9':
		case ch == '.', ch == '_', ch == ':', ch == '-':
		default:
			return false
		}
	}
	return true
}

// validReplica is ValidReplica.
func validReplica(r ReplicaID) bool { return ValidReplica(r) }
