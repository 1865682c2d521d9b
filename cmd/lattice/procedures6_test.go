package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/latticedb/lattice/region/config"
)

// The tests of this file follow docs/operations.md's procedures
// ("Changing the set of regions", "Catch-up", "Backup and restore",
// "Stopping, restarting, upgrading") with `lattice serve` processes, and
// check what the docs promise: no two regions decide a sku at once, the
// new homes decide again once every region runs the new file, nothing is
// oversold, and the /readyz warnings and log lines they name appear and
// clear.

const homesWarning = "peers not yet seen to run the same homes rules and regions"

// decision is one reservation request a prober sent.
type decision struct {
	region     string // where it was sent
	start, end time.Time
	status     int
	home       string // the region that decided it (its id's prefix), on 201
	body       string
}

// prober sends reservations of one unit of sku (ttl 1 s, never committed)
// to every region in turn until stopped, and records each answer.
type prober struct {
	mu   sync.Mutex
	out  []decision
	stop chan struct{}
	done chan struct{}
}

func startProber(c *reconfCluster, sku string, regions ...string) *prober {
	p := &prober{stop: make(chan struct{}), done: make(chan struct{})}
	var wg sync.WaitGroup
	for _, r := range regions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			a := newAPI("http://" + c.apis[r])
			a.hc.Timeout = 5 * time.Second
			for {
				select {
				case <-p.stop:
					return
				default:
				}
				d := decision{region: r, start: time.Now()}
				status, _, b, err := a.call("POST", "/v1/reservations", fmt.Sprintf(`{"sku":%q,"qty":1,"ttl_ms":1000}`, sku))
				d.end = time.Now()
				if err != nil {
					time.Sleep(20 * time.Millisecond)
					continue // the region is down
				}
				d.status, d.body = status, string(bytes.TrimSpace(b))
				if status == 201 {
					var res struct {
						ID string `json:"reservation_id"`
					}
					if json.Unmarshal(b, &res) == nil {
						d.home, _, _ = strings.Cut(res.ID, ":")
					}
				}
				p.mu.Lock()
				p.out = append(p.out, d)
				p.mu.Unlock()
				time.Sleep(15 * time.Millisecond)
			}
		}()
	}
	go func() { wg.Wait(); close(p.done) }()
	return p
}

func (p *prober) finish() []decision {
	close(p.stop)
	<-p.done
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.out)
}

// checkOneDecider fails the test if a reservation decided by oldHome
// began after one decided by newHome had been answered (both homes
// accepted reservations of the sku in one stretch of time), or if a
// region other than those two decided one.
func checkOneDecider(t *testing.T, ds []decision, oldHome, newHome string) {
	t.Helper()
	var firstNew *decision
	count := map[string]int{}
	for i := range ds {
		d := &ds[i]
		if d.status != 201 {
			continue
		}
		count[d.home]++
		if d.home != oldHome && d.home != newHome {
			t.Errorf("a reservation sent to %s at %s was decided by %s, neither the old home %s nor the new %s",
				d.region, d.start.Format("15:04:05.000"), d.home, oldHome, newHome)
		}
		if d.home == newHome && (firstNew == nil || d.end.Before(firstNew.end)) {
			firstNew = d
		}
	}
	if firstNew != nil {
		for _, d := range ds {
			if d.status == 201 && d.home == oldHome && d.start.After(firstNew.end) {
				t.Errorf("two homes accepted reservations at once: %s decided one sent to %s at %s, after %s had decided one (sent to %s, answered at %s)",
					oldHome, d.region, d.start.Format("15:04:05.000"), newHome, firstNew.region, firstNew.end.Format("15:04:05.000"))
				break
			}
		}
	}
	answers := map[string]int{}
	for _, d := range ds {
		var p struct {
			Code string `json:"code"`
		}
		_ = json.Unmarshal([]byte(d.body), &p)
		answers[fmt.Sprintf("%d %s", d.status, p.Code)]++
	}
	t.Logf("reservations decided: %v; answers %v (of %d sent)", count, answers, len(ds))
}

