package replication_test

import (
	"encoding/json"
	"fmt"
	"hash/fnv"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
)

// linSeed fixes the workload of TestHomeDecisionsAreLinearizable.
const linSeed = 20261001

// linTimeout bounds the linearizability check of one sku's history.
const linTimeout = 30 * time.Second

// The operations of one sku, as the linearizability model sees them. Every
// operation that lowers what is available is decided at the sku's home,
// so the home's decisions on one sku must be linearizable: there is one
// order of all operations, consistent with real time, in which each
// answer is what a single copy of the item would have given.
//
//   - restock(q): stock += q. A restock is made where it is sent and
//     reaches the home as a replicated delta, so its interval runs from its
//     call until a read at the home carrying the restock's causal token
//     returns (the home has applied it by then).
//   - reserve(q) → ok(id) iff q ≤ stock − held at its point, and then
//     held[id] = q; → insufficient_stock(available) iff q > stock − held,
//     with available = max(stock − held, 0) at that point.
//   - commit(id): held → committed, stock −= qty; committing a committed
//     reservation changes nothing; a released one is reservation_released.
//   - release(id): held → released; releasing a released one changes
//     nothing; a committed one is reservation_committed.
//   - read (consistent): returns stock and reserved (= Σ held) at its point.
//   - adjust(d < 0) → ok iff stock − held + d ≥ 0, then stock += d, and
//     its answer is the item after it; else insufficient_stock with
//     available as for a reservation.
//
// A reservation, commit or release that got no answer (no reply, 503) is
// retried with its Idempotency-Key until an answer comes: its interval
// runs from the first call to that answer. An adjustment that got no
// answer (it has no key) may or may not have happened: its interval is
// open-ended and the model tries both.
type linInput struct {
	op   string // restock, reserve, commit, release, read, adjust
	sku  string
	qty  int64 // restock and reserve: units; adjust: the (negative) delta
	id   string
	home bool // a restock made at the home: its answer is the home's view
}

type linOutput struct {
	result    string // "ok", a problem code, or "unknown"
	id        string
	available int64
	stock     int64
	reserved  int64
	state     string
}

type linRes struct {
	qty   int64
	state string // held, committed, released
}

// linState is one state of a sku: its stock, its reservations and, for
// the invariant, the units ever restocked, committed and adjusted away.
type linState struct {
	stock, held                    int64
	restocked, committed, adjusted int64
	res                            map[string]linRes
	// order lists the reservation ids in the order they were made, for
	// descriptions only (equal states may list them differently).
	order []string
}

func (s linState) with(id string, r linRes) linState {
	n := s
	n.res = make(map[string]linRes, len(s.res)+1)
	for k, v := range s.res {
		n.res[k] = v
	}
	n.res[id] = r
	if _, ok := s.res[id]; !ok {
		n.order = append(slices.Clip(s.order), id)
	}
	return n
}

func (s linState) equal(o linState) bool {
	if s.stock != o.stock || s.held != o.held || s.restocked != o.restocked || s.committed != o.committed ||
		s.adjusted != o.adjusted || len(s.res) != len(o.res) {
		return false
	}
	for k, v := range s.res {
		if o.res[k] != v {
			return false
		}
	}
	return true
}

func (s linState) hash() uint64 {
	h := fnv.New64a()
	fmt.Fprint(h, s.stock, s.held, s.restocked, s.committed, s.adjusted)
	var x uint64
	for k, v := range s.res { // order-independent
		e := fnv.New64a()
		fmt.Fprint(e, k, v.qty, v.state)
		x ^= e.Sum64()
	}
	return h.Sum64() ^ x
}

func (s linState) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "stock %d, held %d (restocked %d, committed %d, adjusted %d)", s.stock, s.held, s.restocked, s.committed, s.adjusted)
	for _, id := range s.order {
		if r := s.res[id]; r.state == "held" {
			fmt.Fprintf(&b, " %s=%d", id, r.qty)
		}
	}
	return b.String()
}

