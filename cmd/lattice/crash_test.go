package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// crashSeed fixes the kill points and the workload of TestCrashLosesNoAcknowledgedWrite.
const crashSeed = 20261121

// Shape of the crash workload.
const (
	crashKills       = 4
	cartWriters      = 6
	restockWriters   = 2
	reserveWriters   = 4
	reservationSKUs  = 2
	reservationStock = 1_000_000
)

// buildLattice builds the lattice binary into a temporary directory.
func buildLattice(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "lattice")
	cmd := exec.Command("go", "build", "-o", bin, ".")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// child is a `lattice serve` process.
type child struct {
	cmd    *exec.Cmd
	log    string
	exited chan int // receives the exit status once
	status int
	done   chan struct{}
}

func startChild(t *testing.T, bin, cfg, logPath string) *child {
	t.Helper()
	return startServe(t, bin, cfg, "us-east", logPath)
}

// startServe starts `lattice serve` for region of the config as a child
// process logging to logPath, with extra arguments (--node); the child is
// killed at the end of the test if it still runs.
func startServe(t *testing.T, bin, cfg, region, logPath string, extra ...string) *child {
	t.Helper()
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, append([]string{"serve", "--config", cfg, "--region", region, "--log-level", "info"}, extra...)...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		t.Fatal(err)
	}
	c := &child{cmd: cmd, log: logPath, exited: make(chan int, 1), done: make(chan struct{})}
	go func() {
		err := cmd.Wait()
		logf.Close()
		c.status = cmd.ProcessState.ExitCode()
		if err != nil && c.status == 0 {
			c.status = -1
		}
		c.exited <- c.status
		close(c.done)
	}()
	t.Cleanup(func() {
		select {
		case <-c.done:
		default:
			_ = cmd.Process.Kill()
			<-c.done
		}
	})
	return c
}

// kill sends SIGKILL and waits for the process to be gone.
func (c *child) kill(t *testing.T) {
	t.Helper()
	if err := c.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	select {
	case <-c.done:
	case <-time.After(30 * time.Second):
		t.Fatal("the killed process did not exit")
	}
}

