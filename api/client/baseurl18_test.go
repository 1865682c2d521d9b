package client

import "testing"

// TestNewRefusesBaseURLWithQuery: the client appends request paths to a
// base URL, so one with a query or fragment would send every request to
// the base URL's own path; New refuses it rather than fail later.
func TestNewRefusesBaseURLWithQuery(t *testing.T) {
	for _, u := range []string{"http://127.0.0.1:7101/?x=1", "http://127.0.0.1:7101?", "http://127.0.0.1:7101/#top", "http://127.0.0.1:7101#"} {
		if _, err := New([]string{u}, Options{}); err == nil {
			t.Errorf("New(%q) accepted a base URL with a query or fragment", u)
		}
	}
	for _, u := range []string{"http://127.0.0.1:7101", "https://lattice.example/prefix/"} {
		if _, err := New([]string{u}, Options{}); err != nil {
			t.Errorf("New(%q): %v", u, err)
		}
	}
}
