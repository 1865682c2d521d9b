package config

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

const validYAML = `
cluster: demo
data_dir: ./data
tls_dir: ./certs
durability: everysec
regions:
  - name: us-east
    api: 127.0.0.1:7101
    peer: 127.0.0.1:7201
  - name: eu-west
    api: 127.0.0.1:7102
    peer: 127.0.0.1:7202
  - name: ap-south
    api: ":7103"
    peer: ap-south.internal:7203
homes:
  - prefix: "eu-"
    region: eu-west
  - prefix: "ap-"
    region: ap-south
emulate:
  latency_ms: {"us-east/eu-west": 34, "ap-south/us-east": 92}
  loss_pct: 1.5
`

func TestParseValid(t *testing.T) {
	c, err := Parse([]byte(validYAML))
	if err != nil {
		t.Fatal(err)
	}
	if c.Cluster != "demo" || c.DataDir != "./data" || c.TLSDir != "./certs" || c.Durability != DurabilityEverySec {
		t.Errorf("scalars: %+v", c)
	}
	if got := c.RegionNames(); !slices.Equal(got, []string{"us-east", "eu-west", "ap-south"}) {
		t.Errorf("RegionNames = %v", got)
	}
	r, ok := c.Region("eu-west")
	if !ok || r.API != "127.0.0.1:7102" || r.Peer != "127.0.0.1:7202" {
		t.Errorf("Region(eu-west) = %+v, %v", r, ok)
	}
	if _, ok := c.Region("nowhere"); ok {
		t.Error("Region(nowhere) found")
	}
	var peers []string
	for _, p := range c.Peers("eu-west") {
		peers = append(peers, p.Name)
	}
	if !slices.Equal(peers, []string{"us-east", "ap-south"}) {
		t.Errorf("Peers(eu-west) = %v", peers)
	}
	if got := c.RegionDir("eu-west"); got != filepath.Join("data", "eu-west") {
		t.Errorf("RegionDir = %q", got)
	}
	ca, cert, key := c.TLSFiles("eu-west")
	if ca != filepath.Join("certs", "ca.crt") || cert != filepath.Join("certs", "eu-west.crt") || key != filepath.Join("certs", "eu-west.key") {
		t.Errorf("TLSFiles = %q %q %q", ca, cert, key)
	}
	if got := c.Latency("eu-west", "us-east"); got != 34*time.Millisecond {
		t.Errorf("Latency(eu-west, us-east) = %v", got)
	}
	if got := c.Latency("us-east", "ap-south"); got != 92*time.Millisecond {
		t.Errorf("Latency(us-east, ap-south) = %v", got)
	}
	if got := c.Latency("eu-west", "ap-south"); got != 0 {
		t.Errorf("Latency(eu-west, ap-south) = %v", got)
	}
	if c.Emulate.LossPct != 1.5 {
		t.Errorf("LossPct = %v", c.Emulate.LossPct)
	}
}

func TestParseDefaults(t *testing.T) {
	c, err := Parse([]byte(`
cluster: c1
regions:
  - {name: solo, api: "localhost:8080", peer: "localhost:8081"}
`))
	if err != nil {
		t.Fatal(err)
	}
	if c.DataDir != DefaultDataDir || c.TLSDir != DefaultTLSDir || c.Durability != DurabilityAlways {
		t.Errorf("defaults: %+v", c)
	}
	if c.Home("anything") != "solo" {
		t.Errorf("Home = %q", c.Home("anything"))
	}
}

func TestDefaultConfigValid(t *testing.T) {
	c := DefaultConfig()
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if got := c.RegionNames(); !slices.Equal(got, []string{"us-east", "eu-west", "ap-south"}) {
		t.Errorf("regions %v", got)
	}
	for _, tc := range []struct {
		a, b string
		ms   int
	}{{"us-east", "eu-west", 34}, {"ap-south", "us-east", 92}, {"eu-west", "ap-south", 60}} {
		if got := c.Latency(tc.a, tc.b); got != time.Duration(tc.ms)*time.Millisecond {
			t.Errorf("Latency(%s, %s) = %v, want %d ms", tc.a, tc.b, got, tc.ms)
		}
	}
	for i, r := range c.Regions {
		if r.API != fmt.Sprintf("127.0.0.1:%d", 7101+i) || r.Peer != fmt.Sprintf("127.0.0.1:%d", 7201+i) {
			t.Errorf("region %d: %+v", i, r)
		}
	}
}

