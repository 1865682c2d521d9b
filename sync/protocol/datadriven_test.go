package protocol_test

import (
	"bytes"
	"cmp"
	"container/heap"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/datadriven"

	"github.com/latticedb/lattice/crdt"
	"github.com/latticedb/lattice/region"
	"github.com/latticedb/lattice/region/store"
	"github.com/latticedb/lattice/sync/protocol"
)

// TestScenarios runs the scripted scenarios of testdata/*.txt, each on a
// fresh quiet simulation (newQuietSim: seed 1, no loss, duplication or
// jitter, every message takes 10 ms, every claim checked after every
// step). Regenerate the expected output with
//
//	go test ./sync/protocol -run TestScenarios -rewrite
//
// and read the diff: it is the behaviour the scenarios pin down.
//
// Commands (regions are ap-south, eu-west, us-east; a replica id that is
// a later incarnation prints as region+N, N counting the region's
// incarnations in the order the scenario met them):
//
//	config [max-buffer=N] [anti-entropy=D] [delay=D]
//	                                  must come first: the simulation's protocol
//	                                  configuration and the one-way delay
//	write R add CART SKU N            a cart write at region R; prints the
//	write R set CART SKU N            dots of the deltas it published
//	write R remove CART SKU           (times=K repeats it K times, replacing
//	write R clear CART                # in the cart id by 0..K-1)
//	restock R SKU N                   a restock at R; prints its dot
//	isolate R / heal [R]              cut / mend every link of R (heal alone:
//	                                  every link)
//	cut A B / mend A B                cut / mend the link between A and B
//	crash R                           R's process is killed (its store closed
//	                                  uncleanly); it stays down
//	stop R                            R stops cleanly; it stays down
//	restart R                         R starts again on its store
//	lose-tail R K [torn]              R crashes and its store loses its last K
//	                                  transactions (torn: the last one is cut
//	                                  in the middle); R starts again once the
//	                                  messages in flight to it are gone
//	drop [from=R] [to=R] [kind=K] [count=N]
//	                                  from now on the network drops matching
//	                                  messages (count: only the next N)
//	hold [from=R] [to=R] [kind=K] [count=N]
//	                                  as drop, but keeps them for release
//	release                           hands the held messages to their
//	                                  destinations now, in order
//	unfilter                          removes every drop and hold rule
//	duplicate                         every message in flight arrives twice
//	reorder                           the messages in flight arrive in the
//	                                  reverse order
//	run D                             advances virtual time by D in steps of
//	                                  1 ms (delivering and ticking)
//	deliver                           delivers every message in flight, and
//	                                  the messages they cause, without ticks
//	antientropy R                     R's anti-entropy with each peer: idle,
//	                                  needed or running, the rounds it began,
//	                                  the keys it shipped and received
//	carts [CART...] / items [SKU...]  every region's view of the carts / skus
//	                                  named (default: every cart the script
//	                                  wrote, every sku it restocked)
//	version                           every region's applied context
//	pending A B                       the deltas A still has to deliver to B
//	check converged [R...]            the regions (default all) hold the same
//	                                  state and applied context, the join of
//	                                  every acknowledged write not lost
//	check outcome CART [SKU:N...]     every running region's view of CART
//	check covers A B                  A's applied context covers B's
//	check repaired A B                anti-entropy between A and B moved keys
func TestScenarios(t *testing.T) {
	datadriven.Walk(t, "testdata", func(t *testing.T, path string) {
		var sc *scenario
		datadriven.RunTest(t, path, func(t *testing.T, td *datadriven.TestData) string {
			if sc == nil {
				sc = newScenario(t, td)
				if td.Cmd == "config" {
					return "ok\n"
				}
			} else if td.Cmd == "config" {
				td.Fatalf(t, "config must be the first command")
			}
			sc.t, sc.s.t = t, t
			out := sc.do(td)
			sc.observe()
			if !strings.HasSuffix(out, "\n") {
				out += "\n"
			}
			return out
		})
	})
}

