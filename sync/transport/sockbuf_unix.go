//go:build unix

package transport

import (
	"net"
	"runtime"
	"syscall"
)

// socketBuffers reads the kernel's receive and send buffer sizes of c, as
// granted: Linux reports twice the size it granted (the bookkeeping
// included), so a buffer capped at net.core.rmem_max = 4 MiB reads 8 MiB
// there; the sizes returned are halved on Linux.
func socketBuffers(c *net.UDPConn) (SocketBuffers, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return SocketBuffers{}, err
	}
	var b SocketBuffers
	var serr error
	if err := raw.Control(func(fd uintptr) {
		if b.Receive, serr = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF); serr != nil {
			return
		}
		b.Send, serr = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_SNDBUF)
	}); err != nil {
		return SocketBuffers{}, err
	}
	if runtime.GOOS == "linux" {
		b.Receive, b.Send = b.Receive/2, b.Send/2
	}
	return b, serr
}
