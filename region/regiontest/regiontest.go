// Package regiontest holds helpers the tests of every Lattice package
// share. It imports nothing of the module, so any test may use it.
package regiontest

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// WaitFor polls cond until it holds, and fails t if it does not within d:
// tests wait on conditions with deadlines, never on sleeps. It polls
// every millisecond at first, backing off to every 20 ms.
func WaitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	wait := time.Millisecond
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		timer := time.NewTimer(wait)
		<-timer.C
		wait = min(2*wait, 20*time.Millisecond)
	}
}

// Loopback returns n TCP listeners on 127.0.0.1 (for regions' APIs) and n
// free UDP addresses on 127.0.0.1 (for their peer sockets, which the
// regions open themselves). The listeners are closed when t ends.
func Loopback(t testing.TB, n int) (apis []net.Listener, peers []string) {
	t.Helper()
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
		peers = append(peers, FreePort(t, "udp"))
		apis = append(apis, ln)
	}
	return apis, peers
}

// LogBuffer is a bytes.Buffer safe for the concurrent writes of a logger
// (a region's goroutines), which a test reads with String.
type LogBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *LogBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *LogBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// FreePort returns an address on 127.0.0.1 whose port is free for network
// ("tcp" or "udp") now, for a server the test starts to listen on. The
// port is taken below the kernel's ephemeral range (32768 and up on
// Linux): a port of that range, freed here, could be handed to another
// test's socket bound to port 0 before the server binds it. Each call
// takes the next port of a sequence that starts at a random place, and
// checks it is free.
func FreePort(t testing.TB, network string) string {
	t.Helper()
	for range 2000 {
		addr := fmt.Sprintf("127.0.0.1:%d", freeFrom+nextPort.Add(1)%freeSpan)
		var err error
		if network == "udp" {
			var pc net.PacketConn
			if pc, err = net.ListenPacket("udp", addr); err == nil {
				pc.Close()
			}
		} else {
			var ln net.Listener
			if ln, err = net.Listen("tcp", addr); err == nil {
				ln.Close()
			}
		}
		if err == nil {
			return addr
		}
	}
	t.Fatalf("no free %s port on 127.0.0.1 from %d to %d", network, freeFrom, freeFrom+freeSpan-1)
	return ""
}

// FreeRun returns the first of n consecutive ports, below the ephemeral
// range as FreePort's, that are free for network now; 0 if it found none.
func FreeRun(network string, n int) int {
	for range 200 {
		base := freeFrom + int(nextPort.Add(uint32(n))%(freeSpan-uint32(n)))
		ok := true
		for p := base; ok && p < base+n; p++ {
			addr := fmt.Sprintf("127.0.0.1:%d", p)
			if network == "udp" {
				pc, err := net.ListenPacket("udp", addr)
				if ok = err == nil; ok {
					pc.Close()
				}
			} else {
				ln, err := net.Listen("tcp", addr)
				if ok = err == nil; ok {
					ln.Close()
				}
			}
		}
		if ok {
			return base
		}
	}
	return 0
}

// The ports FreePort and FreeRun hand out: 20000-31999.
const (
	freeFrom = 20000
	freeSpan = 12000
)

// nextPort is FreePort's sequence.
var nextPort = func() *atomic.Uint32 {
	var n atomic.Uint32
	n.Store(uint32(rand.IntN(freeSpan)))
	return &n
}()
