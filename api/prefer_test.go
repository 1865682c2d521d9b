package api_test

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/latticedb/lattice/api"
)

// TestPreferMinimal checks Prefer: return=minimal on the cart writes of a
// real region: 204 without a body, Preference-Applied and a causal token
// that gives read-your-writes at the other region; the write is applied
// as without the preference; other preferences get the cart; a refused
// request is refused as before.
func TestPreferMinimal(t *testing.T) {
	east, west := startPair(t)
	do := func(method, url, body string, hdr ...string) (int, http.Header, string) {
		t.Helper()
		req, err := http.NewRequest(method, url, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Add(hdr[i], hdr[i+1])
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, resp.Header, string(b)
	}
	cart := east + "/v1/carts/prefer-1"
	minimal := func(method, url, body string, prefer string) string {
		t.Helper()
		status, h, b := do(method, url, body, api.HeaderPrefer, prefer)
		if status != http.StatusNoContent || b != "" || h.Get("Preference-Applied") != "return=minimal" || h.Get(api.HeaderToken) == "" {
			t.Fatalf("%s %s with Prefer %q: %d %q, Preference-Applied %q, token %q; want 204, no body, return=minimal, a token",
				method, url, prefer, status, b, h.Get("Preference-Applied"), h.Get(api.HeaderToken))
		}
		return h.Get(api.HeaderToken)
	}
	minimal("POST", cart+"/items", `{"sku":"a","qty":2}`, "return=minimal")
	minimal("POST", cart+"/items", `{"sku":"b","qty":1}`, `respond-async, RETURN="Minimal"; x=1`)
	tok := minimal("PUT", cart+"/items/a", `{"qty":5}`, "return=minimal")
	// The token of a minimal answer covers the write: the other region
	// waits for it before it answers.
	status, _, b := do("GET", west+"/v1/carts/prefer-1", "", api.HeaderToken, tok)
	if status != 200 || !strings.Contains(b, `{"sku":"a","qty":5}`) || !strings.Contains(b, `{"sku":"b","qty":1}`) {
		t.Fatalf("GET at eu-west with the token: %d %s", status, b)
	}
	// Without the preference, or with another, the answer is the cart.
	for _, prefer := range []string{"", "return=representation", "handling=strict", "return=minimalist"} {
		var hdr []string
		if prefer != "" {
			hdr = []string{api.HeaderPrefer, prefer}
		}
		status, h, b := do("POST", cart+"/items", `{"sku":"c","qty":1}`, hdr...)
		if status != 200 || !strings.Contains(b, `"items":[`) || h.Get("Preference-Applied") != "" {
			t.Fatalf("POST with Prefer %q: %d %s (Preference-Applied %q); want 200 with the cart", prefer, status, b, h.Get("Preference-Applied"))
		}
	}
	minimal("DELETE", cart+"/items/b", "", "return=minimal")
	status, _, b = do("GET", cart, "")
	if status != 200 || strings.Contains(b, `"sku":"b"`) || !strings.Contains(b, `{"sku":"c","qty":4}`) {
		t.Fatalf("GET after the minimal remove: %d %s", status, b)
	}
	minimal("DELETE", cart, "", "return=minimal")
	status, _, b = do("GET", cart, "")
	if status != 200 || !strings.Contains(b, `"items":[]`) {
		t.Fatalf("GET after the minimal clear: %d %s", status, b)
	}
	// A refused write is refused as without the preference, and writes nothing.
	status, h, b := do("POST", cart+"/items", `{"sku":"a","qty":0}`, api.HeaderPrefer, "return=minimal")
	if status != 400 || !strings.Contains(b, "invalid_request") || h.Get("Preference-Applied") != "" {
		t.Fatalf("POST qty 0 with Prefer return=minimal: %d %s", status, b)
	}
	status, _, b = do("GET", cart, "")
	if status != 200 || !strings.Contains(b, `"items":[]`) {
		t.Fatalf("GET after the refused write: %d %s", status, b)
	}
}
