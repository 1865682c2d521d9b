package config

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/latticedb/lattice/crdt"
)

// MaxPartitions bounds partitions, the number of partitions of a cluster.
const MaxPartitions = 4096

// MaxNodeNameLen bounds a node name: it is a DNS label.
const MaxNodeNameLen = 63

// NodeConfig is one node of a region: a process that owns some of the
// cluster's partitions (SPEC §10). A region that lists no nodes is one
// implicit node, named after the region, that owns every partition (see
// Config.Nodes).
type NodeConfig struct {
	// Name is the node's name: a DNS label (1–63 characters of [a-z0-9-],
	// starting and ending with a letter or digit), unique in its region,
	// such as the name of the Kubernetes pod that runs it.
	Name string `yaml:"name"`
	// API is the host:port the node's HTTP API listens on. The host may
	// be empty (all interfaces) when AdvertiseAPI is set or when the node
	// is its region's only node.
	API string `yaml:"api"`
	// Peer is the host:port of the node's QUIC endpoint, as for
	// RegionConfig.Peer: the host is required unless AdvertisePeer is set.
	Peer string `yaml:"peer"`
	// AdvertiseAPI, when set, is the host:port the other nodes of the
	// region dial to reach the node's API (API is then only where it
	// listens).
	AdvertiseAPI string `yaml:"advertise_api"`
	// AdvertisePeer, when set, is the host:port other regions dial to
	// reach the node's QUIC endpoint (Peer is then only where it
	// listens).
	AdvertisePeer string `yaml:"advertise_peer"`
	// Partitions are the partitions the node owns: every partition of the
	// cluster is owned by exactly one node of each region. It may be left
	// out only by a region's only node, which then owns them all.
	Partitions PartitionSet `yaml:"partitions"`
}

// DialAPI returns the address the other nodes of the region dial to
// reach the node's API: AdvertiseAPI if set, else API.
func (n NodeConfig) DialAPI() string {
	if n.AdvertiseAPI != "" {
		return n.AdvertiseAPI
	}
	return n.API
}

// DialPeer returns the address other regions dial to reach the node's
// QUIC endpoint: AdvertisePeer if set, else Peer.
func (n NodeConfig) DialPeer() string {
	if n.AdvertisePeer != "" {
		return n.AdvertisePeer
	}
	return n.Peer
}

// Owns reports whether the node owns partition p. A PartitionSet that
// does not parse owns nothing (Validate reports it).
func (n NodeConfig) Owns(p int) bool {
	for _, s := range n.Partitions {
		lo, hi, err := parsePartitionItem(s)
		if err == nil && lo <= p && p <= hi {
			return true
		}
	}
	return false
}

// PartitionSet is a set of partitions as a config file writes it: a range
// "lo-hi" (both ends included), a single partition number, or a list of
// ranges and numbers, such as `partitions: 0-3`, `partitions: 7` or
// `partitions: [0-1, 6, 9-11]`. Each element is kept as written;
// Config.Validate checks them.
type PartitionSet []string

// UnmarshalYAML decodes a scalar or a list of scalars.
func (s *PartitionSet) UnmarshalYAML(n *yaml.Node) error {
	bad := fmt.Errorf("config: partitions at line %d: want a range such as \"0-3\", a partition number, or a list of them", n.Line)
	switch n.Kind {
	case yaml.ScalarNode:
		if n.Tag == "!!null" {
			*s = nil
			return nil
		}
		*s = PartitionSet{n.Value}
		return nil
	case yaml.SequenceNode:
		out := make(PartitionSet, 0, len(n.Content))
		for _, c := range n.Content {
			if c.Kind != yaml.ScalarNode || c.Tag == "!!null" {
				return bad
			}
			out = append(out, c.Value)
		}
		*s = out
		return nil
	}
	return bad
}

// AllPartitions returns the PartitionSet of every partition of a cluster
// of p partitions: "0-(p-1)", or "0" when p is 1.
func AllPartitions(p int) PartitionSet {
	if p <= 1 {
		return PartitionSet{"0"}
	}
	return PartitionSet{"0-" + strconv.Itoa(p-1)}
}

