// Command lattice runs Lattice regions, a local three-region cluster, the
// certificate generator, backup and restore of a region's store, and the
// benchmark (SPEC §7); and, as a client of a running cluster, shows its
// status and reads and changes carts, stock and reservations.
//
// Usage:
//
//	lattice serve --config FILE --region NAME [--node NODE] [--log-level LEVEL] [--log-format text|json]
//	lattice certs --dir DIR [--ca-key-dir DIR] [--cluster NAME] [--force] REGION...
//	lattice backup --config FILE --region NAME --out FILE [--force]
//	lattice restore --config FILE --region NAME --from FILE
//	lattice dev [flags]
//	lattice bench [flags]
//	lattice status --config FILE [--timeout D]
//	lattice cart get|add|set|remove|clear CART [SKU [QTY]] [--replicas N] [--quorum N] (--config FILE --region NAME | --url URL)
//	lattice stock get|restock|adjust SKU [QTY|DELTA] [--consistent] [--reason TEXT] [--replicas N] [--quorum N] (--config FILE --region NAME | --url URL)
//	lattice reserve SKU QTY [--ttl D] [--key KEY] [--replicas N] (--config FILE --region NAME | --url URL)
//	lattice reservation|commit|release ID [--key KEY] [--replicas N] (--config FILE --region NAME | --url URL)
//	lattice version (or lattice --version)
//	lattice help [COMMAND]
//
// Exit status: 0 on success, 1 when a command fails, 2 for a usage error
// (an unknown command, a bad flag, a missing argument).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
)

// Exit statuses.
const (
	exitOK    = 0
	exitFail  = 1
	exitUsage = 2
)

// command is one subcommand: run gets the arguments after its name.
type command struct {
	name    string
	args    string
	summary string
	run     func(ctx context.Context, io cmdIO, args []string) int
}

// cmdIO is where a command writes.
type cmdIO struct {
	stdout, stderr io.Writer
}

// targetArgs are the flags of the client commands that pick a region.
const targetArgs = "(--config FILE --region NAME | --url URL)"

// commands lists the subcommands in the order usage shows them.
var commands []command

func init() {
	commands = []command{
		{"serve", "--config FILE --region NAME [--node NODE] [--log-level L] [--log-format text|json]", "run one region of the cluster a config file describes", runServe},
		{"dev", "[flags]", "run a local three-region cluster in one process", runDev},
		{"certs", "--dir DIR [--ca-key-dir DIR] [--cluster NAME] [--force] REGION...", "write a cluster CA and a certificate and key per region", runCerts},
		{"backup", "--config FILE --region NAME [--partition N] --out FILE [--force]", "write a consistent snapshot of a region's store (or of one partition's), also while it runs", runBackup},
		{"restore", "--config FILE --region NAME [--partition N] --from FILE", "put a snapshot in place of a stopped region's store (or of one partition's)", runRestore},
		{"bench", "[flags]", "run the benchmark", runBench},
		{"status", "--config FILE [--timeout D]", "show every region of a cluster: reachable, ready, warnings, peers and replication lag", runStatus},
		{"cart", "get|add|set|remove|clear CART [SKU [QTY]] [--replicas N] [--quorum N] " + targetArgs, "read or change a cart", runCart},
		{"stock", "get|restock|adjust SKU [QTY|DELTA] [--consistent] [--reason TEXT] [--replicas N] [--quorum N] " + targetArgs, "read or change a sku's stock", runStock},
		{"reserve", "SKU QTY [--ttl D] [--key KEY] [--replicas N] " + targetArgs, "hold units of a sku at its home", runReserve},
		{"reservation", "ID " + targetArgs, "read a reservation at its home", runReservation},
		{"commit", "ID [--key KEY] [--replicas N] " + targetArgs, "commit a held reservation", runCommit},
		{"release", "ID [--key KEY] [--replicas N] " + targetArgs, "release a held reservation", runRelease},
		versionCommand,
		{"help", "[COMMAND]", "show this help, or a command's flags", runHelp},
	}
}

func main() {
	os.Exit(run(context.Background(), os.Args[1:], os.Stdout, os.Stderr))
}

