package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	latticeapi "github.com/latticedb/lattice/api"
	"github.com/latticedb/lattice/api/client"
	"github.com/latticedb/lattice/region/config"
)

// The client commands (cart, stock, reserve, reservation, commit,
// release) are thin wrappers over package api/client: they print the
// API's answer on stdout as a table (--output table, the default) or as
// its JSON (--output json), a problem as "code: detail" on stderr with
// exit status 1.

// target holds the flags that pick the region a client command asks.
type target struct {
	config, region, url *string
	timeout             *time.Duration
	output              *string
	auth                *authFlags
}

func addTarget(fs *flag.FlagSet) *target {
	return &target{
		config:  fs.String("config", "", "cluster config `FILE` (YAML, see docs/configuration.md); with --region, ask that region's api address"),
		region:  fs.String("region", "", "`NAME` of the region to ask, one of the config's regions"),
		url:     fs.String("url", "", "base `URL` of the region to ask, for example http://127.0.0.1:7101 (instead of --config and --region)"),
		timeout: fs.Duration("timeout", 10*time.Second, "give up after this `duration`"),
		output:  addOutput(fs),
		auth:    addAuth(fs),
	}
}

// Output formats of the client commands and status (--output).
const (
	outputTable = "table"
	outputJSON  = "json"
)

// addOutput adds --output, the format the client commands and status
// print in.
func addOutput(fs *flag.FlagSet) *string {
	return fs.String("output", outputTable, "`FORMAT` of the answer: table (for people) or json (the API's JSON answer)")
}

// checkOutput reports a usage error of --output on stderr.
func checkOutput(cio cmdIO, me, output string) bool {
	if output != outputTable && output != outputJSON {
		fmt.Fprintf(cio.stderr, "%s: --output must be table or json, not %q\n", me, output)
		return false
	}
	return true
}

// check reports a usage error of the target flags on stderr.
func (t *target) check(cio cmdIO, me string) bool {
	if !checkOutput(cio, me, *t.output) {
		return false
	}
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
		u = regionURL(cfg, rc)
	}
	opts, err := t.auth.options(client.DefaultOptions())
	if err != nil {
		fmt.Fprintf(cio.stderr, "%s: %v\n", me, err)
		return nil, false
	}
	cl, err := client.New([]string{u}, opts)
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
	if err := printAnswer(cio.stdout, *t.output, out); err != nil {
		fmt.Fprintf(cio.stderr, "%s: %v\n", me, err)
		return exitFail
	}
	return exitOK
}

