package region

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/latticedb/lattice/crdt"
)

// Write and read concerns.
//
// A client may ask that a write reach N regions before it is answered
// (write concern, the Lattice-Replicas header), and that a read answer
// the join of N regions' states (read concern, ?quorum=N). Both count
// this region. CRDTs make both simple and safe: a read from several
// regions is the join of their states, never a conflict to resolve.
//
// A write's dots are recorded in its request's Answer (write); once the
// operation is done, AwaitReplicas waits until N−1 peers acknowledged
// every one of them (ReplicaWaiter, carried out by replication, which
// counts a peer once it acknowledged a delta message carrying the dot or
// reported an applied context containing it: both only after it made the
// write durable). A decision forwarded to a sku's home carries N
// (HomeRequest.Replicas) and the home waits for its own write before it
// answers. A write that times out is NOT rolled back: it stays applied
// here and still replicates; the answer says so (replication_timeout).
//
// A quorum read (QuorumRead) asks every peer for its state of the key at
// once, joins this region's state with the first N−1 answers, applies
// the join here (a repair, like anti-entropy's: its token covers the
// peers' writes it shows) and sends the joined state to each answering
// region whose state differed from it (read repair), before the read is
// answered from this region's store. With W + R > regions, a quorum read
// of R sees every write acknowledged with W before it began: the R
// regions it reads and the W regions that hold the write share a region.

// ReplicaWaiter waits until n regions, this one included, hold the local
// write with dot d durably. It returns ctx's error if ctx ends first.
type ReplicaWaiter interface {
	WaitReplicas(ctx context.Context, d crdt.Dot, n int) error
	// WaitReplicasThrough waits until n regions hold every write of
	// d.Replica up to d.Counter (for a replayed decision, whose original
	// write is among them).
	WaitReplicasThrough(ctx context.Context, d crdt.Dot, n int) error
}

type concernKey struct{}

// concern is what a request asked of replication.
type concern struct {
	replicas int // write concern, counting this region; 0 or 1: none
	quorum   int // read concern, counting this region; 0 or 1: none
}

// WithReplicas returns ctx asking that the writes of its operation reach
// n regions (this one included) before they are answered.
func WithReplicas(ctx context.Context, n int) context.Context {
	c := concernOf(ctx)
	c.replicas = n
	return context.WithValue(ctx, concernKey{}, c)
}

// WithQuorum returns ctx asking that the reads of its operation answer
// the join of n regions' states (this one included).
func WithQuorum(ctx context.Context, n int) context.Context {
	c := concernOf(ctx)
	c.quorum = n
	return context.WithValue(ctx, concernKey{}, c)
}

// minimalKey marks a context whose cart write needs no cart in its answer.
type minimalKey struct{}

// WithoutCartItems returns ctx asking that a cart write (AddItem, SetItem,
// RemoveItem, ClearCart) answer without the cart's items: the Cart it
// returns names the cart and the region only. Listing the items reads
// every line of the cart, which for a large cart is most of a write's
// cost; the write itself reads and writes only the lines it changes.
func WithoutCartItems(ctx context.Context) context.Context {
	return context.WithValue(ctx, minimalKey{}, true)
}

// cartItemsWanted reports whether a cart write's answer lists the cart's
// items (see WithoutCartItems).
func cartItemsWanted(ctx context.Context) bool {
	v, _ := ctx.Value(minimalKey{}).(bool)
	return !v
}

// ReplicasAsked returns the write concern ctx asks for (WithReplicas), 0
// for none.
func ReplicasAsked(ctx context.Context) int { return concernOf(ctx).replicas }

func concernOf(ctx context.Context) concern {
	if ctx == nil {
		return concern{}
	}
	c, _ := ctx.Value(concernKey{}).(concern)
	return c
}

// Regions returns the number of regions of the cluster (this one and its
// peers): the largest write or read concern a request may ask for.
func (n *Node) Regions() int { return 1 + len(n.opts.PeerRegions) }

