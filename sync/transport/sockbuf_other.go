//go:build !unix

package transport

import (
	"errors"
	"net"
)

// socketBuffers is not implemented on this system.
func socketBuffers(*net.UDPConn) (SocketBuffers, error) {
	return SocketBuffers{}, errors.New("transport: socket buffer sizes are not read on this system")
}
