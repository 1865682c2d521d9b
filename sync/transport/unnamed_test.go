package transport

import (
	"context"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
)

// TestUnnamedConnectionsAreDropped: a peer authenticated by its region
// certificate that opens connections and never names itself on a message
// stream does not keep them: each is closed once twice the handshake
// timeout passes without a name (a named one is replaced by the peer's next, so
// unnamed ones would otherwise pile up, each with its goroutine, QUIC
// state and buffered stream data).
func TestUnnamedConnectionsAreDropped(t *testing.T) {
	dir := genCerts(t, threeRegions...)
	pcUS := udp(t)
	raw := &quic.Transport{Conn: udp(t)}
	t.Cleanup(func() { raw.Close() })
	cfgUS, _ := testConfig(t, dir, "us-east", map[string]string{"ap-south": raw.Conn.LocalAddr().String()})
	us := start(t, pcUS, cfgUS, newRecorder())

	const n = 20
	conns := make([]*quic.Conn, 0, n)
	for range n {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		tc := loadBundle(t, dir, "ap-south").ClientTLS("us-east")
		conn, err := raw.Dial(ctx, pcUS.LocalAddr(), tc, &quic.Config{KeepAlivePeriod: 100 * time.Millisecond, MaxIdleTimeout: 2 * time.Second})
		cancel()
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		t.Cleanup(func() { conn.CloseWithError(0, "") })
		conns = append(conns, conn)
	}
	// A real region opens and names its message stream within the
	// handshake timeout (its dial waits that long for the answer).
	deadline := time.Now().Add(4 * us.cfg.HandshakeTimeout)
	for {
		alive := 0
		for _, c := range conns {
			if c.Context().Err() == nil {
				alive++
			}
		}
		if alive == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d connections from ap-south that never named themselves on a message stream are still open after %v (HandshakeTimeout %v)",
				alive, n, 4*us.cfg.HandshakeTimeout, us.cfg.HandshakeTimeout)
		}
		select {
		case <-conns[0].Context().Done():
		case <-time.After(50 * time.Millisecond):
		}
	}
}