// scenario is a quiet simulation driven by a script.
type scenario struct {
	t *testing.T
	s *sim
	// carts and skus are those the script named, stock the skus it
	// restocked.
	carts, skus, stock map[string]bool
	// aliases are the printed names of later incarnations; seen counts
	// them by region.
	aliases map[crdt.ReplicaID]string
	seen    map[string]int
	rules   []*netRule
	held    []heldMsg
}

// netRule drops or holds the messages it matches.
type netRule struct {
	hold     bool
	from, to int // -1: any
	kind     string
	count    int // -1: every one
}

type heldMsg struct {
	from, to int
	m        *protocol.Message
}

func newScenario(t *testing.T, td *datadriven.TestData) *scenario {
	cfg := simConfig()
	delay := 10 * time.Millisecond
	if td.Cmd == "config" {
		for _, a := range td.CmdArgs {
			v := a.SingleVal(t)
			switch a.Key {
			case "max-buffer":
				n, err := strconv.Atoi(v)
				if err != nil {
					td.Fatalf(t, "max-buffer: %v", err)
				}
				cfg.MaxBufferEntries = n
			case "anti-entropy":
				cfg.AntiEntropyEvery = parseDuration(t, td, v)
			case "delay":
				delay = parseDuration(t, td, v)
			default:
				td.Fatalf(t, "unknown config %s", a.Key)
			}
		}
	}
	s := newQuietSim(t, cfg)
	s.delay = [2]time.Duration{delay, 1}
	sc := &scenario{t: t, s: s, carts: map[string]bool{}, skus: map[string]bool{}, stock: map[string]bool{},
		aliases: map[crdt.ReplicaID]string{}, seen: map[string]int{}}
	s.deliver = sc.filter
	sc.observe()
	return sc
}

func parseDuration(t *testing.T, td *datadriven.TestData, v string) time.Duration {
	d, err := time.ParseDuration(v)
	if err != nil {
		td.Fatalf(t, "%v", err)
	}
	return d
}

// observe gives every running incarnation its printed name.
func (sc *scenario) observe() {
	for _, r := range sc.s.regions {
		if r.self != "" {
			sc.name(r.self)
		}
	}
}

// name returns the printed name of replica id r: the region's name for
// its first incarnation, region+N for the Nth later one met.
func (sc *scenario) name(r crdt.ReplicaID) string {
	if r.Incarnation() == 0 {
		return string(r)
	}
	if a, ok := sc.aliases[r]; ok {
		return a
	}
	reg := r.Region()
	sc.seen[reg]++
	a := fmt.Sprintf("%s+%d", reg, sc.seen[reg])
	sc.aliases[r] = a
	return a
}

func (sc *scenario) dot(d crdt.Dot) string {
	return fmt.Sprintf("%s:%d", sc.name(d.Replica), d.Counter)
}

// args returns the positional arguments of td and its key=value ones.
func args(td *datadriven.TestData) ([]string, map[string]string) {
	var pos []string
	opts := map[string]string{}
	for _, a := range td.CmdArgs {
		if len(a.Vals) == 0 {
			pos = append(pos, a.Key)
		} else {
			opts[a.Key] = strings.Join(a.Vals, ",")
		}
	}
	return pos, opts
}

func (sc *scenario) region(td *datadriven.TestData, name string) int {
	i := slices.Index(names, crdt.ReplicaID(name))
	if i < 0 {
		td.Fatalf(sc.t, "unknown region %q", name)
	}
	return i
}

func (sc *scenario) number(td *datadriven.TestData, v string) int64 {
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		td.Fatalf(sc.t, "%v", err)
	}
	return n
}

func (sc *scenario) need(td *datadriven.TestData, pos []string, n int) {
	if len(pos) < n {
		td.Fatalf(sc.t, "%s needs %d arguments", td.Cmd, n)
	}
}

