package console

import (
	"testing"
)

// TestRelayDoesNotSplitAnEscapedSlashIntoAnotherEdit: a cart id or sku
// holding a slash is not an id (1–128 characters of [A-Za-z0-9._:-]), so
// an edit naming one, written with the slash percent-encoded, is refused
// and reaches no region. In particular clearing the cart "c1/items/book"
// must not become the removal of the line "book" from the cart "c1".
func TestRelayDoesNotSplitAnEscapedSlashIntoAnotherEdit(t *testing.T) {
	h, f := testConsole(t, nil, nil)
	for _, target := range []string{
		"/console/api/regions/us-east/v1/carts/c1%2Fitems%2Fbook",
		"/console/api/regions/us-east/v1/carts/c1/items/book%2Fx",
	} {
		n := len(f.got)
		rec := do(h, "DELETE", target, "", nil)
		if len(f.got) != n {
			t.Errorf("DELETE %s reached the API as %q (answered %d): an id with an escaped slash was split into path segments", target, f.got[n:], rec.Code)
			continue
		}
		if rec.Code < 400 {
			t.Errorf("DELETE %s: %d, want a refusal", target, rec.Code)
		}
	}
}
