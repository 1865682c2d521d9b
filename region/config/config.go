// Package config is the cluster configuration file of SPEC §7: the YAML
// document every region of a cluster shares, its defaults, its validation
// and the derived answers every region must agree on (a region's peers, its
// data directory, the home region of a sku).
//
// A config file looks like this:
//
//	cluster: demo
//	data_dir: ./data            # region NAME keeps its files under data_dir/NAME/
//	tls_dir: ./certs            # ca.crt, NAME.crt, NAME.key
//	durability: always          # always (fsync before ack) | everysec
//	partitions: 1               # optional: a power of two 1..4096 (see Partition)
//	regions:
//	  - name: us-east
//	    api: 127.0.0.1:7101     # HTTP listen address
//	    peer: 127.0.0.1:7201    # QUIC (UDP) listen and dial address
//	  - name: eu-west
//	    nodes:                  # optional: the processes that run the region
//	      - name: eu-west-0
//	        api: 127.0.0.1:7102
//	        peer: 127.0.0.1:7202
//	        partitions: 0       # a range "0-3", a number or a list of them
//	homes:                      # optional; first match wins, else rendezvous hash
//	  - prefix: "eu-"
//	    region: eu-west
//	emulate:                    # optional, for tests and demos only
//	  latency_ms: {"us-east/eu-west": 34}
//	  loss_pct: 0.5
//	api_tls:                    # optional: HTTPS for the REST API
//	  cert: api/{region}.crt
//	  key: api/{region}.key
//	  client_ca: clients.crt    # optional: require client certificates
//	api_auth:                   # optional: bearer tokens for the REST API
//	  read_tokens: tokens/read
//	  write_tokens: tokens/write
//	  protect_probes: false     # /healthz, /readyz, /metrics stay open
//	access_log: false           # log every API request at INFO
//
// Unknown keys, duplicate keys, several YAML documents in one file and
// values of the wrong type are errors.
package config

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/latticedb/lattice/crdt"
)

// Durability says when a region acknowledges a write.
type Durability string

// Durability modes.
const (
	// DurabilityAlways fsyncs every write before it is acknowledged.
	DurabilityAlways Durability = "always"
	// DurabilityEverySec fsyncs once a second; a power loss (not a
	// process crash) may lose the last second of acknowledged writes.
	DurabilityEverySec Durability = "everysec"
)

// Limits and defaults of a config file.
const (
	// MaxFileSize bounds the size of a config file Load reads.
	MaxFileSize = 1 << 20
	// MaxRegions bounds the regions of a cluster (each region adds
	// replica ids to objects, one per incarnation; see crdt.MaxReplicas).
	MaxRegions = crdt.MaxRegions
	// MaxRegionNameLen bounds a region name in bytes: it is a replica id.
	MaxRegionNameLen = crdt.MaxReplicaIDLen
	// MaxLatencyMS bounds an emulated one-way latency.
	MaxLatencyMS = 60_000
	// DefaultDataDir is data_dir when the file leaves it out.
	DefaultDataDir = "data"
	// DefaultTLSDir is tls_dir when the file leaves it out.
	DefaultTLSDir = "certs"
)