// readyzWatch polls every region's /readyz until stopped and records
// whether each showed the homes warning.
type readyzWatch struct {
	mu   sync.Mutex
	seen map[string]bool
	stop chan struct{}
	done chan struct{}
}

func watchReadyz(c *reconfCluster, regions ...string) *readyzWatch {
	w := &readyzWatch{seen: map[string]bool{}, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			for _, r := range regions {
				if strings.Contains(readyzBody(c, r), homesWarning) {
					w.mu.Lock()
					w.seen[r] = true
					w.mu.Unlock()
				}
			}
			select {
			case <-w.stop:
				return
			case <-tick.C:
			}
		}
	}()
	return w
}

func (w *readyzWatch) finish() map[string]bool {
	close(w.stop)
	<-w.done
	return w.seen
}

func readyzBody(c *reconfCluster, r string) string {
	a := newAPI("http://" + c.apis[r])
	a.hc.Timeout = time.Second
	status, _, b, err := a.call("GET", "/readyz", "")
	if err != nil || status != 200 {
		return ""
	}
	return string(b)
}

// rollingWait is the wait operations.md's rolling restart names between
// regions: /readyz 200 without a catch-up warning, and every peer
// connected.
func (c *reconfCluster) rollingWait(r string) {
	c.t.Helper()
	c.caughtUp(r)
	c.waitConnected(r, slices.DeleteFunc(slices.Clone(c.regions), func(p string) bool { return p == r })...)
}

// reserveOnce sends one reservation and returns its status, the deciding
// home (on 201), the reservation id and the body.
func (c *reconfCluster) reserveOnce(r, sku string, qty int) (int, string, string, string) {
	c.t.Helper()
	status, _, b, err := c.api(r).call("POST", "/v1/reservations", fmt.Sprintf(`{"sku":%q,"qty":%d}`, sku, qty))
	if err != nil {
		c.t.Fatalf("reserve %d of %s at %s: %v", qty, sku, r, err)
	}
	var res struct {
		ID string `json:"reservation_id"`
	}
	_ = json.Unmarshal(b, &res)
	home, _, _ := strings.Cut(res.ID, ":")
	return status, home, res.ID, string(bytes.TrimSpace(b))
}

// inventory returns sku's stock and reserved units as region r shows them.
func (c *reconfCluster) inventory(r, sku string) (stock, reserved int64) {
	c.t.Helper()
	var it struct {
		Stock    int64 `json:"stock"`
		Reserved int64 `json:"reserved"`
	}
	c.api(r).get(c.t, "/v1/inventory/"+sku, &it)
	return it.Stock, it.Reserved
}

// logOf returns the whole log of region r's current run.
func (c *reconfCluster) logOf(r string) string {
	b, _ := os.ReadFile(c.children[r].log)
	return string(b)
}

