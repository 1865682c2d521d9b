package protocol_test

import (
	"flag"
	"fmt"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/latticedb/lattice/crdt"
	"github.com/latticedb/lattice/sync/protocol"
)

var (
	repairN = flag.String("repair.n", "", "TestRepairCost: comma-separated numbers of carts to measure anti-entropy repair at "+
		"(e.g. 100000,1000000); the test is skipped when empty")
	repairD     = flag.String("repair.d", "10,1000,100000,full", "TestRepairCost: comma-separated numbers of differing carts (full: the stale region is empty)")
	repairDelay = flag.Duration("repair.delay", 34*time.Millisecond, "TestRepairCost: one-way delay between the two regions")
	repairRate  = flag.Int("repair.rate", 0, "TestRepairCost: Config.AntiEntropyRate (0: none), where the protocol has it")
)

// memStore is a region's replicated key space in memory, as the protocol
// reads it (Storage): encoded cart states, the bucketed digest, the
// applied context.
type memStore struct {
	buckets int
	states  map[string][]byte
	digest  []uint64
	keys    []map[string]uint64
	applied crdt.Context
}

func newMemStore(buckets int) *memStore {
	m := &memStore{buckets: buckets, states: map[string][]byte{}, digest: make([]uint64, buckets), keys: make([]map[string]uint64, buckets)}
	for i := range m.keys {
		m.keys[i] = map[string]uint64{}
	}
	return m
}

func (m *memStore) put(k string, state []byte) {
	b := crdt.KeyBucket(k, m.buckets)
	h := crdt.StateHash(k, state)
	if old, ok := m.keys[b][k]; ok {
		m.digest[b] ^= old
	}
	m.keys[b][k] = h
	m.digest[b] ^= h
	m.states[k] = state
}

func (m *memStore) Snapshot(choose func([]uint64) []uint32) (*protocol.Snapshot, error) {
	s := &protocol.Snapshot{Buckets: slices.Clone(m.digest), Keys: map[string]uint64{}, Applied: m.applied.Clone()}
	setCounts(s, m.keys)
	if choose != nil {
		for _, b := range choose(s.Buckets) {
			for k, h := range m.keys[b] {
				s.Keys[k] = h
			}
		}
	}
	return s, nil
}

func (m *memStore) Read(keys []string) (*crdt.Group, crdt.Context, error) {
	g := &crdt.Group{}
	for _, k := range keys {
		if b, ok := m.states[k]; ok {
			c, err := crdt.DecodeCart(b)
			if err != nil {
				return nil, crdt.Context{}, err
			}
			if g.Carts == nil {
				g.Carts = map[string]*crdt.Cart{}
			}
			g.Carts[strings.TrimPrefix(k, crdt.CartPrefix)] = c
		}
	}
	return g, m.applied.Clone(), nil
}

func (m *memStore) apply(a protocol.Apply) error {
	if a.Group != nil {
		for id, c := range a.Group.Carts {
			k := crdt.CartPrefix + id
			if b, ok := m.states[k]; ok {
				cur, err := crdt.DecodeCart(b)
				if err != nil {
					return err
				}
				cur.Join(c)
				c = cur
			}
			m.put(k, crdt.EncodeCart(c))
		}
	}
	m.applied.Join(&a.Dots)
	return nil
}

// repairCase is two regions' stores: a holds n carts of 3 lines, b the
// same but d of them (all if d < 0).
func repairCase(n, d int) (a, b *memStore) {
	const buckets = 1024
	a, b = newMemStore(buckets), newMemStore(buckets)
	r := crdt.ReplicaID("us-east")
	step := 1
	if d > 0 {
		step = max(1, n/d)
	}
	lacks := func(i int) bool { return d < 0 || (d > 0 && i%step == 0 && i/step < d) }
	for i := range n {
		c := &crdt.Cart{}
		for l := range 3 {
			c.Join(c.Add(r, fmt.Sprintf("sku-%06d-standard-size", (i+l)%5000), int64(1+l)))
		}
		k := fmt.Sprintf("%scart-%07d", crdt.CartPrefix, i)
		s := crdt.EncodeCart(c)
		a.put(k, s)
		if !lacks(i) {
			b.put(k, s)
		}
	}
	a.applied = crdt.Context{VV: map[crdt.ReplicaID]uint64{r: uint64(n)}}
	return a, b
}

type repairResult struct {
	virtual time.Duration // until the stores are equal and no round runs
	cpu     time.Duration
	bytes   int
	keys    int
	msgs    int
	byKind  map[string]int
	// stall is the longest single call (Step or Tick, with reading the
	// store) of the healthy region's protocol: the live path's deltas
	// wait behind it in the replicator's loop.
	stall time.Duration
}

