package transport

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Wire format, after the ALPN lattice-repl/1 or /2 is agreed. The dialing
// region opens every stream; the first byte names its kind:
//
//	'M' message stream: the acceptor answers one byte 'K' once it has taken
//	    the connection, then the dialer writes frames, each one message,
//	    for the life of the connection.
//	'C' call stream: a 4-byte big-endian timeout in milliseconds (0 for
//	    none) and one request frame; the acceptor answers a status byte
//	    (0 ok, 1 remote error) and one frame (the response, or the error
//	    text), then closes the stream.
//
// A frame is a 4-byte big-endian payload length and the payload; under
// lattice-repl/2 the message stream's frames are instead those of
// compress.go (calls keep these).
const (
	kindMessages byte = 'M'
	kindCall     byte = 'C'
	ackMessages  byte = 'K'

	statusOK    byte = 0
	statusError byte = 1

	frameHeaderLen = 4
)

// readChunk is how much a frame's buffer grows by before data for it has
// arrived: a peer that announces a large frame and sends nothing makes the
// reader allocate no more than this.
const readChunk = 4 << 10

// errFrameHeader reports a frame cut short inside its header.
var errFrameHeader = errors.New("transport: truncated frame header")

// writeFrame writes payload as one frame.
func writeFrame(w io.Writer, payload []byte, limit int) error {
	if len(payload) > limit {
		return fmt.Errorf("%w: %d bytes, max %d", ErrFrameTooLarge, len(payload), limit)
	}
	var hdr [frameHeaderLen]byte
	binary.BigEndian.PutUint32(hdr[:], uint32(len(payload)))
	if _, err := w.Write(hdr[:]); err != nil {
		return err
	}
	if len(payload) == 0 {
		return nil
	}
	_, err := w.Write(payload)
	return err
}

// readFrame reads one frame of at most limit payload bytes. It returns io.EOF
// if r ends cleanly before a frame, and ErrFrameTooLarge, without reading
// or allocating the payload, if the frame announces more than limit bytes.
// The buffer grows with the data that actually arrives.
func readFrame(r io.Reader, limit int) ([]byte, error) {
	var hdr [frameHeaderLen]byte
	if n, err := io.ReadFull(r, hdr[:]); err != nil {
		if n > 0 && errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, errFrameHeader
		}
		return nil, err
	}
	n := uint64(binary.BigEndian.Uint32(hdr[:]))
	if n > uint64(limit) {
		return nil, fmt.Errorf("%w: %d bytes announced, max %d", ErrFrameTooLarge, n, limit)
	}
	return readPayload(r, int(n))
}

// readPayload reads a payload of size bytes, growing its buffer with the
// data that actually arrives.
func readPayload(r io.Reader, size int) ([]byte, error) {
	if size <= readChunk {
		buf := make([]byte, size)
		if _, err := io.ReadFull(r, buf); err != nil {
			return nil, unexpected(err)
		}
		return buf, nil
	}
	buf := make([]byte, 0, readChunk)
	for len(buf) < size {
		want := min(size-len(buf), max(readChunk, len(buf)))
		if cap(buf)-len(buf) < want {
			grown := make([]byte, len(buf), len(buf)+want)
			copy(grown, buf)
			buf = grown
		}
		m, err := io.ReadFull(r, buf[len(buf):len(buf)+want])
		buf = buf[:len(buf)+m]
		if err != nil {
			return nil, unexpected(err)
		}
	}
	return buf, nil
}

func unexpected(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}
