package deploy

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// composeRegions are the services of compose/compose.yaml.
var composeRegions = []string{"us-east", "eu-west", "ap-south"}

// composeSeed fixes the kill point of TestComposeCluster.
const composeSeed = 20261205

// composeCluster is a running compose project.
type composeCluster struct {
	t       *testing.T
	compose []string // the compose command: docker compose or docker-compose
	project string
	env     []string
	client  *http.Client

	mu  sync.Mutex
	api map[string]string // region → base URL
}

// url returns the base URL of region's API.
func (c *composeCluster) url(region string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.api[region]
}

// run runs the compose command with args and returns its output; it fails
// the test on an error.
func (c *composeCluster) run(args ...string) string {
	c.t.Helper()
	out, err := c.exec(args...)
	if err != nil {
		c.t.Fatalf("%s %s: %v\n%s", strings.Join(c.compose, " "), strings.Join(args, " "), err, out)
	}
	return out
}

func (c *composeCluster) exec(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	full := append(slices.Clone(c.compose[1:]), append([]string{"-p", c.project, "-f", filepath.Join("compose", "compose.yaml")}, args...)...)
	cmd := exec.CommandContext(ctx, c.compose[0], full...)
	cmd.Env = append(os.Environ(), c.env...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// docker runs docker with args, failing the test on an error.
func docker(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "docker", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("docker %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// container returns the id of region's container.
func (c *composeCluster) container(region string) string {
	c.t.Helper()
	id := strings.TrimSpace(c.run("ps", "-q", region))
	if id == "" {
		c.t.Fatalf("no container for %s", region)
	}
	return id
}

// discover reads the published API port of every region.
func (c *composeCluster) discover() {
	c.t.Helper()
	for i, r := range composeRegions {
		addr := strings.TrimSpace(c.run("port", r, fmt.Sprint(7101+i)))
		if addr == "" || strings.HasSuffix(addr, ":0") {
			c.t.Fatalf("%s: no published API port (%q)", r, addr)
		}
		c.mu.Lock()
		c.api[r] = "http://" + addr
		c.mu.Unlock()
	}
}

// eventually polls cond every 100 ms until it holds or d passes.
func (c *composeCluster) eventually(d time.Duration, what string, cond func() bool) {
	c.t.Helper()
	deadline := time.Now().Add(d)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			c.t.Fatalf("after %v: %s", d, what)
		}
		<-tick.C
	}
}

func (c *composeCluster) ready(region string) bool {
	res, err := c.client.Get(c.url(region) + "/readyz")
	if err != nil {
		return false
	}
	res.Body.Close()
	return res.StatusCode == http.StatusOK
}

// connected reports whether region sees every other region connected.
func (c *composeCluster) connected(region string) bool {
	var cl struct {
		Peers []struct {
			Region    string `json:"region"`
			Connected bool   `json:"connected"`
		} `json:"peers"`
	}
	if c.getJSON(region, "/v1/cluster", &cl) != nil {
		return false
	}
	n := 0
	for _, p := range cl.Peers {
		if p.Connected {
			n++
		}
	}
	return n == len(composeRegions)-1
}

func (c *composeCluster) getJSON(region, path string, v any) error {
	res, err := c.client.Get(c.url(region) + path)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		return err
	}
	if res.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s at %s: %d %s", path, region, res.StatusCode, b)
	}
	return json.Unmarshal(b, v)
}

// add adds one unit of sku to cart at region and reports whether the
// write was acknowledged (a 2xx answer).
func (c *composeCluster) add(region, cart, sku string) bool {
	body := fmt.Sprintf(`{"sku":%q,"qty":1}`, sku)
	res, err := c.client.Post(c.url(region)+"/v1/carts/"+cart+"/items", "application/json", strings.NewReader(body))
	if err != nil {
		return false
	}
	io.Copy(io.Discard, res.Body)
	res.Body.Close()
	return res.StatusCode/100 == 2
}

// skus returns the skus of cart at region (nil if it cannot be read).
func (c *composeCluster) skus(region, cart string) map[string]bool {
	var v struct {
		Items []struct {
			SKU string `json:"sku"`
		} `json:"items"`
	}
	if c.getJSON(region, "/v1/carts/"+cart, &v) != nil {
		return nil
	}
	out := map[string]bool{}
	for _, it := range v.Items {
		out[it.SKU] = true
	}
	return out
}

