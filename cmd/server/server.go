// Package server is Lattice's composition root: it assembles one region
// process from its BuntDB store, its region.Node, its HTTP API, its
// certificates, its metrics registry and logger, and cross-region
// replication (sync/replication over QUIC, or a stand-in a test gives).
// It may import every package of the module but cmd/lattice and bench.
//
// `lattice serve` runs one Server; `lattice dev` and `lattice bench` run
// several in one process, so a Server keeps nothing global: each has its
// own prometheus.Registry (unless it is given a shared one; every metric
// carries a region label), a logger whose records name the region, and its
// own listener.
//
// Until replication is attached (Options.Replication), a region of a
// multi-region cluster serves everything local and answers a request that
// needs another region (a reservation, commit, release, negative
// adjustment or consistent read of a sku homed elsewhere, and a checkout
// of such a sku) with 503 home_unavailable.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/latticedb/lattice/api"
	"github.com/latticedb/lattice/api/console"
	"github.com/latticedb/lattice/region"
	"github.com/latticedb/lattice/region/config"
	"github.com/latticedb/lattice/region/store"
	"github.com/latticedb/lattice/sync/certs"
	"github.com/latticedb/lattice/sync/replication"
)

// DataFile is the name of a region's BuntDB file inside its directory
// (config.Config.RegionDir).
const DataFile = "data.db"

// DefaultShutdownTimeout bounds how long Close lets requests in flight
// finish before it closes their connections.
const DefaultShutdownTimeout = 15 * time.Second

// Options configure a Server. The zero value is usable.
type Options struct {
	// Listener, when set, is where the API is served instead of a new
	// listener on the region's api address; the Server owns it from Start
	// on and closes it. Tests pass a listener on 127.0.0.1:0.
	Listener net.Listener
	// Logger receives the region's records, each with region=NAME.
	// Defaults to slog.Default().
	Logger *slog.Logger
	// Registry receives the region's metrics (storage, ledger, HTTP,
	// replication), each labelled region=NAME, and is what GET /metrics
	// serves. When nil, the Server makes a registry of its own holding
	// also the Go runtime and process collectors. Several regions may
	// share one registry.
	Registry *prometheus.Registry
	// Clock is the node's clock (reservation expiry). Defaults to the
	// wall clock.
	Clock region.Clock
	// ExpiryInterval is how often the node expires held reservations in
	// the background; 0 means the node's default.
	ExpiryInterval time.Duration
	// RequestTimeout is the deadline of one API operation; 0 means
	// api.DefaultRequestTimeout.
	RequestTimeout time.Duration
	// ShutdownTimeout bounds the graceful part of Close; 0 means
	// DefaultShutdownTimeout.
	ShutdownTimeout time.Duration
	// ReloadInterval is how often the region looks for changed
	// certificate and token files to reload; 0 means
	// DefaultReloadInterval.
	ReloadInterval time.Duration
	// Replication, when set, attaches cross-region replication: it is
	// where the replication layer plugs in. Start loads the region's TLS
	// bundle from the config's tls_dir, calls Replication with a
	// ReplicationEnv before it makes the node, gives the node the
	// Replication as its Publisher and Forwarder and its Peers for
	// /v1/cluster, and calls its Start with the node before the API
	// serves. When nil, the region replicates nothing and forwards
	// nothing (see the package documentation).
	Replication NewReplication
	// ConsoleControls, when set, enables the console's development
	// controls (/console/dev/...): `lattice dev` only.
	ConsoleControls console.Controls
	// LoopbackOnly serves only requests addressed to a loopback host
	// (api.LoopbackOnly): `lattice dev`, which listens on 127.0.0.1
	// without tokens.
	LoopbackOnly bool
	// Node is the node of the region to run (config.NodeConfig.Name);
	// "" for a region's only node.
	Node string
	// PartitionedReplication attaches replication to a node of a
	// partitioned region (see startPartitioned), as Replication does to
	// a region of one partition. QUICPartitioned builds it.
	PartitionedReplication NewPartitionedReplication

	// For tests: the store's progress reports (store.Options.ProgressBytes
	// and ProgressEvery; 0: the store's defaults), and a function called
	// with "store" before each store is opened and with "node" before each
	// node is made on it.
	progressBytes int64
	progressEvery time.Duration
	openHook      func(stage string)
}

// hook calls opts.openHook, if any.
func (o *Options) hook(stage string) {
	if o.openHook != nil {
		o.openHook(stage)
	}
}

