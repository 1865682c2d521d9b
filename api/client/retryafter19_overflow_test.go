package client

import "testing"

// TestParseRetryAfter19PastInt64: a Retry-After of more seconds than an
// int holds is past a Duration's range too, and must pause the longest
// (as "9223372036854775807" does), not be taken for no Retry-After at
// all (0: the client's short backoff, against a region asking to be
// left alone).
func TestParseRetryAfter19PastInt64(t *testing.T) {
	long := parseRetryAfter("9223372036854775807")
	for _, v := range []string{"9223372036854775808", "99999999999999999999"} {
		if d := parseRetryAfter(v); d != long {
			t.Errorf("parseRetryAfter(%q) = %v, want the longest pause %v (as for 9223372036854775807)", v, d, long)
		}
	}
}
