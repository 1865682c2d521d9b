package console

import (
	"slices"
	"strings"
	"testing"
)

// TestRelayAllowListsTheRoutesMethods: a relayed route asked with a
// method it does not take is 405, and its Allow header lists the methods
// the console relays on that route (RFC 9110 §15.5.6: the target
// resource's supported methods), so that a client retrying with one of
// them is not answered 405 again.
func TestRelayAllowListsTheRoutesMethods(t *testing.T) {
	h, f := testConsole(t, nil, nil)
	const base = "/console/api/regions/us-east/v1"
	for _, c := range []struct {
		path  string
		allow []string
	}{
		{base + "/carts/c1/items", []string{"POST"}},
		{base + "/carts/c1/items/book", []string{"DELETE", "PUT"}},
		{base + "/carts/c1", []string{"DELETE"}},
		{base + "/inventory/book/restock", []string{"POST"}},
		{base + "/inventory/book/adjust", []string{"POST"}},
	} {
		rec := do(h, "PATCH", c.path, `{}`, map[string]string{"Content-Type": "application/json"})
		if rec.Code != 405 {
			t.Fatalf("PATCH %s: %d, want 405", c.path, rec.Code)
		}
		var got []string
		for _, m := range strings.Split(rec.Header().Get("Allow"), ",") {
			if m = strings.TrimSpace(m); m != "" {
				got = append(got, m)
			}
		}
		slices.Sort(got)
		if !slices.Equal(got, c.allow) {
			t.Errorf("PATCH %s: Allow %q, want %q", c.path, rec.Header().Get("Allow"), strings.Join(c.allow, ", "))
		}
		// Each method Allow names is one the console relays on the route.
		for _, m := range got {
			n := len(f.got)
			body, hdr := "", map[string]string{}
			if m != "DELETE" {
				body, hdr["Content-Type"] = `{"qty":1}`, "application/json"
			}
			if rec := do(h, m, c.path, body, hdr); rec.Code == 405 || len(f.got) != n+1 {
				t.Errorf("%s %s, a method its Allow header names: %d", m, c.path, rec.Code)
			}
		}
	}
}
