package replication

import (
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/latticedb/lattice/crdt"
	"github.com/latticedb/lattice/region"
	"github.com/latticedb/lattice/region/store"
	"github.com/latticedb/lattice/sync/protocol"
)

// mem18LiveHeap returns the live heap after a full collection.
func mem18LiveHeap() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// TestInboundQueueMemoryWithinMaxInboundBytes: messages received and not
// yet stepped are bounded by MaxInboundBytes (64 MiB) so that a loop held
// up (a slow store, a long step) holds back its peers instead of growing
// the heap. The queue counts each message by its payload's length but
// keeps it decoded: an anti-entropy push (KindObjects with the carts'
// states, what every repair ships) decodes into maps several times its
// encoding. With the loop paused, a peer fills the queue to the bound and
// the live heap it takes must stay near 64 MiB (a quarter more allowed).
func TestInboundQueueMemoryWithinMaxInboundBytes(t *testing.T) {
	for _, tc := range []struct {
		name string
		msg  func(t *testing.T) []byte
	}{
		{"anti-entropy push of carts", mem18ObjectsPush},
		{"acknowledgements", mem18Acks},
		// The push that repairs carts emptied by checkouts: each cart's
		// state is its context's cloud, 1-5 bytes a dot encoded and a
		// map entry decoded (crdt.CloudDotMem).
		{"anti-entropy push of checked-out carts", mem19CloudPush},
		// Many small items: one of a replica record, some 16 bytes
		// encoded, decodes to an Item and two maps' first slots, about
		// 600 bytes (crdt.KeyMem).
		{"anti-entropy push of many small items", mem19ManyItemsPush},
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

// mem18ObjectsPush returns an anti-entropy push as a region sends one
// (protocol.Message KindObjects with Group): carts of 4 lines added at
// three regions, within a quarter of the default MaxMessageBytes.
func mem18ObjectsPush(t *testing.T) []byte {
	g := &crdt.Group{}
	regions := []crdt.ReplicaID{"us-east", "eu-west", "ap-south"}
	for i := 0; i < 1000; i++ {
		var c crdt.Cart
		for k := range 4 {
			c.Join(c.Add(regions[k%3], fmt.Sprintf("sku-%06d-%d", i, k), int64(k+1)))
		}
		g.AddCart(fmt.Sprintf("cart-%08d", i), &c)
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

// mem18Acks returns an acknowledgement of MaxKeys tags (each tag below 24
// takes one byte on the wire and eight decoded).
func mem18Acks(t *testing.T) []byte {
	acks := make([]uint64, protocol.MaxKeys)
	for i := range acks {
		acks[i] = uint64(i % 24)
	}
	b, err := crdt.Marshal(&protocol.Message{Kind: protocol.KindAck, Acks: acks})
	if err != nil {
		t.Fatal(err)
	}
	return b
}