// printAnswer writes v, an answer of the API, as indented JSON or as a
// table: the object's scalar members one per line, then each array of
// objects (a cart's items, an order's lines) as a table with a column per
// member.
func printAnswer(w io.Writer, format string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if format == outputJSON {
		var buf bytes.Buffer
		if err := json.Indent(&buf, b, "", "  "); err != nil {
			return err
		}
		buf.WriteByte('\n')
		_, err := w.Write(buf.Bytes())
		return err
	}
	obj, err := decodeOrdered(b)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	var tables []member
	for _, m := range flatten("", obj) {
		if rows, ok := m.value.([]any); ok && len(rows) > 0 && isObject(rows[0]) {
			tables = append(tables, m)
			continue
		}
		fmt.Fprintf(tw, "%s:\t%s\n", m.name, cell(m.value))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, t := range tables {
		fmt.Fprintf(w, "\n%s:\n", t.name)
		var cols []string
		for _, r := range t.value.([]any) {
			if o, ok := r.(ordered); ok {
				for _, m := range flatten("", o) {
					if !slices.Contains(cols, m.name) {
						cols = append(cols, m.name)
					}
				}
			}
		}
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		head := make([]string, len(cols))
		for i, c := range cols {
			head[i] = strings.ToUpper(c)
		}
		fmt.Fprintln(tw, "  "+strings.Join(head, "\t"))
		for _, r := range t.value.([]any) {
			vals := map[string]any{}
			if o, ok := r.(ordered); ok {
				for _, m := range flatten("", o) {
					vals[m.name] = m.value
				}
			}
			row := make([]string, len(cols))
			for i, c := range cols {
				row[i] = cell(vals[c])
			}
			fmt.Fprintln(tw, "  "+strings.Join(row, "\t"))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	return nil
}

// member is one member of a JSON object, in document order.
type member struct {
	name  string
	value any // nil, bool, json.Number, string, []any or ordered
}

// ordered is a JSON object whose members keep their order.
type ordered []member

func isObject(v any) bool { _, ok := v.(ordered); return ok }

// flatten lists the members of o, with nested objects' members named
// outer.inner.
func flatten(prefix string, o ordered) []member {
	var out []member
	for _, m := range o {
		name := prefix + m.name
		if inner, ok := m.value.(ordered); ok && len(inner) > 0 {
			out = append(out, flatten(name+".", inner)...)
			continue
		}
		out = append(out, member{name, m.value})
	}
	return out
}

// cell formats a JSON value for a table cell.
func cell(v any) string {
	switch v := v.(type) {
	case nil:
		return "-"
	case string:
		if v == "" {
			return "-"
		}
		return v
	case bool:
		return yesNo(v)
	case json.Number:
		return v.String()
	case []any:
		if len(v) == 0 {
			return "-"
		}
		parts := make([]string, len(v))
		for i, e := range v {
			parts[i] = cell(e)
		}
		return strings.Join(parts, ", ")
	case ordered:
		if len(v) == 0 {
			return "-"
		}
		parts := make([]string, len(v))
		for i, m := range v {
			parts[i] = m.name + "=" + cell(m.value)
		}
		return strings.Join(parts, " ")
	}
	return fmt.Sprint(v)
}

// decodeOrdered decodes one JSON object keeping its members' order.
func decodeOrdered(b []byte) (ordered, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	v, err := decodeValue(dec)
	if err != nil {
		return nil, err
	}
	o, ok := v.(ordered)
	if !ok {
		return ordered{{name: "value", value: v}}, nil
	}
	return o, nil
}

func decodeValue(dec *json.Decoder) (any, error) {
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	switch tok {
	case json.Delim('{'):
		o := ordered{}
		for dec.More() {
			k, err := dec.Token()
			if err != nil {
				return nil, err
			}
			v, err := decodeValue(dec)
			if err != nil {
				return nil, err
			}
			o = append(o, member{k.(string), v})
		}
		_, err := dec.Token() // }
		return o, err
	case json.Delim('['):
		a := []any{}
		for dec.More() {
			v, err := decodeValue(dec)
			if err != nil {
				return nil, err
			}
			a = append(a, v)
		}
		_, err := dec.Token() // ]
		return a, err
	}
	return tok, nil
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

// concernFlags are --replicas (write concern) and --quorum (read
// concern) of a client command; a nil one is not offered.
type concernFlags struct {
	replicas, quorum *string
}

// addConcerns adds --replicas, when writes is true, and --quorum, when
// reads is true, to a client command's flags.
func addConcerns(fs *flag.FlagSet, writes, reads bool) *concernFlags {
	f := &concernFlags{}
	if writes {
		f.replicas = fs.String("replicas", "", "write concern: answer once `N` regions (1..R, majority or all) hold the write; not met in time is replication_timeout, the write staying applied")
	}
	if reads {
		f.quorum = fs.String("quorum", "", "read concern: answer the join of `N` regions' states (1..R, majority or all)")
	}
	return f
}

// apply returns ctx with the concerns given for action, a write (write
// true) or a read, or a usage error naming the flag that does not apply
// to it.
func (f *concernFlags) apply(ctx context.Context, action string, write bool) (context.Context, error) {
	for _, c := range []struct {
		name string
		v    *string
		ok   bool
		with func(context.Context, client.Concern) context.Context
	}{{"replicas", f.replicas, write, client.WithReplicas}, {"quorum", f.quorum, !write, client.WithQuorum}} {
		if c.v == nil || *c.v == "" {
			continue
		}
		if !c.ok {
			return nil, badArgs(fmt.Errorf("--%s does not apply to %s", c.name, action))
		}
		n, err := client.ParseConcern(*c.v)
		if err != nil {
			return nil, badArgs(fmt.Errorf("--%s must be a number of regions from 1, majority or all, not %q", c.name, *c.v))
		}
		ctx = c.with(ctx, n)
	}
	return ctx, nil
}

// runCart reads or changes a cart.
func runCart(ctx context.Context, cio cmdIO, args []string) int {
	var concern *concernFlags
	return clientCommand(ctx, cio, "cart", args, func(fs *flag.FlagSet) {
		concern = addConcerns(fs, true, true)
	}, func(ctx context.Context, cl *client.Client, pos []string) (any, error) {
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
		if err != nil {
			return nil, badArgs(err)
		}
		ctx, err = concern.apply(ctx, "cart "+action, action != "get")
		if err != nil || cl == nil {
			return nil, err
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
	var concern *concernFlags
	var flags *flag.FlagSet
	return clientCommand(ctx, cio, "stock", args, func(fs *flag.FlagSet) {
		flags = fs
		consistent = fs.Bool("consistent", false, "get: read the item at the sku's home")
		reason = fs.String("reason", "", "adjust: why, logged by the region")
		concern = addConcerns(fs, true, true)
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
		if err != nil {
			return nil, badArgs(err)
		}
		// A flag of another action would be dropped without a word.
		if flagGiven(flags, "consistent") && action != "get" {
			return nil, badArgs(fmt.Errorf("--consistent is for stock get, not stock %s", action))
		}
		if flagGiven(flags, "reason") && action != "adjust" {
			return nil, badArgs(fmt.Errorf("--reason is for stock adjust, not stock %s", action))
		}
		ctx, err = concern.apply(ctx, "stock "+action, action != "get")
		if err != nil || cl == nil {
			return nil, err
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

// flagGiven reports whether the flag name was set on the command line.
func flagGiven(fs *flag.FlagSet, name string) bool {
	given := false
	fs.Visit(func(f *flag.Flag) { given = given || f.Name == name })
	return given
}

// runReserve holds units of a sku at its home.
func runReserve(ctx context.Context, cio cmdIO, args []string) int {
	var key *string
	var ttl *time.Duration
	var ttlGiven func() bool
	var concern *concernFlags
	return clientCommand(ctx, cio, "reserve", args, func(fs *flag.FlagSet) {
		key = fs.String("key", "", "Idempotency-Key (default: a fresh random one)")
		ttl = fs.Duration("ttl", 0, "how long to hold, 1s..24h (default: the API's, 10m)")
		ttlGiven = func() bool { return flagGiven(fs, "ttl") }
		concern = addConcerns(fs, true, false)
	}, func(ctx context.Context, cl *client.Client, pos []string) (any, error) {
		n, err := parseArgs(pos, []string{"SKU", "QTY"}, "QTY")
		// A --ttl given is sent as given: 0s is not "the default" but a
		// hold shorter than the API allows, refused here as the API would.
		if err == nil && ttlGiven() && (*ttl < latticeapi.MinTTL || *ttl > latticeapi.MaxTTL) {
			err = fmt.Errorf("--ttl %s is outside %s..%s", *ttl, latticeapi.MinTTL, latticeapi.MaxTTL)
		}
		if err != nil {
			return nil, badArgs(err)
		}
		if ctx, err = concern.apply(ctx, "reserve", true); err != nil || cl == nil {
			return nil, err
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
	var concern *concernFlags
	return clientCommand(ctx, cio, name, args, func(fs *flag.FlagSet) {
		key = fs.String("key", "", "Idempotency-Key (default: a fresh random one)")
		concern = addConcerns(fs, true, false)
	}, func(ctx context.Context, cl *client.Client, pos []string) (any, error) {
		if _, err := parseArgs(pos, []string{"ID"}); err != nil {
			return nil, badArgs(err)
		}
		ctx, err := concern.apply(ctx, name, true)
		if err != nil || cl == nil {
			return nil, err
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
