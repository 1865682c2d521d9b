package region

import (
	"context"
	"sync"
	"sync/atomic"

	"github.com/latticedb/lattice/crdt"
)

// A causal token is a promise: every region that serves a request with it
// has first applied everything it covers (WaitToken). So the token of an
// answer need not be the answering region's applied context; it must only
// cover everything the answer shows (and everything the region
// acknowledged before). It may cover more: the next region, or this one,
// then waits until it has applied that too. Three kinds of answers show
// more than the applied context covers, and their tokens cover it through
// an Answer:
//
//   - a key's state repaired by anti-entropy reflects the sending peer's
//     writes, whose dots this region claims only once the round completes
//     (if ever, within the protocol's window);
//   - a remote delta whose dots lie past the protocol's window of
//     out-of-order dots is applied but its dots are held unclaimed;
//   - an answer decided or read at another region (a sku's or cart's
//     home) shows the home's state.
//
// For the first two, the node keeps per key the context its state may
// reflect beyond n.applied (Node.extra: set under the key's write lock
// before the state is shown, dropped once n.applied covers it); a read or
// write of the key, under the key's lock, adds it to its request's Answer.
// For the third, the home answers with its own token (HomeResponse.Token),
// which the forwarding region adds. The token of the answer (TokenFor) is
// n.applied ∪ the Answer, taken after the operation.

// Answer collects what one request's answer shows beyond the answering
// region's applied context. WithAnswer attaches one to a context.
type Answer struct {
	mu    sync.Mutex
	extra crdt.Context
	// first and more are the dots of the request's local writes, for
	// its write concern (most requests write once: first, no slice).
	first   crdt.Dot
	nwrites int
	more    []crdt.Dot
	// replay is set by a request that replayed a recorded decision
	// (noteReplay): per replica of this region (its incarnations), the
	// highest of its writes the wait must cover.
	replay []crdt.Dot
	// shown are dots of other replicas the replay showed out of order,
	// each waited for by itself (noteReplay).
	shown map[crdt.Dot]struct{}
	// shownTop holds, past maxShown, each replica's highest dot shown.
	shownTop map[crdt.ReplicaID]uint64

	// In a partitioned region (Partitions): touched is the partition
	// the request was served by (-1 for none yet), incoming the token
	// it came with, and parts what homes of other partitions answered.
	touched  int
	incoming *partToken
	parts    map[int]*crdt.Context
}

type answerKey struct{}

// WithAnswer returns ctx carrying a new, empty Answer, for the operation
// whose token TokenFor(ctx) then returns.
func WithAnswer(ctx context.Context) context.Context {
	return context.WithValue(ctx, answerKey{}, &Answer{touched: -1})
}

func answerOf(ctx context.Context) *Answer {
	if ctx == nil {
		return nil
	}
	a, _ := ctx.Value(answerKey{}).(*Answer)
	return a
}

func (a *Answer) add(c *crdt.Context) {
	if a == nil || c == nil || c.Empty() {
		return
	}
	a.mu.Lock()
	a.extra.Join(c)
	a.mu.Unlock()
}

// addToken adds what a (home's) token covers; a malformed one is ignored
// (a home answers with a token it made; it is untrusted input all the
// same, and covering less only weakens the answer's token back to this
// region's own).
func (a *Answer) addToken(tok string) {
	if a == nil || tok == "" {
		return
	}
	if c, err := crdt.ParseToken(tok); err == nil {
		a.add(&c)
	}
}

// TokenFor returns the causal token of the answer to the request whose
// context is ctx: everything this region has applied, joined with what
// the request's Answer collected. A join too large for a token
// (crdt.MaxTokenBytes) is over-approximated by its version vector ceiling
// (crdt.Context.Ceil): still a token that covers the answer, at the price
// of waiting for a few more dots wherever it is sent next.
func (n *Node) TokenFor(ctx context.Context) string {
	a := answerOf(ctx)
	if a == nil {
		return n.Token()
	}
	a.mu.Lock()
	if a.extra.Empty() {
		a.mu.Unlock()
		return n.Token()
	}
	extra := a.extra.Clone()
	a.mu.Unlock()
	n.amu.Lock()
	if n.applied.Covers(&extra) {
		n.amu.Unlock()
		return n.Token()
	}
	c := n.applied.Clone()
	n.amu.Unlock()
	c.Join(&extra)
	return fitToken(&c)
}

// fitToken formats c as a token, over-approximated by its ceiling if it is
// too large.
func fitToken(c *crdt.Context) string {
	if t := crdt.FormatToken(c); crdt.TokenFits(t) {
		return t
	}
	ceil := c.Ceil()
	return crdt.FormatToken(&ceil)
}

