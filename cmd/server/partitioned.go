package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/latticedb/lattice/api"
	"github.com/latticedb/lattice/region"
	"github.com/latticedb/lattice/region/config"
	"github.com/latticedb/lattice/region/store"
	"github.com/latticedb/lattice/sync/certs"
	"github.com/latticedb/lattice/sync/replication"
)

// PartitionedReplication is the replication of a node of a partitioned
// region: one Replicator per partition the node owns, sharing one QUIC
// endpoint (replication.Partitioned implements it).
type PartitionedReplication interface {
	// Replicator returns partition part's replication: its node's
	// Publisher, write-concern waiter and peers' status.
	Replicator(part int) *replication.Replicator
	// Forwarder returns partition part's node's Forwarder.
	Forwarder(part int) region.Forwarder
	// Start begins replicating every partition's node.
	Start(ctx context.Context, nodes map[int]*region.Node) error
	Close() error
}

var _ PartitionedReplication = (*replication.Partitioned)(nil)

// NewPartitionedReplication builds the replication of a node of a
// partitioned region from env (env.Node and env.Owned set).
type NewPartitionedReplication func(env ReplicationEnv) (PartitionedReplication, error)

// QUICPartitioned returns the NewPartitionedReplication of replication over
// QUIC with mutual TLS, tuned by opts.
func QUICPartitioned(opts replication.AttachOptions) NewPartitionedReplication {
	return func(env ReplicationEnv) (PartitionedReplication, error) {
		return replication.NewPartitioned(opts, env), nil
	}
}

// partitioned reports whether region name runs partitioned: the cluster
// has several partitions, or the region several nodes.
func partitioned(cfg *config.Config, name string) bool {
	return cfg.PartitionCount() > 1 || len(cfg.Nodes(name)) > 1
}

// checkLayout refuses a region directory that holds a store of the other
// layout than the config asks for — a store of its own (DataFile) when
// the region keeps a store per partition, or per-partition stores
// (PartitionDir) when it keeps one, or a partition the cluster does not
// have: the partitions of a cluster are fixed when it is created, and a
// region started on empty stores beside its old one would serve none of
// its data and issue again the dots its peers hold from it.
func checkLayout(dir string, perPartition bool, partitions int) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	} else if err != nil {
		return err
	}
	refuse := func(found, why string) error {
		return fmt.Errorf("%s holds %s, but %s; the partitions of a cluster are fixed when it is created (docs/configuration.md): put back the config the data was written with, or move the data away to start afresh", dir, found, why)
	}
	for _, e := range entries {
		name := e.Name()
		var part int
		isPart := e.IsDir() && len(name) == 5 && name[0] == 'p'
		if isPart {
			if _, err := fmt.Sscanf(name[1:], "%04d", &part); err != nil {
				isPart = false
			}
		}
		if isPart {
			if _, err := os.Stat(filepath.Join(dir, name, DataFile)); err != nil {
				continue // no store in it
			}
		}
		switch {
		case name == DataFile && perPartition:
			return refuse("the store of a region of one partition ("+DataFile+")", fmt.Sprintf("the config gives the cluster %d partitions", partitions))
		case isPart && !perPartition:
			return refuse("the store of partition "+name, "the config gives the cluster one partition")
		case isPart && part >= partitions:
			return refuse("the store of partition "+name, fmt.Sprintf("the config gives the cluster %d partitions", partitions))
		}
	}
	return nil
}

// PartitionsFile, in a partitioned region's directory, records the
// cluster's partition count its stores were written with. Each store
// records it too, but a node checks only the stores it opens: one whose
// partitions all moved with a changed count (n1 owning p0001 of 2, then
// p0002–p0003 of 4) would start on new empty stores, and one opening an
// old store after creating new ones would refuse having written them.
// The file is checked before any store is created and written once the
// node's stores are open (a directory written by a version without it
// gets it then).
const PartitionsFile = "partitions"

// checkPartitionsFile refuses a region directory whose PartitionsFile
// records another count than partitions; no file passes.
func checkPartitionsFile(dir string, partitions int) error {
	path := filepath.Join(dir, PartitionsFile)
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	} else if err != nil {
		return err
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || n < 1 {
		return fmt.Errorf("%s holds %q, not a partition count: put back the file the region wrote (its stores record the count too), or move the data away to start afresh", path, b)
	}
	if n != partitions {
		return fmt.Errorf("%s was written by a cluster of %d partitions, but the config gives the cluster %d; the partitions of a cluster are fixed when it is created (docs/configuration.md): put back the config the data was written with, or move the data away to start afresh", dir, n, partitions)
	}
	return nil
}

