package transport

import (
	"net"
	"runtime"
	"strings"
	"testing"
)

// TestBufferWarningsNameTheSysctl checks that a buffer below
// WantSocketBuffer is reported with the sysctl that raises it, and a large
// enough one is not.
func TestBufferWarningsNameTheSysctl(t *testing.T) {
	w := bufferWarnings(SocketBuffers{Receive: 208 << 10, Send: WantSocketBuffer})
	if len(w) != 1 || !strings.Contains(w[0], "sysctl -w net.core.rmem_max=7340032") || !strings.Contains(w[0], "208 KiB") {
		t.Fatalf("warnings %q, want one naming net.core.rmem_max", w)
	}
	w = bufferWarnings(SocketBuffers{Receive: WantSocketBuffer, Send: 1 << 10})
	if len(w) != 1 || !strings.Contains(w[0], "sysctl -w net.core.wmem_max=7340032") {
		t.Fatalf("warnings %q, want one naming net.core.wmem_max", w)
	}
	if w := bufferWarnings(SocketBuffers{Receive: WantSocketBuffer, Send: WantSocketBuffer}); len(w) != 0 {
		t.Fatalf("warnings %q for buffers large enough", w)
	}
}

// TestSocketBuffersRead checks that the sizes of a real UDP socket are
// read (positive) on this system.
func TestSocketBuffersRead(t *testing.T) {
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	b, err := socketBuffers(c)
	if err != nil {
		t.Fatal(err)
	}
	if b.Receive <= 0 || b.Send <= 0 {
		t.Fatalf("buffers %+v", b)
	}
}

// TestSocketBuffersAsGranted: Linux reports twice the buffer size it
// granted; socketBuffers gives the granted size, which is what the
// warning compares with WantSocketBuffer (reading the doubled size, a
// limit of 4 MiB passed for the 7 MiB wanted).
func TestSocketBuffersAsGranted(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the doubled report is Linux's")
	}
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const size = 64 << 10 // below any rmem_max and above rmem's minimum
	if err := c.SetReadBuffer(size); err != nil {
		t.Fatal(err)
	}
	if err := c.SetWriteBuffer(size); err != nil {
		t.Fatal(err)
	}
	b, err := socketBuffers(c)
	if err != nil {
		t.Fatal(err)
	}
	if b.Receive != size || b.Send != size {
		t.Fatalf("buffers set to %d bytes read as %+v", size, b)
	}
}
