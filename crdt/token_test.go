package crdt

import (
	"bytes"
	"compress/flate"
	"encoding/base64"
	"runtime"
	"strings"
	"testing"

	"pgregory.net/rapid"
)

// TestTokenRoundTrip checks that every causal context of a history
// survives FormatToken and ParseToken, and that the token is URL-safe.
func TestTokenRoundTrip(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		c := drawCarts(t, 1)[0]
		tok := FormatToken(&c.Ctx)
		if strings.ContainsAny(tok, "+/= \n") {
			t.Fatalf("token %q is not URL-safe", tok)
		}
		got, err := ParseToken(tok)
		if err != nil {
			t.Fatalf("ParseToken(FormatToken(ctx)): %v", err)
		}
		if !got.Equal(&c.Ctx) {
			t.Fatalf("context changed in the round trip")
		}
		sameBytes(t, "context encoding", EncodeContext(&got), EncodeContext(&c.Ctx))
	})
}

func TestParseTokenRefusesHostileInput(t *testing.T) {
	withEntries := freshCart(1, usEast)
	for _, tc := range []struct {
		name, token, want string
	}{
		{"empty", "", "EOF"},
		{"not-base64", "!!!!", "crdt: token:"},
		{"padded-base64", "gA==", "crdt: token:"},
		{"too-long", strings.Repeat("A", 2*MaxTokenBytes), "longer than"},
		{"empty-context", FormatToken(&Context{}), ""},
		{"cart-with-entries", b64(EncodeCart(withEntries)), "context holds entries"},
		{"non-canonical", b64(wCart(cArr(cText("us-east"), cHeadWide(0, 1, 1), cArr(), cArr()))), "non-canonical"},
		{"not-in-context", b64(wCart(wRep("us-east", 1, nil, wEntry(2, "book", 1, 1)))), "not in the causal context"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseToken(tc.token)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("the empty context's token: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v does not mention %q", err, tc.want)
			}
		})
	}
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

// longNamesContext is a context of n replica ids of three long region
// names, as a cluster that had many incarnations of them holds.
func longNamesContext(n int) Context {
	names := []string{"northamerica-northeast1", "australia-southeast1", "southamerica-east1"}
	c := Context{VV: map[ReplicaID]uint64{}}
	for i := range n {
		c.VV[Incarnation(names[i%len(names)], uint64(1796000000+i))] = uint64(1000 + i)
	}
	return c
}

// TestCompressedToken: a context too large for a plain token (231 replica
// ids of long region names: 12 KB plain) gives a compressed one that
// round-trips and fits; a small context stays plain.
func TestCompressedToken(t *testing.T) {
	small := longNamesContext(3)
	if tok := FormatToken(&small); strings.HasPrefix(tok, compressedTokenPrefix) {
		t.Fatalf("a small context's token is compressed: %q", tok)
	}
	c := longNamesContext(231)
	if n := len(EncodeContext(&c)); n <= MaxTokenBytes {
		t.Fatalf("test setup: the context encodes to %d bytes, within a plain token", n)
	}
	tok := FormatToken(&c)
	if !strings.HasPrefix(tok, compressedTokenPrefix) || !TokenFits(tok) {
		t.Fatalf("token of %d characters, prefix %q: want a compressed token that fits", len(tok), tok[:2])
	}
	if strings.ContainsAny(tok, "+/= \n") {
		t.Fatalf("token is not URL-safe")
	}
	got, err := ParseToken(tok)
	if err != nil {
		t.Fatalf("ParseToken: %v", err)
	}
	if !got.Equal(&c) {
		t.Fatal("context changed in the round trip")
	}
	t.Logf("%d replica ids: %d bytes plain, a token of %d characters", len(c.VV), len(EncodeContext(&c)), len(tok))
}