// ConcernCount turns a write or read concern as a client writes it (a
// number, "majority" or "all") into a number of regions, or an error
// that names field.
func (n *Node) ConcernCount(field, v string) (int, error) {
	r := n.Regions()
	switch v {
	case "majority":
		return r/2 + 1, nil
	case "all":
		return r, nil
	}
	k := 0
	for _, ch := range []byte(v) {
		if ch < '0' || ch > '9' || k > r {
			k = -1
			break
		}
		k = k*10 + int(ch-'0')
	}
	if v == "" || k < 1 || k > r {
		return 0, InvalidField(field, "%s must be a number of regions from 1 to %d, majority or all", field, r)
	}
	return k, nil
}

// addWrite records the dot of a local write of the answer's request.
func (a *Answer) addWrite(d crdt.Dot) {
	if a == nil {
		return
	}
	a.mu.Lock()
	switch {
	case a.nwrites == 0:
		a.first = d
		a.nwrites = 1
	case len(a.more) < maxAnswerWrites:
		a.more = append(a.more, d)
	default:
		// Past the bound, the writes are waited for through the highest:
		// this region's writes are issued one after the other, so waiting
		// until a peer holds every write of d's replica up to d covers
		// them all (a wait for more than the request wrote, never less).
		a.raiseReplay(d)
	}
	a.mu.Unlock()
}

// raiseReplay makes the answer's through-wait cover d; a.mu is held. The
// dots an Answer collects are its region's own: of its current
// incarnation, and of earlier ones for a replay (noteReplay).
func (a *Answer) raiseReplay(d crdt.Dot) {
	for i := range a.replay {
		if a.replay[i].Replica == d.Replica {
			a.replay[i].Counter = max(a.replay[i].Counter, d.Counter)
			return
		}
	}
	a.replay = append(a.replay, d)
}

// addReplay records that the request replayed a decision recorded under
// its Idempotency-Key: it wrote nothing, but its write concern must still
// wait for the original write, which is among this region's writes up to
// upTo.
func (a *Answer) addReplay(upTo crdt.Dot) {
	if a == nil {
		return
	}
	a.mu.Lock()
	a.raiseReplay(upTo)
	a.mu.Unlock()
}

// noteReplay is addReplay of everything this region holds so far: the
// writes of this incarnation, of the earlier ones (a decision recorded
// before a restart as a new incarnation was written by the old one, and
// its retry must not be answered as held by regions that lack it), and of
// every other region, since a write that changes nothing answers the
// state it found, which may be another region's write (a remove of a
// line another region removed) that has not reached N regions.
//
// Every replica's writes are waited for through the contiguous run the
// applied context's version vector holds; past it, each dot this region
// holds out of order is waited for by itself, and so is, of what the
// answer's keys reflect beyond that (Answer.extra: a quorum read's or a
// repair's join), each out-of-order dot and the top of each replica's run
// — never through a gap, since the dots in a gap may exist nowhere (an
// old incarnation's write lost everywhere by a power loss; a reflected
// context rounded up to its ceiling to stay small), and such a wait
// could never be met. (Within a reflected run only its top is waited
// for: a peer that holds it but not an earlier dot of the run is counted.)
func (n *Node) noteReplay(ctx context.Context) {
	a := answerOf(ctx)
	if a == nil {
		return
	}
	a.mu.Lock()
	extra := a.extra.Clone()
	a.mu.Unlock()
	n.amu.Lock()
	through := maps.Clone(n.applied.VV)
	gaps := make([]crdt.Dot, 0, len(n.applied.Cloud)+len(extra.VV)+len(extra.Cloud))
	for d := range n.applied.Cloud {
		gaps = append(gaps, d)
	}
	n.amu.Unlock()
	if through == nil {
		through = map[crdt.ReplicaID]uint64{}
	}
	for r, c := range extra.VV {
		gaps = append(gaps, crdt.Dot{Replica: r, Counter: c})
	}
	for d := range extra.Cloud {
		gaps = append(gaps, d)
	}
	// Not a removed region's: no peer's holding of those is kept (the
	// protocol records members' dots only), and its removal waited for
	// its writes to be at every region.
	member := func(r crdt.ReplicaID) bool { return r == n.self || n.isRegion(r.Region()) }
	a.addReplay(crdt.Dot{Replica: n.self, Counter: through[n.self]})
	for r, c := range through {
		if r != n.self && c > 0 && member(r) {
			a.addReplay(crdt.Dot{Replica: r, Counter: c})
		}
	}
	for _, d := range gaps {
		if d.Counter > through[d.Replica] && member(d.Replica) {
			a.addShown(d)
		}
	}
}

