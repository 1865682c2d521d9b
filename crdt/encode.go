package crdt

import (
	"cmp"
	"encoding/binary"
	"runtime"
	"slices"
	"strings"
	"time"
)

// The canonical encodings are written directly, without reflection. They
// are CBOR in the core deterministic form (RFC 8949 §4.2.1: every head in
// its shortest form, definite lengths only), of these arrays:
//
//	cart     [record...]                               records by replica
//	record   [replica, vv, [cloud...], [entry...]]     cloud and entries by counter
//	entry    [counter, sku, kind, n]
//	item     [[counter...], version, writer, held]     counters by replica
//	counter  [replica, p, n]
//	group    [[[cart id, cart]...], [[sku, item]...]]  by cart id and sku
//
// A cart has a record for every replica its context or entries mention.
// A context is encoded as a cart with no entries.

// CBOR major types used by the encodings.
const (
	majorUint  = 0
	majorNeg   = 1
	majorText  = 3
	majorArray = 4
)

// appendHead appends a CBOR head of the given major type and argument in
// its shortest form.
func appendHead(b []byte, major byte, n uint64) []byte {
	m := major << 5
	switch {
	case n < 24:
		return append(b, m|byte(n))
	case n <= 0xff:
		return append(b, m|24, byte(n))
	case n <= 0xffff:
		return binary.BigEndian.AppendUint16(append(b, m|25), uint16(n))
	case n <= 0xffffffff:
		return binary.BigEndian.AppendUint32(append(b, m|26), uint32(n))
	}
	return binary.BigEndian.AppendUint64(append(b, m|27), n)
}

func appendArray(b []byte, n int) []byte { return appendHead(b, majorArray, uint64(n)) }

func appendUint(b []byte, n uint64) []byte { return appendHead(b, majorUint, n) }

func appendInt(b []byte, n int64) []byte {
	if n >= 0 {
		return appendHead(b, majorUint, uint64(n))
	}
	return appendHead(b, majorNeg, uint64(^n)) // -1-n
}

func appendText(b []byte, s string) []byte {
	return append(appendHead(b, majorText, uint64(len(s))), s...)
}

// dotKey is a dot of a cart, its replica given as an index into the
// cart's replicas, with the index of the entry it names: sorting these
// costs much less than sorting dots and lines.
type dotKey struct {
	counter uint64
	rep     uint32
	entry   uint32
}

func compareDotKeys(a, b dotKey) int {
	if c := cmp.Compare(a.rep, b.rep); c != 0 {
		return c
	}
	return cmp.Compare(a.counter, b.counter)
}

// sortDotKeys sorts keys by replica, then counter. Keys with counters
// below 2⁴⁰ of at most 256 replicas, at most 65,536 of them, pack into
// one integer each (replica, counter, entry from the high bits down) and
// sort as integers; any others are sorted by compareDotKeys.
func sortDotKeys(keys []dotKey, replicas int) {
	if len(keys) < 2 {
		return
	}
	packable := replicas <= 1<<8 && len(keys) <= 1<<16
	for _, k := range keys {
		if k.counter >= 1<<40 || k.entry >= 1<<16 {
			packable = false
			break
		}
	}
	if !packable {
		slices.SortFunc(keys, compareDotKeys)
		return
	}
	packed := make([]uint64, len(keys))
	for i, k := range keys {
		packed[i] = uint64(k.rep)<<56 | k.counter<<16 | uint64(k.entry)
	}
	slices.Sort(packed)
	for i, v := range packed {
		keys[i] = dotKey{counter: v << 8 >> 24, rep: uint32(v >> 56), entry: uint32(v & 0xffff)}
	}
}

// replicaIndex numbers the replicas of a cart as they are met.
type replicaIndex struct {
	reps []ReplicaID
	last uint32
	big  map[ReplicaID]uint32 // once there are many replicas
}

func (x *replicaIndex) of(r ReplicaID) uint32 {
	if int(x.last) < len(x.reps) && x.reps[x.last] == r {
		return x.last
	}
	if x.big != nil {
		if k, ok := x.big[r]; ok {
			x.last = k
			return k
		}
	} else {
		for k, q := range x.reps {
			if q == r {
				x.last = uint32(k)
				return x.last
			}
		}
	}
	x.last = uint32(len(x.reps))
	x.reps = append(x.reps, r)
	if x.big == nil && len(x.reps) > 16 {
		x.big = make(map[ReplicaID]uint32, 2*len(x.reps))
		for k, q := range x.reps {
			x.big[q] = uint32(k)
		}
	} else if x.big != nil {
		x.big[r] = x.last
	}
	return x.last
}

// sort sorts the replicas and renumbers the keys to match.
func (x *replicaIndex) sort(keys ...[]dotKey) {
	order := make([]uint32, len(x.reps))
	for k := range order {
		order[k] = uint32(k)
	}
	slices.SortFunc(order, func(a, b uint32) int { return strings.Compare(string(x.reps[a]), string(x.reps[b])) })
	renumber := make([]uint32, len(x.reps))
	sorted := make([]ReplicaID, len(x.reps))
	for to, from := range order {
		renumber[from] = uint32(to)
		sorted[to] = x.reps[from]
	}
	x.reps = sorted
	for _, ks := range keys {
		for k := range ks {
			ks[k].rep = renumber[ks[k].rep]
		}
	}
}