// Bounds of Node.extra.
const (
	// maxExtraKeys bounds the keys with an extra context; the reflects
	// of repairs past it go to n.overflow, which every answer covers.
	maxExtraKeys = 1 << 16
	// maxExtraCloud bounds the out-of-order dots of one extra context;
	// past it the context is replaced by its ceiling.
	maxExtraCloud = 1024
	// pruneEvery is how many keys find the map full between two prunes
	// of it (extraState.denied).
	pruneEvery = maxExtraKeys / 16
)

// extraState is what a node keeps of the contexts its keys' states may
// reflect beyond its applied context (see the comment at the top).
type extraState struct {
	// n counts keys with an extra context plus one while overflow is
	// set, so that reads skip n.amu when there is none.
	n        atomic.Int64
	keys     map[string]*crdt.Context // under Node.amu; values are never changed
	overflow *crdt.Context            // under Node.amu
	// denied counts, under Node.amu, the keys that found keys full since
	// its last prune: a prune, which checks every key, runs again only
	// once pruneEvery of them came, so that while the applied context
	// lags (a resync) a full map costs O(1) a key, not O(maxExtraKeys).
	denied int
	prunes int // prunes of a full map, for tests
}

// noteReflects records, under the write locks of keys and n.amu, that the
// states of keys may reflect reflects. Entries applied covers are dropped
// on the way.
func (n *Node) noteReflects(keys []string, reflects *crdt.Context) {
	if reflects == nil || reflects.Empty() || n.applied.Covers(reflects) {
		return
	}
	r := reflects.Clone()
	if len(r.Cloud) > maxExtraCloud {
		r = r.Ceil()
	}
	x := &n.extra
	if x.keys == nil {
		x.keys = make(map[string]*crdt.Context)
	}
	// Keys that shared a context share its join with r: a clone per key
	// would keep a copy of up to maxExtraCloud dots for each of them.
	var joined map[*crdt.Context]*crdt.Context
	for _, k := range keys {
		cur := x.keys[k]
		if cur != nil && !n.applied.Covers(cur) {
			if j := joined[cur]; j != nil {
				x.keys[k] = j
				continue
			}
			j := cur.Clone()
			j.Join(&r)
			if len(j.Cloud) > maxExtraCloud {
				j = j.Ceil()
			}
			if joined == nil {
				joined = make(map[*crdt.Context]*crdt.Context)
			}
			joined[cur] = &j
			x.keys[k] = &j
			continue
		}
		if cur == nil && len(x.keys) >= maxExtraKeys {
			if x.denied%pruneEvery == 0 {
				n.pruneExtra()
				x.prunes++
			}
			x.denied++
		}
		if cur == nil && len(x.keys) >= maxExtraKeys {
			o := r.Clone()
			if x.overflow != nil {
				o.Join(x.overflow)
			}
			if len(o.Cloud) > maxExtraCloud {
				o = o.Ceil()
			}
			x.overflow = &o
			continue
		}
		x.keys[k] = &r
	}
	n.countExtra()
}

// pruneExtra drops the extra contexts applied covers; the caller holds
// n.amu.
func (n *Node) pruneExtra() {
	for k, c := range n.extra.keys {
		if n.applied.Covers(c) {
			delete(n.extra.keys, k)
		}
	}
	if o := n.extra.overflow; o != nil && n.applied.Covers(o) {
		n.extra.overflow = nil
	}
	n.countExtra()
}

func (n *Node) countExtra() {
	c := int64(len(n.extra.keys))
	if n.extra.overflow != nil {
		c++
	}
	n.extra.n.Store(c)
}

// shownExtra returns what the states of keys may reflect beyond n.applied
// (nil for nothing), dropping what n.applied covers. The caller holds the
// keys' locks (shared or exclusive), so no repair of them is under way.
func (n *Node) shownExtra(keys ...string) *crdt.Context {
	if n.extra.n.Load() == 0 {
		return nil
	}
	var out *crdt.Context
	join := func(c *crdt.Context) {
		if out == nil {
			out = &crdt.Context{}
		}
		out.Join(c)
	}
	n.amu.Lock()
	defer n.amu.Unlock()
	for _, k := range keys {
		if c := n.extra.keys[k]; c != nil {
			if n.applied.Covers(c) {
				delete(n.extra.keys, k)
			} else {
				join(c)
			}
		}
	}
	if o := n.extra.overflow; o != nil {
		if n.applied.Covers(o) {
			n.extra.overflow = nil
		} else {
			join(o)
		}
	}
	n.countExtra()
	return out
}

// noteShown adds to ctx's Answer what the states of keys may reflect
// beyond n.applied; the caller holds the keys' locks.
func (n *Node) noteShown(ctx context.Context, keys ...string) {
	a := answerOf(ctx)
	if a == nil {
		return
	}
	a.add(n.shownExtra(keys...))
}