// maxShown bounds the dots one Answer waits for one by one (addShown);
// past it, of each replica only the highest dot is waited for (by itself:
// a wait through it would cross the gaps before it).
const maxShown = 4096

// addShown records a dot held or shown out of order, which the answer's
// write concern waits for by itself.
func (a *Answer) addShown(d crdt.Dot) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, ok := a.shown[d]; ok {
		return
	}
	if len(a.shown) < maxShown {
		if a.shown == nil {
			a.shown = make(map[crdt.Dot]struct{})
		}
		a.shown[d] = struct{}{}
		return
	}
	if a.shownTop == nil {
		a.shownTop = make(map[crdt.ReplicaID]uint64)
	}
	a.shownTop[d.Replica] = max(a.shownTop[d.Replica], d.Counter)
}

// maxAnswerWrites bounds the dots one request's Answer keeps one by one;
// past it (a checkout of many lines homed here) the rest are waited for
// through the highest (addWrite).
const maxAnswerWrites = 64

// AwaitReplicas waits, if ctx asks for it (WithReplicas), until the
// local writes of ctx's operation are durable at that many regions. A
// request that wrote nothing here (a read, a decision made at another
// region, which waited there) returns at once. When ctx ends first it
// returns a *Error with code replication_timeout: the write stays applied
// here and still replicates.
func (n *Node) AwaitReplicas(ctx context.Context) error {
	want := concernOf(ctx).replicas
	a := answerOf(ctx)
	if want <= 1 || a == nil {
		return nil
	}
	a.mu.Lock()
	var writes []crdt.Dot
	if a.nwrites > 0 {
		writes = append([]crdt.Dot{a.first}, a.more...)
	}
	replay := slices.Clone(a.replay)
	for d := range a.shown {
		writes = append(writes, d)
	}
	for r, c := range a.shownTop {
		if _, ok := a.shown[crdt.Dot{Replica: r, Counter: c}]; !ok {
			writes = append(writes, crdt.Dot{Replica: r, Counter: c})
		}
	}
	a.mu.Unlock()
	if len(writes) == 0 && len(replay) == 0 {
		return nil
	}
	start := n.clock.Now()
	type wait struct {
		d       crdt.Dot
		through bool
	}
	var waits []wait
	for _, d := range writes {
		waits = append(waits, wait{d, false})
	}
	for _, d := range replay {
		if d.Counter > 0 {
			waits = append(waits, wait{d, true})
		}
	}
	for _, w := range waits {
		var err error
		switch {
		case n.opts.Replicas == nil:
			err = errors.New("region: no replication")
		case w.through:
			err = n.opts.Replicas.WaitReplicasThrough(ctx, w.d, want)
		default:
			err = n.opts.Replicas.WaitReplicas(ctx, w.d, want)
		}
		if err != nil {
			n.m.ConcernTimeouts.WithLabelValues("write").Inc()
			why := "within the request's deadline"
			if !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) {
				why = "(" + err.Error() + ")"
			}
			return &Error{Code: CodeReplicationTimeout, RetryAfter: 1,
				Detail: fmt.Sprintf("the write was applied at %s and will still replicate, but it did not reach %d regions %s", n.name, want, why)}
		}
	}
	n.m.ConcernWait.WithLabelValues("write").Observe(n.clock.Now().Sub(start).Seconds())
	return nil
}

