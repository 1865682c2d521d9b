package config

import (
	"os"
	"path/filepath"
	"testing"
)

// TestLoadRefusesOneFileForBothTokenScopes checks configuration.md's
// constraint on api_auth.read_tokens, "not the same file as
// write_tokens", for paths that name one file in two spellings (relative
// paths are relative to the config file's directory). A token in both
// lists is a read-write token (api/auth.go), so a file given as both
// scopes silently turns every read-only token into a read-write one.
func TestLoadRefusesOneFileForBothTokenScopes(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct{ name, read, write string }{
		{"dot slash", "tokens/all", "./tokens/all"},
		{"absolute and relative", filepath.Join(dir, "tokens", "all"), "tokens/all"},
		{"dot dot", "tokens/all", "tokens/../tokens/all"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, "lattice.yaml")
			doc := base("", "api_auth: {read_tokens: "+quote(tc.read)+", write_tokens: "+quote(tc.write)+"}\n")
			if err := os.WriteFile(path, []byte(doc), 0o644); err != nil {
				t.Fatal(err)
			}
			c, err := Load(path)
			if err == nil {
				t.Errorf("Load accepted read_tokens %q and write_tokens %q, both %s; want an error naming api_auth.write_tokens",
					tc.read, tc.write, c.APIAuth.ReadTokens)
			}
		})
	}
}

func quote(s string) string { return `"` + s + `"` }
