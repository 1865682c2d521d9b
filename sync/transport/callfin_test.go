package transport

import (
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"testing"
	"time"

	"github.com/latticedb/lattice/sync/certs"
)

// TestCallStreamsReturnTheirCreditWhenTheEndComesLate: a peer's call
// stream counts against MaxIncomingStreams until the callee's side of it
// is done, and QUIC ends a receive side only once its end (FIN) has been
// read, or reading was cancelled. A caller whose end of stream reaches
// the callee after the request itself (the last data left in one packet,
// the FIN in the next) must not cost a stream for good: here ap-south
// makes twice MaxIncomingStreams calls one after another, each closing
// its side only once it has the answer, and every call is answered.
// Before, the callee read the request's frame and never the FIN after
// it, and the 129th call could not open its stream.
func TestCallStreamsReturnTheirCreditWhenTheEndComesLate(t *testing.T) {
	m, conn := hostileSetup(t, certs.ALPN)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// Calls are served once the peer's message stream is acknowledged.
	ms, err := conn.OpenStreamSync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	hello := append([]byte{kindMessages, byte(len("ap-south"))}, "ap-south"...)
	if _, err := ms.Write(append(hello, 0, 0, 0, 2, 'o', 'k')); err != nil {
		t.Fatal(err)
	}
	ms.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(ms, make([]byte, 1)); err != nil {
		t.Fatalf("no acknowledgement of the message stream: %v", err)
	}

	calls := 2 * int(m.tr["us-east"].cfg.MaxIncomingStreams)
	for i := range calls {
		octx, ocancel := context.WithTimeout(ctx, 5*time.Second)
		s, err := conn.OpenStreamSync(octx)
		ocancel()
		if err != nil {
			t.Fatalf("call %d of %d: no stream to open: %v", i+1, calls, err)
		}
		req := binary.BigEndian.AppendUint32([]byte{kindCall, 0, 0, 0x13, 0x88}, 4) // 5 s
		if _, err := s.Write(append(req, "ping"...)); err != nil {
			t.Fatalf("call %d: %v", i+1, err)
		}
		s.SetReadDeadline(time.Now().Add(5 * time.Second))
		var status [1]byte
		if _, err := io.ReadFull(s, status[:]); err != nil || status[0] != statusOK {
			t.Fatalf("call %d: status %d, %v", i+1, status[0], err)
		}
		body, err := readFrame(s, 1<<20)
		if err != nil || !bytes.Equal(body, []byte("echo:ap-south:ping")) {
			t.Fatalf("call %d: answer %q, %v", i+1, body, err)
		}
		s.Close() // the end of the request, after its answer
		io.Copy(io.Discard, s)
	}
}
