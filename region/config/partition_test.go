package config

import (
	"fmt"
	"hash/fnv"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"pgregory.net/rapid"
)

// TestPartitionGoldenVectors pins the documented partition function:
// FNV-1a 64 of the key's bytes, modulo P. A change to it moves keys
// between partitions of existing clusters, so these values never change.
func TestPartitionGoldenVectors(t *testing.T) {
	vectors := []struct {
		key       string
		fnv       uint64
		p8, p4096 int
	}{
		{"", 0xcbf29ce484222325, 5, 805},
		{"a", 0xaf63dc4c8601ec8c, 4, 3212},
		{"book", 0xcd2fcd9bc6b008d8, 0, 2264},
		{"cart-1", 0x6afb315163b67335, 5, 821},
		{"cart-2", 0x6afb2e5163b66e1c, 4, 3612},
		{"demo", 0xa5e41b674276d396, 6, 918},
		{"sku-000123", 0xa1c0db6118d9f5c9, 1, 1481},
		{"eu-shirt-42", 0xfd7f0ef6c3f13b3b, 3, 2875},
		{"user:8f14e45f", 0xa8595867274021bd, 5, 445},
		{"ünïcødé", 0x7fe9369f83b596a0, 0, 1696},
		{"x/y z", 0x43192b35634491a9, 1, 425},
	}
	c8 := &Config{Partitions: 8}
	c4096 := &Config{Partitions: 4096}
	for _, v := range vectors {
		if got := c8.Partition(v.key); got != v.p8 {
			t.Errorf("Partition(%q) with P=8 = %d, want %d", v.key, got, v.p8)
		}
		if got := c4096.Partition(v.key); got != v.p4096 {
			t.Errorf("Partition(%q) with P=4096 = %d, want %d", v.key, got, v.p4096)
		}
		if int(v.fnv%8) != v.p8 || int(v.fnv%4096) != v.p4096 {
			t.Errorf("vector %q: %#x mod P is not the partition listed", v.key, v.fnv)
		}
		h := fnv.New64a()
		h.Write([]byte(v.key))
		if h.Sum64() != v.fnv {
			t.Errorf("vector %q: FNV-1a 64 is %#x, not %#x", v.key, h.Sum64(), v.fnv)
		}
	}
	if got := (&Config{}).Partition("book"); got != 0 {
		t.Errorf("one partition: Partition = %d", got)
	}
}

// TestPartitionIsFNV1aModP checks the function against the standard
// library's FNV-1a for arbitrary keys and partition counts.
func TestPartitionIsFNV1aModP(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		key := rapid.String().Draw(t, "key")
		p := 1 << rapid.IntRange(0, 12).Draw(t, "log2P")
		h := fnv.New64a()
		h.Write([]byte(key))
		if got, want := PartitionOf(key, p), int(h.Sum64()%uint64(p)); got != want {
			t.Fatalf("PartitionOf(%q, %d) = %d, want %d", key, p, got, want)
		}
	})
}

// genConfig draws a valid config with p partitions: 1–4 regions, each
// either without nodes or with 1–min(p, 6) nodes owning a random split of
// the partitions (as ranges or as lists).
func genConfig(t *rapid.T, p int) *Config {
	c := &Config{Cluster: rapid.StringMatching(`[a-z]{1,8}`).Draw(t, "cluster"), DataDir: "d", TLSDir: "t",
		Durability: DurabilityAlways, Partitions: p}
	port := 1000
	next := func() string { port++; return fmt.Sprintf("127.0.0.1:%d", port) }
	for i := range rapid.IntRange(1, 4).Draw(t, "regions") {
		r := RegionConfig{Name: fmt.Sprintf("r%d", i)}
		n := rapid.IntRange(0, min(p, 6)).Draw(t, "nodes")
		if n == 0 {
			r.API, r.Peer = next(), next()
			c.Regions = append(c.Regions, r)
			continue
		}
		owner := make([]int, p)
		for q := range owner {
			owner[q] = q % n // every node owns at least one
		}
		rand.New(rand.NewPCG(rapid.Uint64().Draw(t, "shuffle"), 0)).Shuffle(p, func(a, b int) { owner[a], owner[b] = owner[b], owner[a] })
		contiguous := rapid.Bool().Draw(t, "contiguous")
		if contiguous {
			slices.Sort(owner)
		}
		for j := range n {
			nc := NodeConfig{Name: fmt.Sprintf("n-%d", j), API: next(), Peer: next()}
			for q := 0; q < p; q++ {
				if owner[q] != j {
					continue
				}
				hi := q
				for hi+1 < p && owner[hi+1] == j {
					hi++
				}
				if hi > q {
					nc.Partitions = append(nc.Partitions, fmt.Sprintf("%d-%d", q, hi))
				} else {
					nc.Partitions = append(nc.Partitions, fmt.Sprint(q))
				}
				q = hi
			}
			r.Nodes = append(r.Nodes, nc)
		}
		c.Regions = append(c.Regions, r)
	}
	return c
}

