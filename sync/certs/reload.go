package certs

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"
)

// material is one reading of a bundle's files; a Bundle swaps it whole.
type material struct {
	ca   *x509.Certificate
	pool *x509.CertPool
	cert *tls.Certificate
}

// current returns the bundle's latest material: what Load or the last
// successful Reload read.
func (b *Bundle) current() *material {
	if m := b.cur.Load(); m != nil {
		return m
	}
	return &material{ca: b.CA, pool: b.Pool, cert: &b.Cert}
}

// Files returns the files a region's bundle is read from: ca.crt,
// REGION.crt and REGION.key in the directory Load was given. The CA key
// is not one of them: a region never needs it.
func (b *Bundle) Files() []string {
	return []string{
		filepath.Join(b.dir, CACertFile),
		filepath.Join(b.dir, CertFile(b.Region)),
		filepath.Join(b.dir, KeyFile(b.Region)),
	}
}

// Reload reads the bundle's files again, checks them as Load does, and
// makes them what every later handshake of ServerTLS and ClientTLS uses,
// without a restart. On an error the bundle keeps what it had. The
// exported fields keep what Load read.
func (b *Bundle) Reload() error {
	m, err := loadMaterial(b.dir, b.Region)
	if err != nil {
		return err
	}
	b.cur.Store(m)
	return nil
}

// Expiry returns when the region's certificate and the cluster CA the
// bundle uses now expire (their NotAfter).
func (b *Bundle) Expiry() (cert, ca time.Time) {
	m := b.current()
	return m.cert.Leaf.NotAfter, m.ca.NotAfter
}

// ServerCert is the certificate a region's REST API presents over HTTPS,
// and the CAs it checks client certificates against when it asks for
// them. Reload reads the files again; every later handshake uses what it
// read. Its methods are safe for concurrent use.
type ServerCert struct {
	certFile, keyFile, clientCAFile string
	cur                             atomic.Pointer[serverMaterial]
	// forwards is set once the certificate is also presented as a
	// client's (ForwardsWith): Reload then refuses one that may not be.
	forwards atomic.Bool
}

type serverMaterial struct {
	cert       *tls.Certificate
	clientCAs  *x509.CertPool
	caNotAfter time.Time // the earliest NotAfter of the client CAs
	// peers is what ForwardTLS verifies the other nodes' certificates
	// against: the system's roots, the client CAs and the certificates of
	// the certificate file (the leaf and what follows it).
	peers *x509.CertPool
}

// LoadServerCert reads a PEM certificate chain (leaf first) and its key,
// and, when clientCAFile is not "", a PEM file of CA certificates that
// client certificates must chain to.
func LoadServerCert(certFile, keyFile, clientCAFile string) (*ServerCert, error) {
	if certFile == "" || keyFile == "" {
		return nil, errors.New("certs: a server certificate needs a certificate file and a key file")
	}
	s := &ServerCert{certFile: certFile, keyFile: keyFile, clientCAFile: clientCAFile}
	if err := s.Reload(); err != nil {
		return nil, err
	}
	return s, nil
}

// Files returns the files the certificate is read from.
func (s *ServerCert) Files() []string {
	fs := []string{s.certFile, s.keyFile}
	if s.clientCAFile != "" {
		fs = append(fs, s.clientCAFile)
	}
	return fs
}

// Reload reads the files again and, if they are valid (a certificate and
// the key that matches it, CA certificates if asked), serves them from
// the next handshake on. On an error nothing changes.
func (s *ServerCert) Reload() error {
	pair, err := tls.LoadX509KeyPair(s.certFile, s.keyFile)
	if err != nil {
		return fmt.Errorf("certs: load %s and %s: %w", s.certFile, s.keyFile, err)
	}
	if pair.Leaf == nil {
		if pair.Leaf, err = x509.ParseCertificate(pair.Certificate[0]); err != nil {
			return fmt.Errorf("certs: %s: %w", s.certFile, err)
		}
	}
	if s.forwards.Load() && s.clientCAFile != "" && !clientUsable(pair.Leaf) {
		return fmt.Errorf("certs: %s does not allow client authentication (extended key usage clientAuth), which the other nodes of the region ask for when a node forwards to them (api_tls.client_ca); keeping the certificate loaded before", s.certFile)
	}
	m := &serverMaterial{cert: &pair}
	if m.peers, err = x509.SystemCertPool(); err != nil || m.peers == nil {
		m.peers = x509.NewCertPool()
	}
	for _, der := range pair.Certificate {
		if c, err := x509.ParseCertificate(der); err == nil {
			m.peers.AddCert(c)
		}
	}
	if s.clientCAFile != "" {
		var cas []*x509.Certificate
		if m.clientCAs, cas, m.caNotAfter, err = readCAPool(s.clientCAFile); err != nil {
			return err
		}
		for _, c := range cas {
			m.peers.AddCert(c)
		}
	}
	s.cur.Store(m)
	return nil
}