// Config is a cluster's configuration: one file that every region shares.
type Config struct {
	// Cluster names the cluster. Required; an identifier.
	Cluster string `yaml:"cluster"`
	// DataDir holds one directory per region (see RegionDir). Load
	// resolves a relative path against the config file's directory.
	// Defaults to DefaultDataDir.
	DataDir string `yaml:"data_dir"`
	// TLSDir holds the files written by `lattice certs`: ca.crt,
	// NAME.crt and NAME.key. Load resolves a relative path against the
	// config file's directory. Defaults to DefaultTLSDir.
	TLSDir string `yaml:"tls_dir"`
	// Durability is always (the default) or everysec.
	Durability Durability `yaml:"durability"`
	// Partitions is the cluster's fixed number of partitions P (SPEC
	// §10): a power of two 1..MaxPartitions, the same in every region
	// and fixed when the cluster is created. A key lives in partition
	// Partition(key). 0, as when the file leaves the key out, means 1.
	Partitions int `yaml:"partitions"`
	// Regions is the fixed list of regions, at least one.
	Regions []RegionConfig `yaml:"regions"`
	// Homes are the placement rules of SPEC §4, tried in order: at most
	// MaxHomes.
	Homes []HomeRule `yaml:"homes"`
	// Emulate configures an emulated WAN between regions.
	Emulate Emulate `yaml:"emulate"`
	// APITLS, when it names a certificate, serves the REST API over
	// HTTPS (see APITLS).
	APITLS APITLS `yaml:"api_tls"`
	// APIAuth, when it names a token file, makes the REST API need
	// bearer tokens (see APIAuth).
	APIAuth APIAuth `yaml:"api_auth"`
	// AccessLog logs every API request at INFO: method, path, status,
	// duration, request id, region.
	AccessLog bool `yaml:"access_log"`
	// GC configures the process's garbage collector (see GC).
	GC GC `yaml:"gc"`
	// AntiEntropyRate bounds the bytes of states anti-entropy ships to
	// each peer a second (with bursts of a quarter of it): a large repair
	// takes longer and leaves more of the region's CPU to its clients. 0
	// means DefaultAntiEntropyRate, -1 no bound.
	AntiEntropyRate int64 `yaml:"anti_entropy_rate_bytes_per_sec"`
}

// DefaultAntiEntropyRate is anti_entropy_rate_bytes_per_sec when the
// config leaves it out: 8 MiB a second per peer.
const DefaultAntiEntropyRate = 8 << 20

// MaxAntiEntropyRate bounds anti_entropy_rate_bytes_per_sec (1 TiB/s).
const MaxAntiEntropyRate = 1 << 40

// EffectiveAntiEntropyRate is AntiEntropyRate with 0 read as
// DefaultAntiEntropyRate and -1 as 0 (no bound).
func (c *Config) EffectiveAntiEntropyRate() int64 {
	switch c.AntiEntropyRate {
	case 0:
		return DefaultAntiEntropyRate
	case -1:
		return 0
	}
	return c.AntiEntropyRate
}

// RegionConfig is one region of the cluster.
type RegionConfig struct {
	// Name is the region's name and replica id: 1–64 characters of
	// [A-Za-z0-9._:-], not "." or "..", unique in the cluster even when
	// compared without regard to case (it is a DNS name in the region's
	// certificate).
	Name string `yaml:"name"`
	// API is the host:port the region's HTTP API listens on. The host may
	// be empty (all interfaces).
	API string `yaml:"api"`
	// Peer is the host:port of the region's QUIC endpoint: it listens
	// there and, unless AdvertisePeer is set, the other regions dial it,
	// so the host is required then.
	Peer string `yaml:"peer"`
	// AdvertisePeer, when set, is the host:port the other regions dial to
	// reach this region's QUIC endpoint (a load balancer or NAT in front
	// of it, as on Kubernetes); Peer is then only where the region
	// listens, and its host may be empty (all interfaces).
	AdvertisePeer string `yaml:"advertise_peer"`
	// Nodes, when set, are the processes that run the region, each
	// owning some partitions (see NodeConfig). A region that lists nodes
	// has no api, peer or advertise_peer of its own: Parse gives a
	// region with a single node that node's addresses, and a region with
	// several has none. A region without nodes is one node owning every
	// partition (see Config.Nodes).
	Nodes []NodeConfig `yaml:"nodes"`
}

// DialPeer returns the address other regions dial to reach the region:
// AdvertisePeer if set, else Peer.
func (r RegionConfig) DialPeer() string {
	if r.AdvertisePeer != "" {
		return r.AdvertisePeer
	}
	return r.Peer
}

// MaxHomes bounds the homes rules: every request that names a sku tries
// them in order.
const MaxHomes = 1024