// base is a valid document that the error cases below change one key of.
func base(regions, rest string) string {
	if regions == "" {
		regions = `
regions:
  - {name: a, api: "127.0.0.1:1", peer: "127.0.0.1:2"}
  - {name: b, api: "127.0.0.1:3", peer: "127.0.0.1:4"}
`
	}
	return "cluster: demo\n" + regions + rest
}

func TestParseErrors(t *testing.T) {
	two := func(name1, api1, peer1, name2, api2, peer2 string) string {
		return fmt.Sprintf("\nregions:\n  - {name: %q, api: %q, peer: %q}\n  - {name: %q, api: %q, peer: %q}\n",
			name1, api1, peer1, name2, api2, peer2)
	}
	cases := []struct {
		name, doc, want string
	}{
		{"empty", "", "config: empty document"},
		{"comment only", "# nothing\n", "config: empty document"},
		{"two documents", base("", "---\ncluster: x\n"), "more than one YAML document"},
		{"syntax", "cluster: [", "config: yaml:"},
		{"unknown top key", base("", "colour: blue\n"), "config: unknown key \"colour\" at line 6 (known keys: access_log, anti_entropy_rate_bytes_per_sec, api_auth, api_tls, cluster, "},
		{"unknown region key", base("\nregions:\n  - {name: a, api: \"127.0.0.1:1\", peer: \"127.0.0.1:2\", zone: z}\n", ""), "config: unknown key \"zone\" in regions[0] at line 4 (known keys: advertise_peer, api, name, nodes, peer)"},
		{"unknown emulate key", base("", "emulate: {loss: 1}\n"), "config: unknown key \"loss\" in emulate at line 6; did you mean \"loss_pct\"?"},
		{"duplicate key", base("", "data_dir: x\ndata_dir: y\n"), "already defined"},
		{"wrong type", "cluster: demo\nregions: 3\n", `regions: "3" at line 2 is not a list`},
		{"wrong scalar type", base("", "emulate: {loss_pct: lots}\n"), `emulate.loss_pct: "lots" at line 6 is not a number`},
		{"latency not int", base("", "emulate: {latency_ms: {\"a/b\": fast}}\n"), `emulate.latency_ms["a/b"]: "fast" at line 6 is not an integer`},
		{"cluster missing", "regions:\n  - {name: a, api: \"127.0.0.1:1\", peer: \"127.0.0.1:2\"}\n", "config: cluster: required"},
		{"cluster invalid", strings.Replace(base("", ""), "demo", "de mo", 1), "config: cluster: \"de mo\""},
		{"durability", base("", "durability: sometimes\n"), "config: durability: \"sometimes\" must be always or everysec"},
		{"no regions", "cluster: demo\n", "config: regions: at least one region is required"},
		{"name missing", two("", "127.0.0.1:1", "127.0.0.1:2", "b", "127.0.0.1:3", "127.0.0.1:4"), "config: regions[0].name: required"},
		{"name invalid", two("a", "127.0.0.1:1", "127.0.0.1:2", "b/c", "127.0.0.1:3", "127.0.0.1:4"), "config: regions[1].name: \"b/c\" must be characters"},
		{"name too long", two("a", "127.0.0.1:1", "127.0.0.1:2", strings.Repeat("r", 65), "127.0.0.1:3", "127.0.0.1:4"), "config: regions[1].name: \"rrrr"},
		{"name dotdot", two("a", "127.0.0.1:1", "127.0.0.1:2", "..", "127.0.0.1:3", "127.0.0.1:4"), "config: regions[1].name: \"..\" cannot name a directory"},
		{"name duplicate", two("a", "127.0.0.1:1", "127.0.0.1:2", "a", "127.0.0.1:3", "127.0.0.1:4"), "config: regions[1].name: \"a\" repeats regions[0].name"},
		{"name duplicate case", two("us-east", "127.0.0.1:1", "127.0.0.1:2", "US-East", "127.0.0.1:3", "127.0.0.1:4"), "config: regions[1].name: \"US-East\" repeats regions[0].name \"us-east\""},
		{"api missing", two("a", "", "127.0.0.1:2", "b", "127.0.0.1:3", "127.0.0.1:4"), "config: regions[0].api: required"},
		{"api no port", two("a", "127.0.0.1", "127.0.0.1:2", "b", "127.0.0.1:3", "127.0.0.1:4"), "config: regions[0].api: \"127.0.0.1\" is not host:port"},
		{"api port zero", two("a", "127.0.0.1:0", "127.0.0.1:2", "b", "127.0.0.1:3", "127.0.0.1:4"), "config: regions[0].api: \"127.0.0.1:0\": port \"0\" must be a number 1..65535"},
		{"api port big", two("a", "127.0.0.1:65536", "127.0.0.1:2", "b", "127.0.0.1:3", "127.0.0.1:4"), "config: regions[0].api: \"127.0.0.1:65536\": port"},
		{"api port name", two("a", "127.0.0.1:http", "127.0.0.1:2", "b", "127.0.0.1:3", "127.0.0.1:4"), "config: regions[0].api: \"127.0.0.1:http\": port"},
		{"api bad host", two("a", "bad_host!:80", "127.0.0.1:2", "b", "127.0.0.1:3", "127.0.0.1:4"), "config: regions[0].api: \"bad_host!:80\": host \"bad_host!\" is neither"},
		{"api duplicate", two("a", "127.0.0.1:1", "127.0.0.1:2", "b", "127.0.0.1:1", "127.0.0.1:4"), "config: regions[1].api: \"127.0.0.1:1\" is also regions[0].api"},
		{"peer missing", two("a", "127.0.0.1:1", "", "b", "127.0.0.1:3", "127.0.0.1:4"), "config: regions[0].peer: required"},
		{"peer no host", two("a", "127.0.0.1:1", "127.0.0.1:2", "b", "127.0.0.1:3", ":4"), "config: regions[1].peer: \":4\": a host is required"},
		{"peer not host:port", two("a", "127.0.0.1:1", "127.0.0.1:2", "b", "127.0.0.1:3", "[::1"), "config: regions[1].peer: \"[::1\" is not host:port"},
		{"peer duplicate", two("a", "127.0.0.1:1", "127.0.0.1:2", "b", "127.0.0.1:3", "127.0.0.1:2"), "config: regions[1].peer: \"127.0.0.1:2\" is also regions[0].peer"},
		{"advertise_peer no host", "cluster: c\nregions:\n  - {name: a, api: \"127.0.0.1:1\", peer: \":2\", advertise_peer: \":3\"}\n",
			"config: regions[0].advertise_peer: \":3\": a host is required"},
		{"advertise_peer duplicate", "cluster: c\nregions:\n  - {name: a, api: \"127.0.0.1:1\", peer: \"127.0.0.1:2\"}\n  - {name: b, api: \"127.0.0.1:3\", peer: \":4\", advertise_peer: \"127.0.0.1:2\"}\n",
			"config: regions[1].advertise_peer: \"127.0.0.1:2\" is also the address regions[0] is dialled at"},
		{"home prefix missing", base("", "homes: [{region: a}]\n"), "config: homes[0].prefix: required"},
		{"home prefix invalid", base("", "homes: [{prefix: \"eu/\", region: a}]\n"), "config: homes[0].prefix: \"eu/\" must be"},
		{"home prefix unreachable", base("", "homes: [{prefix: \"eu-\", region: a}, {prefix: \"eu-west\", region: b}]\n"), "config: homes[1].prefix: \"eu-west\" is unreachable: homes[0].prefix \"eu-\""},
		{"home prefix repeated", base("", "homes: [{prefix: \"eu\", region: a}, {prefix: \"eu\", region: b}]\n"), "config: homes[1].prefix: \"eu\" is unreachable"},
		{"home region missing", base("", "homes: [{prefix: \"eu-\"}]\n"), "config: homes[0].region: required"},
		{"home region unknown", base("", "homes: [{prefix: \"eu-\", region: mars}]\n"), "config: homes[0].region: unknown region \"mars\""},
		{"latency not a pair", base("", "emulate: {latency_ms: {\"ab\": 3}}\n"), "config: emulate.latency_ms[\"ab\"]: want a pair of regions"},
		{"latency three", base("", "emulate: {latency_ms: {\"a/b/a\": 3}}\n"), "config: emulate.latency_ms[\"a/b/a\"]: want a pair"},
		{"latency empty side", base("", "emulate: {latency_ms: {\"a/\": 3}}\n"), "config: emulate.latency_ms[\"a/\"]: want a pair"},
		{"latency unknown region", base("", "emulate: {latency_ms: {\"a/mars\": 3}}\n"), "config: emulate.latency_ms[\"a/mars\"]: unknown region \"mars\""},
		{"latency self", base("", "emulate: {latency_ms: {\"a/a\": 3}}\n"), "config: emulate.latency_ms[\"a/a\"]: a region paired with itself"},
		{"latency both orders", base("", "emulate: {latency_ms: {\"a/b\": 3, \"b/a\": 4}}\n"), "config: emulate.latency_ms[\"b/a\"]: the same pair as \"a/b\""},
		{"latency negative", base("", "emulate: {latency_ms: {\"a/b\": -1}}\n"), "config: emulate.latency_ms[\"a/b\"]: -1 ms is outside 0..60000"},
		{"latency too large", base("", "emulate: {latency_ms: {\"a/b\": 60001}}\n"), "config: emulate.latency_ms[\"a/b\"]: 60001 ms is outside"},
		{"loss negative", base("", "emulate: {loss_pct: -0.1}\n"), "config: emulate.loss_pct: -0.1 is outside 0..100"},
		{"loss too large", base("", "emulate: {loss_pct: 101}\n"), "config: emulate.loss_pct: 101 is outside 0..100"},
		{"loss nan", base("", "emulate: {loss_pct: .nan}\n"), "config: emulate.loss_pct: NaN is outside"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse([]byte(tc.doc))
			if err == nil {
				t.Fatalf("Parse accepted %q: %+v", tc.doc, c)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q\nwant it to contain %q", err, tc.want)
			}
			if !strings.HasPrefix(err.Error(), "config: ") {
				t.Errorf("error %q lacks the package prefix", err)
			}
		})
	}
}