// parsePartitionItem parses one element of a PartitionSet: "N" or "LO-HI"
// of decimal numbers with LO ≤ HI (range checks against the cluster's
// partitions are the caller's).
func parsePartitionItem(s string) (lo, hi int, err error) {
	num := func(t string) (int, error) {
		t = strings.TrimSpace(t)
		if t == "" || len(t) > 5 || strings.Trim(t, "0123456789") != "" {
			return 0, errors.New("not a number")
		}
		return strconv.Atoi(t)
	}
	a, b, isRange := strings.Cut(s, "-")
	if lo, err = num(a); err != nil {
		return 0, 0, fmt.Errorf("%q is not a partition number nor a range lo-hi", s)
	}
	hi = lo
	if isRange {
		if hi, err = num(b); err != nil {
			return 0, 0, fmt.Errorf("%q is not a partition number nor a range lo-hi", s)
		}
		if hi < lo {
			return 0, 0, fmt.Errorf("%q is an empty range (its end is below its start)", s)
		}
	}
	return lo, hi, nil
}

// Partition returns the partition of key (SPEC §10): the FNV-1a 64-bit
// hash of the key's bytes modulo the cluster's partitions (see
// PartitionOf). Every node of every region computes the same answer for
// the same partitions.
func (c *Config) Partition(key string) int {
	return PartitionOf(key, c.PartitionCount())
}

// PartitionOf returns hash(key) mod partitions, where hash is FNV-1a
// 64 (offset basis 14695981039346656037, prime 1099511628211, crdt.FNV64)
// over the bytes of key. With partitions a power of two this is the low
// log2(partitions) bits of the hash. It returns 0 when partitions < 2.
// The function is part of the on-disk and on-the-wire contract: changing
// it moves keys between partitions.
func PartitionOf(key string, partitions int) int {
	if partitions < 2 {
		return 0
	}
	h := crdt.NewFNV64()
	h.String(key)
	return int(uint64(h) % uint64(partitions))
}

// PartitionCount returns the cluster's number of partitions: Partitions,
// or 1 when it is 0 (left out).
func (c *Config) PartitionCount() int {
	if c.Partitions == 0 {
		return 1
	}
	return c.Partitions
}

// Nodes returns the nodes of region name in config order. A region that
// lists no nodes yields one implicit node named after the region, with
// the region's addresses, owning every partition; a region's only node
// that leaves partitions out is returned owning every partition. It
// returns nil for an unknown region.
func (c *Config) Nodes(name string) []NodeConfig {
	r, ok := c.Region(name)
	if !ok {
		return nil
	}
	all := AllPartitions(c.PartitionCount())
	if len(r.Nodes) == 0 {
		return []NodeConfig{{Name: r.Name, API: r.API, Peer: r.Peer, AdvertisePeer: r.AdvertisePeer, Partitions: all}}
	}
	nodes := make([]NodeConfig, len(r.Nodes))
	copy(nodes, r.Nodes)
	if len(nodes) == 1 && len(nodes[0].Partitions) == 0 {
		nodes[0].Partitions = all
	}
	return nodes
}

// Node returns the node called node of region region (Nodes lists them).
func (c *Config) Node(region, node string) (NodeConfig, bool) {
	for _, n := range c.Nodes(region) {
		if n.Name == node {
			return n, true
		}
	}
	return NodeConfig{}, false
}

// Owner returns the node of region that owns partition; the zero
// NodeConfig (Name "") for an unknown region or a partition outside
// 0..partitions-1. In a valid config every partition of every region has
// exactly one owner.
func (c *Config) Owner(region string, partition int) NodeConfig {
	if partition < 0 || partition >= c.PartitionCount() {
		return NodeConfig{}
	}
	for _, n := range c.Nodes(region) {
		if n.Owns(partition) {
			return n
		}
	}
	return NodeConfig{}
}