// run runs the command line args (without the program name) and returns
// the exit status.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cio := cmdIO{stdout: stdout, stderr: stderr}
	if len(args) == 0 {
		usage(stderr)
		return exitUsage
	}
	switch args[0] {
	case "-h", "-help", "--help":
		// As the commands: an argument after them is a usage error.
		return runHelp(ctx, cio, args[1:])
	case "-version", "--version":
		return runVersion(ctx, cio, args[1:])
	}
	cmd, ok := lookup(args[0])
	if !ok {
		fmt.Fprintf(stderr, "lattice: unknown command %q\n\n", args[0])
		usage(stderr)
		return exitUsage
	}
	return cmd.run(ctx, cio, args[1:])
}

func lookup(name string) (command, bool) {
	for _, c := range commands {
		if c.name == name {
			return c, true
		}
	}
	return command{}, false
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "lattice runs Lattice, a multi-region replicated cart and inventory service.")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Usage:")
	for _, c := range commands {
		fmt.Fprintf(w, "  lattice %s %s\n", c.name, c.args)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Commands:")
	width := 0
	for _, c := range commands {
		width = max(width, len(c.name))
	}
	for _, c := range commands {
		fmt.Fprintf(w, "  %-*s %s\n", width, c.name, c.summary)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, `Run "lattice help COMMAND" or "lattice COMMAND -h" for a command's flags.`)
}

func runHelp(ctx context.Context, cio cmdIO, args []string) int {
	switch len(args) {
	case 0:
		usage(cio.stdout)
		return exitOK
	case 1:
		switch args[0] {
		case "help", "-h", "-help", "--help":
			usage(cio.stdout)
			return exitOK
		}
		cmd, ok := lookup(args[0])
		if !ok {
			fmt.Fprintf(cio.stderr, "lattice help: unknown command %q\n\n", args[0])
			usage(cio.stderr)
			return exitUsage
		}
		return cmd.run(ctx, cmdIO{stdout: cio.stdout, stderr: cio.stdout}, []string{"-h"})
	default:
		fmt.Fprintf(cio.stderr, "lattice help: unexpected arguments %q: at most one command\n", args)
		return exitUsage
	}
}

// newFlagSet returns a flag set for a command that reports errors itself
// and prints its usage to cio.stderr.
func newFlagSet(cio cmdIO, cmd command) *flag.FlagSet {
	fs := flag.NewFlagSet("lattice "+cmd.name, flag.ContinueOnError)
	fs.SetOutput(cio.stderr)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: lattice %s %s\n\n%s.\n\nFlags:\n", cmd.name, cmd.args, upperFirst(cmd.summary))
		fs.PrintDefaults()
	}
	return fs
}

func upperFirst(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

// parseFlags parses args with flags and positional arguments in any
// order (a "--" ends the flags) and returns the positional ones. A
// returned flag.ErrHelp means -h was asked for; any other error has been
// reported by fs.
func parseFlags(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		// A negative number that is not a flag's value and names no flag
		// (lattice stock adjust SKU -2) is an argument, which the flag
		// package would take for an unknown flag.
		cut := negativeArg(fs, args)
		head := args[:cut]
		for {
			if err := fs.Parse(head); err != nil {
				return nil, err
			}
			rest := fs.Args()
			if consumed := len(head) - len(rest); consumed > 0 && head[consumed-1] == "--" {
				return append(pos, rest...), nil // negativeArg stops at "--": cut is len(args)
			}
			if len(rest) == 0 {
				break
			}
			pos = append(pos, rest[0])
			head = rest[1:]
		}
		if cut == len(args) {
			return pos, nil
		}
		pos = append(pos, args[cut])
		args = args[cut+1:]
	}
}

// negativeArg returns the index in args of the first argument that is a
// negative integer standing on its own — not the value of a flag before
// it, not a flag fs defines — or len(args) if there is none before "--".
func negativeArg(fs *flag.FlagSet, args []string) int {
	for j := 0; j < len(args); j++ {
		a := args[j]
		if a == "--" {
			return len(args)
		}
		if len(a) < 2 || a[0] != '-' {
			continue
		}
		name := strings.TrimLeft(a, "-")
		if _, err := strconv.ParseInt(a, 10, 64); err == nil && a[1] != '-' && fs.Lookup(name) == nil {
			return j
		}
		if strings.Contains(name, "=") {
			continue
		}
		if f := fs.Lookup(name); f != nil {
			if b, ok := f.Value.(interface{ IsBoolFlag() bool }); !ok || !b.IsBoolFlag() {
				j++ // the flag's value
			}
		}
	}
	return len(args)
}

// flagStatus is the exit status for a parseFlags error.
func flagStatus(err error) int {
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	return exitUsage
}
