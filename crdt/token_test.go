package crdt

import (
	"encoding/base64"
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