func (sc *scenario) do(td *datadriven.TestData) string {
	s := sc.s
	pos, opts := args(td)
	switch td.Cmd {
	case "write":
		return sc.write(td, pos, opts)
	case "restock":
		sc.need(td, pos, 3)
		i := sc.region(td, pos[0])
		sc.skus[pos[1]], sc.stock[pos[1]] = true, true
		sc.track()
		return sc.local(i, func(n *region.Node) error {
			_, err := n.Restock(bg, pos[1], sc.number(td, pos[2]))
			return err
		})
	case "isolate", "heal":
		cut := td.Cmd == "isolate"
		if len(pos) == 0 && !cut {
			for a := range s.regions {
				for b := a + 1; b < len(s.regions); b++ {
					s.setCut(a, b, false)
				}
			}
			return "ok"
		}
		sc.need(td, pos, 1)
		i := sc.region(td, pos[0])
		for j := range s.regions {
			if j != i {
				s.setCut(i, j, cut)
			}
		}
		return "ok"
	case "cut", "mend":
		sc.need(td, pos, 2)
		s.setCut(sc.region(td, pos[0]), sc.region(td, pos[1]), td.Cmd == "cut")
		return "ok"
	case "crash", "stop":
		sc.need(td, pos, 1)
		i := sc.region(td, pos[0])
		if !s.regions[i].alive {
			return pos[0] + " is down"
		}
		s.down(i, td.Cmd == "stop")
		return "ok"
	case "restart":
		sc.need(td, pos, 1)
		i := sc.region(td, pos[0])
		if s.regions[i].alive {
			return pos[0] + " is running"
		}
		s.restart(i)
		return fmt.Sprintf("%s runs as %s", pos[0], sc.name(s.regions[i].self))
	case "lose-tail":
		sc.need(td, pos, 2)
		i := sc.region(td, pos[0])
		k := int(sc.number(td, pos[1]))
		torn := slices.Contains(pos[2:], "torn")
		lostBefore := maps.Clone(s.lost)
		s.fault(i, func(r *simRegion) {
			if _, err := store.CutTransactions(r.path, k, torn); err != nil {
				sc.t.Fatal(err)
			}
		})
		var lost []string
		for d := range s.lost {
			if !lostBefore[d] {
				lost = append(lost, sc.dot(d))
			}
		}
		slices.Sort(lost)
		if len(lost) == 0 {
			return "no write lost everywhere"
		}
		return "lost everywhere: " + strings.Join(lost, " ")
	case "drop", "hold":
		r := &netRule{hold: td.Cmd == "hold", from: -1, to: -1, kind: opts["kind"], count: -1}
		if v, ok := opts["from"]; ok {
			r.from = sc.region(td, v)
		}
		if v, ok := opts["to"]; ok {
			r.to = sc.region(td, v)
		}
		if v, ok := opts["count"]; ok {
			r.count = int(sc.number(td, v))
		}
		sc.rules = append(sc.rules, r)
		return "ok"
	case "unfilter":
		sc.rules = nil
		return "ok"
	case "release":
		held := sc.held
		sc.held = nil
		var out []string
		for _, h := range held {
			out = append(out, fmt.Sprintf("%s -> %s %s", names[h.from], names[h.to], h.m.Kind))
			if s.connected(h.from, h.to) {
				s.stepMsg(h.from, h.to, h.m)
			} else {
				out[len(out)-1] += " (link down: lost)"
			}
		}
		if len(out) == 0 {
			return "nothing held"
		}
		return strings.Join(out, "\n")
	case "duplicate", "reorder":
		if len(s.net) == 0 {
			return "nothing in flight"
		}
		ps := slices.Clone([]*packet(s.net))
		slices.SortFunc(ps, func(a, b *packet) int {
			if c := a.at.Compare(b.at); c != 0 {
				return c
			}
			return a.seq - b.seq
		})
		if td.Cmd == "duplicate" {
			for _, p := range ps {
				s.pseq++
				heap.Push(&s.net, &packet{at: p.at.Add(time.Millisecond), from: p.from, to: p.to, b: p.b, seq: s.pseq})
			}
			return "ok"
		}
		// Reverse the order of arrival: the last to arrive comes first,
		// at the time the first would have.
		times := make([]time.Time, len(ps))
		for k, p := range ps {
			times[k] = p.at
		}
		slices.Reverse(ps)
		for k, p := range ps {
			s.pseq++
			p.at, p.seq = times[k], s.pseq
		}
		heap.Init(&s.net)
		return "ok"
	case "run":
		sc.need(td, pos, 1)
		s.run(parseDuration(sc.t, td, pos[0]))
		return "ok"
	case "deliver":
		for n := 0; len(s.net) > 0; n++ {
			if n > 100_000 {
				td.Fatalf(sc.t, "messages keep coming")
			}
			if at := s.net[0].at; at.After(s.clock.t) {
				s.clock.t = at
			}
			s.deliverDue()
		}
		return "ok"
	case "antientropy":
		sc.need(td, pos, 1)
		i := sc.region(td, pos[0])
		if !s.regions[i].alive {
			return pos[0] + " is down"
		}
		var out []string
		for _, ps := range s.regions[i].proto.Status() {
			out = append(out, fmt.Sprintf("%s -> %-8s %s rounds=%d shipped=%d received=%d", pos[0], ps.Region, ps.AntiEntropy,
				ps.AERounds, ps.AEKeysPushed, ps.AEKeysPulled))
		}
		return strings.Join(out, "\n")
	case "carts":
		return sc.cartsView(pos)
	case "items":
		return sc.itemsView(pos)
	case "version":
		var out []string
		for i, r := range s.regions {
			a := s.readApplied(i)
			out = append(out, fmt.Sprintf("%-8s %s%s", r.name, sc.context(&a), downMark(r)))
		}
		return strings.Join(out, "\n")
	case "pending":
		sc.need(td, pos, 2)
		i := sc.region(td, pos[0])
		if !s.regions[i].alive {
			return pos[0] + " is down"
		}
		return strconv.Itoa(pending(sc.t, s.regions[i].proto, names[sc.region(td, pos[1])]))
	case "check":
		sc.need(td, pos, 1)
		return sc.check(td, pos[0], pos[1:])
	}
	td.Fatalf(sc.t, "unknown command %s", td.Cmd)
	return ""
}