// moveHome runs the move of a homes rule (prefix mv-) from us-east to
// eu-west in a cluster of three regions, restarting them with restart,
// and checks the promises of "Changing the set of regions".
func moveHome(t *testing.T, restart func(c *reconfCluster)) {
	regions := []string{"us-east", "eu-west", "ap-south"}
	const oldHome, newHome = "us-east", "eu-west"
	c := newReconfCluster(t, regions...)
	c.configure("homes:\n  - prefix: mv-\n    region: us-east\n", regions...)
	for _, r := range regions {
		c.start(r)
	}
	for _, r := range regions {
		c.rollingWait(r)
	}
	// mv-s: 10 restocked, 8 sold at the old home, no hold open.
	c.post("ap-south", "/v1/inventory/mv-s/restock", `{"qty":10}`)
	c.post("ap-south", "/v1/inventory/mv-p/restock", `{"qty":1000000}`)
	pollUntil(t, 20*time.Second, "the old home holds the restocks", func() bool {
		return c.stock(oldHome, "mv-s") == 10 && c.stock(oldHome, "mv-p") == 1000000
	})
	c.sell("ap-south", "mv-s", 8)

	p := startProber(c, "mv-p", regions...)
	w := watchReadyz(c, regions...)
	c.configure("homes:\n  - prefix: mv-\n    region: eu-west\n", regions...)
	restart(c)
	for _, r := range regions {
		c.rollingWait(r)
	}
	reconnected := time.Now()

	// The new home decides within a few seconds, from the stock the old
	// home's sale left: 2 units.
	var status int
	var body string
	pollUntil(t, 5*time.Second, "the new home to decide mv-s", func() bool {
		status, _, _, body = c.reserveOnce("ap-south", "mv-s", 3)
		return status != 503
	})
	t.Logf("the new home decided %v after every region ran the new file and reconnected", time.Since(reconnected).Round(time.Millisecond))
	if status != 409 || !strings.Contains(body, "insufficient_stock") {
		t.Errorf("reserve 3 of mv-s, of which the old home sold 8 of 10: %d %s; want 409 insufficient_stock", status, body)
	}
	for _, r := range regions {
		status, home, id, body := c.reserveOnce(r, "mv-p", 1)
		if status != 201 || home != newHome {
			t.Errorf("reserve mv-p at %s after the move: %d %s (%s); want 201 decided by %s", r, status, id, body, newHome)
		}
	}
	time.Sleep(300 * time.Millisecond) // a few more probes after the move
	checkOneDecider(t, p.finish(), oldHome, newHome)
	status, home, id, body := c.reserveOnce("us-east", "mv-s", 2)
	if status != 201 || home != newHome {
		t.Fatalf("reserve the last 2 of mv-s at us-east: %d %s %s", status, id, body)
	}
	c.post("us-east", "/v1/reservations/"+id+"/commit", "")
	pollUntil(t, 20*time.Second, "every region to show mv-s sold out", func() bool {
		for _, r := range regions {
			if s, res := c.inventory(r, "mv-s"); s != 0 || res != 0 {
				return false
			}
		}
		return true
	})
	for _, r := range regions {
		if s, _ := c.inventory(r, "mv-p"); s < 0 || s > 1000000 {
			t.Errorf("%s shows mv-p stock %d of 1000000 restocked", r, s)
		}
	}

	// The /readyz warning appeared and cleared; the log lines named.
	seen := w.finish()
	for _, r := range regions {
		if !seen[r] {
			t.Errorf("%s never showed the /readyz warning %q during the rolling restart", r, homesWarning)
		}
	}
	pollUntil(t, 10*time.Second, "the /readyz warnings to clear", func() bool {
		for _, r := range regions {
			if b := readyzBody(c, r); b == "" || strings.Contains(b, "warnings") {
				return false
			}
		}
		return true
	})
	var warned bool
	for _, r := range regions {
		log := c.logOf(r)
		warned = warned || strings.Contains(log, "a peer runs other homes rules or regions than this region")
		if !strings.Contains(log, "every peer runs the same homes rules and regions as this region") {
			t.Errorf("%s's last run never logged that every peer runs its homes", r)
		}
	}
	for _, r := range regions {
		for i := 1; i < c.runs[r]; i++ {
			b, _ := os.ReadFile(filepath.Join(c.dir, fmt.Sprintf("%s.%d.log", r, i)))
			warned = warned || bytes.Contains(b, []byte("a peer runs other homes rules or regions than this region"))
		}
	}
	if !warned {
		t.Errorf("no region logged that a peer runs other homes rules or regions")
	}
}

// TestHomesMoveInDocumentedOrder moves the home of the skus of prefix
// mv- from us-east to eu-west as operations.md says: every region gets
// the new file, then a rolling restart, one region at a time, each
// cleanly stopped and waited for (/readyz without a catch-up warning,
// every peer connected). Probes reserve a sku of the rule at every
// region throughout: no reservation is decided by us-east once eu-west
// has decided one; once every region runs the new file and has
// reconnected, eu-west decides within 5 s, from the stock us-east's sale
// left (8 of 10 sold: 3 more are refused, the last 2 sold); the /readyz
// warning shows at every region and clears, and the log lines the docs
// name appear.
func TestHomesMoveInDocumentedOrder(t *testing.T) {
	moveHome(t, func(c *reconfCluster) {
		for _, r := range []string{"ap-south", "us-east", "eu-west"} {
			c.stop(r)
			c.start(r)
			c.rollingWait(r)
			if r == "ap-south" {
				// The first region has run a round with each peer on
				// the new file: every home refuses.
				status, hdr, b, err := c.api("us-east").call("POST", "/v1/reservations", `{"sku":"mv-q","qty":1}`)
				if err != nil || status != 503 || !bytes.Contains(b, []byte(`"code":"unavailable"`)) || hdr.Get("Retry-After") != "5" {
					t.Errorf("a reservation at the old home once ap-south caught up on the new file: %d (Retry-After %q) %s %v; want 503 unavailable, Retry-After 5",
						status, hdr.Get("Retry-After"), bytes.TrimSpace(b), err)
				}
			}
		}
	})
}

