package region

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/latticedb/lattice/crdt"
	"github.com/latticedb/lattice/region/config"
)

// CodePartitionUnavailable is the error code of a request for a partition
// whose owning node in this region cannot be reached (503, Retry-After).
const CodePartitionUnavailable = "partition_unavailable"

// CodePartitionUnanswered is the error code of a request forwarded to the
// node of this region that owns its partition whose answer did not come
// back (the connection dropped, or the deadline passed, after the request
// was sent): the owner may have applied it (503, Retry-After). A request
// with an Idempotency-Key may be sent again with it; a cart add may not
// be repeated blindly (read the cart).
const CodePartitionUnanswered = "partition_unanswered"

// Partitions is what one process of a partitioned region serves (SPEC
// §10): the nodes of the partitions it owns, one Node per partition, each
// on its own store. It offers the same operations as a Node and sends each
// to the node of its key's partition: a cart's id, a sku, or the
// partition a reservation id names. The API routes a request for a
// partition this process does not own to the process that does before it
// gets here; a request that still names such a partition is answered
// partition_unavailable.
//
// Causal tokens are per partition (see ptoken.go): WaitToken waits only
// for the request's partition's entry (WithPartition), and TokenFor
// answers with the client's token whose entry of the partition the
// request touched, and of any partition whose home answered it, is
// brought up to date.
type Partitions struct {
	region string
	node   string
	count  int
	nodes  map[int]*Node
	owned  []int // sorted
}

// NewPartitions returns the partitions node serves of region, a cluster
// of count partitions; nodes are the Nodes of its partitions (each with
// Options.Partition set, all with Options.Partitions = count).
func NewPartitions(region, node string, count int, nodes []*Node) (*Partitions, error) {
	if count < 2 || count > config.MaxPartitions || len(nodes) == 0 {
		return nil, fmt.Errorf("region: %d nodes of a cluster of %d partitions", len(nodes), count)
	}
	p := &Partitions{region: region, node: node, count: count, nodes: make(map[int]*Node, len(nodes))}
	for _, n := range nodes {
		if n.Region() != region || n.opts.Partitions != count {
			return nil, fmt.Errorf("region: node of region %s with %d partitions in region %s of %d", n.Region(), n.opts.Partitions, region, count)
		}
		if _, dup := p.nodes[n.Partition()]; dup {
			return nil, fmt.Errorf("region: partition %d given twice", n.Partition())
		}
		p.nodes[n.Partition()] = n
		p.owned = append(p.owned, n.Partition())
	}
	slices.Sort(p.owned)
	return p, nil
}

// Owned returns the partitions served here, in order.
func (p *Partitions) Owned() []int { return slices.Clone(p.owned) }

// Node returns the node of partition part, nil when it is not served here.
func (p *Partitions) Node(part int) *Node { return p.nodes[part] }

// Count returns the cluster's number of partitions.
func (p *Partitions) Count() int { return p.count }

// Region returns the region's name.
func (p *Partitions) Region() string { return p.region }

func (p *Partitions) unavailable(part int) *Error {
	return &Error{Code: CodePartitionUnavailable, RetryAfter: 1,
		Detail: fmt.Sprintf("partition %d is not served by node %s of region %s", part, p.node, p.region)}
}

// at returns the node of partition part and notes in ctx's Answer that
// the request touched it.
func (p *Partitions) at(ctx context.Context, part int) (*Node, error) {
	n := p.nodes[part]
	if n == nil {
		return nil, p.unavailable(part)
	}
	if a := answerOf(ctx); a != nil {
		a.mu.Lock()
		a.touched = part
		a.mu.Unlock()
	}
	return n, nil
}

func (p *Partitions) of(ctx context.Context, key string) (*Node, error) {
	return p.at(ctx, config.PartitionOf(key, p.count))
}

// ofReservation returns the node a reservation id names; an id that names
// none goes to any node here, which answers not_found.
func (p *Partitions) ofReservation(ctx context.Context, id string) (*Node, error) {
	part, ok := ReservationPartition(id)
	if !ok || part >= p.count {
		return p.nodes[p.owned[0]], nil
	}
	return p.at(ctx, part)
}