func TestValidateReportsEveryProblem(t *testing.T) {
	c := DefaultConfig()
	c.Durability = "never"
	c.Regions[1].Peer = "nohost"
	c.Homes = []HomeRule{{Prefix: "x", Region: "mars"}}
	err := c.Validate()
	if err == nil {
		t.Fatal("no error")
	}
	lines := strings.Split(err.Error(), "\n")
	want := []string{"config: durability:", "config: regions[1].peer:", "config: homes[0].region:"}
	if len(lines) != len(want) {
		t.Fatalf("got %d problems, want %d:\n%v", len(lines), len(want), err)
	}
	for i, w := range want {
		if !strings.HasPrefix(lines[i], w) {
			t.Errorf("line %d = %q, want prefix %q", i, lines[i], w)
		}
	}
}

func TestValidateBounds(t *testing.T) {
	c := DefaultConfig()
	c.Regions = nil
	for i := range MaxRegions + 1 {
		c.Regions = append(c.Regions, RegionConfig{
			Name: fmt.Sprintf("r%d", i),
			API:  fmt.Sprintf("127.0.0.1:%d", 10000+i),
			Peer: fmt.Sprintf("127.0.0.1:%d", 20000+i),
		})
	}
	c.Emulate = Emulate{}
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "config: regions: 65 regions, at most 64") {
		t.Fatalf("err = %v", err)
	}
	c.Regions = c.Regions[:MaxRegions]
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	c.DataDir, c.TLSDir = "", ""
	err := c.Validate()
	if err == nil || !strings.Contains(err.Error(), "config: data_dir: required") || !strings.Contains(err.Error(), "config: tls_dir: required") {
		t.Fatalf("err = %v", err)
	}
}