// TestPartitionOwnership: in every valid config every partition of every
// region has exactly one owner, Owner names it, and the partition of a
// key depends only on P (not on regions, nodes or the cluster's name).
func TestPartitionOwnership(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		p := 1 << rapid.IntRange(0, 6).Draw(t, "log2P")
		a, b := genConfig(t, p), genConfig(t, p)
		for _, c := range []*Config{a, b} {
			if err := c.Validate(); err != nil {
				t.Fatalf("generated config invalid: %v", err)
			}
			for _, r := range c.Regions {
				nodes := c.Nodes(r.Name)
				for q := range p {
					owners := 0
					for _, n := range nodes {
						if n.Owns(q) {
							owners++
						}
					}
					if owners != 1 {
						t.Fatalf("region %s partition %d has %d owners", r.Name, q, owners)
					}
					if o := c.Owner(r.Name, q); !o.Owns(q) || o.Name == "" {
						t.Fatalf("Owner(%s, %d) = %+v", r.Name, q, o)
					}
				}
				if o := c.Owner(r.Name, p); o.Name != "" {
					t.Fatalf("Owner(%s, P) = %+v, want none", r.Name, o)
				}
			}
		}
		for range 20 {
			key := rapid.String().Draw(t, "key")
			if pa, pb := a.Partition(key), b.Partition(key); pa != pb || pa < 0 || pa >= p {
				t.Fatalf("Partition(%q) = %d in one config and %d in another, P = %d", key, pa, pb, p)
			}
		}
	})
}

// TestPartitionDistribution: 100,000 keys shaped like carts and skus
// (fixed seed) spread over up to 16 partitions within 5 % of
// uniform (each holds at least 6,250 keys), and pass a chi-squared test at the 0.1 % level.
func TestPartitionDistribution(t *testing.T) {
	const seed, n = 20261205, 100_000
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 0))
	keys := make([]string, n)
	for i := range keys {
		switch i % 3 {
		case 0:
			keys[i] = fmt.Sprintf("cart-%d", i)
		case 1:
			keys[i] = fmt.Sprintf("sku-%08x", rng.Uint32())
		default:
			keys[i] = fmt.Sprintf("user:%016x", rng.Uint64())
		}
	}
	for _, p := range []int{2, 8, 16, 64, 4096} {
		counts := make([]int, p)
		for _, k := range keys {
			counts[PartitionOf(k, p)]++
		}
		want := float64(n) / float64(p)
		chi2, worst := 0.0, 0.0
		for _, got := range counts {
			d := float64(got) - want
			chi2 += d * d / want
			worst = max(worst, math.Abs(d)/want)
		}
		// Wilson–Hilferty: the chi-squared quantile at 1 - 0.001.
		df := float64(p - 1)
		crit := df * math.Pow(1-2/(9*df)+3.09*math.Sqrt(2/(9*df)), 3)
		t.Logf("P=%d: worst partition %.1f%% off uniform, chi2 %.0f (0.1%% critical %.0f)", p, 100*worst, chi2, crit)
		if p > 1 && chi2 > crit {
			t.Errorf("P=%d: chi2 %.1f > %.1f: not uniform", p, chi2, crit)
		}
		if p <= 16 && worst > 0.05 {
			t.Errorf("P=%d: a partition is %.1f%% off uniform, want within 5%%", p, 100*worst)
		}
	}
}