// ForwardTLS returns the client configuration a node forwards requests to
// the other nodes of its region with: it presents the certificate Reload
// last read (to an API that asks clients for one), and verifies theirs
// against the system's roots, the client CAs and the certificates of the
// certificate file as Reload last read them, so that a renewed
// certificate is presented and trusted from the next handshake on, as
// the API serves it. host is the name or IP address the node is dialled
// at, which its certificate must name: the handshake's own ServerName is
// empty for an IP address (no SNI is sent), and verifying against it
// would skip the name check, so that any certificate the pool trusts
// would pass for the node and receive the client's bearer token.
func (s *ServerCert) ForwardTLS(host string) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		NextProtos: []string{"http/1.1"},
		ServerName: host,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return s.cur.Load().cert, nil
		},
		// Verified by VerifyConnection, against the pool of the moment.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("certs: the node presented no certificate")
			}
			if host == "" {
				return errors.New("certs: no name to check the node's certificate against")
			}
			opts := x509.VerifyOptions{Roots: s.cur.Load().peers, DNSName: host, Intermediates: x509.NewCertPool()}
			for _, c := range cs.PeerCertificates[1:] {
				opts.Intermediates.AddCert(c)
			}
			_, err := cs.PeerCertificates[0].Verify(opts)
			return err
		},
	}
}

// ClientAsked reports whether the API asks clients for a certificate
// (a client CA file is set).
func (s *ServerCert) ClientAsked() bool { return s.clientCAFile != "" }

// ClientUsable reports whether the certificate Reload last read may be
// presented as a client certificate: it names no extended key usage, or
// client authentication (or any) among them.
func (s *ServerCert) ClientUsable() bool { return clientUsable(s.cur.Load().cert.Leaf) }

// ForwardsWith records that the certificate is presented as a client
// certificate too (a node forwarding to the other nodes of its region):
// from then on, while client certificates are asked for, Reload refuses
// a certificate ClientUsable would not accept.
func (s *ServerCert) ForwardsWith() { s.forwards.Store(true) }

func clientUsable(leaf *x509.Certificate) bool {
	if len(leaf.ExtKeyUsage) == 0 {
		return true
	}
	for _, u := range leaf.ExtKeyUsage {
		if u == x509.ExtKeyUsageClientAuth || u == x509.ExtKeyUsageAny {
			return true
		}
	}
	return false
}

// readCAPool reads every certificate of a PEM file into a pool; each must
// be a CA. It returns them too, and the earliest NotAfter among them.
func readCAPool(path string) (*x509.CertPool, []*x509.Certificate, time.Time, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, time.Time{}, fmt.Errorf("certs: %w", err)
	}
	pool := x509.NewCertPool()
	var cas []*x509.Certificate
	var first time.Time
	n := 0
	for rest := data; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, nil, time.Time{}, fmt.Errorf("certs: %s: %w", path, err)
		}
		if !c.IsCA {
			return nil, nil, time.Time{}, fmt.Errorf("certs: %s: certificate %q is not a CA", path, c.Subject.CommonName)
		}
		pool.AddCert(c)
		cas = append(cas, c)
		if n == 0 || c.NotAfter.Before(first) {
			first = c.NotAfter
		}
		n++
	}
	if n == 0 {
		return nil, nil, time.Time{}, fmt.Errorf("certs: %s holds no CERTIFICATE PEM block", path)
	}
	return pool, cas, first, nil
}

// Expiry returns when the served certificate expires and, when client
// certificates are asked for, the earliest expiry of the client CAs
// (else the zero time).
func (s *ServerCert) Expiry() (cert, clientCA time.Time) {
	m := s.cur.Load()
	return m.cert.Leaf.NotAfter, m.caNotAfter
}

// TLSConfig returns the server configuration of the REST API: TLS 1.2 or
// later, HTTP/1.1, the certificate Reload last read, and, with a client
// CA file, a client certificate from one of its CAs required and verified
// on every connection.
func (s *ServerCert) TLSConfig() *tls.Config {
	c := &tls.Config{
		MinVersion: tls.VersionTLS12,
		NextProtos: []string{"http/1.1"},
	}
	if s.clientCAFile == "" {
		c.GetCertificate = func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return s.cur.Load().cert, nil }
		return c
	}
	c.ClientAuth = tls.RequireAndVerifyClientCert
	c.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) {
		m := s.cur.Load()
		cc := c.Clone()
		cc.GetConfigForClient = nil
		cc.Certificates = []tls.Certificate{*m.cert}
		cc.ClientCAs = m.clientCAs
		return cc, nil
	}
	return c
}