// GetCart is Node.GetCart at the cart's partition.
func (p *Partitions) GetCart(ctx context.Context, cartID string) (Cart, error) {
	n, err := p.of(ctx, cartID)
	if err != nil {
		return Cart{}, err
	}
	return n.GetCart(ctx, cartID)
}

// AddItem is Node.AddItem at the cart's partition.
func (p *Partitions) AddItem(ctx context.Context, cartID, sku string, qty int64) (Cart, error) {
	n, err := p.of(ctx, cartID)
	if err != nil {
		return Cart{}, err
	}
	return n.AddItem(ctx, cartID, sku, qty)
}

// SetItem is Node.SetItem at the cart's partition.
func (p *Partitions) SetItem(ctx context.Context, cartID, sku string, qty int64) (Cart, error) {
	n, err := p.of(ctx, cartID)
	if err != nil {
		return Cart{}, err
	}
	return n.SetItem(ctx, cartID, sku, qty)
}

// RemoveItem is Node.RemoveItem at the cart's partition.
func (p *Partitions) RemoveItem(ctx context.Context, cartID, sku string) (Cart, error) {
	n, err := p.of(ctx, cartID)
	if err != nil {
		return Cart{}, err
	}
	return n.RemoveItem(ctx, cartID, sku)
}

// ClearCart is Node.ClearCart at the cart's partition.
func (p *Partitions) ClearCart(ctx context.Context, cartID string) (Cart, error) {
	n, err := p.of(ctx, cartID)
	if err != nil {
		return Cart{}, err
	}
	return n.ClearCart(ctx, cartID)
}

// Checkout is Node.Checkout at the cart's partition, which coordinates
// it; the skus' homes may be other partitions, here or elsewhere.
func (p *Partitions) Checkout(ctx context.Context, cartID string, ttl time.Duration, idem Idem) (Order, error) {
	n, err := p.of(ctx, cartID)
	if err != nil {
		return Order{}, err
	}
	return n.Checkout(ctx, cartID, ttl, idem)
}

// CheckoutStatusOf is Node.CheckoutStatusOf at the cart's partition.
func (p *Partitions) CheckoutStatusOf(ctx context.Context, cartID, key string) (CheckoutStatus, error) {
	n, err := p.of(ctx, cartID)
	if err != nil {
		return CheckoutStatus{}, err
	}
	return n.CheckoutStatusOf(ctx, cartID, key)
}

// GetItem is Node.GetItem at the sku's partition.
func (p *Partitions) GetItem(ctx context.Context, sku string, consistent bool) (Item, error) {
	n, err := p.of(ctx, sku)
	if err != nil {
		return Item{}, err
	}
	return n.GetItem(ctx, sku, consistent)
}

// Restock is Node.Restock at the sku's partition.
func (p *Partitions) Restock(ctx context.Context, sku string, qty int64) (Item, error) {
	n, err := p.of(ctx, sku)
	if err != nil {
		return Item{}, err
	}
	return n.Restock(ctx, sku, qty)
}

// Adjust is Node.Adjust at the sku's partition.
func (p *Partitions) Adjust(ctx context.Context, sku string, delta int64, reason string) (Item, error) {
	n, err := p.of(ctx, sku)
	if err != nil {
		return Item{}, err
	}
	return n.Adjust(ctx, sku, delta, reason)
}

// Reserve is Node.Reserve at the sku's partition.
func (p *Partitions) Reserve(ctx context.Context, sku string, qty int64, ttl time.Duration, idem Idem) (Reservation, error) {
	n, err := p.of(ctx, sku)
	if err != nil {
		return Reservation{}, err
	}
	return n.Reserve(ctx, sku, qty, ttl, idem)
}

// GetReservation is Node.GetReservation at the partition the id names.
func (p *Partitions) GetReservation(ctx context.Context, id string) (Reservation, error) {
	n, err := p.ofReservation(ctx, id)
	if err != nil {
		return Reservation{}, err
	}
	return n.GetReservation(ctx, id)
}

// Commit is Node.Commit at the partition the id names.
func (p *Partitions) Commit(ctx context.Context, id string, idem Idem) (Reservation, error) {
	n, err := p.ofReservation(ctx, id)
	if err != nil {
		return Reservation{}, err
	}
	return n.Commit(ctx, id, idem)
}

