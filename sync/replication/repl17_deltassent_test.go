package replication_test

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/latticedb/lattice/crdt"
	"github.com/latticedb/lattice/region"
	"github.com/latticedb/lattice/region/store"
	"github.com/latticedb/lattice/sync/protocol"
	"github.com/latticedb/lattice/sync/replication"
	"github.com/latticedb/lattice/sync/transport"
)

// TestDeltaMessagesSentCountsOnlySent: GET /v1/cluster's
// delta_messages_sent is "protocol bytes and delta messages sent to it"
// (docs/api.md), beside bytes_sent. A delta message the transport refuses
// (queue full) was not sent: bytes_sent and
// lattice_replication_messages_sent_total{kind="delta"} leave it out, and
// so must delta_messages_sent; once the protocol sends it again and the
// transport takes it, it counts once.
func TestDeltaMessagesSentCountsOnlySent(t *testing.T) {
	st, err := region.OpenStore(":memory:", store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	n, err := region.NewNode(region.Options{Name: "us-east", Store: st, ExpiryInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	cfg := protocol.DefaultConfig()
	cfg.Buckets = n.DigestBuckets()
	now := time.Unix(1_800_000_000, 0)
	proto := protocol.New(n.Self(), []crdt.ReplicaID{"eu-west"}, n.Applied(), n, cfg)
	m := replication.NewMetrics(nil)
	refuse := true
	drv := &replication.Driver{Protocol: proto, Node: n, Peers: []string{"eu-west"}, Metrics: m,
		Now: func() time.Time { return now },
		Send: func(to crdt.ReplicaID, msg *protocol.Message, b []byte) error {
			if refuse && msg.Kind == protocol.KindDelta {
				return transport.ErrQueueFull
			}
			return nil
		}}
	proto.PeerUp("eu-west", now)
	if err := drv.Process(); err != nil {
		t.Fatal(err)
	}

	g := &crdt.Group{}
	var c crdt.Cart
	g.AddCart("c1", c.Add(n.Self(), "book", 1))
	drv.Local(region.Delta{Origin: n.Self(), Seq: 1, Group: g, At: now}, now)
	if err := drv.Process(); err != nil {
		t.Fatal(err)
	}
	st0 := proto.Status()[0]
	sent := testutil.ToFloat64(m.MessagesSent.WithLabelValues("eu-west", protocol.KindDelta.String()))
	if st0.DeltasSent != uint64(sent) {
		t.Errorf("after a delta message the transport refused: delta_messages_sent %d, messages_sent_total{kind=delta} %v, bytes_sent %d",
			st0.DeltasSent, sent, st0.BytesSent)
	}

	// Sent again after RetransmitAfter, and taken.
	refuse = false
	now = now.Add(cfg.RetransmitAfter + time.Second)
	proto.Tick(now)
	if err := drv.Process(); err != nil {
		t.Fatal(err)
	}
	st1 := proto.Status()[0]
	sent = testutil.ToFloat64(m.MessagesSent.WithLabelValues("eu-west", protocol.KindDelta.String()))
	if sent != 1 || st1.DeltasSent != 1 {
		t.Errorf("after the delta message was sent once: delta_messages_sent %d, messages_sent_total{kind=delta} %v, want 1 and 1",
			st1.DeltasSent, sent)
	}
}