// TestCompressedTokenRefusesHostileInput: a compressed token that inflates
// past MaxTokenContextBytes (read no further than that), one whose context
// would fit plain, and malformed DEFLATE are refused.
func TestCompressedTokenRefusesHostileInput(t *testing.T) {
	deflate := func(b []byte) string {
		var buf bytes.Buffer
		w, _ := flate.NewWriter(&buf, flate.BestCompression)
		w.Write(b)
		w.Close()
		return compressedTokenPrefix + b64(buf.Bytes())
	}
	small := longNamesContext(3)
	for _, tc := range []struct{ name, token, want string }{
		{"bomb", deflate(make([]byte, 8<<20)), "inflates past"},
		{"fits-plain", deflate(EncodeContext(&small)), "fits plain"},
		{"not-deflate", compressedTokenPrefix + b64([]byte("not deflate at all")), "crdt: token:"},
		{"truncated", deflate(EncodeContext(&small))[:10], "crdt: token:"},
		{"too-long", compressedTokenPrefix + strings.Repeat("A", 2*MaxTokenBytes), "longer than"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			_, err := ParseToken(tc.token)
			runtime.ReadMemStats(&after)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v does not mention %q", err, tc.want)
			}
			// The inflater's window and tables, what it inflates (at most
			// MaxTokenContextBytes, in a buffer that doubles) and the
			// decoded base64: a fixed bound, whatever the token claims.
			if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 8*MaxTokenContextBytes+uint64(4*len(tc.token)) {
				t.Errorf("refusing a %d-character token allocated %d bytes", len(tc.token), alloc)
			}
		})
	}
}

// FuzzParseToken: whatever the token, ParseToken refuses it or returns a
// context that round-trips, and a plain token is the one FormatToken gives
// that context (a compressed one may be another DEFLATE stream of it).
func FuzzParseToken(f *testing.F) {
	small, large := longNamesContext(3), longNamesContext(231)
	f.Add(FormatToken(&small))
	f.Add(FormatToken(&large))
	f.Add(compressedTokenPrefix + "AAAA")
	f.Add("gA\n") // the decoder alone skips newlines
	f.Fuzz(func(t *testing.T, s string) {
		c, err := ParseToken(s)
		if err != nil {
			return
		}
		again := FormatToken(&c)
		if !strings.HasPrefix(s, compressedTokenPrefix) && again != s {
			t.Fatalf("ParseToken(%.40q) gave a context whose token is %.40q", s, again)
		}
		if c2, err := ParseToken(again); err != nil || !c2.Equal(&c) {
			t.Fatalf("the context of %.40q does not round-trip: %v", s, err)
		}
	})
}

// TestTokenCloudBound checks that a token naming more than
// MaxTokenCloudDots out-of-order dots parses as its context's ceiling,
// without building the cloud, and that FormatToken makes that token
// itself from such a context; a context at the bound round-trips whole.
func TestTokenCloudBound(t *testing.T) {
	build := func(n int) Context {
		c := Context{VV: map[ReplicaID]uint64{}, Cloud: map[Dot]struct{}{}}
		for i := range n {
			r := ReplicaID("r" + string(rune('a'+i%20)))
			c.Cloud[Dot{r, uint64(3 + 2*(i/20))}] = struct{}{}
		}
		return c
	}
	at := build(MaxTokenCloudDots)
	got, err := ParseToken(FormatToken(&at))
	if err != nil || !got.Covers(&at) || !at.Covers(&got) {
		t.Fatalf("a context of %d cloud dots did not round-trip: %v", MaxTokenCloudDots, err)
	}
	over := build(4 * MaxTokenCloudDots)
	want := over.Ceil()
	// A token encoded plainly (not through FormatToken, which ceils), as
	// a client could send.
	b := EncodeContext(&over)
	var buf bytes.Buffer
	w, _ := flate.NewWriter(&buf, flate.BestCompression)
	w.Write(b)
	w.Close()
	tok := compressedTokenPrefix + base64.RawURLEncoding.EncodeToString(buf.Bytes())
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	got, err = ParseToken(tok)
	runtime.ReadMemStats(&after)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Cloud) != 0 || !got.Covers(&over) || !got.Covers(&want) || !want.Covers(&got) {
		t.Fatalf("a token of %d cloud dots parsed as %d cloud dots and %v, want its ceiling %v", len(over.Cloud), len(got.Cloud), got.VV, want.VV)
	}
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 8*uint64(len(b))+256<<10 {
		t.Errorf("parsing a token of %d bytes of context allocated %d bytes", len(b), alloc)
	}
	if f := FormatToken(&over); f != FormatToken(&want) {
		t.Errorf("FormatToken of a context past the bound is not its ceiling's token")
	}
}