// HomeRule homes every sku that starts with Prefix at Region.
type HomeRule struct {
	// Prefix is 1–128 characters of [A-Za-z0-9._:-].
	Prefix string `yaml:"prefix"`
	// Region names a region of the cluster.
	Region string `yaml:"region"`
	// Escrow makes the rule's skus escrow skus: the home grants other
	// regions rights to units ahead of time, and a region holding enough
	// rights decides a reservation alone (see docs/configuration.md).
	// Default false: every reservation is decided at the home.
	Escrow bool `yaml:"escrow"`
}

// Emulate configures an emulated WAN, for tests, demos and the benchmark.
// The zero value emulates nothing.
type Emulate struct {
	// LatencyMS maps a pair of regions "a/b" to the one-way delay in
	// milliseconds between them, applied in both directions (0 to
	// MaxLatencyMS). A pair may be written in either order, but only once.
	// Pairs left out have no added delay.
	LatencyMS map[string]int `yaml:"latency_ms"`
	// LossPct is the percentage (0 to 100) of region-to-region packets
	// dropped at random, in every direction.
	LossPct float64 `yaml:"loss_pct"`
}

// DefaultConfig returns the three-region local cluster of `lattice dev`:
// us-east, eu-west and ap-south on 127.0.0.1 with API ports 7101–7103 and
// peer ports 7201–7203, durability always, and the emulated one-way WAN
// latencies of SPEC §7 (34 ms us-east↔eu-west, 92 ms us-east↔ap-south,
// 60 ms eu-west↔ap-south). It is valid; callers may change it and call
// Validate again.
func DefaultConfig() *Config {
	return &Config{
		Cluster:    "dev",
		DataDir:    DefaultDataDir,
		TLSDir:     DefaultTLSDir,
		Durability: DurabilityAlways,
		Partitions: 1,
		Regions: []RegionConfig{
			{Name: "us-east", API: "127.0.0.1:7101", Peer: "127.0.0.1:7201"},
			{Name: "eu-west", API: "127.0.0.1:7102", Peer: "127.0.0.1:7202"},
			{Name: "ap-south", API: "127.0.0.1:7103", Peer: "127.0.0.1:7203"},
		},
		Emulate: Emulate{LatencyMS: map[string]int{
			"us-east/eu-west":  34,
			"us-east/ap-south": 92,
			"eu-west/ap-south": 60,
		}},
	}
}

// Load reads, parses and validates the config file at path. A relative
// data_dir or tls_dir is resolved against the directory of the file.
func Load(path string) (*Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("config: %s: %w", path, err)
	}
	if len(b) > MaxFileSize {
		return nil, fmt.Errorf("config: %s: larger than %d bytes", path, MaxFileSize)
	}
	c, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("%w (in %s)", err, path)
	}
	dir, err := filepath.Abs(filepath.Dir(path))
	if err != nil {
		return nil, fmt.Errorf("config: %s: %w", path, err)
	}
	c.DataDir = resolve(dir, c.DataDir)
	c.TLSDir = resolve(dir, c.TLSDir)
	c.resolveSecurityPaths(dir)
	if a := c.APIAuth; a.ReadTokens != "" && a.WriteTokens != "" && sameTokenFile(a.ReadTokens, a.WriteTokens) {
		return nil, fmt.Errorf("config: api_auth.write_tokens: %q is also api_auth.read_tokens (%q, resolved against the config's directory); each scope needs its own file (in %s)", a.WriteTokens, a.ReadTokens, path)
	}
	return c, nil
}

func resolve(dir, p string) string {
	if filepath.IsAbs(p) {
		return filepath.Clean(p)
	}
	return filepath.Join(dir, p)
}

// Parse decodes and validates a config document. Keys left out take their
// defaults (data_dir, tls_dir, durability, partitions); relative paths
// are left relative (Load resolves them against the file's directory). A
// region that lists a single node takes that node's api, peer and
// advertise_peer as its own.
func Parse(b []byte) (*Config, error) {
	// partitions left out is 1; given, it must be in range, 0 included
	// (Validate takes the zero value of a Config built in code for 1).
	var c Config
	given, err := decode(b, &c)
	if err != nil {
		return nil, err
	}
	if !given["partitions"] {
		c.Partitions = 1
	} else if c.Partitions < 1 {
		return nil, fmt.Errorf("config: partitions: %d must be a power of two 1..%d", c.Partitions, MaxPartitions)
	}
	c.setDefaults()
	if err := c.Validate(); err != nil {
		return nil, err
	}
	for i := range c.Regions {
		if r := &c.Regions[i]; len(r.Nodes) == 1 {
			r.API, r.Peer, r.AdvertisePeer = r.Nodes[0].API, r.Nodes[0].Peer, r.Nodes[0].AdvertisePeer
		}
	}
	return &c, nil
}

