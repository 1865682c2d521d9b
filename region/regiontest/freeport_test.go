package regiontest

import (
	"net"
	"strconv"
	"testing"
)

// TestFreePortBelowTheEphemeralRange: the ports handed out are below
// 32768, distinct from one call to the next, and free to listen on.
func TestFreePortBelowTheEphemeralRange(t *testing.T) {
	seen := map[string]bool{}
	for range 50 {
		for _, network := range []string{"tcp", "udp"} {
			addr := FreePort(t, network)
			_, p, err := net.SplitHostPort(addr)
			if err != nil {
				t.Fatal(err)
			}
			if port, _ := strconv.Atoi(p); port < freeFrom || port >= freeFrom+freeSpan || seen[addr] {
				t.Fatalf("FreePort(%s) = %s: outside %d-%d or handed out before", network, addr, freeFrom, freeFrom+freeSpan-1)
			}
			seen[addr] = true
			if network == "tcp" {
				ln, err := net.Listen("tcp", addr)
				if err != nil {
					t.Fatalf("%s is not free: %v", addr, err)
				}
				ln.Close()
			} else {
				pc, err := net.ListenPacket("udp", addr)
				if err != nil {
					t.Fatalf("%s is not free: %v", addr, err)
				}
				pc.Close()
			}
		}
	}
	if base := FreeRun("udp", 3); base < freeFrom || base+2 >= freeFrom+freeSpan {
		t.Fatalf("FreeRun = %d", base)
	}
}