func downMark(r *simRegion) string {
	if r.alive {
		return ""
	}
	return " (down)"
}

// track makes the simulation read (and compare) every cart and sku the
// script named.
func (sc *scenario) track() {
	s := sc.s
	for c := range sc.carts {
		if !slices.Contains(s.carts, c) {
			s.carts = append(s.carts, c)
		}
	}
	for k := range sc.skus {
		if !slices.Contains(s.skus, k) {
			s.skus = append(s.skus, k)
		}
	}
}

func (sc *scenario) write(td *datadriven.TestData, pos []string, opts map[string]string) string {
	sc.need(td, pos, 3)
	i := sc.region(td, pos[0])
	op, cart := pos[1], pos[2]
	var sku string
	var n int64
	switch op {
	case "add", "set":
		sc.need(td, pos, 5)
		sku, n = pos[3], sc.number(td, pos[4])
	case "remove":
		sc.need(td, pos, 4)
		sku = pos[3]
	case "clear":
	default:
		td.Fatalf(sc.t, "unknown cart write %s", op)
	}
	times := 1
	if v, ok := opts["times"]; ok {
		times = int(sc.number(td, v))
	}
	var outs []string
	for k := range times {
		id := strings.ReplaceAll(cart, "#", strconv.Itoa(k))
		sc.carts[id] = true
		if sku != "" {
			sc.skus[sku] = true
		}
		sc.track()
		outs = append(outs, sc.local(i, func(node *region.Node) error {
			var err error
			switch op {
			case "add":
				_, err = node.AddItem(bg, id, sku, n)
			case "set":
				_, err = node.SetItem(bg, id, sku, n)
			case "remove":
				_, err = node.RemoveItem(bg, id, sku)
			case "clear":
				_, err = node.ClearCart(bg, id)
			}
			return err
		}))
	}
	if times > 2 {
		return fmt.Sprintf("%s … %s", outs[0], outs[len(outs)-1])
	}
	return strings.Join(outs, "\n")
}