// linModel is the model of one sku. broken counts states that break
// held + committed ≤ restocked − adjusted (none can be reached through
// legal steps; the check guards the model itself).
func linModel(broken *atomic.Int64) porcupine.Model {
	invariant := func(s linState) linState {
		if s.held < 0 || s.held+s.committed > s.restocked-s.adjusted || s.stock != s.restocked-s.committed-s.adjusted {
			broken.Add(1)
		}
		return s
	}
	step := func(st, in, out any) []any {
		s, i, o := st.(linState), in.(linInput), out.(linOutput)
		avail := s.stock - s.held
		switch i.op {
		case "restock":
			n := s
			n.stock += i.qty
			n.restocked += i.qty
			if i.home && (o.stock != n.stock || o.reserved != n.held) {
				return nil
			}
			return []any{invariant(n)}
		case "read":
			if o.result == "ok" && o.stock == s.stock && o.reserved == s.held && o.available == avail {
				return []any{s}
			}
		case "reserve":
			switch o.result {
			case "ok":
				if _, seen := s.res[o.id]; !seen && i.qty <= avail {
					n := s.with(o.id, linRes{qty: i.qty, state: "held"})
					n.held += i.qty
					return []any{invariant(n)}
				}
			case "insufficient_stock":
				if i.qty > avail && o.available == max(avail, 0) {
					return []any{s}
				}
			}
		case "commit", "release":
			r, ok := s.res[i.id]
			if !ok {
				return nil
			}
			want := map[string]string{"commit": "committed", "release": "released"}[i.op]
			switch {
			case r.state == "held" && o.result == "ok" && o.state == want:
				n := s.with(i.id, linRes{qty: r.qty, state: want})
				n.held -= r.qty
				if i.op == "commit" {
					n.stock -= r.qty
					n.committed += r.qty
				}
				return []any{invariant(n)}
			case r.state == want && o.result == "ok" && o.state == want:
				return []any{s}
			case r.state != "held" && r.state != want && o.result == "reservation_"+r.state:
				return []any{s}
			}
		case "adjust":
			applied := func() linState {
				n := s
				n.stock += i.qty
				n.adjusted -= i.qty
				return invariant(n)
			}
			switch o.result {
			case "ok":
				if avail+i.qty >= 0 {
					n := applied()
					if o.stock == n.stock && o.reserved == n.held {
						return []any{n}
					}
				}
			case "insufficient_stock":
				if avail+i.qty < 0 && o.available == max(avail, 0) {
					return []any{s}
				}
			case "unknown":
				if avail+i.qty >= 0 {
					return []any{s, applied()}
				}
				return []any{s}
			}
		}
		return nil
	}
	nm := porcupine.NondeterministicModel{
		Init:  func() []any { return []any{linState{}} },
		Step:  step,
		Equal: func(a, b any) bool { return a.(linState).equal(b.(linState)) },
		Hash:  func(s any) uint64 { return s.(linState).hash() },
		DescribeOperation: func(in, out any) string {
			i, o := in.(linInput), out.(linOutput)
			arg := ""
			switch i.op {
			case "restock", "reserve", "adjust":
				arg = fmt.Sprint(i.qty)
			case "commit", "release":
				arg = i.id
			}
			res := o.result
			switch {
			case i.op == "reserve" && o.result == "ok":
				res = o.id
			case o.result == "insufficient_stock":
				res = fmt.Sprintf("insufficient (available %d)", o.available)
			case i.op == "read" || (i.op == "adjust" && o.result == "ok"):
				res = fmt.Sprintf("stock %d reserved %d", o.stock, o.reserved)
			}
			return fmt.Sprintf("%s(%s) → %s", i.op, arg, res)
		},
		DescribeState: func(s any) string { return s.(linState).String() },
	}
	return nm.ToModel()
}

