package region

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/latticedb/lattice/crdt"
	"github.com/latticedb/lattice/region/config"
	"github.com/latticedb/lattice/region/store"
)

// semHome is one home region ("us-east", no peers) on a store file that a
// test may stop cleanly or uncleanly (a copy of the file taken while it is
// open, as a crash leaves it) and start again.
type semHome struct {
	t     *testing.T
	dir   string
	path  string
	clock *fakeClock
	node  *Node
	st    *store.Store
	// maxHolds is Options.MaxOpenHolds (0: the default).
	maxHolds int
}

func newSemHome(t *testing.T) *semHome {
	h := &semHome{t: t, dir: t.TempDir(), clock: newFakeClock()}
	h.path = filepath.Join(h.dir, "us-east", "data.db")
	h.open()
	t.Cleanup(h.shut)
	return h
}

func (h *semHome) open() {
	h.t.Helper()
	st, err := OpenStore(h.path, store.Options{})
	if err != nil {
		h.t.Fatal(err)
	}
	n, err := NewNode(Options{Name: "us-east", Store: st, Clock: h.clock, ExpiryInterval: time.Hour, MaxOpenHolds: h.maxHolds})
	if err != nil {
		st.Close()
		h.t.Fatal(err)
	}
	h.node, h.st = n, st
}

func (h *semHome) shut() {
	if h.node != nil {
		h.node.Close()
		h.st.Close()
		h.node, h.st = nil, nil
	}
}

// restart stops the home (cleanly, or as a crash would) and starts it
// again on its store.
func (h *semHome) restart(clean bool) {
	h.t.Helper()
	if clean {
		h.shut()
		h.open()
		return
	}
	crash := filepath.Join(h.dir, "crash.db")
	b, err := os.ReadFile(h.path)
	if err != nil {
		h.t.Fatal(err)
	}
	if err := os.WriteFile(crash, b, 0o644); err != nil {
		h.t.Fatal(err)
	}
	h.shut()
	if err := os.Rename(crash, h.path); err != nil {
		h.t.Fatal(err)
	}
	h.open()
}

// ledgerHeld returns the units the stored ledger of sku holds unexpired
// at the home's clock, and the stock the stored item shows.
func (h *semHome) ledgerHeld(sku string) (held, stock int64) {
	h.t.Helper()
	err := h.st.View([]string{prefixItem + sku}, func(r store.Reader) error {
		l, err := loadLedger(r, sku)
		if err != nil {
			return err
		}
		for _, x := range l.Holds {
			if h.clock.Now().UnixMilli() < x.ExpMs {
				held += x.Qty
			}
		}
		it, err := loadItem(r, sku)
		if err != nil {
			return err
		}
		stock = it.Stock.Value()
		return nil
	})
	if err != nil {
		h.t.Fatal(err)
	}
	return held, stock
}

