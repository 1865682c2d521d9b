//go:build unix

package transport

import (
	"net"
	"syscall"
)

// socketBuffers reads the kernel's receive and send buffer sizes of c
// (Linux reports twice the size asked for, the bookkeeping included).
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
	return b, serr
}