// NewReplication builds the replication of one region from env. It must
// not start any I/O that needs the node: that is Replication.Start's job.
type NewReplication func(env ReplicationEnv) (Replication, error)

// ReplicationEnv is what a region's replication is built from.
type ReplicationEnv = replication.Env

// QUIC returns the NewReplication of replication over QUIC with mutual TLS
// (sync/replication), tuned by opts.
func QUIC(opts replication.AttachOptions) NewReplication {
	return func(env ReplicationEnv) (Replication, error) { return replication.NewQUIC(opts, env), nil }
}

var _ Replication = (*replication.QUICReplication)(nil)

// Replication is cross-region replication attached to one region: it
// sends the region's durable deltas to its peers, applies theirs, and
// carries requests to a sku's home region.
//
// The Server calls, in this order: the NewReplication function; Publish,
// possibly, from the node's background work before Start; Start once; Close
// once, after the API has stopped and before the node closes. Publish and
// Forward may be called concurrently and must be harmless (dropped or
// refused) after Close.
type Replication interface {
	// Publish receives every local delta once it is durable (persist
	// before send). It must not block.
	region.Publisher
	// Forward carries a home request to another region; an unreachable
	// home is a *region.Error with code home_unavailable.
	region.Forwarder
	// Peers returns each peer's state (connected, replication lag,
	// pending deltas, version vector) for GET /v1/cluster.
	Peers() []region.PeerStatus
	// Start begins replicating node: it listens on the peer address,
	// dials the peers, applies received deltas with node.ApplyRemote and
	// answers forwarded home requests with node.ServeHome. ctx bounds
	// only the start itself.
	Start(ctx context.Context, node *region.Node) error
	// Close stops replication and releases its sockets.
	Close() error
}

// Server is one running region: store, node, API and, when attached,
// replication.
type Server struct {
	cfg  *config.Config
	name string
	log  *slog.Logger
	reg  *prometheus.Registry
	// metrics records what the region registered with reg, so that Close
	// unregisters it and a shared registry can hold the region again.
	metrics *recorder
	store   *store.Store
	node    *region.Node
	repl    Replication
	// parts, pstores and prepl are a partitioned region's node's
	// partitions, their stores and its replication (node, store and
	// repl are then nil).
	parts   *region.Partitions
	pstores []*store.Store
	// stores counts the stores this server added to the process's Ps
	// (procs).
	stores   int
	prepl    PartitionedReplication
	nodeName string
	sec      *security
	http     *http.Server
	ln       net.Listener
	// handler is what the HTTP server serves: api.Starting while the
	// stores open, then the API.
	handler  atomic.Pointer[http.Handler]
	active   sync.WaitGroup // requests being served
	inflight atomic.Int64   // how many

	shutdownTimeout time.Duration

	done     chan struct{} // closed when the HTTP server has stopped
	serveMu  sync.Mutex
	serveErr error

	closeOnce sync.Once
	// cancelRequests cancels the context every request's descends from
	// (set with the HTTP server; Close calls it at the shutdown deadline).
	cancelRequests context.CancelFunc
	closeErr       error
}