func (c *Config) setDefaults() {
	if c.DataDir == "" {
		c.DataDir = DefaultDataDir
	}
	if c.TLSDir == "" {
		c.TLSDir = DefaultTLSDir
	}
	if c.Durability == "" {
		c.Durability = DurabilityAlways
	}
}

// Validate checks c and returns every problem found, one line each, each
// naming the offending key (for example `config: regions[1].peer: ...`),
// joined with errors.Join; nil when c is valid.
func (c *Config) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("config: %s: %s", key, fmt.Sprintf(format, args...)))
	}

	if c.Cluster == "" {
		bad("cluster", "required")
	} else if !crdt.ValidID(c.Cluster) {
		bad("cluster", "%q must be 1–128 characters of [A-Za-z0-9._:-]", c.Cluster)
	}
	if c.DataDir == "" {
		bad("data_dir", "required")
	}
	if c.TLSDir == "" {
		bad("tls_dir", "required")
	}
	switch c.Durability {
	case DurabilityAlways, DurabilityEverySec:
	default:
		bad("durability", "%q must be always or everysec", c.Durability)
	}

	partitionsOK := c.validatePartitions(bad)
	names := make(map[string]bool, len(c.Regions))
	folded := make(map[string]int, len(c.Regions))
	apis := make(addrIndex, len(c.Regions))
	peers := make(addrIndex, len(c.Regions))
	switch {
	case len(c.Regions) == 0:
		bad("regions", "at least one region is required")
	case len(c.Regions) > MaxRegions:
		bad("regions", "%d regions, at most %d", len(c.Regions), MaxRegions)
	}
	for i, r := range c.Regions {
		key := fmt.Sprintf("regions[%d]", i)
		if err := checkRegionName(r.Name); err != nil {
			bad(key+".name", "%v", err)
		} else if j, dup := folded[strings.ToLower(r.Name)]; dup {
			bad(key+".name", "%q repeats regions[%d].name %q (names are compared without regard to case)", r.Name, j, c.Regions[j].Name)
		} else {
			folded[strings.ToLower(r.Name)] = i
			names[r.Name] = true
		}
		if len(r.Nodes) > 0 {
			c.validateNodes(bad, apis, peers, i, partitionsOK)
		} else {
			addresses(bad, apis, peers, key, r.API, "", r.Peer, r.AdvertisePeer, false)
		}
	}

	if len(c.Homes) > MaxHomes {
		bad("homes", "%d rules; at most %d (each sku's home is found by trying them in order)", len(c.Homes), MaxHomes)
	}
	for i, h := range c.Homes {
		if i >= MaxHomes {
			break
		}
		key := fmt.Sprintf("homes[%d]", i)
		if h.Prefix == "" {
			bad(key+".prefix", "required")
		} else if !crdt.ValidID(h.Prefix) {
			bad(key+".prefix", "%q must be 1–128 characters of [A-Za-z0-9._:-] (no sku could match it)", h.Prefix)
		} else {
			for j := range i {
				if p := c.Homes[j].Prefix; p != "" && strings.HasPrefix(h.Prefix, p) {
					bad(key+".prefix", "%q is unreachable: homes[%d].prefix %q matches every sku it matches", h.Prefix, j, p)
					break
				}
			}
		}
		if h.Region == "" {
			bad(key+".region", "required")
		} else if !names[h.Region] {
			bad(key+".region", "unknown region %q", h.Region)
		}
	}

	pairs := make(map[[2]string]string, len(c.Emulate.LatencyMS))
	for _, k := range sortedKeys(c.Emulate.LatencyMS) {
		ms := c.Emulate.LatencyMS[k]
		key := fmt.Sprintf("emulate.latency_ms[%q]", k)
		a, b, ok := strings.Cut(k, "/")
		switch {
		case !ok || a == "" || b == "" || strings.Contains(b, "/"):
			bad(key, "want a pair of regions written \"a/b\"")
			continue
		case !names[a]:
			bad(key, "unknown region %q", a)
		case !names[b]:
			bad(key, "unknown region %q", b)
		case a == b:
			bad(key, "a region paired with itself")
		default:
			p := [2]string{min(a, b), max(a, b)}
			if other, dup := pairs[p]; dup {
				bad(key, "the same pair as %q", other)
			}
			pairs[p] = k
		}
		if ms < 0 || ms > MaxLatencyMS {
			bad(key, "%d ms is outside 0..%d", ms, MaxLatencyMS)
		}
	}
	if l := c.Emulate.LossPct; !(l >= 0 && l <= 100) {
		bad("emulate.loss_pct", "%v is outside 0..100", l)
	}
	c.validateSecurity(bad)
	c.validateGC(bad)
	if r := c.AntiEntropyRate; r < -1 || (r >= 0 && r < 4096 && r != 0) || r > MaxAntiEntropyRate {
		bad("anti_entropy_rate_bytes_per_sec", "%d must be -1 (no bound), 0 (the default, %d) or 4096..%d", r, DefaultAntiEntropyRate, int64(MaxAntiEntropyRate))
	}
	return errors.Join(errs...)
}

