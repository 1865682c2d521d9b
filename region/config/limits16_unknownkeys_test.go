package config

import (
	"fmt"
	"runtime"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// TestManyUnknownKeysCostNoMoreThanReadingTheFile: a config file (at most
// MaxFileSize) full of unknown keys is refused listing the first 50 of
// them. Refusing it must not cost much more memory than reading the
// document itself: the errors of the keys that are not listed should not
// each be built (with its suggestion and list of known keys) only to be
// dropped.
func TestManyUnknownKeysCostNoMoreThanReadingTheFile(t *testing.T) {
	var sb strings.Builder
	for i := 0; sb.Len() < MaxFileSize-32; i++ {
		fmt.Fprintf(&sb, "k%d: 1\n", i)
	}
	doc := []byte(sb.String())
	measure := func(f func()) uint64 {
		runtime.GC()
		var a, b runtime.MemStats
		runtime.ReadMemStats(&a)
		f()
		runtime.ReadMemStats(&b)
		return b.TotalAlloc - a.TotalAlloc
	}
	var parseErr error
	read := measure(func() {
		var n yaml.Node
		if err := yaml.Unmarshal(doc, &n); err != nil {
			t.Fatal(err)
		}
	})
	parse := measure(func() { _, parseErr = Parse(doc) })
	if parseErr == nil || !strings.Contains(parseErr.Error(), "more errors like these") {
		t.Fatalf("Parse of %d unknown keys: %v; want them refused, the list cut short", strings.Count(sb.String(), "\n"), parseErr)
	}
	if parse > 2*read {
		t.Fatalf("Parse of a %d-byte file of unknown keys allocated %d bytes (%.0fx the file), %.1fx the %d bytes of reading the document into YAML nodes; want at most 2x",
			len(doc), parse, float64(parse)/float64(len(doc)), float64(parse)/float64(read), read)
	}
}
