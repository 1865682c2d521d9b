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
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/latticedb/lattice/region/config"
)

// composeSeed fixes the choices of TestComposeCluster: the region cut off,
// the node crashed and when. LATTICE_COMPOSE_SEED replaces it.
const composeSeed = 20261205

// composeNode is one node of compose/lattice.yaml; its compose service is
// named after it.
type composeNode struct {
	region, name string
	apiPort      int32
	owns         []int
}

// composeCluster is a running compose project.
type composeCluster struct {
	t       *testing.T
	compose []string // the compose command: docker compose or docker-compose
	project string
	env     []string
	nodes   []composeNode
	client  *http.Client // the writers': short, so a stopped node costs little
	patient *http.Client // the checks': long enough for a forward to give up

	mu  sync.Mutex
	api map[string]string // node → base URL of its published API
	ids map[string]string // node → container id
}

// url returns the base URL of node's API.
func (c *composeCluster) url(node string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.api[node]
}

// node returns the node called name.
func (c *composeCluster) node(name string) composeNode {
	c.t.Helper()
	i := slices.IndexFunc(c.nodes, func(n composeNode) bool { return n.name == name })
	if i < 0 {
		c.t.Fatalf("no node %s", name)
	}
	return c.nodes[i]
}

// regionNodes returns the nodes of region.
func (c *composeCluster) regionNodes(region string) []composeNode {
	var out []composeNode
	for _, n := range c.nodes {
		if n.region == region {
			out = append(out, n)
		}
	}
	return out
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

// container returns the id of node's container (it keeps it across
// kills, stops and starts).
func (c *composeCluster) container(node string) string {
	c.t.Helper()
	c.mu.Lock()
	id := c.ids[node]
	c.mu.Unlock()
	if id != "" {
		return id
	}
	id = strings.TrimSpace(c.run("ps", "-q", node))
	if id == "" {
		c.t.Fatalf("no container for %s", node)
	}
	c.mu.Lock()
	c.ids[node] = id
	c.mu.Unlock()
	return id
}

// discover reads the published API port of node's container (a container
// started again may publish another).
func (c *composeCluster) discover(node string) {
	c.t.Helper()
	n := c.node(node)
	out := docker(c.t, "port", c.container(node), fmt.Sprintf("%d/tcp", n.apiPort))
	var addr string
	for _, line := range strings.Fields(out) {
		if strings.HasPrefix(line, "127.0.0.1:") {
			addr = line
		}
	}
	if addr == "" || strings.HasSuffix(addr, ":0") {
		c.t.Fatalf("%s: no API port published on 127.0.0.1 (%q)", node, out)
	}
	c.mu.Lock()
	c.api[node] = "http://" + addr
	c.mu.Unlock()
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

func (c *composeCluster) ready(node string) bool {
	res, err := c.client.Get(c.url(node) + "/readyz")
	if err != nil {
		return false
	}
	res.Body.Close()
	return res.StatusCode == http.StatusOK
}

// connected reports whether node sees every other region connected (each
// of its partitions' links to the owners of that partition there).
func (c *composeCluster) connected(node string, regions int) bool {
	var cl struct {
		Peers []struct {
			Region    string `json:"region"`
			Connected bool   `json:"connected"`
		} `json:"peers"`
	}
	if c.getJSON(node, "/v1/cluster", &cl) != nil {
		return false
	}
	n := 0
	for _, p := range cl.Peers {
		if p.Connected {
			n++
		}
	}
	return n == regions-1
}

// disconnected reports whether node sees no other region connected.
func (c *composeCluster) disconnected(node string) bool {
	var cl struct {
		Peers []struct {
			Connected bool `json:"connected"`
		} `json:"peers"`
	}
	if c.getJSON(node, "/v1/cluster", &cl) != nil || len(cl.Peers) == 0 {
		return false
	}
	for _, p := range cl.Peers {
		if p.Connected {
			return false
		}
	}
	return true
}

func (c *composeCluster) getJSON(node, path string, v any) error {
	res, err := c.client.Get(c.url(node) + path)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		return err
	}
	if res.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s at %s: %d %s", path, node, res.StatusCode, b)
	}
	return json.Unmarshal(b, v)
}