// repair runs the protocol between the two stores over a network of one
// way delay until they hold the same states and neither runs a round.
func repair(t *testing.T, a, b *memStore, delay time.Duration) repairResult {
	cfg := protocol.DefaultConfig()
	setRate(&cfg, *repairRate)
	names := []crdt.ReplicaID{"us-east", "eu-west"}
	stores := []*memStore{a, b}
	start := time.Unix(1_800_000_000, 0)
	now := start
	ps := []*protocol.Protocol{
		protocol.New(names[0], names, a.applied, a, cfg),
		protocol.New(names[1], names, b.applied, b, cfg),
	}
	type packet struct {
		to int
		at time.Time
		b  []byte
	}
	var net []packet
	var res repairResult
	wall := time.Now()
	collect := func(i int) {
		r := ps[i].Ready()
		for _, ap := range r.Applies {
			if err := stores[i].apply(ap); err != nil {
				t.Fatal(err)
			}
		}
		for _, env := range r.Messages {
			if env.Msg.Kind == protocol.KindDelta || env.Msg.Kind == protocol.KindAck {
				continue
			}
			buf, err := protocol.Encode(env.Msg)
			if err != nil {
				t.Fatal(err)
			}
			res.bytes += len(buf)
			res.msgs++
			if res.byKind == nil {
				res.byKind = map[string]int{}
			}
			res.byKind[fmt.Sprintf("%s>%s", names[i], env.Msg.Kind)] += len(buf)
			if env.Msg.Group != nil {
				res.keys += env.Msg.Group.Len()
			}
			net = append(net, packet{to: 1 - i, at: now.Add(delay), b: buf})
		}
	}
	for i := range ps {
		ps[i].PeerUp(names[1-i], now)
		ps[i].Tick(now)
		collect(i)
	}
	const tick = 20 * time.Millisecond
	nextTick := now.Add(tick)
	repaired := time.Time{}
	for now.Sub(start) < 10*time.Minute {
		running := false
		for _, p := range ps {
			for _, s := range p.Status() {
				running = running || s.AntiEntropy == "running"
			}
		}
		if slices.Equal(a.digest, b.digest) {
			if repaired.IsZero() {
				repaired = now
			}
			if !running && len(net) == 0 {
				break
			}
		} else {
			repaired = time.Time{}
		}
		next := nextTick
		if len(net) > 0 && net[0].at.Before(next) {
			next = net[0].at
		}
		now = next
		for len(net) > 0 && !net[0].at.After(now) {
			pk := net[0]
			net = net[1:]
			m, err := protocol.Decode(pk.b, cfg.Buckets)
			if err != nil {
				t.Fatal(err)
			}
			t0 := time.Now()
			ps[pk.to].Step(names[1-pk.to], m, now)
			collect(pk.to)
			if pk.to == 0 {
				res.stall = max(res.stall, time.Since(t0))
			}
		}
		if !now.Before(nextTick) {
			for i := range ps {
				t0 := time.Now()
				ps[i].Tick(now)
				collect(i)
				if i == 0 {
					res.stall = max(res.stall, time.Since(t0))
				}
			}
			nextTick = now.Add(tick)
		}
	}
	if !slices.Equal(a.digest, b.digest) {
		t.Fatalf("not repaired after %s", now.Sub(start))
	}
	res.virtual = repaired.Sub(start)
	res.cpu = time.Since(wall)
	return res
}

// TestRepairCost measures anti-entropy between two regions where one
// lacks d of n carts (or all of them: full): time until equal (virtual,
// over the -repair.delay network, and the wall time the two protocols and
// stores took), bytes of anti-entropy messages both ways, keys shipped,
// against the ideal of shipping each differing cart's state once. Off
// unless -repair.n is given (it builds millions of carts).
func TestRepairCost(t *testing.T) {
	if *repairN == "" {
		t.Skip("measurement only: run with -repair.n=100000,1000000")
	}
	for _, ns := range strings.Split(*repairN, ",") {
		n, err := strconv.Atoi(ns)
		if err != nil {
			t.Fatal(err)
		}
		for _, ds := range strings.Split(*repairD, ",") {
			d := -1
			if ds != "full" {
				if d, err = strconv.Atoi(ds); err != nil {
					t.Fatal(err)
				}
				if d > n {
					continue
				}
			}
			a, b := repairCase(n, d)
			missing := len(a.states) - len(b.states)
			ideal := 0
			for k, s := range a.states {
				if _, ok := b.states[k]; !ok {
					ideal += len(s)
				}
			}
			runtime.GC()
			r := repair(t, a, b, *repairDelay)
			fmt.Printf("repair n=%d d=%s missing=%d: %s virtual, %s wall, %d messages, %d bytes (%.2f× the %d bytes of the differing states), %d keys shipped, longest call of the healthy region %s\n",
				n, ds, missing, r.virtual.Round(time.Millisecond), r.cpu.Round(time.Millisecond), r.msgs, r.bytes, float64(r.bytes)/float64(max(ideal, 1)), ideal, r.keys,
				r.stall.Round(time.Microsecond))
			fmt.Printf("  bytes by sender and kind: %v\n", r.byKind)
		}
	}
}