// TestNodes: a region without nodes is one node named after it owning
// every partition; a region with one node takes its addresses; --node
// lookups and owners follow the file.
func TestNodes(t *testing.T) {
	doc := `cluster: c
partitions: 8
regions:
  - name: us-east
    api: 127.0.0.1:7101
    peer: 127.0.0.1:7201
  - name: eu-west
    nodes:
      - name: eu-west-0
        api: 0.0.0.0:7102
        peer: 0.0.0.0:7202
        advertise_api: eu-west-0.lattice.example.net:7102
        advertise_peer: eu-west-0.example.net:7202
  - name: ap-south
    nodes:
      - {name: ap-0, api: "10.0.0.1:7103", peer: "10.0.0.1:7203", partitions: 0-3}
      - {name: ap-1, api: "10.0.0.2:7103", peer: "10.0.0.2:7203", partitions: [4, "5-6", 7]}
`
	c, err := Parse([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	if c.Partitions != 8 {
		t.Fatalf("partitions %d", c.Partitions)
	}
	us := c.Nodes("us-east")
	if len(us) != 1 || us[0].Name != "us-east" || us[0].API != "127.0.0.1:7101" || us[0].DialPeer() != "127.0.0.1:7201" || !slices.Equal(us[0].Partitions, PartitionSet{"0-7"}) {
		t.Errorf("implicit node %+v", us)
	}
	eu, _ := c.Region("eu-west")
	if eu.API != "0.0.0.0:7102" || eu.DialPeer() != "eu-west-0.example.net:7202" {
		t.Errorf("a region's only node gives it its addresses: %+v", eu)
	}
	if err := c.Validate(); err != nil {
		t.Errorf("Validate after Parse: %v", err)
	}
	if n, ok := c.Node("eu-west", "eu-west-0"); !ok || !n.Owns(0) || !n.Owns(7) || n.DialAPI() != "eu-west-0.lattice.example.net:7102" {
		t.Errorf("Node(eu-west, eu-west-0) = %+v, %v", n, ok)
	}
	if _, ok := c.Node("eu-west", "eu-west"); ok {
		t.Error("a region that lists nodes has no implicit node")
	}
	for q, want := range []string{"ap-0", "ap-0", "ap-0", "ap-0", "ap-1", "ap-1", "ap-1", "ap-1"} {
		if got := c.Owner("ap-south", q).Name; got != want {
			t.Errorf("Owner(ap-south, %d) = %q, want %s", q, got, want)
		}
	}
	if c.Owner("mars", 0).Name != "" || c.Owner("ap-south", -1).Name != "" || c.Nodes("mars") != nil {
		t.Error("an unknown region or partition has an owner")
	}
	if c, err := Parse([]byte("cluster: c\nregions: [{name: a, api: \":1\", peer: \"h:2\"}]\n")); err != nil || c.Partitions != 1 || c.Owner("a", 0).Name != "a" {
		t.Errorf("default partitions: %v, %+v", err, c)
	}
}

// TestNodesConfigErrors: each mistake in partitions and nodes is named
// by its key.
func TestNodesConfigErrors(t *testing.T) {
	region := func(nodes string) string {
		return "cluster: c\npartitions: 8\nregions:\n  - name: a\n    nodes:\n" + nodes +
			"  - {name: b, api: \"127.0.0.1:9001\", peer: \"127.0.0.1:9002\"}\n"
	}
	node := func(name, api, peer, parts string) string {
		return fmt.Sprintf("      - {name: %s, api: %q, peer: %q, partitions: %s}\n", name, api, peer, parts)
	}
	ok2 := node("a-0", "127.0.0.1:1", "127.0.0.1:2", "0-3")
	cases := []struct{ name, doc, want string }{
		{"partitions zero", "cluster: c\npartitions: 0\nregions: [{name: a, api: \":1\", peer: \"h:2\"}]\n", "config: partitions: 0 must be a power of two 1..4096"},
		{"partitions not a power of two", "cluster: c\npartitions: 12\nregions: [{name: a, api: \":1\", peer: \"h:2\"}]\n", "config: partitions: 12 must be a power of two 1..4096"},
		{"partitions too many", "cluster: c\npartitions: 8192\nregions: [{name: a, api: \":1\", peer: \"h:2\"}]\n", "config: partitions: 8192 must be"},
		{"partitions negative", "cluster: c\npartitions: -4\nregions: [{name: a, api: \":1\", peer: \"h:2\"}]\n", "config: partitions: -4 must be"},
		{"partitions not a number", "cluster: c\npartitions: many\nregions: [{name: a, api: \":1\", peer: \"h:2\"}]\n", `partitions: "many" at line 2 is not an integer`},
		{"node partitions a mapping", region("      - {name: a-0, api: \"127.0.0.1:1\", peer: \"127.0.0.1:2\", partitions: {lo: 1}}\n"), "config: partitions at line 6: want a range"},
		{"node unknown key", region("      - {name: a-0, api: \"127.0.0.1:1\", peer: \"127.0.0.1:2\", zone: z}\n"), "config: unknown key \"zone\" in regions[0].nodes[0] at line 6"},
		{"node name missing", region(node("", "127.0.0.1:1", "127.0.0.1:2", "0-7")), "config: regions[0].nodes[0].name: required"},
		{"node name not a label", region(node("A_0", "127.0.0.1:1", "127.0.0.1:2", "0-7")), "config: regions[0].nodes[0].name: \"A_0\" must be a DNS label"},
		{"node name ends with hyphen", region(node("a-", "127.0.0.1:1", "127.0.0.1:2", "0-7")), "config: regions[0].nodes[0].name: \"a-\" must be a DNS label"},
		{"node name too long", region(node(strings.Repeat("n", 64), "127.0.0.1:1", "127.0.0.1:2", "0-7")), "config: regions[0].nodes[0].name: \"nnnn"},
		{"node name repeated", region(ok2 + node("a-0", "127.0.0.1:3", "127.0.0.1:4", "4-7")), "config: regions[0].nodes[1].name: \"a-0\" repeats nodes[0].name"},
		{"node api missing", region(node("a-0", "", "127.0.0.1:2", "0-7")), "config: regions[0].nodes[0].api: required"},
		{"node api no host with siblings", region(ok2 + node("a-1", ":3", "127.0.0.1:4", "4-7")), "config: regions[0].nodes[1].api: \":3\": a host is required"},
		{"node peer no host", region(node("a-0", "127.0.0.1:1", ":2", "0-7")), "config: regions[0].nodes[0].peer: \":2\": a host is required"},
		{"node api repeats another node", region(ok2 + node("a-1", "127.0.0.1:1", "127.0.0.1:4", "4-7")), "config: regions[0].nodes[1].api: \"127.0.0.1:1\" is also regions[0].nodes[0].api"},
		{"node api repeats another region", region(node("a-0", "127.0.0.1:1", "127.0.0.1:2", "0-7")) + "  - {name: c, api: \"127.0.0.1:1\", peer: \"127.0.0.1:5\"}\n", "config: regions[2].api: \"127.0.0.1:1\" is also regions[0].nodes[0].api"},
		{"node peer repeats another region", region(node("a-0", "127.0.0.1:1", "127.0.0.1:9002", "0-7")), "config: regions[1].peer: \"127.0.0.1:9002\" is also regions[0].nodes[0].peer"},
		{"node advertise_api repeated", region("      - {name: a-0, api: \":1\", advertise_api: \"h:1\", peer: \"127.0.0.1:2\", partitions: 0-3}\n      - {name: a-1, api: \":1\", advertise_api: \"h:1\", peer: \"127.0.0.1:4\", partitions: 4-7}\n"),
			"config: regions[0].nodes[1].advertise_api: \"h:1\" is also the API address regions[0].nodes[0] is reached at"},
		{"node advertise_api bad", region("      - {name: a-0, api: \":1\", advertise_api: \":1\", peer: \"127.0.0.1:2\"}\n"), "config: regions[0].nodes[0].advertise_api: \":1\": a host is required"},
		{"node advertise_peer repeated", region("      - {name: a-0, api: \"h:1\", peer: \":2\", advertise_peer: \"p:2\", partitions: 0-3}\n      - {name: a-1, api: \"h:3\", peer: \":2\", advertise_peer: \"p:2\", partitions: 4-7}\n"),
			"config: regions[0].nodes[1].advertise_peer: \"p:2\" is also the address regions[0].nodes[0] is dialled at"},
		{"region address beside nodes", "cluster: c\nregions:\n  - name: a\n    api: 127.0.0.1:1\n    nodes:\n" + ok2 + node("a-1", "127.0.0.1:3", "127.0.0.1:4", "0") + "  - {name: b, api: \"127.0.0.1:9001\", peer: \"127.0.0.1:9002\"}\n",
			"config: regions[0].api: \"127.0.0.1:1\": a region that lists nodes has no address of its own"},
		{"region address differs from its only node", "cluster: c\nregions:\n  - name: a\n    peer: 127.0.0.1:9\n    nodes:\n" + node("a-0", "127.0.0.1:1", "127.0.0.1:2", "0") + "  - {name: b, api: \"127.0.0.1:9001\", peer: \"127.0.0.1:9002\"}\n",
			"config: regions[0].peer: \"127.0.0.1:9\": a region that lists nodes"},
		{"partitions required with siblings", region(ok2 + "      - {name: a-1, api: \"127.0.0.1:3\", peer: \"127.0.0.1:4\"}\n"), "config: regions[0].nodes[1].partitions: required"},
		{"partition missing", region(ok2 + node("a-1", "127.0.0.1:3", "127.0.0.1:4", "[4, 6]")), "config: regions[0].nodes: partitions 5, 7 owned by no node (partitions: 8;"},
		{"one partition missing", region(ok2 + node("a-1", "127.0.0.1:3", "127.0.0.1:4", "4-6")), "config: regions[0].nodes: partition 7 owned by no node"},
		{"partition owned twice", region(ok2 + node("a-1", "127.0.0.1:3", "127.0.0.1:4", "2-7")), "config: regions[0].nodes[1].partitions: partitions 2-3 also owned by nodes[0] (a-0)"},
		{"partition listed twice", region(node("a-0", "127.0.0.1:1", "127.0.0.1:2", "[0-7, 3]")), "config: regions[0].nodes[0].partitions: partition 3 listed more than once"},
		{"partition out of range", region(ok2 + node("a-1", "127.0.0.1:3", "127.0.0.1:4", "4-8")), "config: regions[0].nodes[1].partitions: \"4-8\" reaches past partition 7 (partitions: 8)"},
		{"partition range reversed", region(ok2 + node("a-1", "127.0.0.1:3", "127.0.0.1:4", "7-4")), "config: regions[0].nodes[1].partitions: \"7-4\" is an empty range"},
		{"partition not a number", region(ok2 + node("a-1", "127.0.0.1:3", "127.0.0.1:4", "four")), "config: regions[0].nodes[1].partitions: \"four\" is not a partition number nor a range"},
		{"partition negative", region(ok2 + node("a-1", "127.0.0.1:3", "127.0.0.1:4", "[-1, 4-7]")), "config: regions[0].nodes[1].partitions: \"-1\" is not a partition number"},
		{"more partitions listed than exist", "cluster: c\npartitions: 2\nregions:\n  - name: a\n    nodes:\n" + node("a-0", "127.0.0.1:1", "127.0.0.1:2", "[0, 1, 1]"), "config: regions[0].nodes[0].partitions: 3 entries, more than the 2 partitions"},
		{"several nodes with one partition", "cluster: c\nregions:\n  - name: a\n    nodes:\n" + node("a-0", "127.0.0.1:1", "127.0.0.1:2", "0") + node("a-1", "127.0.0.1:3", "127.0.0.1:4", "0"),
			"config: regions[0].nodes[1].partitions: partition 0 also owned by nodes[0] (a-0)"},
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

// TestNodesBoundedWork: a file that claims every partition many times
// over is refused without listing each claim.
func TestNodesBoundedWork(t *testing.T) {
	var b strings.Builder
	b.WriteString("cluster: c\npartitions: 4096\nregions:\n  - name: a\n    nodes:\n")
	for j := range 200 {
		fmt.Fprintf(&b, "      - {name: n%d, api: \"127.0.0.1:%d\", peer: \"127.0.0.1:%d\", partitions: 0-4095}\n", j, 1000+2*j, 1001+2*j)
	}
	_, err := Parse([]byte(b.String()))
	if err == nil {
		t.Fatal("accepted")
	}
	if n := strings.Count(err.Error(), "\n") + 1; n > 5 {
		t.Errorf("%d error lines for one overlap:\n%.2000s", n, err)
	}
}

func TestPartitionList(t *testing.T) {
	for _, tc := range []struct {
		in   []int
		want string
	}{
		{[]int{5}, "partition 5"},
		{[]int{0, 1, 2, 3, 7, 9, 10}, "partitions 0-3, 7, 9-10"},
	} {
		if got := partitionList(tc.in); got != tc.want {
			t.Errorf("partitionList(%v) = %q, want %q", tc.in, got, tc.want)
		}
	}
	var many []int
	for q := 0; q < 100; q += 2 {
		many = append(many, q)
	}
	if got := partitionList(many); !strings.HasSuffix(got, ", …") || strings.Count(got, ",") != 16 {
		t.Errorf("partitionList of 50 ranges = %q", got)
	}
}