// Start opens region name of the cluster cfg describes and serves its
// API: it listens on the region's api address or opts.Listener, where it
// answers at once (GET /healthz 200, everything else 503 starting, see
// api.Starting), opens the store at cfg.RegionDir(name)/data.db with
// cfg.Durability, attaches replication when opts.Replication is set,
// makes the node (a sku's home is cfg.Home) and then serves the API there.
// Opening a large store takes a while (docs/operations.md); the store logs
// its progress meanwhile. ctx bounds the start only; stop
// the Server with Close. The Server keeps cfg, which must not change
// while it runs. If Start fails, it has closed whatever it opened,
// opts.Listener included.
func Start(ctx context.Context, cfg *config.Config, name string, opts Options) (_ *Server, err error) {
	defer func() {
		if err != nil && opts.Listener != nil {
			opts.Listener.Close() // the Server owned it
		}
	}()
	if cfg == nil {
		return nil, errors.New("server: no config")
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	rc, ok := cfg.Region(name)
	if !ok {
		return nil, fmt.Errorf("server: region %q is not in the config (regions: %v)", name, cfg.RegionNames())
	}
	if opts.ExpiryInterval < 0 || opts.RequestTimeout < 0 || opts.ShutdownTimeout < 0 || opts.ReloadInterval < 0 {
		return nil, errors.New("server: negative ExpiryInterval, RequestTimeout, ShutdownTimeout or ReloadInterval")
	}
	if opts.ReloadInterval == 0 {
		opts.ReloadInterval = DefaultReloadInterval
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.ShutdownTimeout == 0 {
		opts.ShutdownTimeout = DefaultShutdownTimeout
	}
	gc := applyGC(cfg.GC, cgroupMemoryMax)
	opts.Logger.Debug("garbage collector", "region", name, "percent", gc.percent, "from_gogc", gc.percentEnv, "headroom_bytes", cfg.GC.EffectiveHeadroom(),
		"memory_limit_bytes", gc.limit, "memory_limit_from", gc.limitSource)
	s := &Server{cfg: cfg, name: name, log: opts.Logger.With("region", name), reg: opts.Registry,
		ln: opts.Listener, shutdownTimeout: opts.ShutdownTimeout, done: make(chan struct{})}
	if s.reg == nil {
		s.reg = prometheus.NewRegistry()
		s.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	}
	s.metrics = &recorder{r: s.reg}
	labelled := prometheus.WrapRegistererWith(prometheus.Labels{"region": name}, s.metrics)

	// Undo what was opened if a later step fails.
	defer func() {
		if err != nil {
			if s.http != nil {
				s.http.Close()
				<-s.done
			}
			s.release()
		}
	}()

	labelled.MustRegister(buildInfoGauge(Build()))
	if partitioned(cfg, name) {
		return s.startPartitioned(ctx, opts, labelled)
	}
	if opts.Node != "" && opts.Node != cfg.Nodes(name)[0].Name {
		return nil, fmt.Errorf("server: region %s has no node %q (its only node is %s)", name, opts.Node, cfg.Nodes(name)[0].Name)
	}
	if err := checkLayout(cfg.RegionDir(name), false, 1); err != nil {
		return nil, fmt.Errorf("server: region %s: %w", name, err)
	}
	metrics := region.NewMetrics(labelled)
	path := filepath.Join(cfg.RegionDir(name), DataFile)
	var peerBundle *certs.Bundle
	if opts.Replication != nil {
		if peerBundle, err = certs.Load(cfg.TLSDir, name); err != nil {
			return nil, fmt.Errorf("server: region %s: %w", name, err)
		}
	}
	if err := s.listen(ctx, rc.API, peerBundle, labelled, opts); err != nil {
		return nil, err
	}
	opts.hook("store")
	s.store, err = region.OpenStore(path, store.Options{
		Durability:    cfg.Durability,
		Shared:        len(cfg.Regions) > 1,
		BootID:        store.BootID(),
		Logger:        s.log,
		Metrics:       metrics.Store(),
		ProgressBytes: opts.progressBytes,
		ProgressEvery: opts.progressEvery,
	})
	if err != nil {
		return nil, fmt.Errorf("server: region %s: %w", name, err)
	}
	s.openedStore()

	nopts := region.Options{
		Name:           name,
		Home:           cfg.Home,
		HomesID:        cfg.HomesID(),
		CatchUpWait:    region.DefaultCatchUpWait,
		StartGate:      region.DefaultStartGate,
		Escrow:         cfg.Escrow,
		IsRegion:       func(r string) bool { _, ok := cfg.Region(r); return ok },
		Store:          s.store,
		Clock:          opts.Clock,
		Logger:         s.log,
		Metrics:        metrics,
		ExpiryInterval: opts.ExpiryInterval,
		Peers:          s.unattachedPeers,
	}
	if opts.Replication != nil {
		s.repl, err = opts.Replication(ReplicationEnv{Config: cfg, Region: name, PeerAddr: rc.Peer,
			TLS: peerBundle, Logger: s.log, Registerer: labelled})
		if err != nil {
			return nil, fmt.Errorf("server: region %s: replication: %w", name, err)
		}
		nopts.Publisher, nopts.Forwarder, nopts.Peers = s.repl, s.repl, s.repl.Peers
		// Write concern is an optional feature of a replication.
		if w, ok := s.repl.(region.ReplicaWaiter); ok {
			nopts.Replicas = w
		}
		for _, p := range cfg.Peers(name) {
			nopts.PeerRegions = append(nopts.PeerRegions, p.Name)
		}
	} else if peers := cfg.Peers(name); len(peers) > 0 {
		s.log.Warn("no replication attached: this region replicates nothing, and requests that need another home region answer 503 home_unavailable",
			"peers", len(peers))
	}
	opts.hook("node")
	s.node, err = region.NewNode(nopts)
	if err != nil {
		return nil, fmt.Errorf("server: region %s: %w", name, err)
	}
	node := s.node
	labelled.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "lattice_region_ready",
		Help: "1 while the region's storage is open and serving (GET /readyz answers 200), else 0.",
	}, func() float64 {
		if node.Ready() {
			return 1
		}
		return 0
	}))
	if s.repl != nil {
		if err := s.repl.Start(ctx, s.node); err != nil {
			return nil, fmt.Errorf("server: region %s: start replication: %w", name, err)
		}
	}

	if err := s.serveAPI(s.node, nil, opts); err != nil {
		return nil, err
	}
	s.log.Info("region serving", "api", s.URL(), "tokens", s.sec.tokens != nil, "data", path,
		"durability", string(cfg.Durability), "replication", s.repl != nil)
	return s, nil
}

