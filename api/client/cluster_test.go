package client_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/latticedb/lattice/api/client"
	"github.com/latticedb/lattice/cmd/server"
	"github.com/latticedb/lattice/region/config"
	"github.com/latticedb/lattice/region/regiontest"
	"github.com/latticedb/lattice/sync/certs"
	"github.com/latticedb/lattice/sync/replication"
)

// cluster is three real regions in this process, replicating over QUIC
// on 127.0.0.1 (through the emulated WAN when given latencies).
type cluster struct {
	t       testing.TB
	cfg     *config.Config
	mu      sync.Mutex
	servers map[string]*server.Server
}

var regionNames = []string{"us-east", "eu-west", "ap-south"}

func newCluster(t testing.TB, latencyMS map[string]int) *cluster {
	t.Helper()
	dir := t.TempDir()
	cfg := config.DefaultConfig()
	cfg.DataDir = filepath.Join(dir, "data")
	cfg.TLSDir = filepath.Join(dir, "certs")
	cfg.Emulate.LatencyMS = latencyMS
	// The peer ports are all taken before any is let go, so that no two
	// regions are given the same one.
	var held []net.PacketConn
	for i := range cfg.Regions {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, pc)
		cfg.Regions[i].Peer = pc.LocalAddr().String()
		cfg.Regions[i].API = fmt.Sprintf("127.0.0.1:%d", 1+i) // unused: each region gets a listener
	}
	for _, pc := range held {
		pc.Close()
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	if err := certs.Generate(cfg.TLSDir, cfg.Cluster, cfg.RegionNames()); err != nil {
		t.Fatal(err)
	}
	c := &cluster{t: t, cfg: cfg, servers: map[string]*server.Server{}}
	for _, r := range regionNames {
		c.start(r)
	}
	t.Cleanup(func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		for _, s := range c.servers {
			s.Close()
		}
	})
	for _, r := range regionNames {
		c.waitConnected(r)
	}
	return c
}

func (c *cluster) start(name string) {
	c.t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		c.t.Fatal(err)
	}
	opts := replication.AttachOptions{WANSeed: 7, WAN: c.cfg.Emulate.LatencyMS != nil}
	s, err := server.Start(context.Background(), c.cfg, name, server.Options{Listener: ln, Logger: slog.New(slog.DiscardHandler), Replication: server.QUIC(opts)})
	if err != nil {
		c.t.Fatal(err)
	}
	c.mu.Lock()
	c.servers[name] = s
	c.mu.Unlock()
}

func (c *cluster) stop(name string) {
	c.t.Helper()
	c.mu.Lock()
	s := c.servers[name]
	delete(c.servers, name)
	c.mu.Unlock()
	if err := s.Close(); err != nil {
		c.t.Fatal(err)
	}
}

// url is the base URL of a running region.
func (c *cluster) url(name string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.servers[name].URL()
}

// client returns a client of the given regions, in that order.
func (c *cluster) client(opts client.Options, names ...string) *client.Client {
	c.t.Helper()
	var urls []string
	for _, n := range names {
		urls = append(urls, c.url(n))
	}
	cl, err := client.New(urls, opts)
	if err != nil {
		c.t.Fatal(err)
	}
	return cl
}

func (c *cluster) waitConnected(name string) {
	c.t.Helper()
	cl := c.client(client.Options{MaxAttempts: 1}, name)
	regiontest.WaitFor(c.t, 20*time.Second, name+" connected to its peers", func() bool {
		st, err := cl.Cluster(context.Background())
		if err != nil || len(st.Peers) != len(regionNames)-1 {
			return false
		}
		for _, p := range st.Peers {
			if !p.Connected {
				return false
			}
		}
		return true
	})
}

// skuAt returns a sku (prefix followed by a number) whose home is home.
func (c *cluster) skuAt(prefix, home string) string {
	for i := 0; ; i++ {
		if sku := prefix + strconv.Itoa(i); c.cfg.Home(sku) == home {
			return sku
		}
	}
}

// deadURL is the base URL of a closed port.
func deadURL(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := "http://" + ln.Addr().String()
	ln.Close()
	return u
}

// recorder is a RoundTripper that records the requests it sends and the
// statuses it gets.
type recorder struct {
	mu   sync.Mutex
	reqs []*http.Request
	resp []int
	// on503, if set, is called (once per answer) on every 503.
	on503 func(*http.Response)
}

func (r *recorder) RoundTrip(req *http.Request) (*http.Response, error) {
	r.mu.Lock()
	r.reqs = append(r.reqs, req)
	r.mu.Unlock()
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	r.resp = append(r.resp, resp.StatusCode)
	f := r.on503
	r.mu.Unlock()
	if resp.StatusCode == http.StatusServiceUnavailable && f != nil {
		f(resp)
	}
	return resp, nil
}

func (r *recorder) reset() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.reqs, r.resp = nil, nil
}

func (r *recorder) requests() []*http.Request {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*http.Request(nil), r.reqs...)
}