// TestHomesMoveInWrongOrder makes the same move with the new home
// restarted first (and waited for only until the old home's /readyz shows the homes
// warning), then
// the old home killed (SIGKILL, an unclean stop: a new incarnation) and
// started on the new file at once, while the third region still runs the
// old one, then the third restarted at once. The same promises hold.
func TestHomesMoveInWrongOrder(t *testing.T) {
	moveHome(t, func(c *reconfCluster) {
		c.stop("eu-west")
		c.start("eu-west")
		pollUntil(t, 20*time.Second, "the old home to see eu-west's new homes", func() bool {
			return strings.Contains(readyzBody(c, "us-east"), homesWarning)
		})
		c.children["us-east"].kill(t)
		c.start("us-east")
		c.stop("ap-south")
		c.start("ap-south")
	})
}

// skuHomedAt returns a sku of prefix that rendezvous hashing over
// regions homes at home (and, if also is not "", at also over alsoOver).
func skuHomedAt(t *testing.T, prefix string, regions []string, home string, alsoOver []string, also string) string {
	t.Helper()
	for i := range 10000 {
		sku := fmt.Sprintf("%s%d", prefix, i)
		if config.RendezvousHome(regions, sku) == home && (also == "" || config.RendezvousHome(alsoOver, sku) == also) {
			return sku
		}
	}
	t.Fatalf("no sku of %s homed at %s", prefix, home)
	return ""
}

// checkHomesDecide restocks, for every home, a sku rendezvous hashing
// homes there, and checks that a reservation of it sent to every region
// is decided by that home.
func (c *reconfCluster) checkHomesDecide(prefix string) {
	c.t.Helper()
	for _, h := range c.regions {
		sku := skuHomedAt(c.t, prefix+"-"+h+"-", c.regions, h, nil, "")
		c.post(h, "/v1/inventory/"+sku+"/restock", fmt.Sprintf(`{"qty":%d}`, len(c.regions)))
		for _, r := range c.regions {
			var status int
			var home, id, body string
			pollUntil(c.t, 10*time.Second, fmt.Sprintf("%s to decide %s sent to %s", h, sku, r), func() bool {
				status, home, id, body = c.reserveOnce(r, sku, 1)
				return status == 201 || status == 409
			})
			if status != 201 || home != h {
				c.t.Errorf("reserve %s (homed at %s) at %s: %d %s %s", sku, h, r, status, id, body)
			}
		}
	}
}

