package region

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/latticedb/lattice/crdt"
)

// dm13Value is where the last stored value of a key sits in a BuntDB
// append-only file.
type dm13Value struct {
	off, n int
}

// dm13LiveValues parses the BuntDB file at path (RESP commands) and
// returns, for every key set and not deleted since, where its last value
// sits in the file.
func dm13LiveValues(t *testing.T, path string) ([]byte, map[string]dm13Value) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	live := map[string]dm13Value{}
	line := func(i int) (string, int) {
		j := bytes.Index(b[i:], []byte("\r\n"))
		if j < 0 {
			return "", -1
		}
		return string(b[i : i+j]), i + j + 2
	}
	i := 0
	for i < len(b) {
		h, next := line(i)
		if next < 0 || len(h) == 0 || h[0] != '*' {
			t.Fatalf("%s: cannot parse at offset %d", path, i)
		}
		argc, err := strconv.Atoi(h[1:])
		if err != nil {
			t.Fatalf("%s: bad array header %q", path, h)
		}
		i = next
		type arg struct{ off, n int }
		args := make([]arg, 0, argc)
		for range argc {
			h, next := line(i)
			if next < 0 || len(h) == 0 || h[0] != '$' {
				t.Fatalf("%s: cannot parse a bulk string at offset %d", path, i)
			}
			n, err := strconv.Atoi(h[1:])
			if err != nil {
				t.Fatalf("%s: bad bulk header %q", path, h)
			}
			args = append(args, arg{next, n})
			i = next + n + 2
		}
		if len(args) == 0 {
			continue
		}
		cmd := strings.ToLower(string(b[args[0].off : args[0].off+args[0].n]))
		switch {
		case cmd == "set" && len(args) >= 3:
			key := string(b[args[1].off : args[1].off+args[1].n])
			live[key] = dm13Value{args[2].off, args[2].n}
		case cmd == "del" && len(args) >= 2:
			delete(live, string(b[args[1].off:args[1].off+args[1].n]))
		case cmd == "flushdb":
			clear(live)
		}
	}
	return b, live
}

// dm13Removal is a removal of sku from cart id that region acknowledged,
// published as the region-level dot dot, when every add of sku to the
// cart acknowledged anywhere was in the region's state of the cart.
type dm13Removal struct {
	region, id, sku string
	dot             crdt.Dot
	step            int
}

type dm13Key struct {
	id  string
	dot crdt.Dot
}

// dm13Model drives a semRig (three regions, every sku homed at us-east)
// with random operations, deliveries, repairs, restarts and damaged
// values, and checks the invariants of docs/operations.md "Damaged
// values" after each step.
type dm13Model struct {
	t     *testing.T
	seed  uint64
	rng   *rand.Rand
	r     *semRig
	carts []string
	lines []string // skus put in carts
	stock []string // skus restocked and reserved
	step  int
	trace []string

	// model[region][cart]: a lower bound of what the region holds, made
	// of the deltas and states it was given; exact while unsure is unset.
	model  map[string]map[string]*crdt.Cart
	unsure map[string]map[string]bool
	// kept[region][cart]: the deltas delivered to the region while its
	// copy of the cart was damaged since the last whole state it took:
	// kept aside under p/ (pending.go), they survive a damage of the
	// cart's head or lines.
	kept map[string]map[string]*crdt.Cart

	dots      map[dm13Key]crdt.Line // every line dot seen anywhere
	seen      map[string]int        // deltas of each region already scanned
	removals  []dm13Removal
	restocked map[string]int64
	committed map[string]int64
	held      []Reservation
	done      map[string]bool  // reservations counted as committed
	acked     map[dm13Key]bool // line dots of acknowledged writes
	delivered map[crdt.Dot][]string
	sent      map[string][]string // "step→to" of each region's whole-state repairs
	// damagedAt[region][cart]: the last step a value of the region's copy
	// of the cart (head, line or kept deltas) was damaged.
	damagedAt map[string]map[string]int
	// itemDamaged: skus whose item was damaged at their home. A commit
	// that had not left the home is lost with it (README, Limitations:
	// its units count as available again), so the home's stock is then
	// bounded by what was restocked only.
	itemDamaged map[string]bool
	// lostCommits: units committed before a damage of the sku's item at
	// its home; those whose commit never left the home are lost with it.
	lostCommits map[string]int64
	failed      bool
}

