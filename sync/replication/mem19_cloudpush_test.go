package replication

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/latticedb/lattice/crdt"
	"github.com/latticedb/lattice/region"
	"github.com/latticedb/lattice/region/store"
	"github.com/latticedb/lattice/sync/protocol"
)

// TestMem19InboundCloudPushWithinMaxInboundBytes: as
// TestInboundQueueMemoryWithinMaxInboundBytes, with the push that repairs
// carts emptied by checkouts: each cart's state is its context, the dots
// of the lines it once held (a cloud, the region's counters being shared
// by all its keys). A cloud dot is 3 bytes of encoding (counters below
// 65,536) and an entry of a map when decoded, far more than the 9 bytes
// a byte of encoding that inboundMem counts. The live heap of a full
// queue must stay near MaxInboundBytes (a quarter more allowed).
func TestMem19InboundCloudPushWithinMaxInboundBytes(t *testing.T) {
	for _, tc := range []struct {
		name string
		msg  func(t *testing.T) []byte
	}{
		{"anti-entropy push of checked-out carts", mem19CloudPush},
	} {
		t.Run(tc.name, func(t *testing.T) {
			payload := tc.msg(t)
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
			// The loop's clock stops it once armed: it has taken the
			// queue and reads the time, as a loop busy with a slow apply.
			var armed atomic.Bool
			paused, release := make(chan struct{}, 1), make(chan struct{})
			now := func() time.Time {
				if armed.Load() {
					select {
					case paused <- struct{}{}:
					default:
					}
					<-release
				}
				return time.Now()
			}
			r := New(Options{Region: "us-east", Peers: []string{"eu-west"}, Now: now})
			if err := r.Check(node); err != nil {
				t.Fatal(err)
			}
			if _, err := protocol.Decode(payload, r.opts.Protocol.Buckets); err != nil {
				t.Fatalf("the message does not decode: %v", err)
			}
			r.Start(node, silentTransport{})
			armed.Store(true)
			select {
			case <-paused:
			case <-time.After(10 * time.Second):
				t.Fatal("the loop did not pause")
			}
			fed := make(chan struct{})
			defer func() {
				// The queue is dropped unstepped; the loop, released once
				// the replicator stops, finds nothing more to do.
				r.mu.Lock()
				r.in, r.inSize = nil, 0
				r.mu.Unlock()
				go func() { <-r.stop; close(release) }()
				r.Close()
				<-fed
			}()

			base := mem18LiveHeap()
			go func() {
				defer close(fed)
				for {
					select {
					case <-r.stop:
						return
					default:
					}
					r.OnMessage("eu-west", payload)
				}
			}()
			var n, size int
			deadline := time.Now().Add(2 * time.Minute)
			for {
				r.mu.Lock()
				n, size = len(r.in), r.inSize
				r.mu.Unlock()
				if n >= MaxInbound || size >= MaxInboundBytes {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("the queue did not fill: %d messages, %d bytes", n, size)
				}
				time.Sleep(5 * time.Millisecond)
			}
			held := mem18LiveHeap() - base
			t.Logf("messages of %d bytes; queue: %d messages, %.1f MiB counted; live heap %.1f MiB",
				len(payload), n, float64(size)/(1<<20), float64(held)/(1<<20))
			if held > MaxInboundBytes*5/4 {
				t.Errorf("the inbound queue holds %.1f MiB of live heap (%d messages counted as %.1f MiB); bound MaxInboundBytes = 64 MiB",
					float64(held)/(1<<20), n, float64(size)/(1<<20))
			}
		})
	}
}

// mem19CloudPush returns an anti-entropy push of 40 carts emptied by a
// checkout of 1,000 lines each (their states: contexts of 1,000 dots
// apart), within a quarter of the default MaxMessageBytes.
func mem19CloudPush(t *testing.T) []byte {
	g := &crdt.Group{}
	for i := range 40 {
		var c crdt.Cart
		dots := make([]crdt.Dot, 1000)
		for k := range dots {
			dots[k] = crdt.Dot{Replica: "eu-west", Counter: uint64(300 + i%7 + 7*k)}
		}
		g.AddCart(fmt.Sprintf("cart-%08d", i), c.RemoveObserved(dots))
	}
	b, err := protocol.Encode(&protocol.Message{Kind: protocol.KindObjects, Round: 7, Step: 3, Of: 12345, Group: g})
	if err != nil {
		t.Fatal(err)
	}
	if len(b) > protocol.DefaultConfig().MaxMessageBytes/4 {
		t.Fatalf("push of %d bytes: larger than a region sends", len(b))
	}
	return b
}
