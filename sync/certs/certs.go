// Package certs makes and loads the certificates regions use to authenticate
// each other with mutual TLS over QUIC (SPEC §7).
//
// A cluster has one certificate authority (ca.crt, ca.key) and one
// certificate and key per region (NAME.crt, NAME.key), all ECDSA P-256 in
// PEM files. A region certificate carries the region name as its only DNS
// subject alternative name and may be used both as a TLS server and as a TLS
// client, so the same pair serves for listening and for dialing. Regions
// check each other by that name and the cluster CA, never by IP address, so
// the same files work wherever the regions run.
package certs

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"sync/atomic"
	"time"
)

// ALPN is the TLS application protocol of region-to-region replication,
// and ALPNCompressed its version whose message streams are compressed
// (sync/transport). Both sides offer both, the compressed one first, so
// a region speaks lattice-repl/2 to a peer that knows it and
// lattice-repl/1 to one that does not.
const (
	ALPN           = "lattice-repl/1"
	ALPNCompressed = "lattice-repl/2"
)

// alpns is what a region offers, in its order of preference.
var alpns = []string{ALPNCompressed, ALPN}

// Validity periods of generated certificates. They are long on purpose: a
// cluster's certificates are rotated by generating a new set, not by expiry.
const (
	CAValidity     = 20 * 365 * 24 * time.Hour
	RegionValidity = 10 * 365 * 24 * time.Hour
)

// clockSkew backdates NotBefore so that a peer whose clock is slightly behind
// accepts a certificate made a moment ago.
const clockSkew = time.Hour

// File names inside a certificate directory.
const (
	CACertFile = "ca.crt"
	CAKeyFile  = "ca.key"
)

// CertFile returns the file name of region's certificate.
func CertFile(region string) string { return region + ".crt" }

// KeyFile returns the file name of region's private key.
func KeyFile(region string) string { return region + ".key" }

// MaxRegionNameLen bounds a region name: a region name is a DNS label.
const MaxRegionNameLen = 63

// ValidateRegionName reports whether name can name a region in a
// certificate: 1 to 63 characters of lower-case letters, digits and '-',
// neither starting nor ending with '-' (a DNS label), and not "ca", which
// would collide with the CA's files.
func ValidateRegionName(name string) error {
	if name == "" || len(name) > MaxRegionNameLen {
		return fmt.Errorf("certs: region name %q must be 1 to %d characters", name, MaxRegionNameLen)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case c == '-' && i != 0 && i != len(name)-1:
		default:
			return fmt.Errorf("certs: region name %q must be lower-case letters, digits and inner '-'", name)
		}
	}
	if name == "ca" {
		return errors.New(`certs: region name "ca" is reserved for the certificate authority`)
	}
	return nil
}

// Generate writes a cluster CA and one certificate and key per region into
// dir, creating dir if needed. It is what `lattice certs --dir DIR REGION...`
// runs.
//
// If dir already holds ca.crt and ca.key, that CA is reused (it must belong
// to cluster), so regions can be added to a running cluster; otherwise a new
// CA is made. Region files are overwritten. Keys are written with mode 0600,
// certificates with 0644, each file atomically.
func Generate(dir string, cluster string, regions []string) error {
	return GenerateSplit(dir, dir, cluster, regions)
}

// RegionFiles returns the names of the files region needs in its tls_dir:
// ca.crt, REGION.crt and REGION.key. ca.key is not one of them: it is
// needed only to issue certificates, and belongs offline.
func RegionFiles(region string) []string {
	return []string{CACertFile, CertFile(region), KeyFile(region)}
}