const dm13Home = "us-east"

func newDM13Model(t *testing.T, seed uint64) *dm13Model {
	regions := []string{"us-east", "eu-west", "ap-south"}
	m := &dm13Model{t: t, seed: seed, rng: rand.New(rand.NewPCG(seed, seed^0x5bd1e995)),
		model: map[string]map[string]*crdt.Cart{}, unsure: map[string]map[string]bool{},
		kept: map[string]map[string]*crdt.Cart{},
		dots: map[dm13Key]crdt.Line{}, seen: map[string]int{},
		restocked: map[string]int64{}, committed: map[string]int64{}, done: map[string]bool{},
		acked: map[dm13Key]bool{}, delivered: map[crdt.Dot][]string{}, sent: map[string][]string{},
		damagedAt: map[string]map[string]int{}, itemDamaged: map[string]bool{}, lostCommits: map[string]int64{}}
	m.r = newSemRigHome(t, func(string) string { return dm13Home }, regions...)
	m.carts = []string{"c0", "c1", "c2"}[:2+m.rng.IntN(2)]
	m.lines = []string{"x", "y", "z"}
	m.stock = []string{"s0", "s1"}[:1+m.rng.IntN(2)]
	for _, name := range regions {
		m.model[name] = map[string]*crdt.Cart{}
		m.unsure[name] = map[string]bool{}
		m.kept[name] = map[string]*crdt.Cart{}
		for _, id := range m.carts {
			m.model[name][id] = &crdt.Cart{}
			m.kept[name][id] = &crdt.Cart{}
		}
	}
	return m
}

func (m *dm13Model) logf(format string, args ...any) {
	m.trace = append(m.trace, fmt.Sprintf("%3d ", m.step)+fmt.Sprintf(format, args...))
}

func (m *dm13Model) fail(format string, args ...any) {
	m.t.Helper()
	m.failed = true
	m.t.Fatalf("seed %d step %d: %s\ntrace (LATTICE_SEED=%d):\n%s", m.seed, m.step,
		fmt.Sprintf(format, args...), m.seed, strings.Join(m.trace, "\n"))
}

func (m *dm13Model) pick(s []string) string { return s[m.rng.IntN(len(s))] }

func (m *dm13Model) peers(name string) []string {
	var out []string
	for _, p := range m.r.regions {
		if p != name {
			out = append(out, p)
		}
	}
	return out
}

// scanDeltas records the line dots of every delta published since the
// last scan, checking that no dot names two different lines.
func (m *dm13Model) scanDeltas() {
	for _, name := range m.r.regions {
		ds := damage8Deltas(m.r, name, m.seen[name])
		m.seen[name] += len(ds)
		for _, d := range ds {
			for id, c := range d.Group.Carts {
				m.noteDots(id, c, fmt.Sprintf("delta %s:%d", d.Origin, d.Seq))
			}
		}
	}
}

func (m *dm13Model) noteDots(id string, c *crdt.Cart, where string) {
	m.t.Helper()
	for d, l := range c.Entries {
		k := dm13Key{id, d}
		if was, ok := m.dots[k]; ok && was != l {
			m.fail("dot %v of cart %s names two lines: %+v before, %+v in %s", d, id, was, l, where)
		}
		m.dots[k] = l
	}
}