func TestLoadResolvesPaths(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "lattice.yaml")
	abs := filepath.Join(t.TempDir(), "certs")
	doc := base("", "data_dir: ./state\ntls_dir: "+abs+"\n")
	if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if c.DataDir != filepath.Join(dir, "state") {
		t.Errorf("DataDir = %q", c.DataDir)
	}
	if c.TLSDir != abs {
		t.Errorf("TLSDir = %q", c.TLSDir)
	}
	if got := c.RegionDir("a"); got != filepath.Join(dir, "state", "a") {
		t.Errorf("RegionDir = %q", got)
	}

	// The defaults are relative to the file too.
	if err := os.WriteFile(path, []byte(base("", "")), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err = Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if c.DataDir != filepath.Join(dir, DefaultDataDir) || c.TLSDir != filepath.Join(dir, DefaultTLSDir) {
		t.Errorf("defaults not resolved: %q %q", c.DataDir, c.TLSDir)
	}
}

func TestLoadErrors(t *testing.T) {
	dir := t.TempDir()
	if _, err := Load(filepath.Join(dir, "missing.yaml")); err == nil || !strings.HasPrefix(err.Error(), "config: ") {
		t.Errorf("missing file: %v", err)
	}
	big := filepath.Join(dir, "big.yaml")
	if err := os.WriteFile(big, []byte("cluster: demo\n"+strings.Repeat("#", MaxFileSize)), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(big); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Errorf("big file: %v", err)
	}
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte(base("", "durability: no\n")), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(bad); err == nil || !strings.Contains(err.Error(), "config: durability:") || !strings.Contains(err.Error(), bad) {
		t.Errorf("invalid file: %v", err)
	}
}