// validNodeName reports whether s is a DNS label as RFC 1123 and
// Kubernetes define it: 1–63 characters of [a-z0-9-], starting and ending
// with a letter or digit.
func validNodeName(s string) bool {
	if s == "" || len(s) > MaxNodeNameLen || s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	for i := 0; i < len(s); i++ {
		ch := s[i]
		if !(ch >= 'a' && ch <= 'z' || ch >= '0' && ch <= '9' || ch == '-') {
			return false
		}
	}
	return true
}

// addrIndex records, for each address something is reached at, the key
// that set it (regions[0].api) and who it belongs to (regions[0]), so a
// second use names the first.
type addrIndex map[string][2]string

// claim records addr for key/owner, or returns the key and owner that
// already hold it.
func (ix addrIndex) claim(addr, key, owner string) (prevKey, prevOwner string, dup bool) {
	if p, ok := ix[addr]; ok {
		return p[0], p[1], true
	}
	ix[addr] = [2]string{key, owner}
	return "", "", false
}

// addresses checks the listen and advertised addresses of one process (a
// region without nodes, or a node) and claims the addresses it is reached
// at in apis and peers. key is its config path (regions[1] or
// regions[1].nodes[0]); apiNeedsHost says whether anything dials the API
// address when no advertise_api is given.
func addresses(bad func(key, format string, args ...any), apis, peers addrIndex, key, api, advAPI, peer, advPeer string, apiNeedsHost bool) {
	if err := checkAddr(api, apiNeedsHost && advAPI == ""); err != nil {
		bad(key+".api", "%v", err)
	} else if advAPI != "" {
		if err := checkAddr(advAPI, true); err != nil {
			bad(key+".advertise_api", "%v", err)
		} else if _, owner, dup := apis.claim(advAPI, key+".advertise_api", key); dup {
			bad(key+".advertise_api", "%q is also the API address %s is reached at", advAPI, owner)
		}
	} else if prev, _, dup := apis.claim(api, key+".api", key); dup {
		bad(key+".api", "%q is also %s", api, prev)
	}
	if err := checkAddr(peer, advPeer == ""); err != nil {
		bad(key+".peer", "%v", err)
	} else if advPeer != "" {
		if err := checkAddr(advPeer, true); err != nil {
			bad(key+".advertise_peer", "%v", err)
		} else if _, owner, dup := peers.claim(advPeer, key+".advertise_peer", key); dup {
			bad(key+".advertise_peer", "%q is also the address %s is dialled at", advPeer, owner)
		}
	} else if prev, _, dup := peers.claim(peer, key+".peer", key); dup {
		bad(key+".peer", "%q is also %s", peer, prev)
	}
}

// validatePartitions checks partitions: a power of two 1..MaxPartitions
// (0 stands for 1). It reports whether the value is usable for checking
// the nodes' partitions.
func (c *Config) validatePartitions(bad func(key, format string, args ...any)) bool {
	p := c.Partitions
	if p == 0 {
		return true
	}
	if p < 1 || p > MaxPartitions || p&(p-1) != 0 {
		bad("partitions", "%d must be a power of two 1..%d", p, MaxPartitions)
		return false
	}
	return true
}