// write runs one cart write at region name and folds the deltas it
// published into the region's model.
func (m *dm13Model) write(name string) {
	n := m.r.nodes[name]
	id, sku := m.pick(m.carts), m.pick(m.lines)
	mark := m.r.published(name)
	var what string
	var err error
	adds := false
	removed := []string{}
	switch k := m.rng.IntN(10); {
	case k < 5:
		q := int64(1 + m.rng.IntN(3))
		what = fmt.Sprintf("add %s %s×%d at %s", id, sku, q, name)
		_, err = n.AddItem(bg, id, sku, q)
		adds = true
	case k < 7:
		q := int64(m.rng.IntN(4))
		what = fmt.Sprintf("set %s %s×%d at %s", id, sku, q, name)
		_, err = n.SetItem(bg, id, sku, q)
		adds = q > 0
	case k < 9:
		what = fmt.Sprintf("remove %s %s at %s", id, sku, name)
		_, err = n.RemoveItem(bg, id, sku)
		removed = []string{sku}
	default:
		what = fmt.Sprintf("clear %s at %s", id, name)
		_, err = n.ClearCart(bg, id)
		removed = m.lines
	}
	ds := damage8Deltas(m.r, name, mark)
	if err != nil {
		m.logf("%s: %v (%d deltas)", what, err, len(ds))
		if len(ds) > 0 {
			m.fail("%s was refused (%v) but published %d deltas", what, err, len(ds))
		}
		return
	}
	m.logf("%s: ok (%d deltas)", what, len(ds))
	for _, d := range ds {
		if c, ok := d.Group.Carts[id]; ok {
			m.model[name][id].Join(c)
			for dot := range c.Entries {
				m.acked[dm13Key{id, dot}] = true
			}
		}
	}
	m.scanDeltas()
	if adds {
		m.removals = slices.DeleteFunc(m.removals, func(x dm13Removal) bool { return x.id == id && x.sku == sku })
	}
	if len(removed) == 0 || len(ds) == 0 {
		return
	}
	// A removal counts if the region's state covers every add of the sku
	// acknowledged anywhere so far: no acknowledged add may bring it back.
	st := m.r.stateOf(name, id)
	last := ds[len(ds)-1]
	for _, s := range removed {
		covered := true
		for k, l := range m.dots {
			if k.id == id && l.SKU == s && l.N > 0 && !st.Ctx.Contains(k.dot) {
				covered = false
			}
		}
		if covered {
			m.removals = append(m.removals, dm13Removal{region: name, id: id, sku: s,
				dot: crdt.Dot{Replica: last.Origin, Counter: last.Seq}, step: m.step})
		}
	}
}

// deliver applies one published delta of another region at region name:
// mostly a recent one, sometimes any (late), sometimes twice.
func (m *dm13Model) deliver(name string) {
	from := m.pick(m.peers(name))
	l := damage8Deltas(m.r, from, 0)
	if len(l) == 0 {
		return
	}
	i := len(l) - 1 - m.rng.IntN(min(len(l), 4))
	if m.rng.IntN(4) == 0 {
		i = m.rng.IntN(len(l))
	}
	d := l[i]
	times := 1 + m.rng.IntN(4)/3
	for range times {
		dots := &crdt.Context{}
		dots.Insert(crdt.Dot{Replica: d.Origin, Counter: d.Seq})
		g, err := crdt.DecodeGroup(crdt.EncodeGroup(d.Group))
		if err != nil {
			m.fail("delta %s:%d does not decode: %v", d.Origin, d.Seq, err)
		}
		if err := m.r.nodes[name].ApplyRemote(dots, g); err != nil {
			m.logf("delta %s:%d at %s: %v", d.Origin, d.Seq, name, err)
			return
		}
	}
	m.logf("delta %s:%d (%s #%d) at %s ×%d", d.Origin, d.Seq, from, i, name, times)
	dd := crdt.Dot{Replica: d.Origin, Counter: d.Seq}
	m.delivered[dd] = append(m.delivered[dd], name)
	for id, c := range d.Group.Carts {
		if mc, ok := m.model[name][id]; ok {
			mc.Join(c)
			if m.r.nodes[name].carts.isDamaged(id) {
				// Kept aside (applyCart): it survives a damage of
				// the cart's head or lines.
				m.kept[name][id].Join(c)
			}
		}
	}
}

// repair sends region from's whole state of every cart and sku to region
// to, as an anti-entropy round does.
func (m *dm13Model) repair(from, to string) {
	g, ctx, err := m.r.nodes[from].readObjects(m.carts, m.stock, false)
	if err != nil {
		m.fail("read of every key at %s: %v", from, err)
	}
	if g, err = crdt.DecodeGroup(crdt.EncodeGroup(g)); err != nil {
		m.fail("state of %s does not decode: %v", from, err)
	}
	for id, c := range g.Carts {
		m.noteDots(id, c, "state of "+from)
	}
	if err := m.r.nodes[to].ApplyReflecting(&crdt.Context{}, g, &ctx); err != nil {
		m.logf("repair %s→%s: %v", from, to, err)
		return
	}
	m.logf("repair %s→%s", from, to)
	m.sent[from] = append(m.sent[from], fmt.Sprintf("%d→%s", m.step, to))
	for id, c := range g.Carts {
		if mc, ok := m.model[to][id]; ok {
			mc.Join(c)
			// A whole state takes what was kept aside into the cart.
			m.kept[to][id] = &crdt.Cart{}
		}
	}
}

