package transport

import (
	"fmt"
	"log/slog"
	"net"
)

// WantSocketBuffer is the UDP receive and send buffer size, in bytes,
// that quic-go asks the kernel for (it raises the socket's buffers to
// this when the system allows it): smaller buffers drop packets of a
// long fat link's bursts before QUIC sees them.
const WantSocketBuffer = 7 << 20

// SocketBuffers are a UDP socket's receive and send buffer sizes as the
// kernel reports them.
type SocketBuffers struct {
	Receive, Send int
}

// checkSocketBuffers logs a warning for each of pc's buffers smaller than
// WantSocketBuffer, naming the sysctl that raises its limit. A
// PacketConn that is not a UDP socket (an emulated WAN, a test's pipe)
// has no kernel buffers and is not checked.
func checkSocketBuffers(pc net.PacketConn, log *slog.Logger) {
	udp, ok := pc.(*net.UDPConn)
	if !ok {
		return
	}
	b, err := socketBuffers(udp)
	if err != nil {
		log.Warn("transport: could not read the UDP socket's buffer sizes", "err", err)
		return
	}
	for _, w := range bufferWarnings(b) {
		log.Warn(w)
	}
}

// bufferWarnings returns what to tell the operator of buffers b: one
// sentence per buffer below WantSocketBuffer, with the sysctl to set.
func bufferWarnings(b SocketBuffers) []string {
	var out []string
	for _, x := range []struct {
		what, sysctl string
		got          int
	}{
		{"receive", "net.core.rmem_max", b.Receive},
		{"send", "net.core.wmem_max", b.Send},
	} {
		if x.got < WantSocketBuffer {
			out = append(out, fmt.Sprintf("transport: the UDP %s buffer is %d KiB, below the %d KiB QUIC wants for links with a large bandwidth-delay product; raise the limit with sysctl -w %s=%d (and in /etc/sysctl.d to keep it) and restart the region",
				x.what, x.got>>10, WantSocketBuffer>>10, x.sysctl, WantSocketBuffer))
		}
	}
	return out
}
