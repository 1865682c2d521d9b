package transport

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"math/rand/v2"
	"testing"
)

func TestFrameRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 1))
	var buf bytes.Buffer
	var sent [][]byte
	for _, n := range []int{0, 1, 100, readChunk - 1, readChunk, readChunk + 1, 3*readChunk + 17, 1 << 20} {
		p := make([]byte, n)
		for i := range p {
			p[i] = byte(r.Uint32())
		}
		sent = append(sent, p)
		if err := writeFrame(&buf, p, 1<<20); err != nil {
			t.Fatal(err)
		}
	}
	for i, want := range sent {
		got, err := readFrame(&buf, 1<<20)
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("frame %d differs", i)
		}
	}
	if _, err := readFrame(&buf, 1<<20); err != io.EOF {
		t.Fatalf("after the last frame: %v, want io.EOF", err)
	}
}

func TestWriteFrameTooLarge(t *testing.T) {
	var buf bytes.Buffer
	if err := writeFrame(&buf, make([]byte, 11), 10); !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("writeFrame: %v", err)
	}
	if buf.Len() != 0 {
		t.Fatal("an oversized frame was partly written")
	}
}

// spyReader serves data and records the largest buffer it was asked to
// fill.
type spyReader struct {
	data    []byte
	largest int
}

func (s *spyReader) Read(p []byte) (int, error) {
	s.largest = max(s.largest, len(p))
	if len(s.data) == 0 {
		return 0, io.EOF
	}
	n := copy(p, s.data)
	s.data = s.data[n:]
	return n, nil
}

func header(n uint32) []byte {
	return binary.BigEndian.AppendUint32(nil, n)
}

func TestReadFrameTooLargeReadsNothing(t *testing.T) {
	s := &spyReader{data: append(header(0xFFFFFFFF), "tail"...)}
	if _, err := readFrame(s, DefaultMaxFrameSize); !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("readFrame: %v", err)
	}
	if string(s.data) != "tail" {
		t.Fatalf("readFrame consumed past the header: %q left", s.data)
	}
}

func TestReadFrameAllocatesWithData(t *testing.T) {
	// A frame announcing the maximum whose sender stops after 10 bytes:
	// the reader never asks for (so never allocated) more than one chunk.
	s := &spyReader{data: append(header(DefaultMaxFrameSize), "0123456789"...)}
	if _, err := readFrame(s, DefaultMaxFrameSize); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("readFrame: %v", err)
	}
	if s.largest > readChunk {
		t.Fatalf("reader asked for %d bytes at once, more than the %d-byte chunk", s.largest, readChunk)
	}
}

func TestReadFrameTruncated(t *testing.T) {
	if _, err := readFrame(bytes.NewReader([]byte{0, 0}), 10); !errors.Is(err, errFrameHeader) {
		t.Fatalf("short header: %v", err)
	}
	if _, err := readFrame(bytes.NewReader(append(header(5), "ab"...)), 10); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("short body: %v", err)
	}
}

func FuzzReadFrame(f *testing.F) {
	f.Add(append(header(3), "abc"...))
	f.Add(header(0xFFFFFFFF))
	f.Add([]byte{1})
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bytes.NewReader(data)
		for {
			p, err := readFrame(r, 1<<16)
			if err != nil {
				return
			}
			if len(p) > 1<<16 {
				t.Fatalf("frame of %d bytes over the limit", len(p))
			}
		}
	})
}