// GenerateSplit is Generate keeping the CA's private key apart: ca.key is
// read from or written to caKeyDir, while dir receives only what regions
// need (ca.crt and each region's certificate and key, see RegionFiles).
// caKeyDir may be dir. It is what `lattice certs --ca-key-dir` runs.
func GenerateSplit(dir, caKeyDir, cluster string, regions []string) error {
	if cluster == "" {
		return errors.New("certs: cluster name is empty")
	}
	if len(regions) == 0 {
		return errors.New("certs: no region named")
	}
	seen := make(map[string]bool, len(regions))
	for _, r := range regions {
		if err := ValidateRegionName(r); err != nil {
			return err
		}
		if seen[r] {
			return fmt.Errorf("certs: region %q named twice", r)
		}
		seen[r] = true
	}
	// The CA is looked for before any directory is made: a refusal (one
	// of its two files missing, say under a mistyped --ca-key-dir)
	// leaves nothing behind.
	ca, caKey, err := loadOrCreateCA(dir, caKeyDir, cluster)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("certs: %w", err)
	}
	for _, r := range regions {
		certPEM, keyPEM, err := issue(ca, caKey, cluster, r)
		if err != nil {
			return err
		}
		if err := writeFile(filepath.Join(dir, KeyFile(r)), keyPEM, 0o600); err != nil {
			return err
		}
		if err := writeFile(filepath.Join(dir, CertFile(r)), certPEM, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// loadOrCreateCA returns the CA whose certificate is in dir and key in
// keyDir, or makes and writes a new one when neither file exists.
func loadOrCreateCA(dir, keyDir, cluster string) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	certPath := filepath.Join(dir, CACertFile)
	keyPath := filepath.Join(keyDir, CAKeyFile)
	_, certErr := os.Stat(certPath)
	_, keyErr := os.Stat(keyPath)
	switch {
	case certErr == nil && keyErr == nil:
		ca, err := readCert(certPath)
		if err != nil {
			return nil, nil, err
		}
		key, err := readKey(keyPath)
		if err != nil {
			return nil, nil, err
		}
		if !key.PublicKey.Equal(ca.PublicKey) {
			return nil, nil, fmt.Errorf("certs: %s does not match %s", keyPath, certPath)
		}
		if got := clusterOf(ca); got != cluster {
			return nil, nil, fmt.Errorf("certs: %s belongs to cluster %q, not %q", certPath, got, cluster)
		}
		return ca, key, nil
	case errors.Is(certErr, os.ErrNotExist) && errors.Is(keyErr, os.ErrNotExist):
	case certErr != nil && !errors.Is(certErr, os.ErrNotExist):
		return nil, nil, fmt.Errorf("certs: %w", certErr)
	case keyErr != nil && !errors.Is(keyErr, os.ErrNotExist):
		return nil, nil, fmt.Errorf("certs: %w", keyErr)
	default:
		return nil, nil, fmt.Errorf("certs: only one of %s and %s exists", certPath, keyPath)
	}

	key, serial, err := newKey()
	if err != nil {
		return nil, nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject: pkix.Name{
			CommonName:   "Lattice cluster CA " + cluster,
			Organization: []string{cluster},
		},
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              now.Add(CAValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, fmt.Errorf("certs: create CA: %w", err)
	}
	ca, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, fmt.Errorf("certs: %w", err)
	}
	keyPEM, err := encodeKey(key)
	if err != nil {
		return nil, nil, err
	}
	if err := os.MkdirAll(keyDir, 0o700); err != nil {
		return nil, nil, fmt.Errorf("certs: %w", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, nil, fmt.Errorf("certs: %w", err)
	}
	if err := writeFile(keyPath, keyPEM, 0o600); err != nil {
		return nil, nil, err
	}
	if err := writeFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return nil, nil, err
	}
	return ca, key, nil
}

// clusterOf returns the cluster name recorded in a CA certificate.
func clusterOf(ca *x509.Certificate) string {
	if len(ca.Subject.Organization) == 0 {
		return ""
	}
	return ca.Subject.Organization[0]
}

// issue makes region's certificate and key, signed by ca.
func issue(ca *x509.Certificate, caKey *ecdsa.PrivateKey, cluster, region string) (certPEM, keyPEM []byte, err error) {
	key, serial, err := newKey()
	if err != nil {
		return nil, nil, err
	}
	now := time.Now()
	notAfter := now.Add(RegionValidity)
	if notAfter.After(ca.NotAfter) {
		notAfter = ca.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject: pkix.Name{
			CommonName:   region,
			Organization: []string{cluster},
		},
		DNSNames:              []string{region},
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return nil, nil, fmt.Errorf("certs: create certificate for %s: %w", region, err)
	}
	keyPEM, err = encodeKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), keyPEM, nil
}

