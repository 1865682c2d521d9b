package replication

import (
	"context"
	"runtime"
	"testing"
	"time"

	"github.com/latticedb/lattice/crdt"
	"github.com/latticedb/lattice/region"
	"github.com/latticedb/lattice/region/store"
	"github.com/latticedb/lattice/sync/protocol"
	"github.com/latticedb/lattice/sync/transport"
)

type silentTransport struct{}

func (silentTransport) Send(string, []byte) error { return transport.ErrNotConnected }
func (silentTransport) Call(context.Context, string, []byte) ([]byte, error) {
	return nil, transport.ErrNotConnected
}
func (silentTransport) Connected(string) bool { return false }
func (silentTransport) Close() error          { return nil }

// TestInboundQueueIsBounded: the transport hands a peer's messages to
// Replicator.OnMessage one at a time and relies on a slow handler to hold
// the peer back through QUIC flow control. Messages waiting for the
// replication loop are bounded (MaxInbound): a peer that sends small valid
// messages faster than the loop steps them (far faster when each names
// many far-away dots) is made to wait instead of growing the queue.
func TestInboundQueueIsBounded(t *testing.T) {
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
	r := New(Options{Region: "us-east", Peers: []string{"eu-west", "ap-south"}})
	r.Start(node, silentTransport{})
	defer func() {
		// Let the loop finish the backlog before the store closes.
		r.Close()
		select {
		case <-r.done:
		case <-time.After(60 * time.Second):
		}
	}()

	// Small valid deltas (≈60 bytes), each naming a dot of a third region
	// far beyond what us-east has of it. (With ranges of 65,535 dots
	// instead, each costs the loop milliseconds to step, and the queue
	// grows by tens of thousands of messages a second.)
	var c crdt.Cart
	g := &crdt.Group{}
	g.AddCart("c1", c.Add("ap-south", "sku", 1))
	msg := func(tag uint64) []byte {
		from := 1_000_000 + tag*(1<<16)
		b, err := protocol.Encode(&protocol.Message{Kind: protocol.KindDelta, Tag: tag, Group: g,
			Dots: []protocol.DotRange{{Origin: "ap-south", From: from, To: from}}})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	if _, err := protocol.Decode(msg(1), r.opts.Protocol.Buckets); err != nil {
		t.Fatalf("probe message does not decode: %v", err)
	}

	const bound = MaxInbound
	peak := 0
	deadline := time.Now().Add(3 * time.Second)
	for tag := uint64(1); time.Now().Before(deadline) && peak <= bound; tag++ {
		r.OnMessage("eu-west", msg(tag))
		if tag%256 == 0 {
			r.mu.Lock()
			peak = max(peak, len(r.in))
			r.mu.Unlock()
			runtime.Gosched()
		}
	}
	if peak > bound {
		t.Fatalf("the replicator's inbound queue held %d messages from one peer, past its bound of %d", peak, bound)
	}
}
