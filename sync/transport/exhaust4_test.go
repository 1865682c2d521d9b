package transport

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/latticedb/lattice/sync/certs"
)

// stalled returns the bytes of b, then blocks until the test ends: a
// peer that announced a frame and sends no more of it.
type stalled struct {
	b       []byte
	waiting chan struct{} // closed once the reader asks past b
	done    chan struct{}
	once    sync.Once
}

func (s *stalled) Read(p []byte) (int, error) {
	if len(s.b) == 0 {
		s.once.Do(func() { close(s.waiting) })
		<-s.done
		return 0, io.ErrUnexpectedEOF
	}
	n := copy(p, s.b)
	s.b = s.b[n:]
	return n, nil
}

// TestMessageStreamDeclaredLengthNotPreallocated: a frame header that
// announces a 64 KiB message (plain, under either protocol) or the
// largest compressed frame, followed by nothing, costs the reader no
// more than readChunk (4 KiB) of buffer while it waits for the payload:
// memory follows the bytes a peer sends, not the lengths it announces (a
// named message stream has no read deadline). It held 64 KiB, and 64 KiB
// per stream of a peer that opened many message streams on its
// connection (now refused: TestSecondMessageStreamRefused).
func TestMessageStreamDeclaredLengthNotPreallocated(t *testing.T) {
	for _, tc := range []struct {
		name   string
		header []byte
		read   func(r io.Reader) error
	}{
		{"plain frame under " + certs.ALPN, binary.BigEndian.AppendUint32(nil, 64<<10),
			func(r io.Reader) error { _, err := readFrame(r, 1<<20); return err }},
		{"plain frame under " + certs.ALPNCompressed, binary.AppendUvarint(nil, (64<<10)<<1),
			func(r io.Reader) error { _, err := NewStreamDecoder(r, 1<<20).Next(); return err }},
		{"compressed frame under " + certs.ALPNCompressed, binary.AppendUvarint(nil, maxCompressedFrame<<1|1),
			func(r io.Reader) error { _, err := NewStreamDecoder(r, 1<<20).Next(); return err }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
			src := &stalled{b: slices.Clone(tc.header), waiting: make(chan struct{}), done: make(chan struct{})}
			var before, during runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			errc := make(chan error, 1)
			go func() { errc <- tc.read(src) }()
			// The reader takes the header and blocks on the payload.
			select {
			case <-src.waiting:
			case <-time.After(5 * time.Second):
				t.Fatal("the reader did not take the header")
			}
			runtime.ReadMemStats(&during)
			close(src.done)
			if err := <-errc; err == nil {
				t.Fatal("a frame cut short was read as whole")
			}
			if got := during.TotalAlloc - before.TotalAlloc; got > 8<<10+4096 {
				t.Fatalf("waiting for the payload of a frame that announced more after a %d-byte header: %d B allocated; want at most readChunk and the decoder's own buffers (12 KiB)", len(tc.header), got)
			}
		})
	}
}

// TestSecondMessageStreamRefused: a connection carries one message
// stream (its dialler opens it with the connection). A peer that opens
// more on its connection had each accepted, each with a decompressor of
// its own (about 45 KB, compress.go) for a few bytes sent, for as long
// as the connection lived: the second is refused now (reset with
// codeProtocol) and the first goes on.
func TestSecondMessageStreamRefused(t *testing.T) {
	m, conn := hostileSetup(t, certs.ALPNCompressed)
	hello := append([]byte{kindMessages, byte(len("ap-south"))}, "ap-south"...)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	first, err := conn.OpenStreamSync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer first.CancelWrite(0)
	if _, err := first.Write(hello); err != nil {
		t.Fatal(err)
	}
	first.SetReadDeadline(time.Now().Add(5 * time.Second))
	var ack [1]byte
	if _, err := io.ReadFull(first, ack[:]); err != nil || ack[0] != ackMessages {
		t.Fatalf("first message stream: acknowledgement %q, %v", ack[0], err)
	}
	expectReset(t, conn, hello, codeProtocol)
	// The first stream still carries messages.
	f, err := NewStreamEncoder(1024).Frame([]byte("msg"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := first.Write(f); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the first stream's message", func() bool { return m.rec["us-east"].count("ap-south") >= 1 })
	var se *quic.StreamError
	if _, err := first.Write(f); errors.As(err, &se) {
		t.Fatalf("the first message stream was reset: %v", err)
	}
}
