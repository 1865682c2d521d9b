package transport

import (
	"bufio"
	"bytes"
	"compress/flate"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Compressed message streams (ALPN lattice-repl/2).
//
// Consecutive replication messages to a peer repeat most of what they
// carry: the map keys and tags of the envelope, the acknowledgements that
// advance by one, the replica names, the key prefixes and the cart and sku
// names that are being written. Under lattice-repl/2 the message stream
// is one DEFLATE stream (RFC 1951) for the life of the connection,
// flushed after every message: each message is compressed against the
// last 32 KiB of the messages before it, as permessage-deflate with
// context takeover does for WebSocket (RFC 7692). A stream is ordered and
// reliable, so the receiver's window is always the sender's.
//
// Each message is one frame:
//
//	uvarint(n<<1 | c), then n bytes.
//
// With c = 0 the n bytes are the message itself (a message of more than
// MaxInflated bytes, which stays out of the compressed stream). With c = 1
// they are uvarint(m), the message's length (1 ≤ m ≤ MaxInflated), and
// the DEFLATE bytes that a sync flush produced for it, less the four
// bytes 00 00 ff ff that end every sync flush (the receiver adds them
// back).
//
// Memory: the sender keeps a compressor per stream (about 0.8 MB); the
// receiver keeps a decompressor (about 45 KB), and a frame makes it
// allocate its n bytes and its message's m, so at most MaxInflated plus
// the frame for a compressed frame, however small the frame.
const (
	// MaxInflated is the largest message sent compressed.
	MaxInflated = 64 << 10
	// compressLevel trades the sender's CPU for bytes: levels 2 to 9
	// match against the window (level 1, Go's fast path, matches little
	// across flushes of small messages). See BenchmarkStreamEncoder.
	compressLevel = 2
	// maxCompressedFrame bounds a compressed frame: DEFLATE grows
	// incompressible data by 5 bytes a stored block of up to 65,535.
	maxCompressedFrame = MaxInflated + 64
)

// maxLeftover bounds what a frame may leave unread (see Next): the 4
// bytes of the empty block's lengths, the byte of its header, and the
// end-of-block code of the block before it (up to 15 bits, so 3 bytes).
const maxLeftover = 4 + 1 + 3

// syncTail ends every sync flush of DEFLATE: an empty stored block's
// lengths.
var syncTail = []byte{0, 0, 0xff, 0xff}

// errCompressed reports a compressed frame that does not decode to what
// it announces.
var errCompressed = errors.New("transport: bad compressed frame")

// StreamEncoder frames the messages of one compressed stream. Not safe
// for concurrent use.
type StreamEncoder struct {
	limit int
	fw    *flate.Writer
	body  bytes.Buffer // the compressor's output
	out   []byte
}

// NewStreamEncoder returns an encoder for one stream whose messages are
// at most limit bytes.
func NewStreamEncoder(limit int) *StreamEncoder {
	e := &StreamEncoder{limit: limit}
	fw, err := flate.NewWriter(&e.body, compressLevel)
	if err != nil {
		panic(err) // compressLevel is valid
	}
	e.fw = fw
	return e
}

// Frame returns payload's frame, valid until the next call. Every frame
// it returns must be sent, in order: the next ones are compressed against
// it.
func (e *StreamEncoder) Frame(payload []byte) ([]byte, error) {
	if len(payload) > e.limit {
		return nil, fmt.Errorf("%w: %d bytes, max %d", ErrFrameTooLarge, len(payload), e.limit)
	}
	e.out = e.out[:0]
	if len(payload) == 0 || len(payload) > MaxInflated {
		e.out = binary.AppendUvarint(e.out, uint64(len(payload))<<1)
		e.out = append(e.out, payload...)
		return e.out, nil
	}
	e.body.Reset()
	var m [binary.MaxVarintLen64]byte
	e.body.Write(m[:binary.PutUvarint(m[:], uint64(len(payload)))])
	e.fw.Write(payload) // writes to a bytes.Buffer, which never fails
	e.fw.Flush()
	b, ok := bytes.CutSuffix(e.body.Bytes(), syncTail)
	if !ok {
		return nil, errors.New("transport: compressor did not end with a sync flush")
	}
	e.out = binary.AppendUvarint(e.out, uint64(len(b))<<1|1)
	e.out = append(e.out, b...)
	return e.out, nil
}

// StreamDecoder reads the messages of one compressed stream. Not safe for
// concurrent use.
type StreamDecoder struct {
	r     *bufio.Reader
	limit int
	feed  feeder
	fr    io.Reader // created with the first compressed frame
}

// NewStreamDecoder returns a decoder of the stream r, whose messages are
// at most limit bytes.
func NewStreamDecoder(r io.Reader, limit int) *StreamDecoder {
	return &StreamDecoder{r: bufio.NewReaderSize(r, 4096), limit: limit}
}

// Next returns the next message. It returns io.EOF if the stream ends
// cleanly before a frame, and ErrFrameTooLarge, without reading the
// payload, if a frame announces more than the limit. After any other
// error the stream cannot be read further.
func (d *StreamDecoder) Next() ([]byte, error) {
	h, err := binary.ReadUvarint(d.r)
	if err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, errFrameHeader
		}
		if errors.Is(err, io.EOF) {
			return nil, io.EOF
		}
		return nil, fmt.Errorf("transport: frame header: %w", err)
	}
	n := h >> 1
	if h&1 == 0 {
		if n > uint64(d.limit) {
			return nil, fmt.Errorf("%w: %d bytes announced, max %d", ErrFrameTooLarge, n, d.limit)
		}
		return readPayload(d.r, int(n))
	}
	if n > maxCompressedFrame || n > uint64(d.limit)+64 {
		return nil, fmt.Errorf("%w: compressed frame of %d bytes, max %d", ErrFrameTooLarge, n, maxCompressedFrame)
	}
	body, err := readPayload(d.r, int(n)) // grown as the bytes arrive
	if err != nil {
		return nil, err
	}
	m, k := binary.Uvarint(body)
	if k > 0 && m > uint64(d.limit) {
		return nil, fmt.Errorf("%w: %d bytes announced, max %d", ErrFrameTooLarge, m, d.limit)
	}
	if k <= 0 || m == 0 || m > MaxInflated {
		return nil, fmt.Errorf("%w: announced length", errCompressed)
	}
	// What an earlier frame left unread is the end of its last block
	// and the sync flush's empty block: the 4 bytes of its lengths (added
	// below), the byte holding its header and, when the message ended
	// exactly where the decompressor's window filled (it hands the data
	// out before reading on), the end-of-block code before it. More
	// means a frame that decoded to less than it held.
	if d.feed.len() > maxLeftover {
		return nil, fmt.Errorf("%w: %d bytes left over", errCompressed, d.feed.len())
	}
	d.feed.add(body[k:])
	d.feed.add(syncTail)
	if d.fr == nil {
		d.fr = flate.NewReader(&d.feed)
	}
	// Reads ask for one byte more than announced: the decompressor hands
	// out a block's data as soon as it has it, so a frame holding more
	// in its last block shows here (and more in a further block stays in
	// the feed, seen above at the next frame).
	// The output grows with what inflates (doubling from 4 KiB), not to
	// the announced length at once: a few bytes announcing megabytes
	// cost what they inflate to.
	out := make([]byte, min(int(m)+1, readChunk))
	for have := 0; have < int(m); {
		if have == len(out) {
			grown := make([]byte, min(int(m)+1, 2*len(out)))
			copy(grown, out)
			out = grown
		}
		n, err := d.fr.Read(out[have:])
		have += n
		switch {
		case have > int(m):
			return nil, fmt.Errorf("%w: more than the %d bytes announced", errCompressed, m)
		case err != nil && have < int(m):
			return nil, fmt.Errorf("%w: %v", errCompressed, err)
		}
	}
	return out[:m:m], nil
}

// feeder hands the decompressor the compressed bytes of the frames
// received so far, and fails when it asks for more: a frame must hold
// its whole message.
type feeder struct {
	buf []byte
	pos int
}

var errFeedEmpty = errors.New("frame ends inside its message")

func (f *feeder) len() int { return len(f.buf) - f.pos }

// add appends b to what is unread, first moving that (a few bytes: see
// maxLeftover) to the front, so that the buffer holds one frame at most.
func (f *feeder) add(b []byte) {
	if f.pos > 0 {
		n := copy(f.buf, f.buf[f.pos:])
		f.buf, f.pos = f.buf[:n], 0
	}
	f.buf = append(f.buf, b...)
}

func (f *feeder) Read(p []byte) (int, error) {
	if f.pos == len(f.buf) {
		return 0, errFeedEmpty
	}
	n := copy(p, f.buf[f.pos:])
	f.pos += n
	return n, nil
}

func (f *feeder) ReadByte() (byte, error) {
	if f.pos == len(f.buf) {
		return 0, errFeedEmpty
	}
	b := f.buf[f.pos]
	f.pos++
	return b, nil
}
