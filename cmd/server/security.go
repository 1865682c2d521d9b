package server

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/latticedb/lattice/api"
	"github.com/latticedb/lattice/region/config"
	"github.com/latticedb/lattice/sync/certs"
)

// DefaultReloadInterval is how often a region looks at its certificate
// and token files (size and modification time) and reloads the ones that
// changed.
const DefaultReloadInterval = 5 * time.Second

// security is what a region serves its API and peers with: the REST API's
// certificate and bearer tokens, the peer bundle, the expiry metric, and
// the loop that reloads their files when they change.
type security struct {
	log     *slog.Logger
	apiCert *certs.ServerCert // nil: plain HTTP
	tokens  *api.Tokens       // nil: no token needed
	peer    *certs.Bundle     // nil: no replication
	expiry  *prometheus.GaugeVec
	watched []*watched

	stop chan struct{}
	done sync.WaitGroup
}

// watched is a set of files reloaded together.
type watched struct {
	what   string
	files  []string
	stamps []fileStamp
	reload func() error
}

// fileStamp is what tells a file changed: its size, modification time and
// identity (a Kubernetes Secret update swaps a symlink to new files).
type fileStamp struct {
	size  int64
	mtime time.Time
	fi    os.FileInfo
	err   bool
}

func stampOf(path string) fileStamp {
	fi, err := os.Stat(path)
	if err != nil {
		return fileStamp{err: true}
	}
	return fileStamp{size: fi.Size(), mtime: fi.ModTime(), fi: fi}
}

func (a fileStamp) same(b fileStamp) bool {
	if a.err || b.err {
		return a.err == b.err
	}
	return a.size == b.size && a.mtime.Equal(b.mtime) && os.SameFile(a.fi, b.fi)
}

// newSecurity loads region name's API certificate and token files, as cfg
// names them, and registers lattice_tls_certificate_expiry_seconds with
// reg. peer is the region's peer bundle, or nil.
func newSecurity(cfg *config.Config, name string, peer *certs.Bundle, reg prometheus.Registerer, log *slog.Logger) (*security, error) {
	s := &security{log: log, peer: peer, stop: make(chan struct{})}
	if cfg.APITLS.Enabled() {
		certFile, keyFile, caFile := cfg.APITLSFiles(name)
		c, err := certs.LoadServerCert(certFile, keyFile, caFile)
		if err != nil {
			return nil, fmt.Errorf("api_tls: %w", err)
		}
		s.apiCert = c
		s.watch("api certificate", c.Files(), c.Reload)
	}
	if a := cfg.APIAuth; a.Enabled() {
		s.tokens = api.NewTokens()
		load := func() error { return s.tokens.Load(a.ReadTokens, a.WriteTokens) }
		if err := load(); err != nil {
			return nil, fmt.Errorf("api_auth: %w", err)
		}
		var files []string
		for _, f := range []string{a.ReadTokens, a.WriteTokens} {
			if f != "" {
				files = append(files, f)
			}
		}
		s.watch("api tokens", files, load)
	}
	if peer != nil {
		s.watch("peer certificate", peer.Files(), peer.Reload)
	}
	s.expiry = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "lattice_tls_certificate_expiry_seconds",
		Help: "When a certificate the region uses expires (its NotAfter), in Unix seconds: cert=api (the REST API's), peer (the region's own, for replication), ca (the cluster CA).",
	}, []string{"cert"})
	if err := reg.Register(s.expiry); err != nil {
		return nil, err
	}
	s.setExpiry()
	return s, nil
}

func (s *security) watch(what string, files []string, reload func() error) {
	w := &watched{what: what, files: files, reload: reload}
	for _, f := range files {
		w.stamps = append(w.stamps, stampOf(f))
	}
	s.watched = append(s.watched, w)
}

// setExpiry sets the expiry gauge from what is loaded now.
func (s *security) setExpiry() {
	if s.apiCert != nil {
		c, _ := s.apiCert.Expiry()
		s.expiry.WithLabelValues("api").Set(float64(c.Unix()))
	}
	if s.peer != nil {
		c, ca := s.peer.Expiry()
		s.expiry.WithLabelValues("peer").Set(float64(c.Unix()))
		s.expiry.WithLabelValues("ca").Set(float64(ca.Unix()))
	}
}

// wrapListener returns ln serving TLS when the API has a certificate.
func (s *security) wrapListener(ln net.Listener) net.Listener {
	if s.apiCert == nil {
		return ln
	}
	return tls.NewListener(ln, s.apiCert.TLSConfig())
}

// start runs the reload loop every interval until close.
func (s *security) start(interval time.Duration) {
	if len(s.watched) == 0 {
		return
	}
	s.done.Add(1)
	go func() {
		defer s.done.Done()
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-s.stop:
				return
			case <-t.C:
				s.check()
			}
		}
	}()
}

// check reloads every set of files one of which changed since it was
// last looked at. A reload that fails keeps what was loaded and is
// logged; it is tried again when a file changes again (a certificate
// and its key are seldom replaced at the same instant).
func (s *security) check() {
	changed := false
	for _, w := range s.watched {
		diff := false
		for i, f := range w.files {
			st := stampOf(f)
			if !st.same(w.stamps[i]) {
				w.stamps[i], diff = st, true
			}
		}
		if !diff {
			continue
		}
		if err := w.reload(); err != nil {
			s.log.Error("reload failed; keeping what was loaded", "what", w.what, "err", err)
			continue
		}
		s.log.Info("reloaded", "what", w.what, "files", w.files)
		changed = true
	}
	if changed {
		s.setExpiry()
	}
}

func (s *security) close() {
	select {
	case <-s.stop:
	default:
		close(s.stop)
	}
	s.done.Wait()
}