// local runs a write at region i and returns the dots of the deltas it
// published.
func (sc *scenario) local(i int, op func(n *region.Node) error) string {
	s := sc.s
	r := s.regions[i]
	if !r.alive {
		return fmt.Sprintf("error: %s is down", r.name)
	}
	if err := op(r.node); err != nil {
		return "error: " + err.Error()
	}
	var dots []string
	for _, d := range r.pub.ds {
		dots = append(dots, sc.dot(crdt.Dot{Replica: d.Origin, Counter: d.Seq}))
	}
	s.process(i)
	if len(dots) == 0 {
		return "no delta"
	}
	return strings.Join(dots, " ")
}

// named returns the ids given, else those of known, sorted.
func named(ids []string, known map[string]bool) []string {
	if len(ids) > 0 {
		return ids
	}
	return slices.Sorted(maps.Keys(known))
}

func (sc *scenario) cartsView(ids []string) string {
	s := sc.s
	var out []string
	for _, id := range named(ids, sc.carts) {
		for i, r := range s.regions {
			out = append(out, fmt.Sprintf("%-8s %s %s%s", r.name, id, cartView(s.readState(i).Carts[id]), downMark(r)))
		}
	}
	return strings.Join(out, "\n")
}

// cartView prints a cart's items, sorted by sku: {sku:qty ...}.
func cartView(c *crdt.Cart) string {
	if c == nil {
		return "{}"
	}
	var items []string
	for _, it := range c.Items() {
		items = append(items, fmt.Sprintf("%s:%d", it.SKU, it.Qty))
	}
	return "{" + strings.Join(items, " ") + "}"
}

func (sc *scenario) itemsView(skus []string) string {
	s := sc.s
	var out []string
	for _, sku := range named(skus, sc.stock) {
		for i, r := range s.regions {
			it := s.readState(i).Items[sku]
			if it == nil {
				it = &crdt.Item{}
			}
			out = append(out, fmt.Sprintf("%-8s %s stock=%d held=%d%s", r.name, sku, it.Stock.Value(), it.Held.Value, downMark(r)))
		}
	}
	return strings.Join(out, "\n")
}

// context prints an applied context: {replica:counter ...} by region,
// then incarnation, then the dots beyond it, if any.
func (sc *scenario) context(c *crdt.Context) string {
	var vv []string
	for _, r := range sc.sorted(slices.Collect(maps.Keys(c.VV))) {
		vv = append(vv, fmt.Sprintf("%s:%d", sc.name(r), c.VV[r]))
	}
	out := "{" + strings.Join(vv, " ") + "}"
	if len(c.Cloud) > 0 {
		var cloud []string
		ds := slices.SortedFunc(maps.Keys(c.Cloud), func(a, b crdt.Dot) int {
			if a.Replica != b.Replica {
				return sc.compare(a.Replica, b.Replica)
			}
			return cmp.Compare(a.Counter, b.Counter)
		})
		for _, d := range ds {
			cloud = append(cloud, sc.dot(d))
		}
		out += " and " + strings.Join(cloud, " ")
	}
	return out
}

// sorted sorts replica ids by region, then incarnation (as printed).
func (sc *scenario) sorted(rs []crdt.ReplicaID) []crdt.ReplicaID {
	// Name them in the order of their incarnation numbers.
	slices.SortFunc(rs, func(a, b crdt.ReplicaID) int {
		return cmp.Or(cmp.Compare(a.Region(), b.Region()), cmp.Compare(a.Incarnation(), b.Incarnation()))
	})
	for _, r := range rs {
		sc.name(r)
	}
	slices.SortStableFunc(rs, sc.compare)
	return rs
}