// forwardDeadline is how long before the caller's deadline a home stops
// waiting for replicas of a forwarded decision, so that its answer can
// still reach the caller in time.
func forwardDeadline(ctx context.Context, req *HomeRequest) (context.Context, context.CancelFunc) {
	if req.DeadlineMs == 0 {
		return context.WithCancel(ctx)
	}
	dl := time.UnixMilli(req.DeadlineMs)
	left := time.Until(dl)
	margin := min(left/4, 250*time.Millisecond)
	return context.WithDeadline(ctx, dl.Add(-margin))
}

// Operations of region-to-region reads, carried like home requests.
const (
	// OpRead asks a region for its state of one key (a quorum read).
	OpRead = "read"
	// OpRepair gives a region the joined state of one key (read repair).
	OpRepair = "repair"
)

// checkStateRequest validates an OpRead or OpRepair request (untrusted
// input from another region).
func checkStateRequest(req *HomeRequest) *Error {
	switch req.Op {
	case OpRead:
		if len(req.Keys) != 1 || !crdt.ValidKey(req.Keys[0]) {
			return InvalidField("keys", "a read names exactly one valid key")
		}
	case OpRepair:
		if req.State == nil || req.State.Len() != 1 {
			return InvalidField("state", "a repair carries the state of exactly one key")
		}
		if req.Token != "" {
			if _, err := crdt.ParseToken(req.Token); err != nil {
				return InvalidField("token", "malformed reflected context: %v", err)
			}
		}
	}
	return nil
}

// serveState answers an OpRead or OpRepair request.
func (n *Node) serveState(ctx context.Context, req *HomeRequest) *HomeResponse {
	switch req.Op {
	case OpRead:
		// A damaged value is refused, not answered as the empty state: a
		// quorum read counts this answer as a region's whole state.
		// So is a key held back after damage (holdBackDamaged): its
		// state may lack writes a peer's round has yet to bring.
		if err := n.heldBackErr(req.Keys[0]); err != nil {
			return &HomeResponse{Err: &Error{Code: CodeUnavailable, RetryAfter: 1, Detail: err.Error()}}
		}
		carts, items := splitKeys(req.Keys)
		g, c, err := n.readObjects(carts, items, true)
		if err != nil {
			return &HomeResponse{Err: &Error{Code: CodeUnavailable, RetryAfter: 1, Detail: err.Error()}}
		}
		return &HomeResponse{State: g, Token: fitToken(&c)}
	case OpRepair:
		var reflects crdt.Context
		if req.Token != "" {
			reflects, _ = crdt.ParseToken(req.Token)
		}
		if err := n.ApplyReflecting(&crdt.Context{}, req.State, &reflects); err != nil {
			return &HomeResponse{Err: &Error{Code: CodeUnavailable, RetryAfter: 1, Detail: err.Error()}}
		}
		n.m.ReadRepairs.WithLabelValues("received").Inc()
		return &HomeResponse{Token: n.Token()}
	}
	return &HomeResponse{Err: InvalidField("op", "unknown operation %q", req.Op)}
}

// peerState is one region's answer to a quorum read.
type peerState struct {
	region string
	state  *crdt.Group
	ctx    crdt.Context
	err    error
}