// listen listens on addr (or opts.Listener) and serves api.Starting
// there until serveAPI puts the API in its place.
func (s *Server) listen(ctx context.Context, addr string, peerBundle *certs.Bundle, labelled prometheus.Registerer, opts Options) (err error) {
	cfg, name := s.cfg, s.name
	if s.sec, err = newSecurity(cfg, name, peerBundle, labelled, s.log); err != nil {
		return fmt.Errorf("server: region %s: %w", name, err)
	}
	if s.ln == nil {
		var lc net.ListenConfig
		if s.ln, err = lc.Listen(ctx, "tcp", addr); err != nil {
			return fmt.Errorf("server: region %s: %w", name, err)
		}
	}
	s.ln = s.sec.wrapListener(s.ln)
	starting := api.Starting(name, func() string {
		return "region " + name + " is opening its store; it serves once the store is open"
	}, s.sec.tokens, cfg.APIAuth.ProtectProbes)
	s.handler.Store(&starting)
	var root http.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		(*s.handler.Load()).ServeHTTP(w, r)
	})
	if opts.LoopbackOnly {
		root = api.LoopbackOnly(root)
	}
	s.http = api.NewServer(s.ln.Addr().String(), s.track(root))
	s.http.ErrorLog = slog.NewLogLogger(s.log.Handler(), slog.LevelWarn)
	// Requests' contexts descend from one Close cancels once the shutdown
	// timeout has passed: closing a connection cancels its request only
	// through net/http's background read, which never starts while a
	// declared body is unread, so a request waiting (for a causal token, a
	// write concern) would otherwise hold Close up for its whole wait.
	var base context.Context
	base, s.cancelRequests = context.WithCancel(context.Background())
	s.http.BaseContext = func(net.Listener) context.Context { return base }
	go s.serve()
	s.sec.start(opts.ReloadInterval)
	s.log.Info("listening; the API answers 503 starting until the region's store is open", "api", s.URL())
	return nil
}

// serveAPI serves svc's API, with the console in front of it, where
// listen listens. part, when set, routes the requests of a partitioned
// region's node.
func (s *Server) serveAPI(svc api.Service, part *api.Partitioning, opts Options) (err error) {
	cfg, name := s.cfg, s.name
	if part != nil {
		if part.Client, err = s.sec.forwardClient(); err != nil {
			return fmt.Errorf("server: region %s: %w", name, err)
		}
	}
	h := api.New(svc, api.Options{Logger: s.log, Registerer: s.metrics, Gatherer: s.reg, RequestTimeout: opts.RequestTimeout,
		Tokens: s.sec.tokens, ProtectProbes: cfg.APIAuth.ProtectProbes, AccessLog: cfg.AccessLog, Partitioning: part})
	// The console (/console) is served in front of the API.
	ch, err := console.New(console.Options{Region: name, Config: cfg, API: h, Gatherer: s.reg, Tokens: s.sec.tokens,
		Controls: opts.ConsoleControls, Logger: s.log})
	if err != nil {
		return fmt.Errorf("server: region %s: %w", name, err)
	}
	var served http.Handler = ch
	s.handler.Store(&served)
	return nil
}

// track counts the requests being served, so that Close can wait for the
// last of them before it closes the store under them.
func (s *Server) track(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.active.Add(1)
		s.inflight.Add(1)
		defer func() {
			s.inflight.Add(-1)
			s.active.Done()
		}()
		h.ServeHTTP(w, r)
	})
}

func (s *Server) serve() {
	defer close(s.done)
	err := s.http.Serve(s.ln)
	if errors.Is(err, http.ErrServerClosed) {
		return
	}
	s.log.Error("API server stopped", "err", err)
	s.serveMu.Lock()
	s.serveErr = fmt.Errorf("server: region %s: serve: %w", s.name, err)
	s.serveMu.Unlock()
}