// TestRegionAddedAndEveryHomeDecides follows "Adding a region": a
// cluster of us-east and eu-west, then `lattice certs` for ap-south with
// the cluster's CA, the new file, ap-south started on an empty data_dir,
// and the others restarted one at a time. Then every home (ap-south
// too) decides reservations again, and a sku whose home moved to
// ap-south is sold from the stock eu-west's earlier sale left.
func TestRegionAddedAndEveryHomeDecides(t *testing.T) {
	two := []string{"us-east", "eu-west"}
	three := []string{"us-east", "eu-west", "ap-south"}
	c := newReconfCluster(t, two...)
	c.configure("", two...)
	for _, r := range two {
		c.start(r)
	}
	for _, r := range two {
		c.rollingWait(r)
	}
	moved := skuHomedAt(t, "mvd-", two, "eu-west", three, "ap-south")
	c.post("us-east", "/v1/inventory/"+moved+"/restock", `{"qty":10}`)
	pollUntil(t, 20*time.Second, "eu-west holds the restock", func() bool { return c.stock("eu-west", moved) == 10 })
	c.sell("us-east", moved, 7)

	// Step 1: the new region's certificate, from the cluster's CA.
	c.apis["ap-south"], c.peers["ap-south"] = freeAddr(t), freeUDPAddr(t)
	if code, _, stderr := runCLI(t, "certs", "--dir", filepath.Join(c.dir, "certs"), "--cluster", "reconf", "ap-south"); code != 0 {
		t.Fatalf("certs ap-south: %s", stderr)
	}
	// Steps 2-4.
	c.configure("", three...)
	c.start("ap-south")
	for _, r := range two {
		c.stop(r)
		c.start(r)
		c.rollingWait(r)
	}
	c.rollingWait("ap-south")
	status, home, id, body := c.reserveOnce("us-east", moved, 4)
	if status != 409 || !strings.Contains(body, "insufficient_stock") {
		t.Errorf("reserve 4 of %s (10 restocked, 7 sold by eu-west, now homed at ap-south): %d %s %s; want 409 insufficient_stock", moved, status, id, body)
	} else if status, home, id, body = c.reserveOnce("us-east", moved, 3); status != 201 || home != "ap-south" {
		t.Errorf("reserve the last 3 of %s: %d %s %s; want 201 decided by ap-south", moved, status, id, body)
	}
	c.checkHomesDecide("add")
}

