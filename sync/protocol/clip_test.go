package protocol

import (
	"strings"
	"testing"
)

// TestRefusedMessageErrorIsShort: a peer's message refused for an origin
// or key of a few MiB is logged through its error; the error quotes at
// most a short prefix of the peer's string, not all of it.
func TestRefusedMessageErrorIsShort(t *testing.T) {
	long := strings.Repeat("x", 1<<20)
	for _, m := range []*Message{
		{Kind: KindDelta, Dots: []DotRange{{Origin: long + ":", From: 1, To: 1}}},
		{Kind: KindDelta, DotRuns: []DotRun{{Origin: long, From: 1, Span: MaxRangeLen}}},
	} {
		err := m.validate(1024)
		if err == nil {
			t.Fatal("a message with an origin of 1 MiB was accepted")
		}
		if n := len(err.Error()); n > 300 {
			t.Errorf("the refusal's error holds %d bytes of the peer's string", n)
		}
	}
}