func checkRegionName(name string) error {
	switch {
	case name == "":
		return errors.New("required")
	case len(name) > MaxRegionNameLen:
		return fmt.Errorf("%q is longer than %d characters", name, MaxRegionNameLen)
	case !crdt.ValidID(name) || strings.Contains(name, ":"):
		// ':' separates a reservation id's parts (HOME:SEQ).
		return fmt.Errorf("%q must be characters of [A-Za-z0-9._-]", name)
	case name == "." || name == "..":
		return fmt.Errorf("%q cannot name a directory", name)
	}
	return nil
}

// checkAddr checks a host:port address: a port 1..65535 and a host that is
// an IP address or a DNS name, required when dial is set.
func checkAddr(addr string, dial bool) error {
	if addr == "" {
		return errors.New("required")
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q is not host:port: %v", addr, unwrapAddrErr(err))
	}
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil || n == 0 || strconv.FormatUint(n, 10) != port {
		return fmt.Errorf("%q: port %q must be a number 1..65535", addr, port)
	}
	if host == "" {
		if dial {
			return fmt.Errorf("%q: a host is required (other regions dial it)", addr)
		}
		return nil
	}
	ip := net.ParseIP(host)
	if ip == nil && !validHostname(host) {
		return fmt.Errorf("%q: host %q is neither an IP address nor a DNS name", addr, host)
	}
	if dial && ip != nil && ip.IsUnspecified() {
		return fmt.Errorf("%q: %s names no host to dial (other regions or nodes dial it): give the address they reach it at, or set the advertised address", addr, host)
	}
	return nil
}

func unwrapAddrErr(err error) string {
	var ae *net.AddrError
	if errors.As(err, &ae) {
		return ae.Err
	}
	return err.Error()
}

// validHostname reports whether h is a DNS name: dot-separated labels of
// 1–63 letters, digits and hyphens, not starting or ending with a hyphen,
// 253 characters at most.
func validHostname(h string) bool {
	h = strings.TrimSuffix(h, ".")
	if h == "" || len(h) > 253 {
		return false
	}
	for label := range strings.SplitSeq(h, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			ch := label[i]
			if !(ch >= 'a' && ch <= 'z' || ch >= 'A' && ch <= 'Z' || ch >= '0' && ch <= '9' || ch == '-') {
				return false
			}
		}
	}
	return true
}

func sortedKeys(m map[string]int) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// Region returns the region called name.
func (c *Config) Region(name string) (RegionConfig, bool) {
	for _, r := range c.Regions {
		if r.Name == name {
			return r, true
		}
	}
	return RegionConfig{}, false
}