// TestRegionRemovedAndTurnedDown follows "Removing a region": a
// cluster of three; eu-west, home (by rendezvous hashing) of sku gone,
// is checked (pending_deltas 0 for every peer, no open reservation),
// stopped, removed from the file, and the others are restarted one at a
// time. Every remaining home decides again, gone's new home sells its 5
// units. The docs then say its peers turn the removed region down when
// it dials them, "which stops its homes": eu-west started again on its
// old data directory and old config while the others run must decide
// nothing, not even in its first moments (it holds gone's 5 units,
// which the new home has sold). Reservations of gone are sent to it by
// 32 clients from the moment its API answers, for 2.5 s (up to three
// starts, each on a copy of the directory it was stopped with); none may
// be granted.
func TestRegionRemovedAndTurnedDown(t *testing.T) {
	three := []string{"us-east", "eu-west", "ap-south"}
	two := []string{"us-east", "ap-south"}
	c := newReconfCluster(t, three...)
	c.configure("", three...)
	oldCfg := filepath.Join(c.dir, "lattice-old.yaml")
	for _, r := range three {
		c.start(r)
	}
	for _, r := range three {
		c.rollingWait(r)
	}
	gone := skuHomedAt(t, "gone-", three, "eu-west", nil, "")
	c.post("us-east", "/v1/inventory/"+gone+"/restock", `{"qty":5}`)
	for _, r := range three {
		pollUntil(t, 20*time.Second, r+" holds the restock", func() bool { return c.stock(r, gone) == 5 })
	}
	// The checks before a removal: what eu-west wrote is at its peers.
	pollUntil(t, 20*time.Second, "eu-west to have no pending deltas", func() bool {
		var st struct {
			Peers []struct {
				Region        string `json:"region"`
				PendingDeltas int    `json:"pending_deltas"`
			} `json:"peers"`
		}
		c.api("eu-west").get(t, "/v1/cluster", &st)
		for _, p := range st.Peers {
			if p.PendingDeltas != 0 {
				return false
			}
		}
		return len(st.Peers) == 2
	})
	if _, res := c.inventory("eu-west", gone); res != 0 {
		t.Fatalf("%s has %d units reserved at eu-west", gone, res)
	}
	b, err := os.ReadFile(c.cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(oldCfg, b, 0o644); err != nil {
		t.Fatal(err)
	}
	c.stop("eu-west")
	c.configure("", two...)
	for _, r := range two {
		c.stop(r)
		c.start(r)
		c.rollingWait(r)
	}
	c.checkHomesDecide("rm")
	newHome := config.RendezvousHome(two, gone)
	status, home, id, body := c.reserveOnce("us-east", gone, 5)
	if status != 201 || home != newHome {
		t.Fatalf("reserve the 5 units of %s at its new home %s: %d %s %s", gone, newHome, status, id, body)
	}
	c.post("us-east", "/v1/reservations/"+id+"/commit", "")
	// Its reservation ids answer 404 ("… is not a region of this cluster").
	if status, _, b, err := c.api("ap-south").call("GET", "/v1/reservations/eu-west:1", ""); err != nil || status != 404 || !bytes.Contains(b, []byte("not a region of this cluster")) {
		t.Errorf("GET a reservation of the removed region: %d %s %v; want 404 naming it not a region of this cluster", status, bytes.TrimSpace(b), err)
	}

	// The removed region, started again on its store and old config.
	// (The docs say to delete its data directory; they also say what it
	// does if started on it: its peers turn it down, which stops its
	// homes.) Each attempt starts it on a copy of the directory it was
	// stopped with (a refusal it records is kept in its store), while
	// clients send it reservations of gone from the moment its API
	// answers, committing each one granted at once.
	dir := filepath.Join(c.dir, "data", "eu-west")
	saved := filepath.Join(c.dir, "eu-west.saved")
	if err := os.Rename(dir, saved); err != nil {
		t.Fatal(err)
	}
	var sold []string
	var held, committed, served int
	for attempt := 1; attempt <= 3 && len(sold) == 0; attempt++ {
		if err := os.RemoveAll(dir); err != nil {
			t.Fatal(err)
		}
		copyDir(t, saved, dir)
		ch := startServe(t, c.bin, oldCfg, "eu-west", filepath.Join(c.dir, fmt.Sprintf("eu-west.removed.%d.log", attempt)))
		c.children["eu-west"] = ch
		var mu sync.Mutex
		var wg sync.WaitGroup
		deadline := time.Now().Add(2500 * time.Millisecond)
		for range 32 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				a := newAPI("http://" + c.apis["eu-west"])
				a.hc.Timeout = 5 * time.Second
				for time.Now().Before(deadline) {
					status, _, b, err := a.call("POST", "/v1/reservations", fmt.Sprintf(`{"sku":%q,"qty":1,"ttl_ms":60000}`, gone))
					if err != nil {
						time.Sleep(time.Millisecond)
						continue
					}
					if status == 503 && bytes.Contains(b, []byte(`"code":"starting"`)) {
						continue
					}
					mu.Lock()
					served++
					mu.Unlock()
					if status != 201 {
						continue
					}
					var res struct {
						ID string `json:"reservation_id"`
					}
					_ = json.Unmarshal(b, &res)
					at := time.Now().Format("15:04:05.000")
					cs, _, cb, _ := a.call("POST", "/v1/reservations/"+res.ID+"/commit", "")
					mu.Lock()
					held++
					if cs == 200 {
						committed++
					}
					sold = append(sold, fmt.Sprintf("%s %s (commit: %d %s)", at, res.ID, cs, bytes.TrimSpace(cb)))
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		if !strings.Contains(readyzBody(c, "eu-west"), homesWarning) {
			t.Errorf("the removed region's /readyz does not show the homes warning: %s", readyzBody(c, "eu-west"))
		}
		c.stop("eu-west")
		t.Logf("attempt %d: the removed region answered %d reservations, granted %d", attempt, served, held)
	}
	if len(sold) > 0 {
		t.Errorf("the removed eu-west, started on its store and old config while its peers run and turn it down, granted %d reservations of %s (%d of them committed) before its peers' refusal stopped its homes, though its new home %s had sold all 5 units: held + committed = %d of a stock of 5; first: %s",
			held, gone, committed, newHome, 5+held, sold[0])
	}
	for _, r := range two {
		if s, _ := c.inventory(r, gone); s < 0 {
			t.Errorf("%s shows %s stock %d", r, gone, s)
		}
	}
}

// TestRestoreWhileOthersRunDecidesAfterCatchUp follows "Backup and
// restore" for the home of sku rs-1 (a homes rule: us-east) while the
// other regions run: a backup when 10 units are in stock, then 6 sold
// (reserved and committed at us-east), then us-east stopped, restored
// and started while ap-south does not answer (SIGSTOP). Once it has had
// eu-west's state (stock 4) it still decides nothing, 5 units or 4
// (503, Retry-After 5, a catch-up warning in /readyz): it has not
// completed a round with every peer. Once ap-south answers again and the
// catch-up ends, 5 units are refused (409 insufficient_stock) and the
// last 4 sold; every region then shows stock 0.
func TestRestoreWhileOthersRunDecidesAfterCatchUp(t *testing.T) {
	regions := []string{"us-east", "eu-west", "ap-south"}
	c := newReconfCluster(t, regions...)
	c.configure("homes:\n  - prefix: rs-\n    region: us-east\n", regions...)
	for _, r := range regions {
		c.start(r)
	}
	for _, r := range regions {
		c.rollingWait(r)
	}
	c.post("eu-west", "/v1/inventory/rs-1/restock", `{"qty":10}`)
	pollUntil(t, 20*time.Second, "us-east holds the restock", func() bool { return c.stock("us-east", "rs-1") == 10 })
	snap := filepath.Join(c.dir, "us-east.snapshot")
	if code, stdout, stderr := runCLI(t, "backup", "--config", c.cfg, "--region", "us-east", "--out", snap); code != 0 {
		t.Fatalf("backup: %s %s", stdout, stderr)
	}
	c.sell("ap-south", "rs-1", 6)
	for _, r := range regions {
		pollUntil(t, 20*time.Second, r+" shows the sale", func() bool { return c.stock(r, "rs-1") == 4 })
	}
	c.stop("us-east")
	if code, stdout, stderr := runCLI(t, "restore", "--config", c.cfg, "--region", "us-east", "--from", snap); code != 0 {
		t.Fatalf("restore: %s %s", stdout, stderr)
	}
	// ap-south stops answering (SIGSTOP) while us-east starts: us-east
	// can complete a round with eu-west only.
	ap := c.children["ap-south"].cmd.Process
	if err := ap.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ap.Signal(syscall.SIGCONT) })
	c.runs["us-east"]++
	c.children["us-east"] = startRegion(t, c.bin, c.cfg, "us-east", "http://"+c.apis["us-east"], filepath.Join(c.dir, "us-east.restored.log"))
	pollUntil(t, 20*time.Second, "the restored us-east to get the sale from eu-west", func() bool { return c.stock("us-east", "rs-1") == 4 })
	for _, qty := range []int{5, 4} {
		status, hdr, b, err := c.api("us-east").call("POST", "/v1/reservations", fmt.Sprintf(`{"sku":"rs-1","qty":%d}`, qty))
		if err != nil || status != 503 || hdr.Get("Retry-After") != "5" {
			t.Errorf("reserve %d of rs-1 at the restored us-east, caught up with eu-west but not ap-south: %d (Retry-After %q) %s %v; want 503 with Retry-After 5",
				qty, status, hdr.Get("Retry-After"), bytes.TrimSpace(b), err)
		}
	}
	if b := readyzBody(c, "us-east"); !strings.Contains(b, "catching up with its peers") {
		t.Errorf("the restored us-east's /readyz shows no catch-up warning while ap-south is unreachable: %s", b)
	}
	if err := ap.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	c.caughtUp("us-east")
	if status, _, id, body := c.reserveOnce("us-east", "rs-1", 5); status != 409 || !strings.Contains(body, "insufficient_stock") {
		t.Errorf("reserve 5 of rs-1 at the restored us-east after its catch-up, 4 left: %d %s %s; want 409 insufficient_stock", status, id, body)
	}
	status, home, id, body := c.reserveOnce("eu-west", "rs-1", 4)
	if status != 201 || home != "us-east" {
		t.Fatalf("reserve the last 4 of rs-1 after the catch-up: %d %s %s", status, id, body)
	}
	c.post("eu-west", "/v1/reservations/"+id+"/commit", "")
	pollUntil(t, 20*time.Second, "every region to show rs-1 sold out", func() bool {
		for _, r := range regions {
			if s, res := c.inventory(r, "rs-1"); s != 0 || res != 0 {
				return false
			}
		}
		return true
	})
}

// copyDir copies the regular files of directory from into a new
// directory to.
func copyDir(t *testing.T, from, to string) {
	t.Helper()
	if err := os.MkdirAll(to, 0o755); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(from)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue
		}
		b, err := os.ReadFile(filepath.Join(from, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(to, e.Name()), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}
