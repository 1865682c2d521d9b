package client

import (
	"testing"
	"time"
)

// TestParseRetryAfterHuge: a Retry-After of more seconds than a Duration
// holds is the longest pause, not a negative one (which would retry at
// once, in a loop, against a region asking to be left alone).
func TestParseRetryAfterHuge(t *testing.T) {
	for _, v := range []string{"9223372036854775807", "9300000000", "18446744073"} {
		if d := parseRetryAfter(v); d <= 0 {
			t.Errorf("parseRetryAfter(%q) = %v, want a long positive pause", v, d)
		}
	}
	if d := parseRetryAfter("3"); d != 3*time.Second {
		t.Errorf("parseRetryAfter(3) = %v", d)
	}
	if d := parseRetryAfter("-1"); d != 0 {
		t.Errorf("parseRetryAfter(-1) = %v, want 0", d)
	}
}
