package transport

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"runtime"
	"testing"
)

// streamMessages returns messages like a replication stream's: short
// ones that repeat most of their bytes with small changes, some random
// (incompressible) ones, an empty one and some larger than MaxInflated.
func streamMessages(seed uint64, n int) [][]byte {
	r := rand.New(rand.NewPCG(seed, seed))
	var msgs [][]byte
	for i := range n {
		var m []byte
		switch k := r.IntN(20); {
		case k == 0:
			m = nil
		case k == 1:
			m = make([]byte, MaxInflated+1+r.IntN(3*MaxInflated))
			for j := range m {
				m[j] = byte(r.Uint32())
			}
		case k == 2:
			m = make([]byte, MaxInflated) // the largest compressed one
			for j := range m {
				m[j] = byte(r.Uint32())
			}
		case k < 6:
			m = make([]byte, 1+r.IntN(2000))
			for j := range m {
				m[j] = byte(r.Uint32())
			}
		default:
			m = fmt.Appendf(nil, "\xa3\x02\x1a\x28\x98%04x\x15\x81\x84\x60%d\x00\x00\x16cart-%d/sku-%d", i, i, r.IntN(50), r.IntN(8))
		}
		msgs = append(msgs, m)
	}
	return msgs
}

// TestStreamRoundTrip sends messages through an encoder and reads them
// back through a decoder, and checks that the repeated messages shrink.
func TestStreamRoundTrip(t *testing.T) {
	for seed := uint64(7); seed < 12; seed++ {
		testStreamRoundTrip(t, seed)
	}
}

func testStreamRoundTrip(t *testing.T, seed uint64) {
	msgs := streamMessages(seed, 2000)
	frames := roundTrip(t, fmt.Sprintf("seed %d", seed), msgs)
	small, smallWire := 0, 0
	for i, m := range msgs {
		if len(m) > 0 && len(m) < 64 && m[0] == 0xa3 {
			small += len(m)
			smallWire += frames[i]
		}
	}
	if ratio := float64(smallWire) / float64(small); ratio > 0.6 {
		t.Fatalf("repeated messages framed at %.2f of their size, want < 0.6", ratio)
	}
	t.Logf("repeated messages: %d bytes framed as %d (%.2f)", small, smallWire, float64(smallWire)/float64(small))
}

// roundTrip frames msgs with one encoder, reads them back with one
// decoder and checks that each arrives whole, in order, that the stream
// then ends, and that the decoder's feed never holds more than a frame.
// It returns each message's frame size.
func roundTrip(t *testing.T, what string, msgs [][]byte) []int {
	t.Helper()
	var wire bytes.Buffer
	e := NewStreamEncoder(1 << 20)
	sizes := make([]int, len(msgs))
	for i, m := range msgs {
		f, err := e.Frame(m)
		if err != nil {
			t.Fatalf("%s: message %d: %v", what, i, err)
		}
		sizes[i] = len(f)
		wire.Write(f)
	}
	d := NewStreamDecoder(&wire, 1<<20)
	for i, want := range msgs {
		got, err := d.Next()
		if err != nil {
			t.Fatalf("%s: message %d: %v", what, i, err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("%s: message %d differs", what, i)
		}
		if cap(d.feed.buf) > 2*(maxCompressedFrame+maxLeftover) {
			t.Fatalf("%s: message %d: the feed's buffer grew to %d bytes", what, i, cap(d.feed.buf))
		}
	}
	if _, err := d.Next(); err != io.EOF {
		t.Fatalf("%s: after the last frame: %v, want io.EOF", what, err)
	}
	return sizes
}

// TestStreamDecoderRefuses checks that frames a sender would not make
// are refused, and that their announced sizes are not allocated.
func TestStreamDecoderRefuses(t *testing.T) {
	good := func(msgs ...string) []byte {
		e := NewStreamEncoder(1 << 20)
		var b []byte
		for _, m := range msgs {
			f, err := e.Frame([]byte(m))
			if err != nil {
				t.Fatal(err)
			}
			b = append(b, f...)
		}
		return b
	}
	hdr := func(n uint64, c uint64) []byte { return binary.AppendUvarint(nil, n<<1|c) }
	one := good("hello, hello, hello")
	cases := []struct {
		name  string
		in    []byte
		want  error
		limit int
	}{
		{"raw frame over the limit", hdr(1<<30, 0), ErrFrameTooLarge, 1 << 20},
		{"compressed frame over its bound", hdr(maxCompressedFrame+1, 1), ErrFrameTooLarge, 1 << 20},
		{"header cut short", []byte{0x80}, errFrameHeader, 1 << 20},
		{"header overflows", bytes.Repeat([]byte{0xff}, 11), nil, 1 << 20},
		{"payload cut short", append(hdr(10, 0), 1, 2, 3), io.ErrUnexpectedEOF, 1 << 20},
		{"announced length zero", append(hdr(2, 1), 0, 0), errCompressed, 1 << 20},
		{"announced length over MaxInflated", append(hdr(3, 1), binary.AppendUvarint(nil, MaxInflated+1)...), errCompressed, 1 << 20},
		{"announced length over the limit", append(hdr(2, 1), binary.AppendUvarint(nil, 1000)...), ErrFrameTooLarge, 100},
		{"not DEFLATE", append(hdr(4, 1), 5, 0xff, 0xff, 0xff), errCompressed, 1 << 20},
		{"announces more than it holds", func() []byte {
			b := bytes.Clone(one)
			// one is uvarint header, uvarint(19), deflate: say 25.
			_, k := binary.Uvarint(b)
			b[k] = 25
			return b
		}(), errCompressed, 1 << 20},
		{"announces less than it holds", func() []byte {
			b := bytes.Clone(one)
			_, k := binary.Uvarint(b)
			b[k] = 5
			return append(b, good("x")...)
		}(), errCompressed, 1 << 20},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d := NewStreamDecoder(bytes.NewReader(c.in), c.limit)
			var err error
			for range 3 {
				if _, err = d.Next(); err != nil {
					break
				}
			}
			if err == nil || err == io.EOF {
				t.Fatalf("read without error (%v)", err)
			}
			if c.want != nil && !errors.Is(err, c.want) {
				t.Fatalf("error %v, want %v", err, c.want)
			}
		})
	}
}