func (c *child) logTail() string {
	b, _ := os.ReadFile(c.log)
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// pendingReservation is a reservation request that got no answer.
type pendingReservation struct {
	key, sku string
	qty      int
}

type reservation struct {
	id, sku string
	qty     int
}

// ledger is what the clients know of their writes: how many they
// attempted and how many were acknowledged, per cart and per sku.
type ledger struct {
	mu           sync.Mutex
	cartAcked    [cartWriters]int
	cartTried    [cartWriters]int
	stockAcked   [restockWriters]int
	stockTried   [restockWriters]int
	reservations []reservation
	pending      []pendingReservation
	tokens       []string // the Lattice-Token of each writer's last acknowledged write
	resSeq       [reserveWriters]int
}

func cartID(w int) string     { return fmt.Sprintf("crash-cart-%d", w) }
func restockSKU(w int) string { return fmt.Sprintf("crash-stock-%d", w) }
func reserveSKU(w int) string { return fmt.Sprintf("crash-res-%d", w%reservationSKUs) }
func resKey(w, n int) string  { return fmt.Sprintf("crash-res-%d-%d", w, n) }
func resBody(sku string, qty int) string {
	return fmt.Sprintf(`{"sku":%q,"qty":%d,"ttl_ms":3600000}`, sku, qty)
}

// api is a client of the child's API that reports instead of failing, so
// writers may use it off the test goroutine.
type api struct {
	base string
	hc   *http.Client
}

func newAPI(base string) *api {
	return &api{base: base, hc: &http.Client{Timeout: 20 * time.Second,
		Transport: &http.Transport{MaxIdleConnsPerHost: 32}}}
}

// call sends a request; err is a transport error (no answer).
func (a *api) call(method, path, body string, header ...string) (status int, hdr http.Header, b []byte, err error) {
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, a.base+path, r)
	if err != nil {
		return 0, nil, nil, err
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	res, err := a.hc.Do(req)
	if err != nil {
		return 0, nil, nil, err
	}
	defer res.Body.Close()
	b, err = io.ReadAll(res.Body)
	if err != nil {
		return 0, nil, nil, err
	}
	return res.StatusCode, res.Header, b, nil
}

func (a *api) get(t *testing.T, path string, v any, header ...string) {
	t.Helper()
	status, _, b, err := a.call("GET", path, "", header...)
	if err != nil || status != 200 {
		t.Fatalf("GET %s: %d %s %v", path, status, b, err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
}

// TestCrashLosesNoAcknowledgedWrite runs `lattice serve` as a child
// process under concurrent writers, kills it with SIGKILL at seeded
// points, and restarts it on the same files: every acknowledged write must
// be there, and nothing may be half-applied.
func TestCrashLosesNoAcknowledgedWrite(t *testing.T) {
	t.Logf("seed %d", crashSeed)
	rng := rand.New(rand.NewPCG(crashSeed, 1))
	bin := buildLattice(t)
	dir := t.TempDir()
	addr := freeAddr(t)
	cfg := writeConfig(t, dir, addr)
	if code, _, stderr := runCLI(t, "certs", "--dir", filepath.Join(dir, "certs"), "--cluster", "crash", "us-east"); code != 0 {
		t.Fatalf("certs: %s", stderr)
	}
	logPath := filepath.Join(dir, "serve.log")
	base := "http://" + addr
	var l ledger

	for round := 0; ; round++ {
		c := startChild(t, bin, cfg, logPath)
		waitReady(t, base, c.exited)
		a := newAPI(base)
		if round == 0 {
			for s := range reservationSKUs {
				if status, _, b, err := a.call("POST", "/v1/inventory/"+reserveSKU(s)+"/restock", fmt.Sprintf(`{"qty":%d}`, reservationStock)); err != nil || status != 200 {
					t.Fatalf("restock: %d %s %v", status, b, err)
				}
			}
		}
		verifyCrash(t, a, &l, round)
		if t.Failed() {
			t.Fatalf("after restart %d; server log:\n%s", round, c.logTail())
		}
		if round == crashKills {
			// A last, clean stop.
			if err := c.cmd.Process.Signal(syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			select {
			case code := <-c.exited:
				if code != 0 {
					t.Errorf("SIGTERM: exit status %d\n%s", code, c.logTail())
				}
			case <-time.After(30 * time.Second):
				t.Fatal("SIGTERM did not stop the server")
			}
			if !strings.Contains(c.logTail(), "region stopped") {
				t.Errorf("no clean stop in the log:\n%s", c.logTail())
			}
			break
		}
		killAt := 100 + rng.IntN(300)
		acked := runCrashLoad(t, a, &l, rng.Uint64(), killAt, func() { c.kill(t) })
		t.Logf("round %d: killed after %d acknowledged writes (target %d)", round, acked, killAt)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	t.Logf("acknowledged: %d reservations, carts %v, restocks %v", len(l.reservations), l.cartAcked, l.stockAcked)
}

// runCrashLoad runs the writers until killAt writes are acknowledged in
// this round, calls kill, and waits for the writers to stop. It returns
// how many writes were acknowledged.
func runCrashLoad(t *testing.T, a *api, l *ledger, seed uint64, killAt int, kill func()) int {
	var acked atomic.Int64
	stop := make(chan struct{})
	reached := make(chan struct{})
	var once sync.Once
	ack := func(token string) {
		l.tokens = append(l.tokens, token) // under l.mu
		if acked.Add(1) >= int64(killAt) {
			once.Do(func() { close(reached) })
		}
	}
	stopped := func() bool {
		select {
		case <-stop:
			return true
		default:
			return false
		}
	}
	fail := func(format string, args ...any) {
		t.Errorf(format, args...)
		once.Do(func() { close(reached) })
	}
	var wg sync.WaitGroup
	for w := range cartWriters {
		wg.Go(func() {
			for n := 0; !stopped(); n++ {
				l.mu.Lock()
				l.cartTried[w]++
				l.mu.Unlock()
				body := fmt.Sprintf(`{"sku":"s%d","qty":1}`, n%5)
				status, hdr, b, err := a.call("POST", "/v1/carts/"+cartID(w)+"/items", body)
				if err != nil {
					return // no answer: the server is gone
				}
				if status != 200 {
					fail("cart add: %d %s", status, b)
					return
				}
				l.mu.Lock()
				l.cartAcked[w]++
				ack(hdr.Get("Lattice-Token"))
				l.mu.Unlock()
			}
		})
	}
	for w := range restockWriters {
		wg.Go(func() {
			for !stopped() {
				l.mu.Lock()
				l.stockTried[w]++
				l.mu.Unlock()
				status, hdr, b, err := a.call("POST", "/v1/inventory/"+restockSKU(w)+"/restock", `{"qty":1}`)
				if err != nil {
					return
				}
				if status != 200 {
					fail("restock: %d %s", status, b)
					return
				}
				l.mu.Lock()
				l.stockAcked[w]++
				ack(hdr.Get("Lattice-Token"))
				l.mu.Unlock()
			}
		})
	}
	for w := range reserveWriters {
		rng := rand.New(rand.NewPCG(seed, uint64(w)))
		wg.Go(func() {
			for !stopped() {
				l.mu.Lock()
				l.resSeq[w]++
				p := pendingReservation{key: resKey(w, l.resSeq[w]), sku: reserveSKU(w), qty: 1 + rng.IntN(3)}
				l.mu.Unlock()
				status, hdr, b, err := a.call("POST", "/v1/reservations", resBody(p.sku, p.qty), "Idempotency-Key", p.key)
				if err != nil {
					l.mu.Lock()
					l.pending = append(l.pending, p)
					l.mu.Unlock()
					return
				}
				if status != 201 {
					fail("reserve: %d %s", status, b)
					return
				}
				var r struct {
					ID string `json:"reservation_id"`
				}
				if err := json.Unmarshal(b, &r); err != nil {
					fail("reserve: %v", err)
					return
				}
				l.mu.Lock()
				l.reservations = append(l.reservations, reservation{id: r.ID, sku: p.sku, qty: p.qty})
				ack(hdr.Get("Lattice-Token"))
				l.mu.Unlock()
			}
		})
	}
	select {
	case <-reached:
	case <-time.After(60 * time.Second):
		t.Errorf("only %d writes acknowledged in 60s", acked.Load())
	}
	kill()
	close(stop)
	wg.Wait()
	return int(acked.Load())
}

// verifyCrash checks the restarted region against what the clients know,
// after finishing the reservation requests that got no answer (retried
// with their Idempotency-Key, each either replays what was decided before
// the crash or decides now).
func verifyCrash(t *testing.T, a *api, l *ledger, round int) {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()

	// The region has applied every write it acknowledged.
	for _, tok := range l.tokens {
		status, _, b, err := a.call("GET", "/v1/carts/"+cartID(0), "", "Lattice-Token", tok, "Lattice-Wait", "0")
		if err != nil || status != 200 {
			t.Fatalf("round %d: a token of an acknowledged write: %d %s %v", round, status, b, err)
		}
	}
	l.tokens = l.tokens[:0]

	for w := range cartWriters {
		var cart struct {
			Items []struct {
				SKU string `json:"sku"`
				Qty int    `json:"qty"`
			} `json:"items"`
		}
		a.get(t, "/v1/carts/"+cartID(w), &cart)
		total := 0
		for _, it := range cart.Items {
			total += it.Qty
		}
		if total < l.cartAcked[w] || total > l.cartTried[w] {
			t.Errorf("round %d: cart %s holds %d units; %d adds acknowledged, %d tried", round, cartID(w), total, l.cartAcked[w], l.cartTried[w])
		}
	}
	for w := range restockWriters {
		var it struct{ Stock int }
		a.get(t, "/v1/inventory/"+restockSKU(w), &it)
		if it.Stock < l.stockAcked[w] || it.Stock > l.stockTried[w] {
			t.Errorf("round %d: %s has stock %d; %d restocks acknowledged, %d tried", round, restockSKU(w), it.Stock, l.stockAcked[w], l.stockTried[w])
		}
	}

	for _, p := range l.pending {
		status, _, b, err := a.call("POST", "/v1/reservations", resBody(p.sku, p.qty), "Idempotency-Key", p.key)
		if err != nil || status != 201 {
			t.Fatalf("round %d: retrying %s: %d %s %v", round, p.key, status, b, err)
		}
		var r struct {
			ID string `json:"reservation_id"`
		}
		if err := json.Unmarshal(b, &r); err != nil {
			t.Fatal(err)
		}
		l.reservations = append(l.reservations, reservation{id: r.ID, sku: p.sku, qty: p.qty})
	}
	l.pending = l.pending[:0]

	held := map[string]int{}
	ids := map[string]bool{}
	for _, r := range l.reservations {
		if ids[r.id] {
			t.Errorf("round %d: reservation id %s given twice", round, r.id)
		}
		ids[r.id] = true
		var got struct {
			ID    string `json:"reservation_id"`
			SKU   string `json:"sku"`
			Qty   int    `json:"qty"`
			State string `json:"state"`
		}
		a.get(t, "/v1/reservations/"+r.id, &got)
		if got.SKU != r.sku || got.Qty != r.qty || got.State != "held" {
			t.Errorf("round %d: reservation %s is %+v, want %d of %s held", round, r.id, got, r.qty, r.sku)
		}
		held[r.sku] += r.qty
	}
	// Every reservation that exists is counted in its item, and no hold
	// exists that no client knows of.
	for s := range reservationSKUs {
		sku := reserveSKU(s)
		var it struct{ Stock, Reserved, Available int }
		a.get(t, "/v1/inventory/"+sku, &it)
		if it.Stock != reservationStock || it.Reserved != held[sku] || it.Available != it.Stock-it.Reserved {
			t.Errorf("round %d: %s is %+v; want stock %d, reserved %d", round, sku, it, reservationStock, held[sku])
		}
	}

	var cluster struct {
		VersionVector map[string]int `json:"version_vector"`
		Store         struct {
			CorruptKeys []string `json:"corrupt_keys"`
		} `json:"store"`
	}
	a.get(t, "/v1/cluster", &cluster)
	if len(cluster.Store.CorruptKeys) != 0 {
		t.Errorf("round %d: corrupt keys %v", round, cluster.Store.CorruptKeys)
	}
	status, _, b, err := a.call("GET", "/metrics", "")
	if err != nil || status != 200 {
		t.Fatalf("metrics: %d %v", status, err)
	}
	for line := range bytes.Lines(b) {
		if bytes.HasPrefix(line, []byte("lattice_store_checksum_failures_total")) && !bytes.HasSuffix(bytes.TrimSpace(line), []byte(" 0")) {
			t.Errorf("round %d: %s", round, bytes.TrimSpace(line))
		}
		if bytes.HasPrefix(line, []byte("lattice_store_torn_transactions_total")) {
			t.Logf("round %d: %s", round, bytes.TrimSpace(line))
		}
	}
}
