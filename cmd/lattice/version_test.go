package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/latticedb/lattice/cmd/server"
)

// TestVersionFromLdflags builds the binary as the Makefile does, with the
// version and commit set at link time, and checks that `lattice version`
// and `lattice --version` print them.
func TestVersionFromLdflags(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "lattice")
	cmd := exec.Command("go", "build", "-ldflags",
		"-X github.com/latticedb/lattice/cmd/server.version=v1.2.3-4-gabcdef0-dirty -X github.com/latticedb/lattice/cmd/server.commit=abcdef0123456789",
		"-o", bin, ".")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	for _, args := range [][]string{{"version"}, {"--version"}} {
		out, err := exec.Command(bin, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("lattice %v: %v\n%s", args, err, out)
		}
		if want := "lattice v1.2.3-4-gabcdef0-dirty (commit abcdef0123456789, go"; !strings.HasPrefix(string(out), want) {
			t.Errorf("lattice %v printed %q, want it to start with %q", args, out, want)
		}
	}
}

// TestVersionInProcess checks the version command's output and its
// refusal of arguments.
func TestVersionInProcess(t *testing.T) {
	b := server.Build()
	if b.Version == "" || b.Commit == "" || !strings.HasPrefix(b.GoVersion, "go") {
		t.Fatalf("Build() = %+v", b)
	}
	code, out, errOut := runCLI(t, "version")
	if want := "lattice " + b.Version + " (commit " + b.Commit + ", " + b.GoVersion + ")\n"; code != 0 || out != want {
		t.Errorf("lattice version = %d, %q (stderr %q), want 0, %q", code, out, errOut, want)
	}
	if code, _, errOut := runCLI(t, "version", "extra"); code != exitUsage || !strings.Contains(errOut, `unexpected argument "extra"`) {
		t.Errorf("lattice version extra = %d, %q", code, errOut)
	}
}