func codeOf(err error) string {
	if err == nil {
		return ""
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return "non-api error: " + err.Error()
}

func semIdem(key, body string) Idem {
	return Idem{Key: key, Fingerprint: sha256.Sum256([]byte(body))}
}

// semRes is the model's reservation.
type semRes struct {
	id    string
	qty   int64
	expMs int64
	state string
}

// semOutcome is what a keyed request answered first: a reservation id and
// state, or an error code.
type semOutcome struct {
	body  string
	id    string
	state string
	code  string
}

// TestHomeLedgerMatchesModel runs random sequences of restocks, negative
// adjustments, holds, commits, releases, expiries, retries with an
// Idempotency-Key (same and different body), clock movement and clean and
// unclean restarts against one home, and checks after every step that
// held + committed ≤ stock at the home (SPEC §3) and that the home's
// answers agree with a model of the SPEC's rules.
func TestHomeLedgerMatchesModel(t *testing.T) {
	seed := testSeed(t)
	rng := rand.New(rand.NewPCG(seed, seed^0x5eed))
	h := newSemHome(t)
	h.maxHolds = 3 + int(seed%3)
	h.restart(true)
	const sku = "w"
	var stock int64
	res := map[string]*semRes{}
	var ids []string
	keys := map[string]*semOutcome{}
	var keyNames []string
	nowMs := func() int64 { return h.clock.Now().UnixMilli() }
	stateAt := func(r *semRes) string {
		if r.state == StateHeld && nowMs() >= r.expMs {
			return StateExpired
		}
		return r.state
	}
	held := func() int64 {
		var s int64
		for _, r := range res {
			if stateAt(r) == StateHeld {
				s += r.qty
			}
		}
		return s
	}
	openHolds := func() int {
		n := 0
		for _, r := range res {
			if stateAt(r) == StateHeld {
				n++
			}
		}
		return n
	}
	pickID := func() string {
		if len(ids) == 0 {
			return "us-east:1"
		}
		return ids[rng.IntN(len(ids))]
	}
	// key returns an Idempotency-Key for a request of body: none, a fresh
	// one, or one used before (for this body or another).
	key := func(body string) (Idem, *semOutcome, string) {
		switch x := rng.IntN(6); {
		case x < 2:
			return Idem{}, nil, ""
		case x < 4 || len(keyNames) == 0:
			k := fmt.Sprintf("k%d", len(keyNames))
			keyNames = append(keyNames, k)
			return semIdem(k, body), nil, k
		default:
			k := keyNames[rng.IntN(len(keyNames))]
			return semIdem(k, body), keys[k], k
		}
	}
	// retryOf picks, now and then, a key recorded for a request of kind
	// op, to send that request again.
	retryOf := func(op string) (string, bool) {
		if rng.IntN(4) != 0 {
			return "", false
		}
		var ks []string
		for _, k := range keyNames {
			if o := keys[k]; o != nil && len(o.body) > len(op) && o.body[:len(op)+1] == op+" " {
				ks = append(ks, k)
			}
		}
		if len(ks) == 0 {
			return "", false
		}
		return ks[rng.IntN(len(ks))], true
	}
	steps := 600
	for step := 0; step < steps; step++ {
		var what string
		switch op := rng.IntN(100); {
		case op < 10:
			q := int64(1 + rng.IntN(6))
			what = fmt.Sprintf("restock %d", q)
			must[Item](t)(h.node.Restock(bg, sku, q))
			stock += q
		case op < 18:
			d := int64(1 + rng.IntN(5))
			what = fmt.Sprintf("adjust -%d", d)
			_, err := h.node.Adjust(bg, sku, -d, "count")
			want := ""
			if stock-held()-d < 0 {
				want = CodeInsufficientStock
			}
			if codeOf(err) != want {
				t.Fatalf("seed %d step %d %s (stock %d held %d): got %q, want %q", seed, step, what, stock, held(), codeOf(err), want)
			}
			if err == nil {
				stock -= d
			}
		case op < 45:
			q := int64(1 + rng.IntN(5))
			ttl := time.Duration(1+rng.IntN(120)) * time.Second
			body := fmt.Sprintf("reserve %s %d %d", sku, q, ttl.Milliseconds())
			idem, prior, k := key(body)
			if rk, ok := retryOf("reserve"); ok {
				// A retry of an earlier keyed reservation, as it was sent.
				fmt.Sscanf(keys[rk].body, "reserve "+sku+" %d %d", &q, new(int64))
				var ms int64
				fmt.Sscanf(keys[rk].body, "reserve "+sku+" %d %d", new(int64), &ms)
				ttl = time.Duration(ms) * time.Millisecond
				body = keys[rk].body
				idem, prior, k = semIdem(rk, body), keys[rk], rk
			}
			what = fmt.Sprintf("%s key %q", body, idem.Key)
			r, err := h.node.Reserve(bg, sku, q, ttl, idem)
			switch {
			case prior != nil && prior.body != body:
				if codeOf(err) != CodeIdempotencyMismatch {
					t.Fatalf("seed %d step %d %s: key used for %q: got %v %q, want %s", seed, step, what, prior.body, r, codeOf(err), CodeIdempotencyMismatch)
				}
			case prior != nil:
				if codeOf(err) != prior.code || r.ID != prior.id {
					t.Fatalf("seed %d step %d %s: retry got %q %q, want the first outcome %q %q", seed, step, what, r.ID, codeOf(err), prior.id, prior.code)
				}
			default:
				want := ""
				if q > stock-held() {
					want = CodeInsufficientStock
				} else if openHolds() >= h.maxHolds {
					want = CodeUnavailable
				}
				if codeOf(err) != want {
					t.Fatalf("seed %d step %d %s (stock %d held %d): got %q, want %q", seed, step, what, stock, held(), codeOf(err), want)
				}
				if err == nil {
					if r.State != StateHeld || r.Qty != q {
						t.Fatalf("seed %d step %d %s: got %+v", seed, step, what, r)
					}
					res[r.ID] = &semRes{id: r.ID, qty: q, expMs: r.ExpiresAt.UnixMilli(), state: StateHeld}
					ids = append(ids, r.ID)
				}
				if k != "" && want != CodeUnavailable {
					keys[k] = &semOutcome{body: body, id: r.ID, state: r.State, code: codeOf(err)}
				}
			}
		case op < 70:
			id := pickID()
			commit := rng.IntN(3) > 0
			opName := map[bool]string{true: "commit", false: "release"}[commit]
			body := opName + " " + id
			idem, prior, k := key(body)
			if rk, ok := retryOf(opName); ok {
				body = keys[rk].body
				id = body[len(opName)+1:]
				idem, prior, k = semIdem(rk, body), keys[rk], rk
			}
			if res[id] == nil {
				// Whether a refusal of an unknown id is recorded under
				// its key is not the model's concern.
				idem, prior, k = Idem{}, nil, ""
			}
			what = fmt.Sprintf("%s key %q", body, idem.Key)
			var r Reservation
			var err error
			if commit {
				r, err = h.node.Commit(bg, id, idem)
			} else {
				r, err = h.node.Release(bg, id, idem)
			}
			switch {
			case prior != nil && prior.body != body:
				if codeOf(err) != CodeIdempotencyMismatch {
					t.Fatalf("seed %d step %d %s: key used for %q: got %+v %q, want %s", seed, step, what, prior.body, r, codeOf(err), CodeIdempotencyMismatch)
				}
			case prior != nil:
				if codeOf(err) != prior.code || r.ID != prior.id {
					t.Fatalf("seed %d step %d %s: retry got %q %q, want the first outcome %q %q", seed, step, what, r.ID, codeOf(err), prior.id, prior.code)
				}
			default:
				m := res[id]
				var want, wantState string
				switch {
				case m == nil:
					want = CodeNotFound
				case commit && stateAt(m) == StateHeld:
					wantState = StateCommitted
				case commit && stateAt(m) == StateExpired:
					want = CodeReservationExpired
				case commit && m.state == StateReleased:
					want = CodeReservationReleased
				case commit:
					wantState = StateCommitted
				case stateAt(m) == StateHeld:
					wantState = StateReleased
				case m.state == StateCommitted:
					want = CodeReservationCommit
				default:
					wantState = stateAt(m)
				}
				if codeOf(err) != want || (err == nil && r.State != wantState) {
					t.Fatalf("seed %d step %d %s (model %+v): got %+v %q, want state %q code %q", seed, step, what, m, r, codeOf(err), wantState, want)
				}
				if err == nil && m.state == StateHeld && wantState != StateExpired {
					if wantState == StateCommitted {
						stock -= m.qty
					}
					m.state = wantState
				}
				if k != "" && m != nil {
					keys[k] = &semOutcome{body: body, id: r.ID, state: r.State, code: codeOf(err)}
				}
			}
		case op < 85:
			// Clock movement: sometimes exactly to an expiry.
			var d time.Duration
			if len(ids) > 0 && rng.IntN(2) == 0 {
				m := res[pickID()]
				if m.expMs > nowMs() {
					d = time.Duration(m.expMs-nowMs()) * time.Millisecond
				}
			} else {
				d = time.Duration(rng.IntN(40000)) * time.Millisecond
			}
			what = fmt.Sprintf("advance %v", d)
			h.clock.Advance(d)
		case op < 92:
			what = "expire due"
			if err := h.node.ExpireDue(); err != nil {
				t.Fatal(err)
			}
		default:
			clean := rng.IntN(2) == 0
			what = fmt.Sprintf("restart clean=%v", clean)
			h.restart(clean)
		}
		// Every step: the stored ledger and item, and the home's view.
		lh, ls := h.ledgerHeld(sku)
		if lh > ls || ls != stock || lh != held() {
			t.Fatalf("seed %d step %d after %s: home ledger holds %d, stock %d; model holds %d, stock %d (held must be <= stock)", seed, step, what, lh, ls, held(), stock)
		}
		it := must[Item](t)(h.node.GetItem(bg, sku, false))
		if it.Stock != stock || it.Reserved != held() || it.Available != stock-held() {
			t.Fatalf("seed %d step %d after %s: item %+v, model stock %d held %d", seed, step, what, it, stock, held())
		}
	}
	// Every reservation reads as the model has it.
	for _, id := range ids {
		r, err := h.node.GetReservation(bg, id)
		if err != nil || r.State != stateAt(res[id]) {
			t.Fatalf("seed %d: reservation %s reads %+v %v, model %+v (state %s)", seed, id, r, err, res[id], stateAt(res[id]))
		}
	}
}

// crashRestart stops region name of the escrow rig as a crash would (its
// file as it was while open, without the mark of a clean close) and starts
// it again, caught up with its peers as anti-entropy would.
func (r *escrowRig) crashRestart(name string, skus ...string) {
	r.t.Helper()
	n := r.nodes[name]
	b, err := os.ReadFile(n.path)
	if err != nil {
		r.t.Fatal(err)
	}
	n.close()
	if err := os.WriteFile(n.path, b, 0o644); err != nil {
		r.t.Fatal(err)
	}
	r.open(name)
	if r.nodes[name].CatchingUp() {
		r.catchUp(name, skus...)
	}
}

// escrowCounts reads sku's stored ledger and item at region name: the
// units its holds hold unexpired, and the item.
func (r *escrowRig) escrowCounts(name, sku string) (held int64, it *crdt.Item) {
	r.t.Helper()
	err := r.nodes[name].store.View([]string{prefixItem + sku}, func(rd store.Reader) error {
		l, err := loadLedger(rd, sku)
		if err != nil {
			return err
		}
		for _, h := range l.Holds {
			if r.clock.Now().UnixMilli() < h.ExpMs {
				held += h.Qty
			}
		}
		it, err = loadItem(rd, sku)
		return err
	})
	if err != nil {
		r.t.Fatal(err)
	}
	return held, it
}

// TestEscrowRightsAcrossRestarts drives random restocks, negative
// adjustments, reservations (some with an Idempotency-Key, some retried),
// commits, releases, expiries, returns of idle rights, partial delivery
// of deltas and clean and unclean restarts of every region over an escrow
// sku. After every step: the units held at every region plus those
// committed stay within the stock (SPEC §3); no region holds more than the
// rights the home granted it, less what it used and returned; and the
// home never grants units it has granted or holds already. Once every
// hold has ended and every region is idle and caught up, every unit is
// available at the home again: no right is lost.
func TestEscrowRightsAcrossRestarts(t *testing.T) {
	seed := testSeed(t)
	rng := rand.New(rand.NewPCG(seed, seed^0xe5c))
	r := newEscrowRig(t)
	const sku = "e-sem"
	var stock int64 // restocked, less adjusted and committed
	type open struct {
		id  string
		qty int64
		exp int64
	}
	var holds []open
	type keyed struct {
		at   string
		qty  int64
		id   string
		code string
	}
	keys := map[string]keyed{}
	var keyNames []string
	stats := map[string]int{}
	lagging := map[string]bool{}
	defer func() { t.Logf("reservations: %v", stats) }()
	for step := range 600 {
		var what string
		switch op := rng.IntN(100); {
		case op < 10:
			at := escrowRegions[rng.IntN(3)]
			q := int64(1 + rng.IntN(8))
			what = fmt.Sprintf("restock %d at %s", q, at)
			must[Item](t)(r.nodes[at].Restock(bg, sku, q))
			stock += q
		case op < 15:
			at := escrowRegions[rng.IntN(3)]
			d := int64(1 + rng.IntN(4))
			what = fmt.Sprintf("adjust -%d at %s", d, at)
			if _, err := r.nodes[at].Adjust(bg, sku, -d, "count"); err == nil {
				stock -= d
			} else if c := codeOf(err); c != CodeInsufficientStock && c != CodeUnavailable && c != CodeHomeUnavailable {
				t.Fatalf("seed %d step %d %s: %v", seed, step, what, err)
			}
		case op < 45:
			at := escrowRegions[rng.IntN(3)]
			q := int64(1 + rng.IntN(4))
			ttl := time.Duration(1+rng.IntN(30)) * time.Second
			var idem Idem
			var k string
			if rng.IntN(3) == 0 {
				k = fmt.Sprintf("k%d", len(keyNames))
				pk := ""
				if len(keyNames) > 0 {
					pk = keyNames[rng.IntN(len(keyNames))]
				}
				if keys[pk].qty > 0 && rng.IntN(2) == 0 {
					k = pk
					q = keys[k].qty // a retry, through any region
				} else {
					keyNames = append(keyNames, k)
				}
				idem = semIdem(k, fmt.Sprintf("reserve %d", q))
			}
			what = fmt.Sprintf("reserve %d at %s key %q", q, at, k)
			res, err := r.nodes[at].Reserve(bg, sku, q, ttl, idem)
			if c := codeOf(err); c == CodeUnavailable || c == CodeHomeUnavailable {
				stats["err "+c]++
				break // transient: decided nothing
			}
			if prior, ok := keys[k]; ok && k != "" && prior.code == "" {
				if err != nil || res.ID != prior.id {
					t.Fatalf("seed %d step %d %s: retry of %s got %q %v", seed, step, what, prior.id, res.ID, err)
				}
				break
			}
			if k != "" && err == nil {
				keys[k] = keyed{at: at, qty: q, id: res.ID}
			} else if k != "" && codeOf(err) != CodeUnavailable && codeOf(err) != CodeHomeUnavailable {
				keys[k] = keyed{at: at, qty: q, code: codeOf(err)}
			}
			if err == nil {
				holds = append(holds, open{res.ID, q, res.ExpiresAt.UnixMilli()})
				stats[res.ID[:1]]++
			} else {
				stats["err "+codeOf(err)]++
			}
		case op < 65 && len(holds) > 0:
			i := rng.IntN(len(holds))
			x := holds[i]
			at := escrowRegions[rng.IntN(3)]
			if rng.IntN(3) > 0 {
				what = fmt.Sprintf("commit %s through %s", x.id, at)
				c, err := r.nodes[at].Commit(bg, x.id, Idem{})
				if err == nil && c.State == StateCommitted {
					if x.exp <= r.clock.Now().UnixMilli() {
						t.Fatalf("seed %d step %d %s: committed at %v, past its expiry %v", seed, step, what, r.clock.Now(), time.UnixMilli(x.exp))
					}
					stock -= x.qty
					holds = append(holds[:i], holds[i+1:]...)
				}
			} else {
				what = fmt.Sprintf("release %s through %s", x.id, at)
				if _, err := r.nodes[at].Release(bg, x.id, Idem{}); err == nil {
					holds = append(holds[:i], holds[i+1:]...)
				}
			}
		case op < 75:
			d := time.Duration(rng.IntN(4000)) * time.Millisecond
			what = fmt.Sprintf("advance %v, expire, return idle rights", d)
			r.clock.Advance(d)
			for _, name := range escrowRegions {
				_ = r.nodes[name].ExpireDue()
				r.nodes[name].ReturnIdleRights()
			}
		case op < 82:
			what = "deliver some"
			r.deliver(rng)
		case op < 85:
			name := escrowRegions[1+rng.IntN(2)]
			r.cut[name] = !r.cut[name]
			what = fmt.Sprintf("cut %s: %v", name, r.cut[name])
		case op < 90:
			if anyCut(r.cut) {
				what = "deliver some (cut)"
				r.deliver(rng)
				break
			}
			// Replication done: every region reads the item as the home.
			what = "expire, deliver all, compare reads"
			for _, name := range escrowRegions {
				_ = r.nodes[name].ExpireDue()
			}
			r.deliver(nil)
			hv := r.item("h", sku)
			for _, name := range escrowRegions[1:] {
				v := r.item(name, sku)
				if v.Stock != hv.Stock || v.Reserved != hv.Reserved || v.Available != hv.Available || deref64(v.Granted) != deref64(hv.Granted) {
					t.Fatalf("seed %d step %d after %s: %s reads %+v (granted %s), the home %+v (granted %s)", seed, step, what, name, v, deref64(v.Granted), hv, deref64(hv.Granted))
				}
			}
		case op < 95:
			name := escrowRegions[rng.IntN(3)]
			what = "clean restart of " + name
			r.nodes[name].close()
			r.open(name)
			if r.nodes[name].CatchingUp() {
				r.catchUp(name, sku)
			}
		case op < 98:
			name := escrowRegions[rng.IntN(3)]
			what = "unclean restart of " + name
			r.crashRestart(name, sku)
		default:
			// An unclean restart caught up only later: meanwhile the
			// region decides nothing.
			name := escrowRegions[rng.IntN(3)]
			what = "unclean restart of " + name + ", not caught up yet"
			n := r.nodes[name]
			b, err := os.ReadFile(n.path)
			if err != nil {
				t.Fatal(err)
			}
			n.close()
			if err := os.WriteFile(n.path, b, 0o644); err != nil {
				t.Fatal(err)
			}
			r.open(name)
			lagging[name] = true
		}
		if len(lagging) > 0 && rng.IntN(8) == 0 {
			for name := range lagging {
				if r.nodes[name].CatchingUp() {
					r.catchUp(name, sku)
				}
			}
			clear(lagging)
		}
		// The invariants, from the regions' own stores.
		var held int64
		hh, hit := r.escrowCounts("h", sku)
		held += hh
		var out int64
		for _, name := range escrowRegions[1:] {
			rh, rit := r.escrowCounts(name, sku)
			held += rh
			o := int64(hit.Granted(name)) - int64(rit.Used(name)) - int64(rit.Returned(name))
			if rh > o {
				t.Fatalf("seed %d step %d after %s: %s holds %d units on %d rights outstanding (granted %d, used %d, returned %d)", seed, step, what, name, rh, o, hit.Granted(name), rit.Used(name), rit.Returned(name))
			}
			out += max(o, 0)
		}
		if held > stock {
			t.Fatalf("seed %d step %d after %s: %d units held > stock %d (restocked less adjusted and committed)", seed, step, what, held, stock)
		}
		if hh+out > stock {
			t.Fatalf("seed %d step %d after %s: the home holds %d and %d rights are outstanding, > stock %d", seed, step, what, hh, out, stock)
		}
	}
	// Heal: every hold ends, every region goes idle and catches up.
	clear(r.cut)
	for name := range lagging {
		if r.nodes[name].CatchingUp() {
			r.catchUp(name, sku)
		}
	}
	r.clock.Advance(time.Minute)
	for range 3 {
		for _, name := range escrowRegions {
			if err := r.nodes[name].ExpireDue(); err != nil {
				t.Fatal(err)
			}
			r.nodes[name].ReturnIdleRights()
		}
		r.deliver(nil)
		r.clock.Advance(EscrowIdle + time.Second)
	}
	home := r.item("h", sku)
	if home.Stock != stock || home.Available != stock || home.Reserved != 0 {
		t.Fatalf("seed %d: healed and idle, the home shows %+v (granted %v), want stock %d all available", seed, home, deref64(home.Granted), stock)
	}
	for _, name := range escrowRegions[1:] {
		if it := r.item(name, sku); it.Stock != stock || it.Available != stock {
			t.Fatalf("seed %d: healed and idle, %s shows %+v (granted %v), want stock %d all available", seed, name, it, deref64(it.Granted), stock)
		}
	}
}

func deref64(p *int64) string {
	if p == nil {
		return "none"
	}
	return fmt.Sprint(*p)
}

// TestReservationTTLBounds checks the ttl bounds of a reservation (SPEC
// §6: 1 s..24 h, default 10 min): 0 takes the default, the bounds are
// accepted and expire exactly ttl later, anything outside is refused as
// invalid_request and holds nothing.
func TestReservationTTLBounds(t *testing.T) {
	h := newSemHome(t)
	must[Item](t)(h.node.Restock(bg, "w", 10))
	now := h.clock.Now()
	for _, c := range []struct {
		ttl  time.Duration
		want time.Duration // 0: refused
	}{
		{0, DefaultTTL},
		{MinTTL, MinTTL},
		{MaxTTL, MaxTTL},
		{MaxTTL + time.Millisecond, 0},
		{MaxTTL + time.Microsecond, 0},
		{MinTTL - time.Millisecond, 0},
		{MinTTL - time.Microsecond, 0},
		{-time.Second, 0},
	} {
		r, err := h.node.Reserve(bg, "w", 1, c.ttl, Idem{})
		switch {
		case c.want == 0 && codeOf(err) != CodeInvalidRequest:
			t.Errorf("ttl %v: got %+v %v, want invalid_request", c.ttl, r, err)
		case c.want != 0 && (err != nil || !r.ExpiresAt.Equal(now.Add(c.want))):
			t.Errorf("ttl %v: got %+v %v, want a hold expiring at %v", c.ttl, r, err, now.Add(c.want))
		}
	}
	if it := must[Item](t)(h.node.GetItem(bg, "w", false)); it.Reserved != 3 {
		t.Errorf("after three holds of 1: reserved %d, want 3", it.Reserved)
	}
	// A forwarded request is checked as well.
	for _, ms := range []int64{0, MinTTL.Milliseconds() - 1, MaxTTL.Milliseconds() + 1, -1} {
		resp := h.node.ServeForwarded(bg, &HomeRequest{Op: OpReserve, SKU: "w", Qty: 1, TTLMs: ms})
		if resp.Err == nil || resp.Err.Code != CodeInvalidRequest {
			t.Errorf("forwarded ttl_ms %d: got %+v %v, want invalid_request", ms, resp.Res, resp.Err)
		}
	}
	if it := must[Item](t)(h.node.GetItem(bg, "w", false)); it.Reserved != 3 {
		t.Errorf("after refused forwarded holds: reserved %d, want 3", it.Reserved)
	}
}

// TestForwardedCommitNamingASkuIsClear checks that a commit or release
// forwarded by another region is decided, or refused with a clear error,
// when it also carries a sku member (a request from another region is
// untrusted input): it must not fail as an internal error.
func TestForwardedCommitNamingASkuIsClear(t *testing.T) {
	h := newSemHome(t)
	must[Item](t)(h.node.Restock(bg, "w", 10))
	for _, op := range []string{OpCommit, OpRelease} {
		r := must[Reservation](t)(h.node.Reserve(bg, "w", 2, time.Minute, Idem{}))
		resp := h.node.ServeForwarded(bg, &HomeRequest{Op: op, ID: r.ID, SKU: "other"})
		if resp.Err != nil && (resp.Err.Code == CodeInternal || resp.Err.Code == CodeUnavailable) {
			t.Errorf("forwarded %s of %s naming sku \"other\": got %s (%s), want the %s decided or refused as invalid_request", op, r.ID, resp.Err.Code, resp.Err.Detail, op)
		}
	}
}

// TestConcurrentAdjustAndHolds runs negative adjustments, holds, commits,
// releases, restocks and clock movement concurrently at one home while a
// reader checks, in snapshots of the sku's ledger and item, that the
// units held unexpired never exceed the stock (SPEC §3); at the end the
// stock equals what was restocked less what was adjusted and committed.
func TestConcurrentAdjustAndHolds(t *testing.T) {
	seed := testSeed(t)
	h := newSemHome(t)
	const sku = "w"
	must[Item](t)(h.node.Restock(bg, sku, 20))
	var mu sync.Mutex
	total := int64(20) // restocked, less adjusted and committed
	var wg sync.WaitGroup
	stop := make(chan struct{})
	errs := make(chan string, 16)
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(seed, uint64(w)))
			var mine []Reservation
			for range 300 {
				switch op := rng.IntN(10); {
				case op < 1:
					q := int64(1 + rng.IntN(3))
					if _, err := h.node.Restock(bg, sku, q); err == nil {
						mu.Lock()
						total += q
						mu.Unlock()
					}
				case op < 3:
					d := int64(1 + rng.IntN(4))
					if _, err := h.node.Adjust(bg, sku, -d, ""); err == nil {
						mu.Lock()
						total -= d
						mu.Unlock()
					}
				case op < 6:
					if r, err := h.node.Reserve(bg, sku, int64(1+rng.IntN(4)), time.Duration(1+rng.IntN(5))*time.Second, Idem{}); err == nil {
						mine = append(mine, r)
					}
				case op < 9 && len(mine) > 0:
					i := rng.IntN(len(mine))
					r := mine[i]
					mine = append(mine[:i], mine[i+1:]...)
					if rng.IntN(2) == 0 {
						if c, err := h.node.Commit(bg, r.ID, Idem{}); err == nil && c.State == StateCommitted {
							mu.Lock()
							total -= r.Qty
							mu.Unlock()
						}
					} else {
						_, _ = h.node.Release(bg, r.ID, Idem{})
					}
				default:
					h.clock.Advance(time.Duration(rng.IntN(700)) * time.Millisecond)
				}
			}
		}()
	}
	var cw sync.WaitGroup
	cw.Add(1)
	go func() {
		defer cw.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			held, stock := h.ledgerHeld(sku)
			if held > stock {
				select {
				case errs <- fmt.Sprintf("%d units held unexpired > stock %d", held, stock):
				default:
				}
			}
		}
	}()
	wg.Wait()
	close(stop)
	cw.Wait()
	close(errs)
	for e := range errs {
		t.Errorf("seed %d: %s", seed, e)
	}
	if it := must[Item](t)(h.node.GetItem(bg, sku, false)); it.Stock != total || it.Available < 0 {
		t.Errorf("seed %d: item %+v, want stock %d and nothing oversold", seed, it, total)
	}
}