func TestHomeRules(t *testing.T) {
	c, err := Parse([]byte(validYAML))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ sku, want string }{
		{"eu-book", "eu-west"},
		{"eu-", "eu-west"},
		{"ap-tea", "ap-south"},
		{"EU-book", RendezvousHome(c.RegionNames(), "EU-book")}, // prefixes are case-sensitive
		{"book", RendezvousHome(c.RegionNames(), "book")},
	} {
		if got := c.Home(tc.sku); got != tc.want {
			t.Errorf("Home(%q) = %q, want %q", tc.sku, got, tc.want)
		}
	}
}

// TestRendezvousGolden pins the hash: every region of every cluster must
// compute the same home, across versions of this code.
func TestRendezvousGolden(t *testing.T) {
	regions := []string{"us-east", "eu-west", "ap-south"}
	got := map[string]string{}
	for _, sku := range []string{"book", "pen", "sku-1", "sku-2", "sku-3", "sku-4", "a", "Z:9"} {
		got[sku] = RendezvousHome(regions, sku)
	}
	want := map[string]string{}
	for sku := range got {
		want[sku] = referenceHome(regions, sku)
	}
	for sku := range want {
		if got[sku] != want[sku] {
			t.Errorf("RendezvousHome(%q) = %q, want %q", sku, got[sku], want[sku])
		}
	}
	pinned := map[string]string{
		"book":  "us-east",
		"pen":   "us-east",
		"sku-1": "ap-south",
		"sku-2": "eu-west",
		"sku-3": "ap-south",
	}
	for sku, w := range pinned {
		if got[sku] != w {
			t.Errorf("RendezvousHome(%q) = %q, pinned %q", sku, got[sku], w)
		}
	}
}

func TestRendezvousStableAcrossOrder(t *testing.T) {
	orders := [][]string{
		{"us-east", "eu-west", "ap-south"},
		{"ap-south", "us-east", "eu-west"},
		{"eu-west", "ap-south", "us-east"},
		{"ap-south", "eu-west", "us-east"},
	}
	for i := range 2000 {
		sku := fmt.Sprintf("sku-%d", i)
		want := RendezvousHome(orders[0], sku)
		for _, o := range orders[1:] {
			if got := RendezvousHome(o, sku); got != want {
				t.Fatalf("sku %q: %v gives %q, %v gives %q", sku, orders[0], want, o, got)
			}
		}
	}
}

func TestRendezvousMinimalMovement(t *testing.T) {
	four := []string{"us-east", "eu-west", "ap-south", "sa-east"}
	three := four[:3]
	moved := 0
	for i := range 4000 {
		sku := fmt.Sprintf("item:%d", i)
		before, after := RendezvousHome(four, sku), RendezvousHome(three, sku)
		if before != "sa-east" && before != after {
			t.Fatalf("sku %q moved from %q to %q though its home stayed", sku, before, after)
		}
		if before != after {
			moved++
		}
	}
	if moved == 0 {
		t.Fatal("no sku was homed at the removed region")
	}
}

func TestRendezvousBalance(t *testing.T) {
	regions := []string{"us-east", "eu-west", "ap-south"}
	const n = 30000
	count := map[string]int{}
	for i := range n {
		count[RendezvousHome(regions, fmt.Sprintf("sku-%06d", i))]++
	}
	for _, r := range regions {
		// Each region should get a third, give or take 5% of n.
		if c := count[r]; c < n/3-n/20 || c > n/3+n/20 {
			t.Errorf("region %s homes %d of %d skus: %v", r, c, n, count)
		}
	}
}

