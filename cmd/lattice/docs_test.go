package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	latticeapi "github.com/latticedb/lattice/api"
	"github.com/latticedb/lattice/region/config"
)

// TestDocsCoverConfigAndRoutes fails when a key of the config file (every
// yaml tag of region/config, at any depth, as config.Keys lists them) is
// missing from docs/configuration.md, or a route of the API (every method of every
// path of the OpenAPI document, which a test of package api holds equal
// to the router's routes) is missing from the routes table of
// docs/api.md.
func TestDocsCoverConfigAndRoutes(t *testing.T) {
	read := func(name string) string {
		b, err := os.ReadFile(filepath.Join("..", "..", "docs", name))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	cfgDoc := read("configuration.md")
	keys := config.Keys()
	if len(keys) < 10 {
		t.Fatalf("config.Keys() = %v: too few to be the config's keys", keys)
	}
	for _, k := range keys {
		// A key whose value is a mapping or a list is documented by
		// its own row or by its members' (api_tls by api_tls.cert).
		if !strings.Contains(cfgDoc, "`"+k+"`") && !strings.Contains(cfgDoc, "`"+k+".") && !strings.Contains(cfgDoc, "`"+k+"[].") {
			t.Errorf("docs/configuration.md does not document the config key `%s`", k)
		}
	}

	apiDoc := read("api.md")
	routes := 0
	for path, item := range latticeapi.OpenAPI().Paths {
		for method := range item {
			routes++
			row := regexp.MustCompile(`(?m)^\|\s*` + strings.ToUpper(method) + "\\s*\\|\\s*`" + regexp.QuoteMeta(path) + "[`\\[]")
			if !row.MatchString(apiDoc) {
				t.Errorf("docs/api.md has no row for %s %s in its routes table", strings.ToUpper(method), path)
			}
		}
	}
	if routes < 15 {
		t.Fatalf("the OpenAPI document has %d routes: too few", routes)
	}
}