// newKey returns a fresh P-256 key and a random serial number for the
// certificate that will carry it.
func newKey() (*ecdsa.PrivateKey, *big.Int, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("certs: %w", err)
	}
	serial, err := serialNumber()
	if err != nil {
		return nil, nil, err
	}
	return key, serial, nil
}

func serialNumber() (*big.Int, error) {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("certs: serial number: %w", err)
	}
	return n.Add(n, big.NewInt(1)), nil
}

func encodeKey(key *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("certs: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// writeFile writes data to path atomically with the given mode: a reader
// sees the old file or the whole new one.
func writeFile(path string, data []byte, mode os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("certs: %w", err)
	}
	tmp := f.Name()
	fail := func(err error) error {
		f.Close()
		os.Remove(tmp)
		return fmt.Errorf("certs: write %s: %w", path, err)
	}
	if err := f.Chmod(mode); err != nil {
		return fail(err)
	}
	if _, err := f.Write(data); err != nil {
		return fail(err)
	}
	if err := f.Sync(); err != nil {
		return fail(err)
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("certs: write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("certs: write %s: %w", path, err)
	}
	return nil
}

// readPEM returns the DER bytes of the single PEM block of the given type in
// path.
func readPEM(path, typ string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("certs: %w", err)
	}
	block, _ := pem.Decode(data)
	if block == nil || block.Type != typ {
		return nil, fmt.Errorf("certs: %s holds no %s PEM block", path, typ)
	}
	return block.Bytes, nil
}

func readCert(path string) (*x509.Certificate, error) {
	der, err := readPEM(path, "CERTIFICATE")
	if err != nil {
		return nil, err
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("certs: %s: %w", path, err)
	}
	return c, nil
}

func readKey(path string) (*ecdsa.PrivateKey, error) {
	der, err := readPEM(path, "PRIVATE KEY")
	if err != nil {
		return nil, err
	}
	k, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, fmt.Errorf("certs: %s: %w", path, err)
	}
	ek, ok := k.(*ecdsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("certs: %s: not an ECDSA key", path)
	}
	return ek, nil
}

// Bundle is what one region needs for mutual TLS: the cluster CA and the
// region's own certificate and key. Its exported fields are what Load
// read; Reload reads the files again, and the TLS configurations made by
// ServerTLS and ClientTLS use the latest reading for every new handshake.
// Its methods are safe for concurrent use.
type Bundle struct {
	// Region is the region the certificate names.
	Region string
	// CA is the cluster CA certificate.
	CA *x509.Certificate
	// Pool holds CA alone; peers are verified against it.
	Pool *x509.CertPool
	// Cert is the region's certificate chain and private key.
	Cert tls.Certificate

	// dir is where the files were read, cur what the TLS configurations
	// use now (see Reload).
	dir string
	cur atomic.Pointer[material]
}

// Load reads ca.crt, REGION.crt and REGION.key from dir and checks that the
// region certificate is signed by the CA, names region and is usable for
// both server and client authentication.
func Load(dir, region string) (*Bundle, error) {
	if err := ValidateRegionName(region); err != nil {
		return nil, err
	}
	m, err := loadMaterial(dir, region)
	if err != nil {
		return nil, err
	}
	b := &Bundle{Region: region, CA: m.ca, Pool: m.pool, Cert: *m.cert, dir: dir}
	b.cur.Store(m)
	return b, nil
}

