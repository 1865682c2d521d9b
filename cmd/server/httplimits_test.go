package server

import (
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/latticedb/lattice/region/config"
)

// TestCloseBoundedWithUnreadBody: a GET carrying a causal token the
// region has not applied (Lattice-Wait 6000) and a declared one-byte body
// it never sends is in flight when the region stops with a shutdown
// timeout of 500 ms. Close closes the connection at the deadline, cancels
// the request, and returns soon after, not once the causal wait is over.
func TestCloseBoundedWithUnreadBody(t *testing.T) {
	const shutdown = 500 * time.Millisecond
	cfg := testConfig(t.TempDir(), config.DurabilityAlways)
	ln := mustListen(t)
	srv, err := Start(context.Background(), cfg, "us-east", Options{Listener: ln, Logger: testLogger(t), ShutdownTimeout: shutdown})
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("tcp", srv.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "GET /v1/carts/w HTTP/1.1\r\nHost: x\r\nLattice-Token: %s\r\nLattice-Wait: 6000\r\nContent-Length: 1\r\n\r\n", aheadToken())
	waitFor(t, 10*time.Second, "the request to arrive", func() bool { return srv.inflight.Load() > 0 })
	start := time.Now()
	done := make(chan error, 1)
	go func() { done <- srv.Close() }()
	select {
	case <-done:
		t.Logf("Close took %v", time.Since(start))
	case <-time.After(shutdown + 2*time.Second):
		<-done
		t.Fatalf("Close took %v with a shutdown timeout of %v: after closing the hung client's connection it still waited for its handler, whose context was never cancelled", time.Since(start), shutdown)
	}
}