// TestHomeDecisionsAreLinearizable runs clients in all three regions (SPEC
// latencies) that reserve, commit, release, read consistently, restock and
// adjust down three skus of small stock, one homed in each region, and
// checks each sku's history with porcupine against the model above.
func TestHomeDecisionsAreLinearizable(t *testing.T) {
	t.Logf("seed %d", linSeed)
	c := newCluster(t, specLatency)
	cl := newClients(c)
	var skus []string
	for _, r := range regions {
		skus = append(skus, skuHomedAt(c.cfg, r, "lin"))
	}
	clientsPerRegion, opsPerClient := 2, 30
	if testing.Short() {
		opsPerClient = 15
	}
	nClients := clientsPerRegion * len(regions)
	setup := nClients // the client id of the test goroutine's operations

	start := time.Now()
	now := func() int64 { return int64(time.Since(start)) }
	var mu sync.Mutex
	history := map[string][]porcupine.Operation{}
	record := func(client int, in linInput, out linOutput, call, ret int64) {
		mu.Lock()
		history[in.sku] = append(history[in.sku], porcupine.Operation{ClientId: client, Input: in, Output: out, Call: call, Return: ret})
		mu.Unlock()
	}
	// settle retries a keyed request that got no answer until one comes.
	settle := func(r reply, send func() reply) reply {
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		deadline := time.Now().Add(20 * time.Second)
		for (r.err != nil || r.status == 503 || r.is(409, "request_in_progress")) && time.Now().Before(deadline) {
			<-tick.C
			r = send()
		}
		return r
	}
	outcome := func(r reply) linOutput {
		var o linOutput
		switch {
		case r.err != nil || r.status == 503:
			o.result = "unknown"
		case r.status/100 == 2:
			o.result = "ok"
			var v struct {
				ID        string `json:"reservation_id"`
				State     string `json:"state"`
				Stock     int64  `json:"stock"`
				Reserved  int64  `json:"reserved"`
				Available int64  `json:"available"`
			}
			if err := json.Unmarshal(r.body, &v); err != nil {
				t.Errorf("undecodable answer %s", r)
			}
			o.id, o.state, o.stock, o.reserved, o.available = v.ID, v.State, v.Stock, v.Reserved, v.Available
		default:
			p := r.problem()
			o.result = p.Code
			if p.Available != nil {
				o.available = *p.Available
			}
		}
		return o
	}

	const initial = 3
	for _, sku := range skus {
		call := now()
		r := cl.must(t, 200, c.cfg.Home(sku), "POST", "/v1/inventory/"+sku+"/restock", map[string]any{"qty": initial}, nil)
		record(setup, linInput{op: "restock", sku: sku, qty: initial, home: true}, outcome(r), call, now())
	}

	var wg sync.WaitGroup
	for ci := range nClients {
		from := regions[ci%len(regions)]
		rng := rand.New(rand.NewPCG(linSeed, uint64(ci)))
		wg.Go(func() {
			held := map[string][]string{} // this client's held reservations per sku
			for n := range opsPerClient {
				sku := skus[rng.IntN(len(skus))]
				home := c.cfg.Home(sku)
				key := fmt.Sprintf("lin-%d-%d", ci, n)
				p := rng.IntN(100)
				if (p >= 35 && p < 60) && len(held[sku]) == 0 {
					p = 0 // nothing to commit or release: reserve
				}
				call := now()
				switch {
				case p < 35:
					in := linInput{op: "reserve", sku: sku, qty: 1 + rng.Int64N(2)}
					send := func() reply {
						return cl.send(from, "POST", "/v1/reservations", map[string]any{"sku": sku, "qty": in.qty, "ttl_ms": 600_000}, "Idempotency-Key", key)
					}
					out := outcome(settle(send(), send))
					record(ci, in, out, call, now())
					if out.result == "ok" {
						held[sku] = append(held[sku], out.id)
					} else if out.result != "insufficient_stock" {
						t.Errorf("client %d: reserve %s: %+v", ci, key, out)
					}
				case p < 60:
					op := "commit"
					if p >= 50 {
						op = "release"
					}
					i := rng.IntN(len(held[sku]))
					id := held[sku][i]
					held[sku] = slices.Delete(held[sku], i, i+1)
					send := func() reply {
						return cl.send(from, "POST", "/v1/reservations/"+id+"/"+op, nil, "Idempotency-Key", key)
					}
					out := outcome(settle(send(), send))
					record(ci, linInput{op: op, sku: sku, id: id}, out, call, now())
					if out.result != "ok" {
						t.Errorf("client %d: %s %s: %+v", ci, op, id, out)
					}
				case p < 80:
					r := cl.send(from, "GET", "/v1/inventory/"+sku+"?consistent=true", nil)
					if out := outcome(r); out.result == "ok" {
						record(ci, linInput{op: "read", sku: sku}, out, call, now())
					} else if out.result != "unknown" {
						t.Errorf("client %d: consistent read of %s at %s: %s", ci, sku, from, r)
					}
				case p < 92:
					qty := 1 + rng.Int64N(2)
					r := cl.send(from, "POST", "/v1/inventory/"+sku+"/restock", map[string]any{"qty": qty})
					if !r.is(200, "") {
						t.Errorf("client %d: restock of %s at %s: %s", ci, sku, from, r)
						continue
					}
					if from != home {
						// The restock is in effect at the home once it has
						// applied the restock's causal token.
						tok := r.hdr.Get("Lattice-Token")
						if w := cl.send(home, "GET", "/v1/inventory/"+sku, nil, "Lattice-Token", tok, "Lattice-Wait", "10000"); !w.is(200, "") {
							t.Errorf("client %d: waiting at %s for a restock made at %s: %s", ci, home, from, w)
						}
					}
					record(ci, linInput{op: "restock", sku: sku, qty: qty, home: from == home}, outcome(r), call, now())
				default:
					in := linInput{op: "adjust", sku: sku, qty: -1}
					r := cl.send(from, "POST", "/v1/inventory/"+sku+"/adjust", map[string]any{"delta": in.qty, "reason": key})
					out := outcome(r)
					ret := now()
					switch out.result {
					case "unknown":
						ret = math.MaxInt64
					case "ok", "insufficient_stock":
					default:
						t.Errorf("client %d: adjust of %s at %s: %s", ci, sku, from, r)
					}
					record(ci, in, out, call, ret)
				}
			}
		})
	}
	wg.Wait()

	// Closing reads: every region asks each home, after everything.
	for _, sku := range skus {
		for _, r := range regions {
			call := now()
			res := cl.must(t, 200, r, "GET", "/v1/inventory/"+sku+"?consistent=true", nil, nil)
			record(setup, linInput{op: "read", sku: sku}, outcome(res), call, now())
		}
	}

	var broken atomic.Int64
	model := linModel(&broken)
	for _, sku := range skus {
		ops := history[sku]
		for _, o := range ops {
			if out := o.Output.(linOutput); o.Input.(linInput).op == "read" && (out.reserved > out.stock || out.reserved < 0) {
				t.Errorf("%s: a consistent read shows more held than in stock: %+v", sku, out)
			}
		}
		res, info := porcupine.CheckOperationsVerbose(model, ops, linTimeout)
		t.Logf("%s (home %s): %d operations: %s", sku, c.cfg.Home(sku), len(ops), res)
		if res == porcupine.Ok {
			continue
		}
		path := filepath.Join(os.TempDir(), fmt.Sprintf("lattice-linearizability-%s-seed%d.html", sku, linSeed))
		if err := porcupine.VisualizePath(model, info, path); err != nil {
			t.Errorf("writing the visualization: %v", err)
		}
		if res == porcupine.Illegal {
			t.Errorf("%s: the history is not linearizable (seed %d); visualization: %s", sku, linSeed, path)
		} else {
			t.Errorf("%s: the checker could not decide within %v (seed %d); visualization: %s", sku, linTimeout, linSeed, path)
		}
	}
	if n := broken.Load(); n != 0 {
		t.Errorf("%d model states break held + committed ≤ stock", n)
	}
}
