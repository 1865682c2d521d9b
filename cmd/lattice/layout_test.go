package main

import (
	"bufio"
	"bytes"
	"os/exec"
	"strings"
	"testing"
)

// layers orders the folders of the module: a package may import packages
// of a lower layer, and packages of its own top-level folder; never one of
// a higher layer nor a sibling folder of its layer (api and sync know
// nothing of each other). The composition root, cmd/server, wires them.
var layers = []struct {
	folder string
	layer  int
}{
	{"crdt", 0},
	{"region/config", 1},
	{"region/store", 2}, // the storage engine: below the region, above its config
	{"region", 3},       // the domain (and region/regiontest)
	{"api", 4},
	{"sync", 4},
	{"cmd/server", 5},
	{"bench", 6},
	{"cmd/lattice", 7},
	{"deploy", 8}, // its test reads the manifests
}

func layerOf(rel string) (folder string, layer int, ok bool) {
	for _, l := range layers {
		if rel == l.folder || strings.HasPrefix(rel, l.folder+"/") {
			return l.folder, l.layer, true
		}
	}
	return "", 0, false
}

// TestImportsRunOneWay fails when a package of the module imports one
// above it (go list, non-test imports).
func TestImportsRunOneWay(t *testing.T) {
	mod, err := exec.Command("go", "list", "-m").Output()
	if err != nil {
		t.Fatalf("go list -m: %v", err)
	}
	prefix := strings.TrimSpace(string(mod)) + "/"
	out, err := exec.Command("go", "list", "-f", "{{.ImportPath}} {{join .Imports \" \"}}", prefix+"...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	checked := 0
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		pkg := strings.TrimPrefix(fields[0], prefix)
		pf, pl, ok := layerOf(pkg)
		if !ok {
			t.Errorf("package %s is in no folder of the layout", pkg)
			continue
		}
		for _, imp := range fields[1:] {
			if !strings.HasPrefix(imp, prefix) {
				continue
			}
			dep := strings.TrimPrefix(imp, prefix)
			df, dl, ok := layerOf(dep)
			checked++
			switch {
			case !ok:
				t.Errorf("%s imports %s, which is in no folder of the layout", pkg, dep)
			case df == pf:
			case dl >= pl:
				t.Errorf("%s (layer %d) imports %s (layer %d): imports run from cmd and bench down to api and sync, then region, then crdt", pkg, pl, dep, dl)
			}
		}
	}
	if checked == 0 {
		t.Fatal("no import of the module's own packages was checked")
	}
}
