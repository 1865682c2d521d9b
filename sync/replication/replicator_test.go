package replication_test

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/latticedb/lattice/crdt"
	"github.com/latticedb/lattice/region"
	"github.com/latticedb/lattice/sync/protocol"
	"github.com/latticedb/lattice/sync/replication"
)

// TestHostileMessagesAreRejected hands the replicator garbage, oversized
// and invalid frames as if a peer sent them: each is counted as rejected
// and dropped; nothing reaches the store.
func TestHostileMessagesAreRejected(t *testing.T) {
	m := replication.NewMetrics(nil)
	r := replication.New(replication.Options{Region: "us-east", Peers: []string{"eu-west"}, Metrics: m})
	defer r.Close()
	bad := protocol.Message{Kind: protocol.KindDelta, Tag: 1, Dots: []protocol.DotRange{{From: 9, To: 1}}, Group: &crdt.Group{}}
	invalid, err := protocol.Encode(&bad)
	if err != nil {
		t.Fatal(err)
	}
	frames := [][]byte{
		{0xff, 0x00, 0x13},
		make([]byte, protocol.MaxMessageBytes+1),
		invalid,
		{0xa1, 0x04, 0x82, 0x81, 0x82, 0x60, 0x80, 0x80}, // a group with an invalid cart id
	}
	for _, f := range frames {
		r.OnMessage("eu-west", f)
	}
	if got := testutil.ToFloat64(m.Rejected.WithLabelValues("eu-west")); got != float64(len(frames)) {
		t.Fatalf("rejected %v of %d hostile frames", got, len(frames))
	}
	// A forwarded request that is not a valid home request is refused
	// with an error, not a crash.
	if _, err := r.OnCall(bg, "eu-west", []byte{0x01, 0x02}); err == nil {
		t.Fatal("garbage home request accepted")
	}
	var _ region.Publisher = r
}