// catchUp repairs region name from every peer and reports every round
// complete.
func (m *dm13Model) catchUp(name string) {
	for _, p := range m.peers(name) {
		m.repair(p, name)
	}
	for _, p := range m.peers(name) {
		m.r.nodes[name].SyncedWith(p, "", m.peers(name))
	}
	m.logf("catch-up of %s: catching up %v", name, m.r.nodes[name].CatchingUp())
}

// damage stops region name cleanly, flips a byte of the stored value of
// a random cart, line, kept delta, stock or held-back list key and opens
// it again.
func (m *dm13Model) damage(name string) {
	tn := m.r.nodes[name]
	tn.close()
	m.r.closed[name] = true
	b, live := dm13LiveValues(m.t, tn.path)
	var keys []string
	for k, v := range live {
		if v.n < 8 {
			continue
		}
		switch {
		case strings.HasPrefix(k, prefixCart), strings.HasPrefix(k, prefixCartLine),
			strings.HasPrefix(k, prefixItem), strings.HasPrefix(k, prefixPending), k == keyHeldBack:
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	if len(keys) == 0 {
		m.logf("stop %s: nothing to damage", name)
		m.r.open(name)
		return
	}
	key := m.pick(keys)
	v := live[key]
	at := v.off + 5 + m.rng.IntN(v.n-5)
	b[at] ^= byte(1 << m.rng.IntN(8))
	if err := os.WriteFile(tn.path, b, 0o644); err != nil {
		m.t.Fatal(err)
	}
	m.logf("stop %s, damage %s (byte %d of %d), reopen", name, key, at-v.off, v.n)
	if sku, ok := strings.CutPrefix(key, prefixItem); ok && name == dm13Home {
		m.itemDamaged[sku] = true
		m.lostCommits[sku] += m.committed[sku]
	}
	// What the damaged key held of a cart is no longer known here.
	for _, id := range m.carts {
		if key == prefixCart+id || strings.HasPrefix(key, prefixCartLine+id+"/") || key == prefixPending+prefixCart+id {
			// The deltas kept aside survive unless their own key is the
			// damaged one.
			if key == prefixPending+prefixCart+id {
				m.kept[name][id] = &crdt.Cart{}
			}
			m.model[name][id] = m.kept[name][id].Clone()
			m.unsure[name][id] = true
			if m.damagedAt[name] == nil {
				m.damagedAt[name] = map[string]int{}
			}
			m.damagedAt[name][id] = m.step
		}
	}
	m.r.open(name)
}

// stockStep restocks, reserves or commits.
func (m *dm13Model) stockStep(name string) {
	n := m.r.nodes[name]
	sku := m.pick(m.stock)
	switch k := m.rng.IntN(3); {
	case k == 0:
		q := int64(1 + m.rng.IntN(5))
		mark := m.r.published(name)
		_, err := n.Restock(bg, sku, q)
		if err == nil {
			m.restocked[sku] += q
		} else if m.r.published(name) != mark {
			m.fail("restock of %s at %s was refused (%v) but published a delta", sku, name, err)
		}
		m.logf("restock %s +%d at %s: %v", sku, q, name, err)
	case k == 1:
		q := int64(1 + m.rng.IntN(3))
		res, err := n.Reserve(bg, sku, q, time.Hour, Idem{})
		if err == nil {
			m.held = append(m.held, res)
		}
		m.logf("reserve %s ×%d at %s: %s %v", sku, q, name, res.ID, err)
	default:
		if len(m.held) == 0 {
			return
		}
		res := m.held[m.rng.IntN(len(m.held))]
		got, err := n.Commit(bg, res.ID, Idem{})
		if err == nil && got.State == StateCommitted && !m.done[res.ID] {
			m.done[res.ID] = true
			m.committed[res.SKU] += res.Qty
		}
		m.logf("commit %s (%s ×%d) at %s: %s %v", res.ID, res.SKU, res.Qty, name, got.State, err)
	}
}

// check runs the invariants that hold after every step.
func (m *dm13Model) check() {
	m.t.Helper()
	m.scanDeltas()
	for _, sku := range m.stock {
		if m.committed[sku] > m.restocked[sku]+m.lostCommits[sku] {
			m.fail("%d units of %s committed, %d restocked, %d possibly lost with a damage of the home's item", m.committed[sku], sku, m.restocked[sku], m.lostCommits[sku])
		}
	}
	for _, x := range m.removals {
		n := m.r.nodes[x.region]
		applied := n.Applied()
		if !applied.Contains(x.dot) {
			continue
		}
		if at, ok := m.damagedAt[x.region][x.id]; ok && at > x.step {
			// The region's copy was damaged since: its own writes that
			// had not reached an undamaged copy elsewhere are lost with
			// the damage, though its applied context still names them
			// (README, Limitations).
			continue
		}
		if c, err := n.GetCart(bg, x.id); err == nil && qtyOf(c, x.sku) > 0 {
			m.fail("%s serves cart %s as %s, whose removal of %s it acknowledged at step %d (dot %v, still in its applied context); no add of %s was acknowledged since (the removal's delta was delivered to %v; %s's whole-state repairs: %v)",
				x.region, x.id, itemsString(c.Items), x.sku, x.step, x.dot, x.sku, m.delivered[x.dot], x.region, m.sent[x.region])
		}
	}
	for _, name := range m.r.regions {
		n := m.r.nodes[name]
		for _, id := range m.carts {
			v, err := n.GetCart(bg, id)
			if err != nil {
				continue // held back
			}
			got := m.r.stateOf(name, id)
			m.noteDots(id, got, "state of "+name)
			want := m.model[name][id]
			if m.unsure[name][id] {
				if n.CatchingUp() {
					continue
				}
				j := got.Clone()
				j.Join(want)
				if !sameCart(j, got) {
					m.fail("%s caught up holds cart %s as %v ctx %v, without what it was sent since the damage: %v ctx %v",
						name, id, got.Entries, got.Ctx, want.Entries, want.Ctx)
				}
				m.model[name][id] = got.Clone()
				delete(m.unsure[name], id)
				m.kept[name][id] = &crdt.Cart{}
				want = m.model[name][id]
			}
			if !sameCart(got, want) {
				m.fail("%s holds cart %s as %v ctx %v, model %v ctx %v", name, id, got.Entries, got.Ctx, want.Entries, want.Ctx)
			}
			if !sameItems(v.Items, want.Items()) {
				m.fail("%s serves cart %s as %s, its state shows %s", name, id, itemsString(v.Items), itemsString(want.Items()))
			}
		}
	}
	for i, a := range m.r.regions {
		for _, b := range m.r.regions[i+1:] {
			for _, id := range m.carts {
				if bad := m.r.stateOf(a, id).Conflicts(m.r.stateOf(b, id)); len(bad) > 0 {
					m.fail("%s and %s hold dots %v of cart %s with different lines", a, b, bad, id)
				}
			}
		}
	}
}

func (m *dm13Model) run(steps int) {
	for m.step = 0; m.step < steps; m.step++ {
		name := m.pick(m.r.regions)
		switch k := m.rng.IntN(100); {
		case k < 30:
			m.write(name)
		case k < 40:
			m.stockStep(name)
		case k < 68:
			m.deliver(name)
		case k < 78:
			m.repair(m.pick(m.peers(name)), name)
		case k < 82:
			clean := m.rng.IntN(2) == 0
			m.logf("restart %s (clean %v)", name, clean)
			m.r.restart(name, clean)
		case k < 90:
			m.damage(name)
		default:
			m.catchUp(name)
		}
		m.check()
	}
	m.heal()
}

// heal repairs every region from every other, twice, and reports every
// round complete; then every region must serve the same carts, the join
// of what every region was sent, with nothing damaged or refused.
func (m *dm13Model) heal() {
	m.step = -1
	want := map[string]*crdt.Cart{}
	for _, id := range m.carts {
		want[id] = &crdt.Cart{}
		for _, name := range m.r.regions {
			want[id].Join(m.model[name][id])
		}
	}
	for range 2 {
		for _, to := range m.r.regions {
			for _, from := range m.peers(to) {
				m.repair(from, to)
			}
		}
		for _, to := range m.r.regions {
			for _, p := range m.peers(to) {
				m.r.nodes[to].SyncedWith(p, "", m.peers(to))
			}
		}
	}
	m.logf("heal")
	for _, name := range m.r.regions {
		n := m.r.nodes[name]
		if n.CatchingUp() {
			m.fail("%s still catching up after every peer's round", name)
		}
		deadline := time.Now().Add(2 * time.Second)
		for len(n.store.Corrupt()) > 0 && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if bad := n.store.Corrupt(); len(bad) > 0 {
			m.fail("%s still lists damaged keys %v after the heal", name, bad)
		}
		for _, id := range m.carts {
			c, err := n.GetCart(bg, id)
			if err != nil {
				m.fail("%s refuses cart %s after the heal: %v", name, id, err)
			}
			// A damaged cart may keep lines the damage spared (the model
			// counts them lost): the state may hold more than the join of
			// the models, but only acknowledged writes, and no removal of
			// the join may be undone.
			got := m.r.stateOf(name, id)
			j := got.Clone()
			j.Join(want[id])
			extra := false
			for dot := range got.Entries {
				if _, ok := want[id].Entries[dot]; !ok {
					extra = true
					if !m.acked[dm13Key{id, dot}] {
						m.fail("%s holds line %v %+v of cart %s after the heal, which no acknowledged write made", name, dot, got.Entries[dot], id)
					}
				}
			}
			if !sameCart(j, got) || (!extra && !sameItems(c.Items, want[id].Items())) {
				m.fail("%s serves cart %s as %s after the heal, want %s (state %v ctx %v, want %v ctx %v)", name, id,
					itemsString(c.Items), itemsString(want[id].Items()), m.r.stateOf(name, id).Entries, m.r.stateOf(name, id).Ctx,
					want[id].Entries, want[id].Ctx)
			}
		}
		for _, sku := range m.stock {
			if _, err := n.GetItem(bg, sku, false); err != nil {
				m.fail("%s refuses item %s after the heal: %v", name, sku, err)
			}
		}
	}
	for _, sku := range m.stock {
		home, err := m.r.nodes[dm13Home].GetItem(bg, sku, false)
		if err != nil {
			continue
		}
		for _, name := range m.r.regions {
			it, _ := m.r.nodes[name].GetItem(bg, sku, false)
			if it.Stock != home.Stock {
				m.fail("after the heal %s shows stock %d of %s, the home %d", name, it.Stock, sku, home.Stock)
			}
		}
		if m.itemDamaged[sku] {
			if home.Stock > m.restocked[sku] {
				m.fail("after the heal the home shows stock %d of %s; %d restocked (its item was damaged: commits may be lost, restocks not)", home.Stock, sku, m.restocked[sku])
			}
		} else if home.Stock > m.restocked[sku]-m.committed[sku] {
			m.fail("after the heal the home shows stock %d of %s; %d restocked, %d committed", home.Stock, sku, m.restocked[sku], m.committed[sku])
		}
	}
}

// TestDamageModelRandomized runs seeded random carts and stock work over
// three regions whose stores are damaged, restarted and caught up at
// random, with the invariants of docs/operations.md "Damaged values":
// no oversell, no removal a region acknowledged and still claims shown
// again, no dot issued twice, and after a heal every region serves the
// join of every write that reached a copy not lost, nothing refused.
func TestDamageModelRandomized(t *testing.T) {
	// 144 and 51 once showed a removal the region still claimed shown
	// again: its own write lost with the damage, which the invariant now
	// exempts (README, Limitations). 415 and 599 once lost a write kept
	// aside for a held-back cart when the list of held-back keys was
	// damaged. 157 and 605 failed because of the model: a removal kept
	// aside at a region whose cart lines were then damaged was counted
	// lost, where the region keeps it (kept).
	seeds := []uint64{1, 2, 144, 51, 415, 599, 157, 605}
	if os.Getenv("LATTICE_SEED") != "" {
		seeds = []uint64{testSeed(t)}
	}
	steps := 150
	if s := os.Getenv("LATTICE_DM13_STEPS"); s != "" {
		steps, _ = strconv.Atoi(s)
	}
	for _, seed := range seeds {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			t.Logf("seed %d (rerun with LATTICE_SEED=%d)", seed, seed)
			m := newDM13Model(t, seed)
			m.run(steps)
			if os.Getenv("LATTICE_DM13_TRACE") != "" {
				t.Logf("trace:\n%s", strings.Join(m.trace, "\n"))
			}
		})
	}
}
