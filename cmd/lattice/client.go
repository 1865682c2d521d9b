package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/latticedb/lattice/api/client"
	"github.com/latticedb/lattice/region/config"
)

// The client commands (cart, stock, reserve, reservation, commit,
// release) are thin wrappers over package api/client: they print the
// API's JSON answer on stdout, a problem as "code: detail" on stderr
// with exit status 1.

// target holds the flags that pick the region a client command asks.
type target struct {
	config, region, url *string
	timeout             *time.Duration
}

func addTarget(fs *flag.FlagSet) *target {
	return &target{
		config:  fs.String("config", "", "cluster config `FILE` (YAML, see docs/configuration.md); with --region, ask that region's api address"),
		region:  fs.String("region", "", "`NAME` of the region to ask, one of the config's regions"),
		url:     fs.String("url", "", "base `URL` of the region to ask, for example http://127.0.0.1:7101 (instead of --config and --region)"),
		timeout: fs.Duration("timeout", 10*time.Second, "give up after this `duration`"),
	}
}

// check reports a usage error of the target flags on stderr.
func (t *target) check(cio cmdIO, me string) bool {
	switch {
	case *t.url != "" && (*t.config != "" || *t.region != ""):
		fmt.Fprintf(cio.stderr, "%s: give either --url or --config and --region, not both\n", me)
	case *t.url == "" && *t.config == "":
		fmt.Fprintf(cio.stderr, "%s: --url, or --config and --region, is required\n", me)
	case *t.url == "" && *t.region == "":
		fmt.Fprintf(cio.stderr, "%s: --region is required with --config\n", me)
	case *t.timeout <= 0:
		fmt.Fprintf(cio.stderr, "%s: --timeout must be positive\n", me)
	default:
		return true
	}
	return false
}

// client returns a client of the target region, or false having said why
// on stderr.
func (t *target) client(cio cmdIO, me string) (*client.Client, bool) {
	u := *t.url
	if u == "" {
		cfg, err := config.Load(*t.config)
		if err != nil {
			printLines(cio.stderr, me+": ", err)
			return nil, false
		}
		rc, ok := cfg.Region(*t.region)
		if !ok {
			fmt.Fprintf(cio.stderr, "%s: region %q is not in %s (regions: %s)\n",
				me, *t.region, *t.config, strings.Join(cfg.RegionNames(), ", "))
			return nil, false
		}
		u = apiURL(rc.API)
	}
	cl, err := client.New([]string{u}, client.DefaultOptions())
	if err != nil {
		fmt.Fprintf(cio.stderr, "%s: --url: %v\n", me, strings.TrimPrefix(err.Error(), "lattice client: "))
		return nil, false
	}
	return cl, true
}

// apiURL is the base URL of a region's api address; an unspecified host
// (":7101", "0.0.0.0:7101") is this machine.
func apiURL(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "http://" + addr
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	return "http://" + net.JoinHostPort(host, port)
}