// post adds one unit of sku to cart through node with client and returns
// the answer's status, headers and body.
func (c *composeCluster) post(client *http.Client, node, cart, sku string) (int, http.Header, string, error) {
	body := fmt.Sprintf(`{"sku":%q,"qty":1}`, sku)
	res, err := client.Post(c.url(node)+"/v1/carts/"+cart+"/items", "application/json", strings.NewReader(body))
	if err != nil {
		return 0, nil, "", err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	return res.StatusCode, res.Header, string(b), err
}

// add adds one unit of sku to cart through node and reports whether the
// write was acknowledged (a 2xx answer).
func (c *composeCluster) add(node, cart, sku string) bool {
	status, _, _, err := c.post(c.client, node, cart, sku)
	return err == nil && status/100 == 2
}

// mustAdd adds sku to cart through node, failing the test unless the
// write is acknowledged, and records it in l. It returns the answer's
// headers.
func (c *composeCluster) mustAdd(l *ledger, node, cart, sku string) http.Header {
	c.t.Helper()
	status, h, body, err := c.post(c.patient, node, cart, sku)
	if err != nil || status != http.StatusOK {
		c.t.Fatalf("add %s to %s through %s: %d %s %v", sku, cart, node, status, body, err)
	}
	l.ack(cart, sku)
	return h
}

// skus returns the skus of cart read through node (nil if it cannot be
// read).
func (c *composeCluster) skus(node, cart string) map[string]bool {
	var v struct {
		Items []struct {
			SKU string `json:"sku"`
		} `json:"items"`
	}
	if c.getJSON(node, "/v1/carts/"+cart, &v) != nil {
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

// missing returns the acknowledged writes node does not show
// ("cart/sku"), or an error if a cart cannot be read through it.
func (c *composeCluster) missing(node string, acked map[string][]string) ([]string, error) {
	var out []string
	for cart, skus := range acked {
		got := c.skus(node, cart)
		if got == nil {
			return nil, fmt.Errorf("%s: cannot read cart %s", node, cart)
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

// holds reports whether node shows every write of acked.
func (c *composeCluster) holds(node string, acked map[string][]string) bool {
	m, err := c.missing(node, acked)
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
// regions of two nodes, each node its own container, partitions: 8) and
// checks what the compose file is for:
//
//   - every node of every region takes writes to carts of every
//     partition (forwarding those of the other node's partitions to it)
//     and every node ends up showing all of them;
//   - a region whose two containers are cut off from the other regions
//     with docker network disconnect keeps serving every partition
//     through both its nodes, its writes do not leave it while it is cut
//     off, and once reconnected every node converges;
//   - a node crashed with docker kill under concurrent writes through
//     every node: its partitions answer 503 partition_unavailable (with
//     Retry-After) through the other node of its region, whose own
//     partitions keep taking writes, as do the crashed node's partitions
//     in the other regions; started again, it catches up with them;
//   - a rolling restart, node by node with docker stop (SIGTERM) and
//     docker start, each node waited for until it takes writes again,
//     with the writers running throughout;
//
// and at the end every node shows every acknowledged write.
//
// It needs docker and compose and is skipped without them; it takes
// under a minute (-short or LATTICE_COMPOSE=0 skip it; make compose-test
// runs it alone).
func TestComposeCluster(t *testing.T) {
	if testing.Short() || os.Getenv("LATTICE_COMPOSE") == "0" {
		t.Skip("skipped by -short or LATTICE_COMPOSE=0: it builds the image and runs six containers")
	}
	if err := exec.Command("docker", "info").Run(); err != nil {
		t.Skipf("docker is not available (docker info: %v)", err)
	}
	compose := composeCommand()
	if compose == nil {
		t.Skip("neither docker compose nor docker-compose is available")
	}
	seed := uint64(composeSeed)
	if v := os.Getenv("LATTICE_COMPOSE_SEED"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("LATTICE_COMPOSE_SEED=%q: %v", v, err)
		}
		seed = n
	}
	t.Logf("seed %d (LATTICE_COMPOSE_SEED=%d replays it)", seed, seed)
	rng := rand.New(rand.NewPCG(seed, 0))

	cfg, err := config.Load(filepath.Join("compose", "lattice.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	regions := cfg.RegionNames()
	var nodes []composeNode
	for _, r := range regions {
		for _, n := range cfg.Nodes(r) {
			nodes = append(nodes, composeNode{region: r, name: n.Name, apiPort: port(t, n.API), owns: ownedPartitions(cfg, n)})
		}
	}
	// cartOf[p] is a cart of partition p.
	parts := cfg.PartitionCount()
	cartOf := make([]string, parts)
	for i, found := 0, 0; found < parts; i++ {
		id := fmt.Sprintf("compose-cart-%d", i)
		if p := cfg.Partition(id); cartOf[p] == "" {
			cartOf[p] = id
			found++
		}
	}

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

	// Certificates and a data directory per node the containers' user can
	// use.
	certs := filepath.Join(work, "certs")
	if out, err := exec.Command(bin, append([]string{"certs", "--dir", certs, "--cluster", cfg.Cluster}, regions...)...).CombinedOutput(); err != nil {
		t.Fatalf("lattice certs: %v\n%s", err, out)
	}
	files, _ := filepath.Glob(filepath.Join(certs, "*"))
	for _, f := range files {
		if err := os.Chmod(f, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	data := filepath.Join(work, "data")
	for _, n := range nodes {
		d := filepath.Join(data, n.name)
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
		nodes:   nodes,
		api:     map[string]string{},
		ids:     map[string]string{},
		client:  &http.Client{Timeout: 3 * time.Second},
		patient: &http.Client{Timeout: 15 * time.Second},
	}
	t.Cleanup(func() {
		if t.Failed() {
			out, _ := c.exec("logs", "--no-color", "--tail", "30")
			t.Logf("logs:\n%s", out)
		}
		if out, err := c.exec("down", "-v", "--remove-orphans", "-t", "5"); err != nil {
			t.Logf("compose down: %v\n%s", err, out)
		}
	})
	start := time.Now()
	phase := func(what string) { t.Logf("%5.1fs %s", time.Since(start).Seconds(), what) }
	c.run("up", "-d")
	for _, n := range nodes {
		c.discover(n.name)
	}
	for _, n := range nodes {
		c.eventually(60*time.Second, n.name+" ready", func() bool { return c.ready(n.name) })
	}
	for _, n := range nodes {
		c.eventually(60*time.Second, n.name+" connected to every other region", func() bool { return c.connected(n.name, len(regions)) })
	}
	phase("six nodes ready and connected")

	// Every node takes a write to a cart of every partition: its own
	// partitions it serves, the others it forwards to the other node of
	// its region (the answer names the partition then). Every node shows
	// every write.
	l := &ledger{carts: map[string][]string{}}
	for _, n := range nodes {
		for p, cart := range cartOf {
			h := c.mustAdd(l, n.name, cart, "first-"+n.name)
			if forwarded := h.Get("Lattice-Partition") != ""; forwarded == slices.Contains(n.owns, p) {
				t.Errorf("a write to partition %d through %s (owning %v): Lattice-Partition %q", p, n.name, n.owns, h.Get("Lattice-Partition"))
			}
		}
	}
	for _, n := range nodes {
		c.eventually(60*time.Second, n.name+" shows every node's writes", func() bool { return c.holds(n.name, l.snapshot()) })
	}
	phase("writes through every node to every partition converged")

	// Cut one region off from the others: both its containers leave wan.
	// Both its nodes keep taking writes to every partition; the other
	// regions replicate with each other but get none of them until it is
	// back.
	wan := c.project + "_wan"
	cut := regions[rng.IntN(len(regions))]
	var others []string
	for _, r := range regions {
		if r != cut {
			others = append(others, r)
		}
	}
	for _, n := range c.regionNodes(cut) {
		docker(t, "network", "disconnect", wan, c.container(n.name))
	}
	for _, n := range c.regionNodes(cut) {
		c.eventually(30*time.Second, n.name+" sees no other region connected", func() bool { return c.disconnected(n.name) })
	}
	phase(cut + " cut off from wan")
	for _, n := range c.regionNodes(cut) {
		for _, cart := range cartOf {
			c.mustAdd(l, n.name, cart, "cut-off-"+n.name)
		}
	}
	writer, reader := c.regionNodes(others[0])[0].name, c.regionNodes(others[1])[1].name
	during := map[string][]string{}
	for _, cart := range cartOf {
		c.mustAdd(l, writer, cart, "while-cut")
		during[cart] = []string{"while-cut"}
	}
	c.eventually(60*time.Second, writer+"'s writes at "+reader+" while "+cut+" is cut off", func() bool { return c.holds(reader, during) })
	for _, cart := range cartOf {
		for sku := range c.skus(reader, cart) {
			if strings.HasPrefix(sku, "cut-off-") {
				t.Fatalf("%s's write %s reached %s while %s was disconnected: the partition is not real", cut, sku, reader, cut)
			}
		}
		for _, n := range c.regionNodes(cut) {
			if got := c.skus(n.name, cart); got == nil || got["while-cut"] {
				t.Fatalf("cart %s through %s while %s is cut off: %v (want it readable, without %s's write)", cart, n.name, cut, got, writer)
			}
		}
	}
	for _, n := range c.regionNodes(cut) {
		docker(t, "network", "connect", "--alias", n.name+"-peer", wan, c.container(n.name))
	}
	for _, n := range nodes {
		c.eventually(60*time.Second, n.name+" connected to every other region again", func() bool { return c.connected(n.name, len(regions)) })
	}
	for _, n := range nodes {
		c.eventually(90*time.Second, n.name+" holds every write after the partition healed", func() bool { return c.holds(n.name, l.snapshot()) })
	}
	phase(cut + " reconnected; every node converged")

	// Writers through every node, paced, each to a new cart every 150
	// writes (within a cart's limits), from here to the end.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for _, n := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tick := time.NewTicker(50 * time.Millisecond)
			defer tick.Stop()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				case <-tick.C:
				}
				cart, sku := fmt.Sprintf("w-%s-%d", n.name, i/150), fmt.Sprintf("w%d", i)
				if c.add(n.name, cart, sku) {
					l.ack(cart, sku)
				}
			}
		}()
	}
	stopWriters := sync.OnceFunc(func() { close(stop); wg.Wait() })
	t.Cleanup(stopWriters)
	written := func(node string) int { return l.count("w-" + node + "-") }

	// Crash a node with docker kill once its writer has had some writes
	// acknowledged.
	victim := nodes[rng.IntN(len(nodes))]
	var sibling composeNode
	for _, n := range c.regionNodes(victim.region) {
		if n.name != victim.name {
			sibling = n
		}
	}
	killAt := 20 + rng.IntN(30)
	c.eventually(60*time.Second, victim.name+" acknowledging writes", func() bool { return written(victim.name) >= killAt })
	docker(t, "kill", c.container(victim.name))
	c.eventually(30*time.Second, victim.name+" down", func() bool { return !c.ready(victim.name) })
	before := written(victim.name)
	phase(fmt.Sprintf("%s killed after %d acknowledged writes", victim.name, before))

	// In its region its partitions are unavailable and the others are
	// served; in the other regions every partition is served.
	for p, cart := range cartOf {
		status, h, body, err := c.post(c.patient, sibling.name, cart, "while-down")
		if !slices.Contains(victim.owns, p) {
			if err != nil || status != http.StatusOK {
				t.Fatalf("partition %d through %s while %s is down: %d %s %v", p, sibling.name, victim.name, status, body, err)
			}
			l.ack(cart, "while-down")
			continue
		}
		if err != nil || status != http.StatusServiceUnavailable || !strings.Contains(body, "partition_unavailable") || h.Get("Retry-After") == "" {
			t.Fatalf("partition %d through %s while its owner %s is down: %d (Retry-After %q) %s %v; want 503 partition_unavailable with Retry-After",
				p, sibling.name, victim.name, status, h.Get("Retry-After"), body, err)
		}
	}
	caughtUp := map[string][]string{}
	for _, r := range regions {
		if r == victim.region {
			continue
		}
		n := c.regionNodes(r)[rng.IntN(2)]
		for _, p := range victim.owns {
			sku := "elsewhere-" + n.name
			c.mustAdd(l, n.name, cartOf[p], sku)
			caughtUp[cartOf[p]] = append(caughtUp[cartOf[p]], sku)
		}
	}

	// Started again, it takes writes and catches up with what the other
	// regions took for its partitions while it was down.
	docker(t, "start", c.container(victim.name))
	c.discover(victim.name)
	c.eventually(60*time.Second, victim.name+" ready after its crash", func() bool { return c.ready(victim.name) })
	c.eventually(60*time.Second, victim.name+" acknowledging writes after its restart", func() bool { return written(victim.name) > before })
	c.eventually(60*time.Second, victim.name+" caught up with the other regions", func() bool { return c.holds(victim.name, caughtUp) })
	phase(victim.name + " restarted and caught up")

	// Rolling restart: each node in turn stopped with SIGTERM and started
	// again, the next one only once this one takes writes again.
	for _, n := range nodes {
		id := c.container(n.name)
		docker(t, "stop", "-t", "30", id)
		before := written(n.name)
		docker(t, "start", id)
		c.discover(n.name)
		c.eventually(60*time.Second, n.name+" ready after its restart", func() bool { return c.ready(n.name) })
		c.eventually(60*time.Second, n.name+" acknowledging writes after its restart", func() bool { return written(n.name) > before })
		phase(n.name + " restarted")
	}
	stopWriters()

	acked := l.snapshot()
	total := 0
	for _, v := range acked {
		total += len(v)
	}
	t.Logf("%d acknowledged writes in %d carts", total, len(acked))
	for _, n := range nodes {
		c.eventually(120*time.Second, n.name+" holds every acknowledged write", func() bool { return c.holds(n.name, acked) })
	}
	for _, n := range nodes {
		m, err := c.missing(n.name, acked)
		if err != nil || len(m) > 0 {
			t.Errorf("%s: lost acknowledged writes %v (%v)", n.name, m, err)
		}
	}
	phase("every node holds every acknowledged write")
}