// TestStreamDecoderAllocatesWithData checks that a frame announcing a
// large raw payload makes the decoder allocate no more than arrives (in
// readChunk steps), as readFrame does.
func TestStreamDecoderAllocatesWithData(t *testing.T) {
	in := append(binary.AppendUvarint(nil, uint64(1<<20)<<1), make([]byte, 10)...)
	var ms0, ms1 runtime.MemStats
	runtime.ReadMemStats(&ms0)
	for range 10 {
		d := NewStreamDecoder(bytes.NewReader(in), 1<<20)
		if _, err := d.Next(); !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("error %v, want io.ErrUnexpectedEOF", err)
		}
	}
	runtime.ReadMemStats(&ms1)
	if per := (ms1.TotalAlloc - ms0.TotalAlloc) / 10; per > readChunk+16<<10 {
		t.Fatalf("a 10-byte frame announcing 1 MiB allocated %d bytes", per)
	}
}

// FuzzStreamDecoder feeds the decoder arbitrary streams: it must return
// an error or messages within its limit (4 KiB here, so that each run
// allocates little and the fuzzer's minimization stays quick), never
// panic or spin.
func FuzzStreamDecoder(f *testing.F) {
	const limit = 1 << 12
	e := NewStreamEncoder(limit)
	var seed []byte
	for _, m := range streamMessages(3, 20) {
		if len(m) > 4096 {
			continue
		}
		fr, _ := e.Frame(m)
		seed = append(seed, fr...)
	}
	f.Add(seed)
	f.Add([]byte{})
	f.Add([]byte{3, 5, 0xff})
	f.Fuzz(func(t *testing.T, in []byte) {
		d := NewStreamDecoder(bytes.NewReader(in), limit)
		for range 64 {
			m, err := d.Next()
			if err != nil {
				return
			}
			if len(m) > limit {
				t.Fatalf("message of %d bytes over the limit", len(m))
			}
		}
	})
}

// BenchmarkStreamEncoder measures the sender's cost of compressing a
// stream of short replication-like messages, and the bytes it frames
// them in.
func BenchmarkStreamEncoder(b *testing.B) {
	var msgs [][]byte
	for _, m := range streamMessages(1, 4096) {
		if len(m) > 0 && m[0] == 0xa3 {
			msgs = append(msgs, m)
		}
	}
	e := NewStreamEncoder(1 << 20)
	in, out := 0, 0
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		m := msgs[i%len(msgs)]
		f, err := e.Frame(m)
		if err != nil {
			b.Fatal(err)
		}
		in += len(m)
		out += len(f)
	}
	b.ReportMetric(float64(out)/float64(in), "framed/raw")
}

// TestStreamWindowBoundary sends messages that end exactly where the
// decompressor's 32 KiB window fills: it hands out the message before it
// has read the end of its block, so the next frame finds a few more of
// the previous frame's bytes unread than usual.
func TestStreamWindowBoundary(t *testing.T) {
	for _, size := range []int{1024, 4096, 32768, 8192 + 1} {
		var msgs [][]byte
		for i := range 200 {
			msgs = append(msgs, bytes.Repeat(fmt.Appendf(nil, "message %d of size %d; ", i, size), size/20+1)[:size])
		}
		roundTrip(t, fmt.Sprintf("size %d", size), msgs)
	}
}