// TestEscrowRightsReadExcludesExpiredHolds checks that the rights a
// region shows for an escrow sku (the units it may reserve alone) do not
// count its holds past their expiry, as the home's reserved does not: the
// region reserves those units alone at once, so the read must say so.
func TestEscrowRightsReadExcludesExpiredHolds(t *testing.T) {
	r := newEscrowRig(t)
	h, a := r.nodes["h"], r.nodes["a"]
	must[Item](t)(h.Restock(bg, "e1", 100))
	r.deliver(nil)
	first := must[Reservation](t)(a.Reserve(bg, "e1", 2, time.Second, Idem{}))
	if first.ID[:2] != "a:" {
		t.Fatalf("first reservation decided at %s, want a", first.ID)
	}
	r.clock.Advance(2 * time.Second) // the hold expired, not yet swept
	got := r.item("a", "e1")
	_, it := r.escrowCounts("a", "e1")
	out := it.Outstanding("a")
	// All of it is a's to reserve alone now.
	again, err := a.Reserve(bg, "e1", out, time.Minute, Idem{})
	if err != nil || again.ID[:2] != "a:" {
		t.Fatalf("with its hold expired a could not reserve its %d rights alone: %+v %v", out, again, err)
	}
	if *got.Rights != out {
		t.Errorf("with its only hold expired a showed rights %d, want its %d outstanding rights (it then reserved %d alone at once)", *got.Rights, out, out)
	}
}