// ledger records the acknowledged writes: cart → skus.
type ledger struct {
	mu    sync.Mutex
	carts map[string][]string
}

func (l *ledger) ack(cart, sku string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.carts[cart] = append(l.carts[cart], sku)
}

// snapshot returns a copy of the acknowledged writes.
func (l *ledger) snapshot() map[string][]string {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make(map[string][]string, len(l.carts))
	for k, v := range l.carts {
		out[k] = slices.Clone(v)
	}
	return out
}

// count returns how many writes to carts starting with prefix were
// acknowledged.
func (l *ledger) count(prefix string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for k, v := range l.carts {
		if strings.HasPrefix(k, prefix) {
			n += len(v)
		}
	}
	return n
}

// missing returns the acknowledged writes region does not show
// ("cart/sku"), or an error if it cannot be read.
func (c *composeCluster) missing(region string, acked map[string][]string) ([]string, error) {
	var out []string
	for cart, skus := range acked {
		got := c.skus(region, cart)
		if got == nil {
			return nil, fmt.Errorf("%s: cannot read cart %s", region, cart)
		}
		for _, s := range skus {
			if !got[s] {
				out = append(out, cart+"/"+s)
			}
		}
	}
	slices.Sort(out)
	return out, nil
}

// holds reports whether region shows every write of acked.
func (c *composeCluster) holds(region string, acked map[string][]string) bool {
	m, err := c.missing(region, acked)
	return err == nil && len(m) == 0
}

// composeCommand returns the compose command available, or nil.
func composeCommand() []string {
	if exec.Command("docker", "compose", "version").Run() == nil {
		return []string{"docker", "compose"}
	}
	if exec.Command("docker-compose", "version").Run() == nil {
		return []string{"docker-compose"}
	}
	return nil
}