// Release is Node.Release at the partition the id names.
func (p *Partitions) Release(ctx context.Context, id string, idem Idem) (Reservation, error) {
	n, err := p.ofReservation(ctx, id)
	if err != nil {
		return Reservation{}, err
	}
	return n.Release(ctx, id, idem)
}

// WaitToken waits until the request's partition (WithPartition) has
// applied what token's entry of it covers; without a partition in ctx,
// every entry of a partition served here. It keeps the token in ctx's
// Answer, so that TokenFor answers with its other entries too.
func (p *Partitions) WaitToken(ctx context.Context, token string) error {
	t, err := parsePartitionToken(token, p.count)
	if err != nil {
		return Errorf(CodeInvalidToken, "malformed Lattice-Token: %v", err)
	}
	if a := answerOf(ctx); a != nil {
		a.mu.Lock()
		a.incoming = &t
		a.mu.Unlock()
	}
	wait := func(part int) error {
		c, n := t.get(part), p.nodes[part]
		if c == nil || n == nil {
			return nil
		}
		return n.waitCovers(ctx, c, false)
	}
	if part, ok := PartitionOf(ctx); ok {
		return wait(part)
	}
	for _, part := range t.parts {
		if err := wait(part); err != nil {
			return err
		}
	}
	return nil
}

// TokenFor returns the token of the answer to the request whose context
// is ctx: the client's token with the entry of the partition the request
// touched replaced by that node's token of the answer (Node.TokenFor), and
// the entries of partitions whose homes answered joined with their
// tokens. A request that touched no partition answers with no token.
func (p *Partitions) TokenFor(ctx context.Context) string {
	a := answerOf(ctx)
	if a == nil {
		// No request's answer (OPTIONS): a token of no partition, which
		// every successful answer carries.
		return (&partToken{}).format()
	}
	a.mu.Lock()
	touched := a.touched
	var t partToken
	if a.incoming != nil {
		t.parts, t.ctxs = slices.Clone(a.incoming.parts), slices.Clone(a.incoming.ctxs)
	}
	parts := make(map[int]crdt.Context, len(a.parts))
	for q, c := range a.parts {
		parts[q] = c.Clone()
	}
	a.mu.Unlock()
	for q, c := range parts {
		t.touch(q, &c)
	}
	if touched < 0 {
		// No partition touched (/v1/cluster): the request's token as it
		// came, with what the answer joined.
		return t.format()
	}
	if n := p.nodes[touched]; n != nil {
		c, err := crdt.ParseToken(n.TokenFor(ctx))
		if err == nil {
			t.touch(touched, &c)
		}
	}
	return t.format()
}

// ConcernCount is Node.ConcernCount (the same at every partition).
func (p *Partitions) ConcernCount(field, v string) (int, error) {
	return p.nodes[p.owned[0]].ConcernCount(field, v)
}

// AwaitReplicas is Node.AwaitReplicas at the partition the request
// touched (its local writes are there).
func (p *Partitions) AwaitReplicas(ctx context.Context) error {
	a := answerOf(ctx)
	if a == nil {
		return nil
	}
	a.mu.Lock()
	touched := a.touched
	a.mu.Unlock()
	if n := p.nodes[touched]; n != nil {
		return n.AwaitReplicas(ctx)
	}
	return nil
}

// Ready reports whether every partition served here is ready.
func (p *Partitions) Ready() bool {
	for _, n := range p.nodes {
		if !n.Ready() {
			return false
		}
	}
	return true
}

// Warnings lists every partition's warnings, each naming its partition.
func (p *Partitions) Warnings() []string {
	var out []string
	for _, part := range p.owned {
		for _, w := range p.nodes[part].Warnings() {
			out = append(out, "partition "+strconv.Itoa(part)+": "+w)
		}
	}
	return out
}

// Close closes every partition's node (not their stores).
func (p *Partitions) Close() {
	for _, n := range p.nodes {
		n.Close()
	}
}