// TestEscrowConcurrentRegions runs reservations, commits, releases,
// restocks, adjustments, expiries, returns of idle rights and deliveries
// of deltas concurrently at three regions over an escrow sku, with the
// nodes' background work (requests for rights ahead of need, recalls) on
// goroutines of their own. Each region's own state must keep its holds
// within its rights, and the home's its holds plus the rights it counts
// outstanding within its stock; once quiet and caught up, every unit is
// available at the home again.
func TestEscrowConcurrentRegions(t *testing.T) {
	seed := testSeed(t)
	r := &escrowRig{t: t, dir: t.TempDir(), clock: newFakeClock(), nodes: map[string]*testNode{}, cut: map[string]bool{}}
	for _, name := range escrowRegions {
		path := filepath.Join(r.dir, name, "data.db")
		st, err := OpenStore(path, store.Options{})
		if err != nil {
			t.Fatal(err)
		}
		var peers []string
		for _, p := range escrowRegions {
			if p != name {
				peers = append(peers, p)
			}
		}
		n, err := NewNode(Options{Name: name, Store: st, Clock: r.clock, ExpiryInterval: time.Hour,
			Home:        func(string) string { return "h" },
			Escrow:      func(sku string) bool { return sku[0] == 'e' },
			Publisher:   rigPub{r, name},
			Forwarder:   rigFwd{r, name},
			PeerRegions: peers,
		})
		if err != nil {
			t.Fatal(err)
		}
		tn := &testNode{Node: n, store: st, path: path, clock: r.clock}
		r.nodes[name] = tn
		t.Cleanup(tn.close)
	}
	const sku = "e-conc"
	must[Item](t)(r.nodes["h"].Restock(bg, sku, 40))
	r.deliver(nil)
	var mu sync.Mutex
	stock := int64(40)
	stop := make(chan struct{})
	errs := make(chan string, 8)
	report := func(s string) {
		select {
		case errs <- s:
		default:
		}
	}
	var wg sync.WaitGroup
	for w, name := range escrowRegions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(seed, uint64(w)))
			n := r.nodes[name]
			var mine []Reservation
			for range 200 {
				switch op := rng.IntN(20); {
				case op < 2:
					q := int64(1 + rng.IntN(4))
					if _, err := n.Restock(bg, sku, q); err == nil {
						mu.Lock()
						stock += q
						mu.Unlock()
					}
				case op < 3:
					d := int64(1 + rng.IntN(3))
					if _, err := n.Adjust(bg, sku, -d, ""); err == nil {
						mu.Lock()
						stock -= d
						mu.Unlock()
					}
				case op < 10:
					if res, err := n.Reserve(bg, sku, int64(1+rng.IntN(3)), time.Duration(1+rng.IntN(4))*time.Second, Idem{}); err == nil {
						mine = append(mine, res)
					}
				case op < 15 && len(mine) > 0:
					i := rng.IntN(len(mine))
					res := mine[i]
					mine = append(mine[:i], mine[i+1:]...)
					if rng.IntN(3) > 0 {
						if c, err := n.Commit(bg, res.ID, Idem{}); err == nil && c.State == StateCommitted {
							mu.Lock()
							stock -= res.Qty
							mu.Unlock()
						}
					} else {
						_, _ = n.Release(bg, res.ID, Idem{})
					}
				case op < 17:
					r.clock.Advance(time.Duration(rng.IntN(600)) * time.Millisecond)
					_ = n.ExpireDue()
					n.ReturnIdleRights()
				default:
					r.deliver(rng)
				}
			}
		}()
	}
	var cw sync.WaitGroup
	cw.Add(1)
	go func() {
		defer cw.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			for _, name := range escrowRegions {
				held, it := r.escrowCounts(name, sku)
				if name == "h" {
					if out := it.OutstandingAll("h"); held+out > it.Stock.Value() {
						report(fmt.Sprintf("the home holds %d and counts %d rights outstanding, > its stock %d", held, out, it.Stock.Value()))
					}
				} else if out := it.Outstanding(name); held > out {
					report(fmt.Sprintf("%s holds %d units on %d rights", name, held, out))
				}
			}
		}
	}()
	wg.Wait()
	close(stop)
	cw.Wait()
	close(errs)
	for e := range errs {
		t.Errorf("seed %d: %s", seed, e)
	}
	// Requests for rights made ahead of need finish first.
	asking := func() bool {
		for _, n := range r.nodes {
			n.esc.mu.Lock()
			s := n.esc.skus[sku]
			a := s != nil && s.asking
			n.esc.mu.Unlock()
			if a {
				return true
			}
		}
		return false
	}
	for deadline := time.Now().Add(5 * time.Second); asking(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("a request for rights ahead of need never finished")
		}
	}
	r.clock.Advance(time.Minute)
	for range 3 {
		for _, name := range escrowRegions {
			if err := r.nodes[name].ExpireDue(); err != nil {
				t.Fatal(err)
			}
			r.nodes[name].ReturnIdleRights()
		}
		r.deliver(nil)
		r.clock.Advance(EscrowIdle + time.Second)
	}
	for _, name := range escrowRegions {
		if it := r.item(name, sku); it.Stock != stock || it.Available != stock {
			t.Errorf("seed %d: quiet and caught up, %s shows %+v (granted %s), want stock %d all available", seed, name, it, deref64(it.Granted), stock)
		}
	}
}