// validateNodes checks the nodes of region i, which lists some: their
// names, addresses and partitions, and that the region sets no address of
// its own (unless it repeats its only node's, as Parse fills in). When
// partitionsOK, every partition must be owned by exactly one node.
func (c *Config) validateNodes(bad func(key, format string, args ...any), apis, peers addrIndex, i int, partitionsOK bool) {
	r := c.Regions[i]
	key := fmt.Sprintf("regions[%d]", i)
	var only NodeConfig
	if len(r.Nodes) == 1 {
		only = r.Nodes[0]
	}
	for _, f := range []struct{ name, region, node string }{
		{"api", r.API, only.API},
		{"peer", r.Peer, only.Peer},
		{"advertise_peer", r.AdvertisePeer, only.AdvertisePeer},
	} {
		if f.region != "" && (len(r.Nodes) != 1 || f.region != f.node) {
			bad(key+"."+f.name, "%q: a region that lists nodes has no address of its own; set %s on its nodes", f.region, f.name)
		}
	}
	if len(r.Nodes) > MaxPartitions {
		bad(key+".nodes", "%d nodes, at most %d (each owns at least one partition)", len(r.Nodes), MaxPartitions)
		return
	}

	names := make(map[string]int, len(r.Nodes))
	for j, n := range r.Nodes {
		nk := fmt.Sprintf("%s.nodes[%d]", key, j)
		switch {
		case n.Name == "":
			bad(nk+".name", "required")
		case !validNodeName(n.Name):
			bad(nk+".name", "%q must be a DNS label: 1–%d characters of [a-z0-9-], starting and ending with a letter or digit", n.Name, MaxNodeNameLen)
		default:
			if k, dup := names[n.Name]; dup {
				bad(nk+".name", "%q repeats nodes[%d].name", n.Name, k)
			} else {
				names[n.Name] = j
			}
		}
		addresses(bad, apis, peers, nk, n.API, n.AdvertiseAPI, n.Peer, n.AdvertisePeer, len(r.Nodes) > 1)
	}
	if !partitionsOK {
		return
	}

	p := c.PartitionCount()
	owner := make([]int, p)
	for k := range owner {
		owner[k] = -1
	}
	extra := 0 // partitions claimed twice, to bound the work on a bad file
	for j, n := range r.Nodes {
		pk := fmt.Sprintf("%s.nodes[%d].partitions", key, j)
		if len(n.Partitions) == 0 {
			if len(r.Nodes) > 1 {
				bad(pk, "required: a region with several nodes says which partitions each owns")
				continue
			}
			n.Partitions = AllPartitions(p)
		}
		if len(n.Partitions) > p {
			bad(pk, "%d entries, more than the %d partitions", len(n.Partitions), p)
			continue
		}
		dups := map[int][]int{} // earlier owner → partitions claimed again
		for _, s := range n.Partitions {
			lo, hi, err := parsePartitionItem(s)
			if err != nil {
				bad(pk, "%v", err)
				continue
			}
			if hi >= p {
				bad(pk, "%q reaches past partition %d (partitions: %d)", s, p-1, p)
				continue
			}
			for q := lo; q <= hi && extra <= p; q++ {
				if o := owner[q]; o >= 0 {
					dups[o] = append(dups[o], q)
					extra++
					continue
				}
				owner[q] = j
			}
		}
		for o := range len(r.Nodes) {
			qs := dups[o]
			if len(qs) == 0 {
				continue
			}
			slices.Sort(qs)
			if o == j {
				bad(pk, "%s listed more than once", partitionList(qs))
			} else {
				bad(pk, "%s also owned by nodes[%d] (%s): each partition has exactly one owner", partitionList(qs), o, r.Nodes[o].Name)
			}
		}
	}
	var missing []int
	for q, o := range owner {
		if o < 0 {
			missing = append(missing, q)
		}
	}
	if len(missing) > 0 && extra <= p {
		bad(key+".nodes", "%s owned by no node (partitions: %d; every partition has exactly one owner in each region)", partitionList(missing), p)
	}
}

// partitionList writes ascending partitions as "partition 5" or
// "partitions 0-3, 7, 9-11", at most 16 ranges.
func partitionList(qs []int) string {
	var b strings.Builder
	if len(qs) == 1 {
		return "partition " + strconv.Itoa(qs[0])
	}
	b.WriteString("partitions ")
	ranges := 0
	for i := 0; i < len(qs); {
		j := i
		for j+1 < len(qs) && qs[j+1] == qs[j]+1 {
			j++
		}
		if ranges == 16 {
			b.WriteString(", …")
			break
		}
		if ranges > 0 {
			b.WriteString(", ")
		}
		b.WriteString(strconv.Itoa(qs[i]))
		if j > i {
			b.WriteString("-" + strconv.Itoa(qs[j]))
		}
		ranges++
		i = j + 1
	}
	return b.String()
}