// Cluster returns the body of GET /v1/cluster of a partitioned region's
// node: each partition's status, and at the top what holds for the node
// as a whole (catching up if any partition is, divergent keys of all,
// the stores' sizes summed, and per peer region its partitions' links
// summed up: connected only if every one is, the largest lag, the sums
// of pending work and traffic). The version vector at the top is empty:
// each partition has its own.
func (p *Partitions) Cluster() ClusterStatus {
	parts := make([]PartitionStatus, 0, len(p.owned))
	for _, part := range p.owned {
		parts = append(parts, PartitionStatus{Partition: part, ClusterStatus: p.nodes[part].Cluster()})
	}
	return GatherPartitions(p.region, p.node, p.count, parts)
}

// GatherPartitions returns the status of node of a partitioned region
// (count partitions in all) that serves parts, as Partitions.Cluster
// describes it; the console gathers every node of a region with it
// (node "").
func GatherPartitions(region, node string, count int, parts []PartitionStatus) ClusterStatus {
	st := ClusterStatus{Region: region, Node: node, PartitionCount: count,
		DivergentKeys: []string{}, VersionVector: map[string]uint64{}, Store: StoreStatus{CorruptKeys: []string{}}}
	peers := map[string]*PeerStatus{}
	var order []string
	for _, part := range parts {
		cs := part.ClusterStatus
		st.Partitions = append(st.Partitions, part)
		st.CatchingUp = st.CatchingUp || cs.CatchingUp
		st.DivergentKeys = append(st.DivergentKeys, cs.DivergentKeys...)
		st.Store.FileBytes += cs.Store.FileBytes
		st.Store.LiveBytes += cs.Store.LiveBytes
		st.Store.Durability = cs.Store.Durability
		st.Store.CorruptKeys = append(st.Store.CorruptKeys, cs.Store.CorruptKeys...)
		for _, ps := range cs.Peers {
			agg, ok := peers[ps.Region]
			if !ok {
				a := UnattachedPeer(ps.Region)
				a.Connected = true
				agg = &a
				peers[ps.Region] = agg
				order = append(order, ps.Region)
			}
			agg.Connected = agg.Connected && ps.Connected
			agg.PendingDeltas += ps.PendingDeltas
			agg.PendingBytes += ps.PendingBytes
			agg.InflightMessages += ps.InflightMessages
			agg.LagMs = max(agg.LagMs, ps.LagMs)
			if ps.AntiEntropy != "idle" {
				agg.AntiEntropy = ps.AntiEntropy
			}
			agg.AntiEntropyRounds += ps.AntiEntropyRounds
			agg.UnrepairedKeys = append(agg.UnrepairedKeys, ps.UnrepairedKeys...)
			agg.KeysPushed += ps.KeysPushed
			agg.KeysPulled += ps.KeysPulled
			agg.AntiEntropyRate = ps.AntiEntropyRate
			agg.BytesSent += ps.BytesSent
			agg.DeltaMessagesSent += ps.DeltaMessagesSent
			if ps.LastAck != nil && (agg.LastAck == nil || ps.LastAck.Before(*agg.LastAck)) {
				agg.LastAck = ps.LastAck
			}
			if ps.LastAntiEntropy != nil && (agg.LastAntiEntropy == nil || ps.LastAntiEntropy.Before(*agg.LastAntiEntropy)) {
				agg.LastAntiEntropy = ps.LastAntiEntropy
			}
		}
	}
	for _, name := range order {
		agg := peers[name]
		agg.UnrepairedKeys = firstKeys(agg.UnrepairedKeys, maxUnrepairedShown)
		st.Peers = append(st.Peers, *agg)
	}
	if st.Peers == nil {
		st.Peers = []PeerStatus{}
	}
	// Gathered from the partitions, the lists keep the bound each has.
	st.DivergentKeys = firstKeys(st.DivergentKeys, maxDivergent)
	return st
}

// maxUnrepairedShown bounds a peer's unrepaired keys in the status, as
// each partition's protocol bounds its own (protocol.MaxUnrepaired).
const maxUnrepairedShown = 64

// firstKeys returns the first n of keys in order (all of them, sorted,
// if there are no more).
func firstKeys(keys []string, n int) []string {
	slices.Sort(keys)
	if len(keys) > n {
		keys = keys[:n]
	}
	return keys
}