// TestComposeCluster builds the image, runs compose/compose.yaml (three
// regions, each its own container) and checks what the compose file is
// for: a write at one region is read at another; a region cut off from
// the others with docker network disconnect stays writable and, once
// reconnected, converges; a region crashed with docker kill under
// concurrent writes and started again has lost no acknowledged write, and
// every region ends with every acknowledged write.
//
// It needs docker and compose and is skipped without them; it takes about
// half a minute (-short or LATTICE_COMPOSE=0 skip it; make compose-test
// runs it alone).
func TestComposeCluster(t *testing.T) {
	if testing.Short() || os.Getenv("LATTICE_COMPOSE") == "0" {
		t.Skip("skipped by -short or LATTICE_COMPOSE=0: it builds the image and runs three containers")
	}
	if err := exec.Command("docker", "info").Run(); err != nil {
		t.Skipf("docker is not available (docker info: %v)", err)
	}
	compose := composeCommand()
	if compose == nil {
		t.Skip("neither docker compose nor docker-compose is available")
	}
	t.Logf("seed %d", composeSeed)
	rng := rand.New(rand.NewPCG(composeSeed, 0))

	// The image, from the binary built as make image builds it.
	work := t.TempDir()
	ctx := filepath.Join(work, "image")
	if err := os.Mkdir(ctx, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(ctx, "lattice")
	build := exec.Command("go", "build", "-o", bin, "../cmd/lattice")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	image := fmt.Sprintf("lattice:compose-test-%d", os.Getpid())
	docker(t, "build", "-q", "-t", image, "-f", "Dockerfile", ctx)
	t.Cleanup(func() { exec.Command("docker", "rmi", "-f", image).Run() })

	// Certificates and data directories the containers' user can use.
	certs := filepath.Join(work, "certs")
	if out, err := exec.Command(bin, append([]string{"certs", "--dir", certs, "--cluster", "compose"}, composeRegions...)...).CombinedOutput(); err != nil {
		t.Fatalf("lattice certs: %v\n%s", err, out)
	}
	files, _ := filepath.Glob(filepath.Join(certs, "*"))
	for _, f := range files {
		if err := os.Chmod(f, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	data := filepath.Join(work, "data")
	for _, r := range composeRegions {
		d := filepath.Join(data, r)
		if err := os.MkdirAll(d, 0o777); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(d, 0o777); err != nil {
			t.Fatal(err)
		}
	}

	c := &composeCluster{
		t: t, compose: compose,
		project: fmt.Sprintf("latticetest%d", os.Getpid()),
		env:     []string{"LATTICE_IMAGE=" + image, "LATTICE_CERTS=" + certs, "LATTICE_DATA=" + data},
		api:     map[string]string{},
		client:  &http.Client{Timeout: 3 * time.Second},
	}
	t.Cleanup(func() {
		if t.Failed() {
			out, _ := c.exec("logs", "--no-color", "--tail", "40")
			t.Logf("logs:\n%s", out)
		}
		if out, err := c.exec("down", "-v", "--remove-orphans", "-t", "5"); err != nil {
			t.Logf("compose down: %v\n%s", err, out)
		}
	})
	c.run("up", "-d")
	c.discover()
	for _, r := range composeRegions {
		c.eventually(60*time.Second, r+" ready", func() bool { return c.ready(r) })
	}
	for _, r := range composeRegions {
		c.eventually(60*time.Second, r+" connected to every peer", func() bool { return c.connected(r) })
	}

	// Write at one region, read at another.
	l := &ledger{carts: map[string][]string{}}
	const cart = "compose-cart"
	if !c.add("us-east", cart, "first") {
		t.Fatal("the first write was not acknowledged")
	}
	l.ack(cart, "first")
	c.eventually(60*time.Second, "us-east's write at ap-south", func() bool { return c.holds("ap-south", l.snapshot()) })

	// Cut eu-west off from the other regions: it stays writable, its
	// writes do not reach the others while it is cut off, and they do
	// once it is back.
	wan := c.project + "_wan"
	eu := c.container("eu-west")
	docker(t, "network", "disconnect", wan, eu)
	if !c.add("eu-west", cart, "cut-off") {
		t.Fatal("eu-west refused a write while cut off")
	}
	l.ack(cart, "cut-off")
	if !c.add("us-east", cart, "while-cut") {
		t.Fatal("us-east refused a write")
	}
	l.ack(cart, "while-cut")
	c.eventually(60*time.Second, "us-east's write at ap-south during the partition", func() bool {
		return c.holds("ap-south", map[string][]string{cart: {"while-cut"}})
	})
	if got := c.skus("ap-south", cart); got["cut-off"] {
		t.Fatal("eu-west's write reached ap-south while eu-west was disconnected: the partition is not real")
	}
	docker(t, "network", "connect", "--alias", "peer-eu-west", wan, eu)
	for _, r := range composeRegions {
		c.eventually(90*time.Second, r+" holds every write after the partition healed", func() bool { return c.holds(r, l.snapshot()) })
	}

	// Crash ap-south with docker kill while paced writers hit every
	// region (a new cart every 200 writes, within a cart's limits); start
	// it again.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for _, r := range composeRegions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tick := time.NewTicker(20 * time.Millisecond)
			defer tick.Stop()
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				case <-tick.C:
				}
				cart, sku := fmt.Sprintf("crash-%s-%d", r, n/200), fmt.Sprintf("w%d", n)
				if c.add(r, cart, sku) {
					l.ack(cart, sku)
				}
			}
		}()
	}
	killAt := 20 + rng.IntN(30)
	c.eventually(60*time.Second, "ap-south acknowledging writes", func() bool { return l.count("crash-ap-south-") >= killAt })
	docker(t, "kill", c.container("ap-south"))
	c.eventually(30*time.Second, "ap-south down", func() bool { return !c.ready("ap-south") })
	before := l.count("crash-ap-south-")
	c.run("start", "ap-south")
	c.discover() // a restarted container may publish another port
	c.eventually(60*time.Second, "ap-south ready after its crash", func() bool { return c.ready("ap-south") })
	c.eventually(60*time.Second, "ap-south acknowledging writes after its restart", func() bool { return l.count("crash-ap-south-") > before })
	close(stop)
	wg.Wait()

	acked := l.snapshot()
	total := 0
	for _, v := range acked {
		total += len(v)
	}
	t.Logf("%d acknowledged writes in %d carts; ap-south acknowledged %d before it was killed", total, len(acked), before)
	for _, r := range composeRegions {
		c.eventually(120*time.Second, r+" holds every acknowledged write", func() bool { return c.holds(r, acked) })
	}
	for _, r := range composeRegions {
		m, err := c.missing(r, acked)
		if err != nil || len(m) > 0 {
			t.Errorf("%s: lost acknowledged writes %v (%v)", r, m, err)
		}
	}
}