// AppendCart appends the canonical encoding of c to b and returns the
// extended slice.
func AppendCart(b []byte, c *Cart) []byte {
	// One record for every replica of the version vector (even at 0), of
	// the cloud and of the entries.
	x := replicaIndex{reps: make([]ReplicaID, 0, len(c.Ctx.VV)+1)}
	for r := range c.Ctx.VV {
		x.of(r)
	}
	cloud := make([]dotKey, 0, len(c.Ctx.Cloud))
	for d := range c.Ctx.Cloud {
		cloud = append(cloud, dotKey{counter: d.Counter, rep: x.of(d.Replica)})
	}
	size := 1 + 9*len(cloud)
	keys := make([]dotKey, 0, len(c.Entries))
	lines := make([]Line, 0, len(c.Entries))
	for d, l := range c.Entries {
		keys = append(keys, dotKey{counter: d.Counter, rep: x.of(d.Replica), entry: uint32(len(lines))})
		lines = append(lines, l)
		size += 24 + len(l.SKU)
	}
	x.sort(cloud, keys)
	sortDotKeys(cloud, len(x.reps))
	sortDotKeys(keys, len(x.reps))
	for _, r := range x.reps {
		size += 20 + len(r)
	}

	b = slices.Grow(b, size)
	b = appendArray(b, len(x.reps))
	for j, r := range x.reps {
		b = appendArray(b, 4)
		b = appendText(b, string(r))
		b = appendUint(b, c.Ctx.VV[r])
		n := 0
		for n < len(cloud) && cloud[n].rep == uint32(j) {
			n++
		}
		b = appendArray(b, n)
		for _, k := range cloud[:n] {
			b = appendUint(b, k.counter)
		}
		cloud = cloud[n:]
		n = 0
		for n < len(keys) && keys[n].rep == uint32(j) {
			n++
		}
		b = appendArray(b, n)
		for _, k := range keys[:n] {
			l := &lines[k.entry]
			b = appendArray(b, 4)
			b = appendUint(b, k.counter)
			b = appendText(b, l.SKU)
			b = appendUint(b, uint64(l.Kind))
			b = appendInt(b, l.N)
		}
		keys = keys[n:]
	}
	return b
}

// AppendContext appends the canonical encoding of the causal context c (a
// cart with no entries) to b and returns the extended slice.
func AppendContext(b []byte, c *Context) []byte { return AppendCart(b, &Cart{Ctx: *c}) }

// AppendItem appends the canonical encoding of it to b and returns the
// extended slice.
func AppendItem(b []byte, it *Item) []byte {
	reps := make([]ReplicaID, 0, max(len(it.Stock.P), len(it.Stock.N)))
	for r, p := range it.Stock.P {
		if p != 0 || it.Stock.N[r] != 0 {
			reps = append(reps, r)
		}
	}
	for r, n := range it.Stock.N {
		if _, seen := it.Stock.P[r]; !seen && n != 0 {
			reps = append(reps, r)
		}
	}
	slices.Sort(reps)
	size := 24 + len(it.Held.Replica)
	for _, r := range reps {
		size += 20 + len(r)
	}
	var esc []EscrowKey
	for k, v := range it.Escrow {
		if v != 0 {
			esc = append(esc, k)
		}
	}
	for _, k := range esc {
		size += 24 + len(k.Region) + len(k.Replica)
	}
	b = slices.Grow(b, size)
	if len(esc) > 0 {
		b = appendArray(b, 5)
	} else {
		b = appendArray(b, 4)
	}
	b = appendArray(b, len(reps))
	for _, r := range reps {
		b = appendArray(b, 3)
		b = appendText(b, string(r))
		b = appendUint(b, it.Stock.P[r])
		b = appendUint(b, it.Stock.N[r])
	}
	b = appendUint(b, it.Held.Version)
	b = appendText(b, string(it.Held.Replica))
	b = appendInt(b, it.Held.Value)
	if len(esc) == 0 {
		return b
	}
	slices.SortFunc(esc, EscrowKey.compare)
	b = appendArray(b, len(esc))
	for _, k := range esc {
		b = appendArray(b, 4)
		b = appendUint(b, uint64(k.Kind))
		b = appendText(b, k.Region)
		b = appendText(b, string(k.Replica))
		b = appendUint(b, it.Escrow[k])
	}
	return b
}

// A large group gives way to other goroutines every yieldEvery keys it
// encodes, and pauses for pauseFor after each pauseAfter of encoding.
const (
	yieldEvery = 256
	pauseAfter = time.Millisecond
	pauseFor   = 200 * time.Microsecond
)

// AppendGroup appends the canonical encoding of g to b and returns the
// extended slice.
//
// A large group (an anti-entropy batch of thousands of carts takes
// milliseconds to encode) gives way: every yieldEvery keys it yields the
// processor, and after each pauseAfter of work it sleeps pauseFor. The Go
// scheduler preempts a goroutine only after 10 ms or more, and it polls
// the network only when it has nothing else to run or every 10 ms: on one
// processor (GOMAXPROCS=1) the region's requests, and its group commit's
// kick, would otherwise wait that long behind the encoding; the sleep
// lets the processor fall idle and poll.
func AppendGroup(b []byte, g *Group) []byte {
	carts, items := g.Keys()
	b = appendArray(b, 2)
	b = appendArray(b, len(carts))
	var last time.Time
	for i, id := range carts {
		if i > 0 && i%yieldEvery == 0 {
			switch now := time.Now(); {
			case last.IsZero():
				last = now
				runtime.Gosched()
			case now.Sub(last) >= pauseAfter:
				time.Sleep(pauseFor)
				last = time.Now()
			default:
				runtime.Gosched()
			}
		}
		b = appendArray(b, 2)
		b = appendText(b, id)
		b = AppendCart(b, g.Carts[id])
	}
	b = appendArray(b, len(items))
	for _, sku := range items {
		b = appendArray(b, 2)
		b = appendText(b, sku)
		b = AppendItem(b, g.Items[sku])
	}
	return b
}