// writePartitionsFile records partitions in dir's PartitionsFile
// (atomically: a new file renamed over, then the directory synced),
// unless it already does.
func writePartitionsFile(dir string, partitions int) error {
	path := filepath.Join(dir, PartitionsFile)
	want := strconv.Itoa(partitions) + "\n"
	if b, err := os.ReadFile(path); err == nil && string(b) == want {
		return nil
	}
	// A temporary file of this writer's own: nodes of a region sharing
	// its directory may start at once, and each renames its own over.
	f, err := os.CreateTemp(dir, "."+PartitionsFile+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	// Readable by the region's other nodes, which may run as other users
	// (CreateTemp makes it 0600); best effort, as a file system without
	// modes may refuse it.
	_ = f.Chmod(0o644)
	_, err = f.WriteString(want)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// PartitionDir is the directory of partition part's store inside a
// region's directory: p0000, p0001, … Moving a partition to another node
// moves this directory (see docs/operations.md).
func PartitionDir(part int) string { return fmt.Sprintf("p%04d", part) }

// startPartitioned is Start for a node of a partitioned region (SPEC §10):
// each partition the node owns has its store (RegionDir/pNNNN/data.db) and
// its region.Node, the API serves them through a region.Partitions and
// forwards requests for the region's other partitions to their nodes, and
// replication (opts.PartitionedReplication) runs each partition with the
// same partition of the other regions.
func (s *Server) startPartitioned(ctx context.Context, opts Options, labelled prometheus.Registerer) (*Server, error) {
	cfg, name := s.cfg, s.name
	nodes := cfg.Nodes(name)
	nodeName := opts.Node
	if nodeName == "" {
		if len(nodes) > 1 {
			return nil, fmt.Errorf("server: region %s runs on %d nodes: name the node to run (--node)", name, len(nodes))
		}
		nodeName = nodes[0].Name
	}
	nc, ok := cfg.Node(name, nodeName)
	if !ok {
		var names []string
		for _, n := range nodes {
			names = append(names, n.Name)
		}
		return nil, fmt.Errorf("server: region %s has no node %q (nodes: %v)", name, nodeName, names)
	}
	s.nodeName = nodeName
	s.log = s.log.With("node", nodeName)
	count := cfg.PartitionCount()
	owned := ownedOf(nc, count)
	if len(owned) == 0 {
		return nil, fmt.Errorf("server: node %s of region %s owns no partition", nodeName, name)
	}

	var peerBundle *certs.Bundle
	var prepl PartitionedReplication
	if opts.PartitionedReplication != nil {
		bundle, err := certs.Load(cfg.TLSDir, name)
		if err != nil {
			return nil, fmt.Errorf("server: region %s: %w", name, err)
		}
		peerBundle = bundle
		prepl, err = opts.PartitionedReplication(ReplicationEnv{Config: cfg, Region: name, PeerAddr: nc.Peer,
			TLS: bundle, Logger: s.log, Registerer: labelled, Node: nodeName, Owned: owned})
		if err != nil {
			return nil, fmt.Errorf("server: region %s: replication: %w", name, err)
		}
		s.prepl = prepl
	} else if len(cfg.Peers(name)) > 0 || len(nodes) > 1 {
		s.log.Warn("no replication attached: this node replicates nothing and reaches no other node")
	}
	var peerRegions []string
	for _, p := range cfg.Peers(name) {
		peerRegions = append(peerRegions, p.Name)
	}
	if err := s.listen(ctx, nc.API, peerBundle, labelled, opts); err != nil {
		return nil, err
	}

	if err := checkLayout(cfg.RegionDir(name), true, cfg.PartitionCount()); err != nil {
		return nil, fmt.Errorf("server: region %s: %w", name, err)
	}
	if err := checkPartitionsFile(cfg.RegionDir(name), cfg.PartitionCount()); err != nil {
		return nil, fmt.Errorf("server: region %s: %w", name, err)
	}
	byPart := make(map[int]*region.Node, len(owned))
	var list []*region.Node
	for _, part := range owned {
		preg := prometheus.WrapRegistererWith(prometheus.Labels{"partition": strconv.Itoa(part)}, labelled)
		metrics := region.NewMetrics(preg)
		path := filepath.Join(cfg.RegionDir(name), PartitionDir(part), DataFile)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return nil, fmt.Errorf("server: region %s: %w", name, err)
		}
		opts.hook("store")
		st, err := region.OpenStore(path, store.Options{Durability: cfg.Durability, Shared: len(cfg.Regions) > 1, BootID: store.BootID(), Logger: s.log.With("partition", part), Metrics: metrics.Store(),
			ProgressBytes: opts.progressBytes, ProgressEvery: opts.progressEvery})
		if err != nil {
			return nil, fmt.Errorf("server: region %s partition %d: %w", name, part, err)
		}
		s.pstores = append(s.pstores, st)
		s.openedStore()
		nopts := region.Options{
			Name:           name,
			Home:           cfg.Home,
			HomesID:        cfg.HomesID(),
			CatchUpWait:    region.DefaultCatchUpWait,
			StartGate:      region.DefaultStartGate,
			Escrow:         cfg.Escrow,
			IsRegion:       func(r string) bool { _, ok := cfg.Region(r); return ok },
			Store:          st,
			Clock:          opts.Clock,
			Logger:         s.log.With("partition", part),
			Metrics:        metrics,
			ExpiryInterval: opts.ExpiryInterval,
			Peers:          s.unattachedPeers,
			Partition:      part,
			Partitions:     count,
		}
		if prepl != nil {
			r := prepl.Replicator(part)
			nopts.Publisher, nopts.Forwarder, nopts.Peers, nopts.Replicas = r, prepl.Forwarder(part), r.Status, r
			nopts.PeerRegions = peerRegions
		}
		opts.hook("node")
		n, err := region.NewNode(nopts)
		if err != nil {
			return nil, fmt.Errorf("server: region %s partition %d: %w", name, part, err)
		}
		byPart[part] = n
		list = append(list, n)
	}
	if err := writePartitionsFile(cfg.RegionDir(name), count); err != nil {
		for _, n := range list {
			n.Close()
		}
		return nil, fmt.Errorf("server: region %s: recording the partition count: %w", name, err)
	}
	parts, err := region.NewPartitions(name, nodeName, count, list)
	if err != nil {
		for _, n := range list {
			n.Close()
		}
		return nil, fmt.Errorf("server: region %s: %w", name, err)
	}
	s.parts = parts
	labelled.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "lattice_region_ready",
		Help: "1 while the region's storage is open and serving (GET /readyz answers 200), else 0.",
	}, func() float64 {
		if parts.Ready() {
			return 1
		}
		return 0
	}))
	owns := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "lattice_node_partitions",
		Help:        "Partitions this node of a partitioned region owns (the node label names it).",
		ConstLabels: prometheus.Labels{"node": nodeName},
	})
	owns.Set(float64(len(owned)))
	labelled.MustRegister(owns)
	if prepl != nil {
		if err := prepl.Start(ctx, byPart); err != nil {
			return nil, fmt.Errorf("server: region %s: start replication: %w", name, err)
		}
	}

	scheme := "http://"
	if cfg.APITLS.Cert != "" {
		scheme = "https://"
	}
	owners := make([]string, count)
	for p := range count {
		if o := cfg.Owner(name, p); o.Name != nodeName {
			owners[p] = scheme + o.DialAPI()
		}
	}
	part := &api.Partitioning{Partitions: count, Self: name + "/" + nodeName, Owner: func(p int) string { return owners[p] }}
	if err := s.serveAPI(parts, part, opts); err != nil {
		return nil, err
	}
	s.log.Info("region node serving", "api", s.URL(), "partitions", len(owned), "of", count,
		"data", cfg.RegionDir(name), "durability", string(cfg.Durability), "replication", prepl != nil)
	return s, nil
}

