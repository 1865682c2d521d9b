package main

import (
	"strings"
	"testing"
)

// TestCLI18TopLevelFlagsRefuseExtraArguments: `lattice version extra` is
// a usage error (exit 2, version_test.go), and configuration.md's exit
// status table makes "an unexpected argument" exit 2 for every command.
// Its aliases `lattice --version` and `lattice -h`/`--help` ignore
// whatever follows them instead and exit 0, so `lattice --version
// --config x.yaml` or `lattice -h serve` report success without having
// done what was asked.
func TestCLI18TopLevelFlagsRefuseExtraArguments(t *testing.T) {
	for _, args := range [][]string{
		{"version", "extra"}, // the reference: refused
		{"--version", "extra"},
		{"-version", "extra"},
		{"--help", "extra"},
		{"-h", "extra", "more"},
	} {
		code, _, stderr := runCLI(t, args...)
		if code != exitUsage || !strings.Contains(stderr, "extra") {
			t.Errorf("lattice %s: exit %d, stderr %q; want exit 2 naming the unexpected argument",
				strings.Join(args, " "), code, stderr)
		}
	}
}
