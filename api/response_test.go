package api

import (
	"bytes"
	"encoding/json"
	"testing"

	"pgregory.net/rapid"

	"github.com/latticedb/lattice/crdt"
	"github.com/latticedb/lattice/region"
)

// TestAppendCartJSONIsMarshal checks that appendCartJSON writes what
// encoding/json writes whenever it writes anything, and that it writes the
// carts of valid ids.
func TestAppendCartJSONIsMarshal(t *testing.T) {
	str := rapid.OneOf(
		rapid.StringMatching(`[A-Za-z0-9._:-]{1,12}`),
		rapid.String(),
		rapid.SampledFrom([]string{"", "a\"b", `a\b`, "<", ">", "&", "\x00", "\x1f", "\x7f", "é", "\u2028", "\xff"}),
	)
	rapid.Check(t, func(t *rapid.T) {
		c := region.Cart{CartID: str.Draw(t, "cart"), Region: str.Draw(t, "region")}
		if rapid.Bool().Draw(t, "items") {
			c.Items = []crdt.CartItem{}
			for range rapid.IntRange(0, 5).Draw(t, "n") {
				c.Items = append(c.Items, crdt.CartItem{SKU: str.Draw(t, "sku"), Qty: rapid.Int64().Draw(t, "qty")})
			}
		}
		want, err := json.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		got, ok := appendCartJSON([]byte("prefix"), c)
		if ok && !bytes.Equal(got, append([]byte("prefix"), want...)) {
			t.Fatalf("appendCartJSON(%+v) = %s, want %s", c, got, want)
		}
		plain := crdt.ValidID(c.CartID) && crdt.ValidID(c.Region)
		for _, it := range c.Items {
			plain = plain && crdt.ValidID(it.SKU)
		}
		if plain && !ok {
			t.Fatalf("appendCartJSON refuses %+v", c)
		}
	})
}