// Partitions returns a partitioned region's node's partitions (nil for a
// region of one partition: see Node).
func (s *Server) Partitions() *region.Partitions { return s.parts }

// NodeName returns the name of the node of its region the Server runs.
func (s *Server) NodeName() string {
	if s.nodeName != "" {
		return s.nodeName
	}
	return s.cfg.Nodes(s.name)[0].Name
}

// forwardClient returns the HTTP client a node of a partitioned region
// forwards requests with to the other nodes of its region. Over HTTPS it
// presents the region's API certificate (to an API that asks clients for
// one) and verifies the other nodes' against the system's roots, the CAs
// of api_tls.client_ca and the certificates of api_tls.cert (its leaf and
// what follows it), all as the API certificate's reload last read them
// (certs.ServerCert.ForwardTLS): a renewed certificate is presented and
// trusted from the next handshake on. With api_tls.client_ca, the
// certificate must allow client authentication, which a server-only one
// does not; the node refuses to start then.
func (s *security) forwardClient() (*http.Client, error) {
	dialer := &net.Dialer{Timeout: 2 * time.Second, KeepAlive: 30 * time.Second}
	tr := &http.Transport{
		DialContext:         dialer.DialContext,
		MaxIdleConnsPerHost: 64,
		IdleConnTimeout:     90 * time.Second,
		ForceAttemptHTTP2:   false,
	}
	if s.apiCert != nil {
		if s.apiCert.ClientAsked() && !s.apiCert.ClientUsable() {
			return nil, errors.New("forwarding client: api_tls.cert does not allow client authentication (extended key usage clientAuth), and with api_tls.client_ca the other nodes of the region ask for it when this node forwards a request to them")
		}
		s.apiCert.ForwardsWith()
		// Each owner's certificate is checked against the host it is
		// dialled at, an IP address included.
		tr.DialTLSContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
			host, _, err := net.SplitHostPort(addr)
			if err != nil {
				return nil, err
			}
			return (&tls.Dialer{NetDialer: dialer, Config: s.apiCert.ForwardTLS(host)}).DialContext(ctx, network, addr)
		}
	}
	return &http.Client{Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}, nil
}

// ownedOf returns the partitions node owns of a cluster of count.
func ownedOf(n config.NodeConfig, count int) []int {
	var out []int
	for p := range count {
		if n.Owns(p) {
			out = append(out, p)
		}
	}
	return slices.Clip(out)
}
