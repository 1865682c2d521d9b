package main

import (
	"context"
	"fmt"

	"github.com/latticedb/lattice/cmd/server"
)

// runVersion prints the version and commit of the binary (set by the
// Makefile's build from git describe, else read from the build
// information Go stamps into the binary) and the Go version it was built
// with.
func runVersion(_ context.Context, cio cmdIO, args []string) int {
	cmd, _ := lookup("version")
	fs := newFlagSet(cio, cmd)
	pos, err := parseFlags(fs, args)
	if err != nil {
		return flagStatus(err)
	}
	if len(pos) > 0 {
		fmt.Fprintf(cio.stderr, "lattice version: unexpected argument %q\n", pos[0])
		return exitUsage
	}
	printVersion(cio)
	return exitOK
}

func printVersion(cio cmdIO) {
	b := server.Build()
	fmt.Fprintf(cio.stdout, "lattice %s (commit %s, %s)\n", b.Version, b.Commit, b.GoVersion)
}

var versionCommand = command{"version", "", "print the version and commit", runVersion}
