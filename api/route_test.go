package api

import (
	"strings"
	"testing"
)

// TestMatchesPattern checks matchesPattern against its definition: the
// same number of segments, static segments equal.
func TestMatchesPattern(t *testing.T) {
	reference := func(pattern, path string) bool {
		ps, xs := strings.Split(pattern, "/"), strings.Split(path, "/")
		if len(ps) != len(xs) {
			return false
		}
		for i, p := range ps {
			if !strings.HasPrefix(p, ":") && p != xs[i] {
				return false
			}
		}
		return true
	}
	patterns := []string{"", "/", "/healthz", "/v1/carts/:cart_id", "/v1/carts/:cart_id/items", "/v1/carts/:cart_id/items/:sku", "/v1/reservations"}
	paths := []string{"", "/", "//", "/healthz", "/healthz/", "/v1/carts/c1", "/v1/carts/", "/v1/carts/c1/", "/v1/carts/c1/items",
		"/v1/carts/c1/items/a", "/v1/carts/c1/items/a/b", "/v1/carts/c1/itemz", "/v1/reservations", "/v1/reservations/x", "v1/carts/c1"}
	for _, p := range patterns {
		for _, x := range paths {
			if got, want := matchesPattern(p, x), reference(p, x); got != want {
				t.Errorf("matchesPattern(%q, %q) = %v, want %v", p, x, got, want)
			}
		}
	}
}
