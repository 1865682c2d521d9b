// Package regiontest holds helpers the tests of every Lattice package
// share. It imports nothing of the module, so any test may use it.
package regiontest

import (
	"bytes"
	"net"
	"sync"
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
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		peers = append(peers, pc.LocalAddr().String())
		pc.Close()
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