// loadMaterial reads and checks a region's files (see Load).
func loadMaterial(dir, region string) (*material, error) {
	ca, err := readCert(filepath.Join(dir, CACertFile))
	if err != nil {
		return nil, err
	}
	certPath := filepath.Join(dir, CertFile(region))
	keyPath := filepath.Join(dir, KeyFile(region))
	pair, err := tls.LoadX509KeyPair(certPath, keyPath)
	if err != nil {
		return nil, fmt.Errorf("certs: load %s: %w", region, err)
	}
	if pair.Leaf == nil {
		if pair.Leaf, err = x509.ParseCertificate(pair.Certificate[0]); err != nil {
			return nil, fmt.Errorf("certs: %s: %w", certPath, err)
		}
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	if _, err := pair.Leaf.Verify(x509.VerifyOptions{
		DNSName:   region,
		Roots:     pool,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}); err != nil {
		return nil, fmt.Errorf("certs: %s does not verify for region %s: %w", certPath, region, err)
	}
	if _, err := pair.Leaf.Verify(x509.VerifyOptions{
		Roots:     pool,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}); err != nil {
		return nil, fmt.Errorf("certs: %s is not a client certificate: %w", certPath, err)
	}
	if got, err := regionOf(pair.Leaf); err != nil || got != region {
		return nil, fmt.Errorf("certs: %s must name exactly region %s", certPath, region)
	}
	return &material{ca: ca, pool: pool, cert: &pair}, nil
}

// ServerTLS returns the TLS configuration for accepting region connections:
// TLS 1.3 only, ALPN lattice-repl/2 or /1, and a client certificate from the
// cluster CA required and verified on every connection. Session tickets are
// disabled, so no connection is ever resumed without a full certificate
// check; VerifyConnection also insists that the client's verified
// certificate names exactly one region (see PeerRegion).
//
// Callers may chain their own VerifyConnection (for example to accept only
// configured regions) by wrapping the returned one.
//
// Each handshake takes the certificate and CA the bundle holds then (see
// Reload): GetConfigForClient answers with a copy of the returned
// configuration, as the caller left it, carrying them.
func (b *Bundle) ServerTLS() *tls.Config {
	m := b.current()
	c := &tls.Config{
		MinVersion:             tls.VersionTLS13,
		Certificates:           []tls.Certificate{*m.cert},
		ClientAuth:             tls.RequireAndVerifyClientCert,
		ClientCAs:              m.pool,
		NextProtos:             slices.Clone(alpns),
		SessionTicketsDisabled: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			_, err := PeerRegion(cs)
			return err
		},
	}
	c.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) {
		m := b.current()
		cc := c.Clone()
		cc.GetConfigForClient = nil
		cc.Certificates = []tls.Certificate{*m.cert}
		cc.ClientCAs = m.pool
		return cc, nil
	}
	return c
}

// ClientTLS returns the TLS configuration for dialing region peer: TLS 1.3
// only, ALPN lattice-repl/2 or /1, this region's certificate offered, and the
// server verified against the cluster CA by its region name (ServerName is
// peer), never by address. No session cache is set, so every connection
// makes a full handshake; VerifyConnection checks again that the verified
// certificate names exactly peer.
//
// The configuration offers the certificate and trusts the CA the bundle
// holds when it is made (see Reload): make one per dial.
func (b *Bundle) ClientTLS(peer string) *tls.Config {
	m := b.current()
	return &tls.Config{
		MinVersion:             tls.VersionTLS13,
		Certificates:           []tls.Certificate{*m.cert},
		RootCAs:                m.pool,
		ServerName:             peer,
		NextProtos:             slices.Clone(alpns),
		SessionTicketsDisabled: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			got, err := PeerRegion(cs)
			if err != nil {
				return err
			}
			if got != peer {
				return fmt.Errorf("certs: peer certificate names region %q, want %q", got, peer)
			}
			return nil
		},
	}
}

// ErrNoVerifiedPeer is returned by PeerRegion for a connection without a
// verified peer certificate chain.
var ErrNoVerifiedPeer = errors.New("certs: no verified peer certificate")

// PeerRegion returns the region named by the verified certificate of the
// other side of a connection: the single DNS subject alternative name of
// the leaf of the first verified chain. It fails if the chain was not
// verified, or if the certificate names no region or more than one.
func PeerRegion(cs tls.ConnectionState) (string, error) {
	if len(cs.VerifiedChains) == 0 || len(cs.VerifiedChains[0]) == 0 {
		return "", ErrNoVerifiedPeer
	}
	return regionOf(cs.VerifiedChains[0][0])
}

func regionOf(leaf *x509.Certificate) (string, error) {
	if len(leaf.DNSNames) != 1 {
		return "", fmt.Errorf("certs: peer certificate has %d DNS names, want exactly one region", len(leaf.DNSNames))
	}
	name := leaf.DNSNames[0]
	if err := ValidateRegionName(name); err != nil {
		return "", err
	}
	return name, nil
}