// unattachedPeers lists the configured peers in /v1/cluster while no
// replication is attached: known from the config, never connected.
func (s *Server) unattachedPeers() []region.PeerStatus {
	peers := s.cfg.Peers(s.name)
	out := make([]region.PeerStatus, len(peers))
	for i, p := range peers {
		out[i] = region.UnattachedPeer(p.Name)
	}
	return out
}

// Region returns the region's name.
func (s *Server) Region() string { return s.name }

// Addr returns the address the API listens on.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// URL returns the base URL of the API, for example http://127.0.0.1:7101,
// or https://… when the config gives the API a certificate (api_tls).
func (s *Server) URL() string {
	if s.sec != nil && s.sec.apiCert != nil {
		return "https://" + s.Addr().String()
	}
	return "http://" + s.Addr().String()
}

// Node returns the region's node.
func (s *Server) Node() *region.Node { return s.node }

// Registry returns the registry the region's /metrics serves.
func (s *Server) Registry() *prometheus.Registry { return s.reg }

// Done is closed when the API server has stopped: after Close, or when
// serving failed (see Err).
func (s *Server) Done() <-chan struct{} { return s.done }

// Err returns why the API server stopped on its own, or nil.
func (s *Server) Err() error {
	s.serveMu.Lock()
	defer s.serveMu.Unlock()
	return s.serveErr
}

// Close stops the region gracefully: the API stops accepting connections
// and lets requests in flight finish (for at most the shutdown timeout,
// after which their connections are closed), then replication, the node
// and the store close. Every acknowledged write is already durable. Close
// is safe to call more than once; later calls return the first's result.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), s.shutdownTimeout)
		defer cancel()
		var errs []error
		if err := s.http.Shutdown(ctx); err != nil {
			s.log.Warn("requests still running at the shutdown deadline; closing their connections", "err", err)
			s.cancelRequests()
			if err := s.http.Close(); err != nil {
				errs = append(errs, fmt.Errorf("server: region %s: %w", s.name, err))
			}
		}
		<-s.done
		s.active.Wait()
		errs = append(errs, s.release())
		s.closeErr = errors.Join(errs...)
		s.log.Info("region stopped")
	})
	return s.closeErr
}

// openedStore counts a store the server opened among the process's
// (procs) and logs the Ps the process now runs.
func (s *Server) openedStore() {
	s.stores++
	s.log.Debug("processors", "gomaxprocs", procs.add(1), "cpus", runtime.NumCPU())
}

// release closes replication, the node and the store, whichever are open.
func (s *Server) release() error {
	var errs []error
	if s.sec != nil {
		s.sec.close()
	}
	if s.repl != nil {
		if err := s.repl.Close(); err != nil {
			errs = append(errs, fmt.Errorf("server: region %s: close replication: %w", s.name, err))
		}
	}
	if s.prepl != nil {
		if err := s.prepl.Close(); err != nil {
			errs = append(errs, fmt.Errorf("server: region %s: close replication: %w", s.name, err))
		}
	}
	if s.parts != nil {
		s.parts.Close()
	}
	for _, st := range s.pstores {
		if err := st.Close(); err != nil {
			errs = append(errs, fmt.Errorf("server: region %s: close store: %w", s.name, err))
		}
	}
	if s.node != nil {
		s.node.Close()
	}
	if s.store != nil {
		if err := s.store.Close(); err != nil {
			errs = append(errs, fmt.Errorf("server: region %s: close store: %w", s.name, err))
		}
	}
	if s.stores > 0 {
		procs.add(-s.stores)
		s.stores = 0
	}
	if s.metrics != nil {
		s.metrics.unregisterAll()
	}
	if s.http == nil && s.ln != nil {
		s.ln.Close() // Start failed after it made the listener
	}
	return errors.Join(errs...)
}

// recorder is a Registerer that remembers what it registered.
type recorder struct {
	r  prometheus.Registerer
	mu sync.Mutex
	cs []prometheus.Collector
}

func (r *recorder) Register(c prometheus.Collector) error {
	if err := r.r.Register(c); err != nil {
		return err
	}
	r.mu.Lock()
	r.cs = append(r.cs, c)
	r.mu.Unlock()
	return nil
}

func (r *recorder) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		if err := r.Register(c); err != nil {
			panic(err)
		}
	}
}

func (r *recorder) Unregister(c prometheus.Collector) bool { return r.r.Unregister(c) }

func (r *recorder) unregisterAll() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, c := range r.cs {
		r.r.Unregister(c)
	}
	r.cs = nil
}
