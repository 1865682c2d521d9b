package transport_test

import (
	"context"
	"log"
	"log/slog"
	"net"
	"time"

	"github.com/latticedb/lattice/sync/certs"
	"github.com/latticedb/lattice/sync/transport"
	"github.com/latticedb/lattice/sync/wan"
)

// Example wires one region of a cluster: certificates from
// `lattice certs`, a UDP socket behind an emulated WAN link, and a QUIC
// transport over it.
func Example() {
	bundle, err := certs.Load("./certs", "us-east")
	if err != nil {
		log.Fatal(err)
	}
	udp, err := net.ListenPacket("udp", "127.0.0.1:7201")
	if err != nil {
		log.Fatal(err)
	}

	// Optional: emulate the WAN (one Network shared by the regions of a
	// process, as in `lattice dev`).
	network := wan.NewNetwork(1)
	network.SetLink("us-east", "eu-west", wan.Link{Delay: 34 * time.Millisecond})
	pc := network.Attach("us-east", udp)

	cfg := transport.DefaultConfig()
	cfg.Region = "us-east"
	cfg.Peers = map[string]string{"eu-west": "127.0.0.1:7202"}
	cfg.Certs = bundle
	cfg.Logger = slog.Default()
	t, err := transport.NewQUIC(pc, cfg, transport.HandlerFuncs{
		Message: func(from string, payload []byte) { /* apply a delta */ },
		Call: func(ctx context.Context, from string, payload []byte) ([]byte, error) {
			return []byte("ok"), nil
		},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer t.Close()

	if t.Connected("eu-west") {
		_ = t.Send("eu-west", []byte("delta"))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_, _ = t.Call(ctx, "eu-west", []byte("reserve"))
}