func TestRendezvousEdgeCases(t *testing.T) {
	if got := RendezvousHome(nil, "x"); got != "" {
		t.Errorf("no regions: %q", got)
	}
	if got := RendezvousHome([]string{"only"}, "x"); got != "only" {
		t.Errorf("one region: %q", got)
	}
}

// referenceHome restates the documented rule independently: highest
// big-endian uint64 of the first 8 bytes of SHA-256(region 0x00 sku), ties
// to the smaller name.
func referenceHome(regions []string, sku string) string {
	sorted := slices.Clone(regions)
	slices.Sort(sorted)
	best, bestScore := "", uint64(0)
	for _, r := range sorted {
		sum := sha256.Sum256([]byte(r + "\x00" + sku))
		s := binary.BigEndian.Uint64(sum[:8])
		if best == "" || s > bestScore {
			best, bestScore = r, s
		}
	}
	return best
}

// TestAdvertisePeer: a region behind a load balancer listens on peer (any
// host) and is dialled at advertise_peer.
func TestAdvertisePeer(t *testing.T) {
	c, err := Parse([]byte("cluster: c\nregions:\n  - {name: a, api: \":1\", peer: \":7201\", advertise_peer: \"lb.a.example.net:7201\"}\n  - {name: b, api: \":2\", peer: \"10.0.0.2:7202\"}\n"))
	if err != nil {
		t.Fatal(err)
	}
	a, _ := c.Region("a")
	b, _ := c.Region("b")
	if a.Peer != ":7201" || a.DialPeer() != "lb.a.example.net:7201" || b.DialPeer() != "10.0.0.2:7202" {
		t.Fatalf("a listens on %q, dialled at %q; b dialled at %q", a.Peer, a.DialPeer(), b.DialPeer())
	}
}

// TestUnknownKeySuggestsClosest checks that a misspelt key is named with
// its line and the known key it was meant to be, at every depth, and that
// every unknown key is reported.
func TestUnknownKeySuggestsClosest(t *testing.T) {
	doc := "cluster: demo\n" +
		"regions:\n" +
		"  - {name: a, api: \"127.0.0.1:1\", peer: \"127.0.0.1:2\"}\n" +
		"duribility: always\n" +
		"homes:\n" +
		"  - prefix: x\n" +
		"    regoin: a\n" +
		"emulate:\n" +
		"  latency: {}\n"
	_, err := Parse([]byte(doc))
	if err == nil {
		t.Fatal("Parse accepted misspelt keys")
	}
	want := []string{
		`config: unknown key "duribility" at line 4; did you mean "durability"?`,
		`config: unknown key "regoin" in homes[0] at line 7; did you mean "region"?`,
		`config: unknown key "latency" in emulate at line 9; did you mean "latency_ms"?`,
	}
	if got := strings.Split(err.Error(), "\n"); !slices.Equal(got, want) {
		t.Errorf("errors:\n%s\nwant:\n%s", err, strings.Join(want, "\n"))
	}
}

// TestKeysFollowYAMLTags checks that Keys lists the keys of nested structs
// from their yaml tags, and that every listed key decodes (a document
// setting one is not refused as unknown).
func TestKeysFollowYAMLTags(t *testing.T) {
	keys := Keys()
	for _, k := range []string{"cluster", "durability", "regions", "regions[].name", "regions[].advertise_peer",
		"homes[].prefix", "emulate.latency_ms", "emulate.loss_pct"} {
		if !slices.Contains(keys, k) {
			t.Errorf("Keys() lacks %q: %v", k, keys)
		}
	}
	for _, name := range []string{"Config", "RegionConfig", "HomeRule", "Emulate", "config", "regionconfig", "homerule"} {
		if slices.Contains(keys, name) {
			t.Errorf("Keys() lists the type name %s", name)
		}
	}
	if got := closest("durabilty", []string{"cluster", "durability"}); got != "durability" {
		t.Errorf("closest(durabilty) = %q", got)
	}
	if got := closest("colour", []string{"cluster", "durability"}); got != "" {
		t.Errorf("closest(colour) = %q, want none", got)
	}
}