// clientCommand parses a client command's flags and runs do with a
// client of the target region and the positional arguments. do is first
// called without a client: it then only checks the arguments, returning
// a usage error (badArgs) if they are wrong.
func clientCommand(ctx context.Context, cio cmdIO, name string, args []string, extra func(*flag.FlagSet),
	do func(ctx context.Context, cl *client.Client, pos []string) (any, error)) int {
	cmd, _ := lookup(name)
	fs := newFlagSet(cio, cmd)
	t := addTarget(fs)
	if extra != nil {
		extra(fs)
	}
	pos, err := parseFlags(fs, args)
	if err != nil {
		return flagStatus(err)
	}
	me := "lattice " + name
	if !t.check(cio, me) {
		return exitUsage
	}
	// Positional arguments are checked (do without a client) before
	// anything is asked.
	if _, err := do(ctx, nil, pos); err != nil {
		fmt.Fprintf(cio.stderr, "%s: %v\n", me, err)
		return exitUsage
	}
	cl, ok := t.client(cio, me)
	if !ok {
		return exitFail
	}
	ctx, cancel := context.WithTimeout(ctx, *t.timeout)
	defer cancel()
	out, err := do(ctx, cl, pos)
	if err != nil {
		var p *client.Problem
		if errors.As(err, &p) {
			fmt.Fprintln(cio.stderr, p.Error())
		} else {
			fmt.Fprintf(cio.stderr, "%s: %v\n", me, strings.TrimPrefix(err.Error(), "lattice client: "))
		}
		return exitFail
	}
	enc := json.NewEncoder(cio.stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(out); err != nil {
		fmt.Fprintf(cio.stderr, "%s: %v\n", me, err)
		return exitFail
	}
	return exitOK
}

// usageError is a wrong positional argument.
type usageError struct{ error }

// badArgs marks err, if any, as a usage error.
func badArgs(err error) error {
	if err == nil {
		return nil
	}
	return usageError{err}
}

// parseArgs checks the count of positional arguments against want (their
// names) and parses the ones named in ints as integers.
func parseArgs(pos []string, want []string, ints ...string) (map[string]int64, error) {
	if len(pos) < len(want) {
		return nil, fmt.Errorf("missing %s (arguments: %s)", want[len(pos)], strings.Join(want, " "))
	}
	if len(pos) > len(want) {
		return nil, fmt.Errorf("unexpected argument %q", pos[len(want)])
	}
	n := map[string]int64{}
	for i, w := range want {
		for _, name := range ints {
			if w == name {
				v, err := strconv.ParseInt(pos[i], 10, 64)
				if err != nil {
					return nil, fmt.Errorf("%s must be an integer, not %q", w, pos[i])
				}
				n[w] = v
			}
		}
	}
	return n, nil
}

// runCart reads or changes a cart.
func runCart(ctx context.Context, cio cmdIO, args []string) int {
	return clientCommand(ctx, cio, "cart", args, nil, func(ctx context.Context, cl *client.Client, pos []string) (any, error) {
		if len(pos) == 0 {
			return nil, badArgs(errors.New("missing action: get, add, set, remove or clear"))
		}
		action, pos := pos[0], pos[1:]
		var want, ints []string
		switch action {
		case "get", "clear":
			want = []string{"CART"}
		case "add", "set":
			want, ints = []string{"CART", "SKU", "QTY"}, []string{"QTY"}
		case "remove":
			want = []string{"CART", "SKU"}
		default:
			return nil, badArgs(fmt.Errorf("unknown action %q: get, add, set, remove or clear", action))
		}
		n, err := parseArgs(pos, want, ints...)
		if err != nil || cl == nil {
			return nil, badArgs(err)
		}
		var out any
		switch action {
		case "get":
			out, err = cl.Cart(ctx, pos[0])
		case "clear":
			out, err = cl.ClearCart(ctx, pos[0])
		case "add":
			out, err = cl.AddItem(ctx, pos[0], pos[1], n["QTY"])
		case "set":
			out, err = cl.SetItem(ctx, pos[0], pos[1], n["QTY"])
		case "remove":
			out, err = cl.RemoveItem(ctx, pos[0], pos[1])
		}
		return out, err
	})
}

// runStock reads or changes a sku's stock.
func runStock(ctx context.Context, cio cmdIO, args []string) int {
	var consistent *bool
	var reason *string
	return clientCommand(ctx, cio, "stock", args, func(fs *flag.FlagSet) {
		consistent = fs.Bool("consistent", false, "get: read the item at the sku's home")
		reason = fs.String("reason", "", "adjust: why, logged by the region")
	}, func(ctx context.Context, cl *client.Client, pos []string) (any, error) {
		if len(pos) == 0 {
			return nil, badArgs(errors.New("missing action: get, restock or adjust"))
		}
		action, pos := pos[0], pos[1:]
		var n map[string]int64
		var err error
		switch action {
		case "get":
			n, err = parseArgs(pos, []string{"SKU"})
		case "restock":
			n, err = parseArgs(pos, []string{"SKU", "QTY"}, "QTY")
		case "adjust":
			n, err = parseArgs(pos, []string{"SKU", "DELTA"}, "DELTA")
		default:
			return nil, badArgs(fmt.Errorf("unknown action %q: get, restock or adjust", action))
		}
		if err != nil || cl == nil {
			return nil, badArgs(err)
		}
		switch action {
		case "get":
			out, err := cl.Item(ctx, pos[0], *consistent)
			return out, err
		case "restock":
			out, err := cl.Restock(ctx, pos[0], n["QTY"])
			return out, err
		default:
			out, err := cl.Adjust(ctx, pos[0], n["DELTA"], *reason)
			return out, err
		}
	})
}

// runReserve holds units of a sku at its home.
func runReserve(ctx context.Context, cio cmdIO, args []string) int {
	var key *string
	var ttl *time.Duration
	return clientCommand(ctx, cio, "reserve", args, func(fs *flag.FlagSet) {
		key = fs.String("key", "", "Idempotency-Key (default: a fresh random one)")
		ttl = fs.Duration("ttl", 0, "how long to hold, 1s..24h (default: the API's, 10m)")
	}, func(ctx context.Context, cl *client.Client, pos []string) (any, error) {
		n, err := parseArgs(pos, []string{"SKU", "QTY"}, "QTY")
		if err == nil && *ttl < 0 {
			err = errors.New("--ttl must not be negative")
		}
		if err != nil || cl == nil {
			return nil, badArgs(err)
		}
		out, err := cl.Reserve(ctx, pos[0], n["QTY"], client.KeyOptions{IdempotencyKey: *key, TTL: *ttl})
		return out, err
	})
}

// runReservation reads a reservation at its home.
func runReservation(ctx context.Context, cio cmdIO, args []string) int {
	return clientCommand(ctx, cio, "reservation", args, nil, func(ctx context.Context, cl *client.Client, pos []string) (any, error) {
		if _, err := parseArgs(pos, []string{"ID"}); err != nil || cl == nil {
			return nil, badArgs(err)
		}
		out, err := cl.Reservation(ctx, pos[0])
		return out, err
	})
}

// runCommit commits a held reservation.
func runCommit(ctx context.Context, cio cmdIO, args []string) int {
	return runSettle(ctx, cio, "commit", args)
}

// runRelease releases a held reservation.
func runRelease(ctx context.Context, cio cmdIO, args []string) int {
	return runSettle(ctx, cio, "release", args)
}

func runSettle(ctx context.Context, cio cmdIO, name string, args []string) int {
	var key *string
	return clientCommand(ctx, cio, name, args, func(fs *flag.FlagSet) {
		key = fs.String("key", "", "Idempotency-Key (default: a fresh random one)")
	}, func(ctx context.Context, cl *client.Client, pos []string) (any, error) {
		if _, err := parseArgs(pos, []string{"ID"}); err != nil || cl == nil {
			return nil, badArgs(err)
		}
		opts := client.KeyOptions{IdempotencyKey: *key}
		if name == "commit" {
			out, err := cl.Commit(ctx, pos[0], opts)
			return out, err
		}
		out, err := cl.Release(ctx, pos[0], opts)
		return out, err
	})
}