// TestRegionNameWithColonRefused checks that a region may not be named
// with ':', which separates a reservation id's parts (HOME:SEQ,
// HOME:PART:SEQ): a home named "us:east" issued ids it could neither parse
// nor route, so its holds could never be committed, and "eu:2" issued ids
// that read as partition 2 of region eu. NewNode and the config both
// refuse such a name.
func TestRegionNameWithColonRefused(t *testing.T) {
	for _, name := range []string{"us:east", "eu:2"} {
		t.Run(name, func(t *testing.T) {
			st, err := OpenStore(filepath.Join(t.TempDir(), "data.db"), store.Options{})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { st.Close() })
			if n, err := NewNode(Options{Name: name, Store: st, Clock: newFakeClock(), ExpiryInterval: time.Hour}); err == nil {
				n.Close()
				t.Fatalf("NewNode(%q) accepted a name its reservation ids cannot carry", name)
			}
			doc := fmt.Sprintf("cluster: c\nregions:\n  - name: %q\n    api: 127.0.0.1:7101\n    peer: 127.0.0.1:7201\n", name)
			if _, err := config.Parse([]byte(doc)); err == nil || !strings.Contains(err.Error(), "regions[0].name") {
				t.Fatalf("config with region %q: %v, want refused at regions[0].name", name, err)
			}
		})
	}
}