// compare orders replica ids by region, then printed incarnation.
func (sc *scenario) compare(a, b crdt.ReplicaID) int {
	na, nb := sc.name(a), sc.name(b)
	return cmp.Or(cmp.Compare(a.Region(), b.Region()), cmp.Compare(len(na), len(nb)), cmp.Compare(na, nb))
}

func (sc *scenario) check(td *datadriven.TestData, what string, pos []string) string {
	s := sc.s
	switch what {
	case "converged":
		var rs []int
		for _, p := range pos {
			rs = append(rs, sc.region(td, p))
		}
		if len(rs) == 0 {
			rs = []int{0, 1, 2}
		}
		var out []string
		for _, i := range rs {
			if !s.regions[i].alive {
				out = append(out, fmt.Sprintf("%s is down", names[i]))
			}
		}
		if len(out) > 0 {
			return strings.Join(out, "\n")
		}
		a, aApplied := rs[0], s.regions[rs[0]].node.Applied()
		for _, b := range rs[1:] {
			if !bytes.Equal(s.state(a), s.state(b)) {
				out = append(out, fmt.Sprintf("%s and %s hold different states", names[a], names[b]))
			}
			if bApplied := s.regions[b].node.Applied(); !aApplied.Equal(&bApplied) {
				out = append(out, fmt.Sprintf("%s has applied %s, %s %s", names[a], sc.context(&aApplied), names[b], sc.context(&bApplied)))
			}
		}
		if len(out) == 0 && !s.convergedAmong(rs...) {
			out = append(out, "the regions agree, but not on the join of every acknowledged write not lost")
		}
		if len(out) == 0 {
			return "ok"
		}
		return strings.Join(out, "\n")
	case "outcome":
		sc.need(td, pos, 1)
		var want []string
		for _, p := range pos[1:] {
			want = append(want, strings.Trim(p, "{}"))
		}
		slices.Sort(want)
		wantView := "{" + strings.Join(want, " ") + "}"
		var out []string
		for i, r := range s.regions {
			if !r.alive {
				continue
			}
			if got := cartView(s.readState(i).Carts[pos[0]]); got != wantView {
				out = append(out, fmt.Sprintf("%s has %s %s, want %s", r.name, pos[0], got, wantView))
			}
		}
		if len(out) == 0 {
			return "ok"
		}
		return strings.Join(out, "\n")
	case "covers":
		sc.need(td, pos, 2)
		a, b := s.readApplied(sc.region(td, pos[0])), s.readApplied(sc.region(td, pos[1]))
		if a.Covers(&b) {
			return "ok"
		}
		return fmt.Sprintf("%s has applied %s, %s %s", pos[0], sc.context(&a), pos[1], sc.context(&b))
	case "repaired":
		sc.need(td, pos, 2)
		i := sc.region(td, pos[0])
		if !s.regions[i].alive {
			return pos[0] + " is down"
		}
		for _, ps := range s.regions[i].proto.Status() {
			if ps.Region == pos[1] {
				if ps.AEKeysPushed+ps.AEKeysPulled > 0 {
					return "ok"
				}
				return "no key repaired by anti-entropy"
			}
		}
		td.Fatalf(sc.t, "no status for %s", pos[1])
	}
	td.Fatalf(sc.t, "unknown check %s", what)
	return ""
}

// filter is the simulation's deliver hook: the first rule matching a
// message drops or holds it.
func (sc *scenario) filter(from, to int, m *protocol.Message) bool {
	for _, r := range sc.rules {
		if r.count == 0 || (r.from >= 0 && r.from != from) || (r.to >= 0 && r.to != to) || (r.kind != "" && r.kind != m.Kind.String()) {
			continue
		}
		if r.count > 0 {
			r.count--
		}
		if r.hold {
			sc.held = append(sc.held, heldMsg{from, to, m})
		}
		return false
	}
	return true
}