// RegionNames returns the names of the regions in config order.
func (c *Config) RegionNames() []string {
	names := make([]string, len(c.Regions))
	for i, r := range c.Regions {
		names[i] = r.Name
	}
	return names
}

// Peers returns every region but self, in config order.
func (c *Config) Peers(self string) []RegionConfig {
	peers := make([]RegionConfig, 0, len(c.Regions))
	for _, r := range c.Regions {
		if r.Name != self {
			peers = append(peers, r)
		}
	}
	return peers
}

// RegionDir returns the directory that region name keeps its files in:
// data_dir/NAME.
func (c *Config) RegionDir(name string) string {
	return filepath.Join(c.DataDir, name)
}

// TLSFiles returns the paths of the cluster CA certificate and of region
// name's certificate and key, as written by `lattice certs`:
// tls_dir/ca.crt, tls_dir/NAME.crt and tls_dir/NAME.key.
func (c *Config) TLSFiles(name string) (caCert, cert, key string) {
	return filepath.Join(c.TLSDir, "ca.crt"),
		filepath.Join(c.TLSDir, name+".crt"),
		filepath.Join(c.TLSDir, name+".key")
}

// Latency returns the emulated one-way delay between regions a and b, in
// either direction: emulate.latency_ms["a/b"] or ["b/a"], else 0.
func (c *Config) Latency(a, b string) time.Duration {
	ms, ok := c.Emulate.LatencyMS[a+"/"+b]
	if !ok {
		ms = c.Emulate.LatencyMS[b+"/"+a]
	}
	return time.Duration(ms) * time.Millisecond
}

// Home returns the home region of sku (SPEC §4): the region of the first
// homes rule whose prefix sku starts with, else the region chosen by
// rendezvous hashing of sku over the region names (see RendezvousHome).
// It returns "" only for a config without regions.
func (c *Config) Home(sku string) string {
	for _, h := range c.Homes {
		if strings.HasPrefix(sku, h.Prefix) {
			return h.Region
		}
	}
	return RendezvousHome(c.RegionNames(), sku)
}

// HomesID names what decides the home of every sku: the homes rules, in
// order, and the regions (rendezvous hashing homes the skus no rule
// matches). Two configs with the same HomesID home every sku alike.
func (c *Config) HomesID() string {
	h := sha256.New()
	for _, r := range c.Homes {
		fmt.Fprintf(h, "rule %q %q\n", r.Prefix, r.Region)
	}
	names := slices.Clone(c.RegionNames())
	slices.Sort(names)
	for _, n := range names {
		fmt.Fprintf(h, "region %q\n", n)
	}
	return hex.EncodeToString(h.Sum(nil)[:16])
}

// Escrow reports whether sku is an escrow sku: the first homes rule whose
// prefix it starts with says escrow: true. A sku no rule matches is not.
func (c *Config) Escrow(sku string) bool {
	for _, h := range c.Homes {
		if strings.HasPrefix(sku, h.Prefix) {
			return h.Escrow
		}
	}
	return false
}

// RendezvousHome returns the region of regions with the highest score for
// sku, where score(region, sku) is the first 8 bytes, read big-endian, of
// SHA-256(region || 0x00 || sku) (neither a region name nor a sku can hold
// a 0x00 byte, so the input is unambiguous). A tie, which needs a 64-bit
// collision, goes to the smaller name. The answer does not depend on the
// order of regions, and removing a region only moves the skus it was home
// to. It returns "" for no regions.
func RendezvousHome(regions []string, sku string) string {
	var best string
	var bestScore uint64
	for i, r := range regions {
		s := rendezvousScore(r, sku)
		if i == 0 || s > bestScore || s == bestScore && r < best {
			best, bestScore = r, s
		}
	}
	return best
}

func rendezvousScore(region, sku string) uint64 {
	h := sha256.New()
	h.Write([]byte(region))
	h.Write([]byte{0})
	h.Write([]byte(sku))
	var sum [sha256.Size]byte
	return binary.BigEndian.Uint64(h.Sum(sum[:0]))
}