// quorumRead makes key's state here the join of this region's and at
// least q−1 peers' (their first answers), and repairs the answering peers
// whose state lacked part of the join. With q ≤ 1 it does nothing.
func (n *Node) quorumRead(ctx context.Context, key string, q int) error {
	if q <= 1 {
		return nil
	}
	need := q - 1
	peers := n.opts.PeerRegions
	if len(peers) < need || n.opts.Forwarder == nil {
		return n.quorumUnavailable(q, 1) // this region alone
	}
	start := n.clock.Now()
	// Answers past the first need are not waited for, but not cut off
	// either (a canceled stream is only noise at the peer): they end by
	// the request's deadline.
	qctx := context.WithoutCancel(ctx)
	if dl, ok := ctx.Deadline(); ok {
		var cancel context.CancelFunc
		qctx, cancel = context.WithDeadline(qctx, dl)
		defer func() { go func() { <-qctx.Done(); cancel() }() }()
	}
	answers := make(chan peerState, len(peers))
	for _, p := range peers {
		go func() {
			resp, err := n.opts.Forwarder.Forward(qctx, p, &HomeRequest{Op: OpRead, Keys: []string{key}})
			ps := peerState{region: p, err: err}
			if err == nil && resp.Err != nil {
				ps.err = resp.Err
			}
			if ps.err == nil {
				ps.state = resp.State
				if ps.state == nil {
					ps.state = &crdt.Group{}
				}
				if resp.Token != "" {
					ps.ctx, ps.err = crdt.ParseToken(resp.Token)
				}
				if ps.err == nil && !onlyKey(ps.state, key) {
					ps.err = fmt.Errorf("region: %s answered a read of %s with other keys", p, key)
				}
			}
			answers <- ps
		}()
	}
	var got []peerState
	failed := 0
	for len(got) < need && failed <= len(peers)-need {
		select {
		case ps := <-answers:
			if ps.err != nil {
				failed++
				n.log.Debug("quorum read: a region did not answer", "region", ps.region, "key", key, "err", ps.err)
				continue
			}
			got = append(got, ps)
		case <-ctx.Done():
			return n.quorumUnavailable(q, len(got)+1)
		}
	}
	if len(got) < need {
		return n.quorumUnavailable(q, len(got)+1)
	}
	var join crdt.Group
	var reflects crdt.Context
	for _, ps := range got {
		join.Join(ps.state)
		reflects.Join(&ps.ctx)
	}
	if join.Len() > 0 {
		if err := n.ApplyReflecting(&crdt.Context{}, &join, &reflects); err != nil {
			return n.storeErr(err)
		}
	}
	// The state here is now the join of all q; each answering region
	// whose state differs from it lacks part of it.
	mine, mctx, err := n.Read([]string{key})
	if err != nil {
		return n.storeErr(err)
	}
	want := crdt.EncodeGroup(mine)
	tok := fitToken(&mctx)
	var wg sync.WaitGroup
	for _, ps := range got {
		if mine.Len() == 0 || bytes.Equal(crdt.EncodeGroup(ps.state), want) {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := n.opts.Forwarder.Forward(ctx, ps.region, &HomeRequest{Op: OpRepair, Keys: []string{key}, State: mine, Token: tok})
			if err == nil && resp.Err != nil {
				err = resp.Err
			}
			if err != nil {
				n.log.Info("read repair did not reach a region; anti-entropy will", "region", ps.region, "key", key, "err", err)
				return
			}
			n.m.ReadRepairs.WithLabelValues("sent").Inc()
			n.m.ReadRepairBytes.Add(float64(len(want)))
		}()
	}
	wg.Wait()
	n.m.ConcernWait.WithLabelValues("read").Observe(n.clock.Now().Sub(start).Seconds())
	return nil
}

// onlyKey reports whether g holds no key but key.
func onlyKey(g *crdt.Group, key string) bool {
	carts, items := g.Keys()
	for _, id := range carts {
		if prefixCart+id != key {
			return false
		}
	}
	for _, sku := range items {
		if prefixItem+sku != key {
			return false
		}
	}
	return true
}

func (n *Node) quorumUnavailable(q, have int) error {
	n.m.ConcernTimeouts.WithLabelValues("read").Inc()
	return &Error{Code: CodeQuorumUnavailable, RetryAfter: 1,
		Detail: fmt.Sprintf("a quorum read needs %d regions and only %d answered in time", q, have)}
}
