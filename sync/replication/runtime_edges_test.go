package replication_test

import (
	"fmt"
	"math/rand/v2"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/latticedb/lattice/crdt"
	"github.com/latticedb/lattice/region"
	"github.com/latticedb/lattice/region/store"
	"github.com/latticedb/lattice/sync/protocol"
	"github.com/latticedb/lattice/sync/replication"
	"github.com/latticedb/lattice/sync/wan"
)

// recordingConn is a net.PacketConn that records, per destination, the
// packets written to it, in order. Writes to the address gate block until
// release is closed, signalling entered first.
type recordingConn struct {
	local   net.Addr
	gate    string
	entered chan struct{}
	release chan struct{}

	mu   sync.Mutex
	sent map[string][]string
}

func (c *recordingConn) WriteTo(p []byte, addr net.Addr) (int, error) {
	if addr.String() == c.gate {
		c.entered <- struct{}{}
		<-c.release
	}
	c.mu.Lock()
	c.sent[addr.String()] = append(c.sent[addr.String()], string(p))
	c.mu.Unlock()
	return len(p), nil
}

func (c *recordingConn) packets(addr string) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.sent[addr])
}

func (c *recordingConn) ReadFrom([]byte) (int, net.Addr, error) { select {} }
func (c *recordingConn) Close() error                           { return nil }
func (c *recordingConn) LocalAddr() net.Addr                    { return c.local }
func (c *recordingConn) SetDeadline(time.Time) error            { return nil }
func (c *recordingConn) SetReadDeadline(time.Time) error        { return nil }
func (c *recordingConn) SetWriteDeadline(time.Time) error       { return nil }

// TestWANDuplicationKeepsOrder: the emulated WAN keeps the order of the
// packets written to one destination unless the link asks for
// reordering; duplication is not reordering. On a link without delay
// whose first packet is duplicated and whose second is not, the second
// must not reach the wire before the first, however late the emulator's
// scheduler runs.
func TestWANDuplicationKeepsOrder(t *testing.T) {
	dst := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 7302}
	other := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 7303}
	pc := &recordingConn{local: &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 7301}, gate: other.String(),
		entered: make(chan struct{}, 1), release: make(chan struct{}), sent: map[string][]string{}}

	// A seed whose first duplication draw duplicates and whose second
	// does not (only Duplicate draws on these links).
	seed := uint64(1)
	for ; ; seed++ {
		r := rand.New(rand.NewPCG(seed, 0))
		if r.Float64() < 0.5 && r.Float64() >= 0.5 {
			break
		}
	}
	w := wan.Wrap(pc, wan.WithRand(rand.New(rand.NewPCG(seed, 0))),
		wan.WithLink(dst.String(), wan.Link{Duplicate: 0.5}),
		wan.WithLink(other.String(), wan.Link{Delay: time.Millisecond}))
	released := false
	release := func() {
		if !released {
			released = true
			close(pc.release)
		}
	}
	defer w.Close()
	defer release()

	// The scheduler is busy sending a delayed packet to another address.
	if _, err := w.WriteTo([]byte("x"), other); err != nil {
		t.Fatal(err)
	}
	select {
	case <-pc.entered:
	case <-time.After(5 * time.Second):
		t.Fatal("the delayed packet was never sent")
	}
	if _, err := w.WriteTo([]byte("first"), dst); err != nil {
		t.Fatal(err)
	}
	if _, err := w.WriteTo([]byte("second"), dst); err != nil {
		t.Fatal(err)
	}
	release()
	waitFor(t, 5*time.Second, "every packet sent", func() bool { return w.Pending() == 0 && len(pc.packets(dst.String())) == 3 })
	if st := w.Stats(); st.DuplicatedPackets != 1 {
		t.Fatalf("%d packets duplicated, want the first only", st.DuplicatedPackets)
	}
	if got := pc.packets(dst.String()); got[0] != "first" {
		t.Fatalf("packets reached %s in the order %q: the second overtook the first, on a link that does not reorder", dst, got)
	}
}

// TestPeerNamedOriginsDoNotGrowMetrics: a peer's delta messages name the
// origin of each dot range, a string the peer chooses. The convergence
// histogram is labelled by origin region; the regions of a cluster are
// fixed, so the series it holds must stay bounded by them, whatever
// origins a peer names (the SPEC: hostile input never exhausts memory).
// Here eu-west sends 64 small delta messages, each naming 64 origins of
// regions that are not in the cluster.
func TestPeerNamedOriginsDoNotGrowMetrics(t *testing.T) {
	st, err := region.OpenStore(":memory:", store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	node, err := region.NewNode(region.Options{Name: "us-east", Store: st, ExpiryInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer node.Close()
	m := replication.NewMetrics(nil)
	peers := []string{"eu-west", "ap-south"}
	m.InitPeers(peers)
	var applied atomic.Int64
	r := replication.New(replication.Options{Region: "us-east", Peers: peers, Metrics: m,
		OnApply: func(_ string, rs []protocol.DotRange, _ time.Time) { applied.Add(int64(len(rs))) }})
	if err := r.Check(node); err != nil {
		t.Fatal(err)
	}
	r.Start(node, silentTransport{})
	defer r.Close()

	const msgs, per = 64, 64
	for i := range msgs {
		g := &crdt.Group{}
		var c crdt.Cart
		g.AddCart(fmt.Sprintf("c-%d", i), c.Add("eu-west", "sku", 1))
		dots := make([]protocol.DotRange, 0, per)
		for k := range per {
			dots = append(dots, protocol.DotRange{Origin: fmt.Sprintf("zz%d-%d", i, k), From: 1, To: 1})
		}
		b, err := protocol.Encode(&protocol.Message{Kind: protocol.KindDelta, Tag: uint64(i + 1), Group: g, Dots: dots})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := protocol.Decode(b, node.DigestBuckets()); err != nil {
			t.Fatalf("message %d does not decode: %v", i, err)
		}
		r.OnMessage("eu-west", b)
	}
	waitFor(t, 20*time.Second, "the deltas applied", func() bool {
		g, err := node.ReadObjects([]string{fmt.Sprintf("c-%d", msgs-1)}, nil)
		return err == nil && g.Len() == 1
	})
	if n := applied.Load(); n != 0 {
		t.Errorf("OnApply was handed %d ranges of origins outside the cluster", n)
	}
	if n := testutil.CollectAndCount(m.Convergence); n > 3 {
		t.Fatalf("the convergence histogram holds %d series after %d small messages from one peer, for a cluster of 3 regions", n, msgs)
	}
}
