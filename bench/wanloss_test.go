package bench

import (
	"context"
	"log/slog"
	"net"
	"testing"

	"github.com/latticedb/lattice/region/config"
	"github.com/latticedb/lattice/sync/wan"
)

// TestWANLossIndependentAcrossRegions: --seed seeds the emulated WAN's
// loss, and each packet's loss is drawn independently on every link: the
// regions' generators are streams of their own (derived from the seed and
// the node's name), so the k-th packet of one region is not lost exactly
// when the k-th packet of every other region is.
func TestWANLossIndependentAcrossRegions(t *testing.T) {
	ctx := context.Background()
	names := RegionNames(3)
	// No loss and no latency while the cluster starts: a Conn draws no
	// random number for a link without loss, jitter, duplication or
	// reordering, so every generator is still at its start.
	c, err := startCluster(ctx, t.TempDir(), names, layout{partitions: 1, nodes: 1}, nil, nil, 0, 7,
		config.DurabilityAlways, slog.New(slog.DiscardHandler), hooks{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.close()

	const n = 256
	patterns := make([][]bool, len(names))
	for i := range names {
		sink, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer sink.Close()
		w := c.nodes[i][0].wan()
		w.SetLink(sink.LocalAddr().String(), wan.Link{Loss: 0.5})
		for k := range n {
			before := w.Stats().LostPackets
			if _, err := w.WriteTo([]byte{byte(k)}, sink.LocalAddr()); err != nil {
				t.Fatal(err)
			}
			patterns[i] = append(patterns[i], w.Stats().LostPackets > before)
		}
	}
	for i := 1; i < len(names); i++ {
		same := 0
		for k := range n {
			if patterns[i][k] == patterns[0][k] {
				same++
			}
		}
		// Independent 50 % losses agree on about n/2 packets; 3/4 of them
		// is more than 8 standard deviations away.
		if same > n*3/4 {
			t.Errorf("%s and %s lost the same packets (%d of %d decisions equal): their WANs draw loss from one stream",
				names[0], names[i], same, n)
		}
	}
}
