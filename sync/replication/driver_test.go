package replication_test

import (
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/latticedb/lattice/crdt"
	"github.com/latticedb/lattice/region"
	"github.com/latticedb/lattice/region/store"
	"github.com/latticedb/lattice/sync/protocol"
	"github.com/latticedb/lattice/sync/replication"
)

// countingNode is a region node that counts its transactions of remote
// applies and fails the failAt-th (1-based; 0: none).
type countingNode struct {
	*region.Node
	calls, failAt int
}

func (n *countingNode) ApplyGroup(dots *crdt.Context, g *crdt.Group, reflects *crdt.Context, state bool) error {
	n.calls++
	if n.calls == n.failAt {
		return errors.New("replication_test: the store fails")
	}
	return n.Node.ApplyGroup(dots, g, reflects, state)
}

// driverRig is us-east's protocol and node, run by a Driver whose sends
// are recorded: each send checks that the store already holds every dot
// the test handed the protocol so far and expects applied (persist before
// send).
type driverRig struct {
	t     *testing.T
	now   time.Time
	node  *countingNode
	proto *protocol.Protocol
	drv   *replication.Driver
	m     *replication.Metrics
	sent  []*protocol.Message
	want  crdt.Context // dots the store must hold before anything is sent
	// buckets is the protocol's digest bucket count.
	buckets int
}

func newDriverRig(t *testing.T, applyKeys int) *driverRig {
	st, err := region.OpenStore(":memory:", store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	n, err := region.NewNode(region.Options{Name: "us-east", Store: st, ExpiryInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	cfg := protocol.DefaultConfig()
	cfg.Buckets = n.DigestBuckets()
	r := &driverRig{t: t, now: time.Unix(1_800_000_000, 0), node: &countingNode{Node: n}, m: replication.NewMetrics(nil), buckets: cfg.Buckets}
	r.proto = protocol.New(n.Self(), []crdt.ReplicaID{"eu-west"}, n.Applied(), n, cfg)
	r.drv = &replication.Driver{Protocol: r.proto, Node: r.node, Peers: []string{"eu-west"}, ApplyKeys: applyKeys,
		Now: func() time.Time { return r.now }, Metrics: r.m, Send: r.send}
	r.proto.PeerUp("eu-west", r.now)
	if err := r.drv.Process(); err != nil { // the digest of the round a connection starts
		t.Fatal(err)
	}
	r.sent = nil
	return r
}

func (r *driverRig) send(to crdt.ReplicaID, m *protocol.Message, b []byte) error {
	if applied := r.node.Applied(); !applied.Covers(&r.want) {
		r.t.Errorf("a %s message to %s leaves while the store holds %v of %v", m.Kind, to, applied.VV, r.want.VV)
	}
	if got, err := protocol.Decode(b, r.buckets); err != nil || got.Kind != m.Kind {
		r.t.Errorf("sent %d bytes that do not decode to the %s message: %v", len(b), m.Kind, err)
	}
	r.sent = append(r.sent, m)
	return nil
}

// deliver hands the protocol eu-west's delta message tag carrying dots
// from..from+n-1, one cart each.
func (r *driverRig) deliver(tag, from, n uint64) {
	g := &crdt.Group{}
	for k := range n {
		var c crdt.Cart
		g.AddCart(fmt.Sprintf("c-%d", from+k), c.Add("eu-west", "sku", 1))
	}
	r.proto.Step("eu-west", &protocol.Message{Kind: protocol.KindDelta, Tag: tag, Group: g,
		Dots: []protocol.DotRange{{From: from, To: from + n - 1}}}, r.now)
}

// expect records dots from..to of eu-west as what the store must hold.
func (r *driverRig) expect(from, to uint64) {
	for k := from; k <= to; k++ {
		r.want.Insert(crdt.Dot{Replica: "eu-west", Counter: k})
	}
}

// acked returns the tags the sent acknowledgements carry, sorted.
func (r *driverRig) acked() []uint64 {
	var out []uint64
	for _, m := range r.sent {
		out = append(out, m.AckTags()...)
	}
	slices.Sort(out)
	return out
}

// TestDriverPersistsBeforeSend hands the protocol three delta messages and
// lets the driver carry out the Ready: with at most two keys per
// transaction, each delta (two keys) takes a store transaction of its own, and every message
// (acknowledgements included) leaves only once all three are durable.
func TestDriverPersistsBeforeSend(t *testing.T) {
	r := newDriverRig(t, 2)
	r.deliver(1, 1, 2)
	r.deliver(2, 3, 2)
	r.deliver(3, 5, 2)
	r.expect(1, 6)
	r.now = r.now.Add(time.Second)
	r.proto.Tick(r.now)
	if err := r.drv.Process(); err != nil {
		t.Fatal(err)
	}
	if r.node.calls != 3 {
		t.Errorf("%d store transactions for three deltas of two keys, at most two keys each", r.node.calls)
	}
	if got := r.acked(); !slices.Equal(got, []uint64{1, 2, 3}) {
		t.Errorf("acknowledged %v, want [1 2 3]", got)
	}
	if n := testutil.ToFloat64(r.m.MessagesSent.WithLabelValues("eu-west", protocol.KindAck.String())); n == 0 {
		t.Errorf("no acknowledgement counted as sent")
	}
}

// TestDriverSendsNothingWhenAnApplyFails fails the second of three store
// transactions: the first delta is durable, the error lists the other two
// as unapplied, nothing of the Ready is sent (no acknowledgement either),
// and the protocol takes the peer's retransmissions of the two for new and
// acknowledges all three once they are durable.
func TestDriverSendsNothingWhenAnApplyFails(t *testing.T) {
	r := newDriverRig(t, 2)
	r.node.failAt = 2
	r.deliver(1, 1, 2)
	r.deliver(2, 3, 2)
	r.deliver(3, 5, 2)
	r.expect(1, 2)
	r.now = r.now.Add(time.Second)
	r.proto.Tick(r.now)
	err := r.drv.Process()
	var ae *replication.ApplyError
	if !errors.As(err, &ae) || len(ae.Unapplied) != 2 || len(ae.Unapplied[0].Ranges) != 1 || ae.Unapplied[0].Ranges[0].From != 3 {
		t.Fatalf("Process: %v, want an *ApplyError with the second and third delta unapplied", err)
	}
	if len(r.sent) != 0 {
		t.Fatalf("sent %d messages of a Ready whose applies failed", len(r.sent))
	}
	if applied := r.node.Applied(); !applied.Covers(&r.want) || applied.Contains(crdt.Dot{Replica: "eu-west", Counter: 3}) {
		t.Fatalf("the store holds %v after the first of three transactions", applied.VV)
	}

	// No acknowledgement left: eu-west sends all three again, the first
	// one redundant now.
	r.deliver(1, 1, 2)
	r.deliver(2, 3, 2)
	r.deliver(3, 5, 2)
	r.expect(3, 6)
	r.now = r.now.Add(time.Second)
	r.proto.Tick(r.now)
	if err := r.drv.Process(); err != nil {
		t.Fatal(err)
	}
	if applied := r.node.Applied(); !applied.Covers(&r.want) {
		t.Fatalf("the store holds %v after the retransmissions, want %v", applied.VV, r.want.VV)
	}
	if got := r.acked(); !slices.Equal(got, []uint64{1, 2, 3}) {
		t.Errorf("acknowledged %v, want [1 2 3]", got)
	}
}
