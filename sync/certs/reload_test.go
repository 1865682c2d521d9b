package certs

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

// TestBundleReload replaces a region's certificate (a new CA and new
// region files, as `lattice certs` writes them into a fresh directory)
// and checks that handshakes of configurations made before the reload
// present and trust the new ones.
func TestBundleReload(t *testing.T) {
	dir := generate(t, "demo")
	us, eu := load(t, dir, "us-east"), load(t, dir, "eu-west")
	server, client := eu.ServerTLS(), us.ClientTLS("eu-west")
	before, err := handshakeState(client, server)
	if err != nil {
		t.Fatal(err)
	}

	fresh := generate(t, "demo") // a new CA: rotation of everything
	for _, f := range []string{CACertFile, CertFile("eu-west"), KeyFile("eu-west"), CertFile("us-east"), KeyFile("us-east")} {
		copyFile(t, filepath.Join(fresh, f), filepath.Join(dir, f))
	}
	if err := eu.Reload(); err != nil {
		t.Fatal(err)
	}
	if err := us.Reload(); err != nil {
		t.Fatal(err)
	}
	// The server made before the reload presents the new certificate,
	// and takes the client's new one (from the new CA), while a client
	// of the old CA is refused.
	after, err := handshakeState(us.ClientTLS("eu-west"), server)
	if err != nil {
		t.Fatalf("handshake after reload: %v", err)
	}
	if slices.Equal(before.PeerCertificates[0].Raw, after.PeerCertificates[0].Raw) {
		t.Fatal("the server still takes the client's old certificate")
	}
	if got := serverLeaf(t, us.ClientTLS("eu-west"), server); !slices.Equal(got.Raw, load(t, fresh, "eu-west").Cert.Certificate[0]) {
		t.Fatal("the server does not present its new certificate")
	}
	if err := handshake(client, server); err == nil {
		t.Fatal("a client configured with the old CA and certificate was accepted")
	}
	if cert, ca := eu.Expiry(); !cert.Equal(load(t, fresh, "eu-west").Cert.Leaf.NotAfter) || !ca.Equal(load(t, fresh, "eu-west").CA.NotAfter) {
		t.Errorf("Expiry = %v, %v: not the new files'", cert, ca)
	}
	if got, _ := PeerRegion(after); got != "us-east" {
		t.Errorf("PeerRegion after reload = %q", got)
	}
}

// TestBundleReloadKeepsOldOnError checks that broken files leave a bundle
// as it was.
func TestBundleReloadKeepsOldOnError(t *testing.T) {
	dir := generate(t, "demo")
	eu := load(t, dir, "eu-west")
	us := load(t, dir, "us-east")
	if err := os.WriteFile(filepath.Join(dir, CertFile("eu-west")), []byte("half a file"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := eu.Reload(); err == nil {
		t.Fatal("Reload accepted a broken certificate")
	}
	if err := handshake(us.ClientTLS("eu-west"), eu.ServerTLS()); err != nil {
		t.Fatalf("the bundle stopped working after a failed reload: %v", err)
	}
}

func TestFilesNeverIncludeCAKey(t *testing.T) {
	dir := generate(t, "demo")
	b := load(t, dir, "us-east")
	want := []string{filepath.Join(dir, "ca.crt"), filepath.Join(dir, "us-east.crt"), filepath.Join(dir, "us-east.key")}
	if got := b.Files(); !slices.Equal(got, want) {
		t.Errorf("Files = %v, want %v", got, want)
	}
	if got := RegionFiles("us-east"); !slices.Equal(got, []string{"ca.crt", "us-east.crt", "us-east.key"}) {
		t.Errorf("RegionFiles = %v", got)
	}
}

// TestGenerateSplit keeps the CA key in its own directory: the region
// directory holds no ca.key, regions load from it alone, and a second run
// reuses the CA.
func TestGenerateSplit(t *testing.T) {
	dir, keyDir := t.TempDir(), filepath.Join(t.TempDir(), "offline")
	if err := GenerateSplit(dir, keyDir, "demo", []string{"us-east", "eu-west"}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, CAKeyFile)); !os.IsNotExist(err) {
		t.Fatalf("%s in the region directory: %v", CAKeyFile, err)
	}
	if fi, err := os.Stat(filepath.Join(keyDir, CAKeyFile)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("CA key: %v %v", fi, err)
	}
	if _, err := os.Stat(filepath.Join(keyDir, CACertFile)); !os.IsNotExist(err) {
		t.Errorf("%s written to the key directory: %v", CACertFile, err)
	}
	ca1, _ := os.ReadFile(filepath.Join(dir, CACertFile))
	us := load(t, dir, "us-east")
	if err := GenerateSplit(dir, keyDir, "demo", []string{"ap-south"}); err != nil {
		t.Fatal(err)
	}
	if ca2, _ := os.ReadFile(filepath.Join(dir, CACertFile)); !slices.Equal(ca1, ca2) {
		t.Fatal("a second run made a new CA")
	}
	ap := load(t, dir, "ap-south")
	if err := handshake(ap.ClientTLS("us-east"), us.ServerTLS()); err != nil {
		t.Fatalf("regions issued in two runs: %v", err)
	}
	// The CA certificate without its key is refused, not replaced.
	if err := GenerateSplit(dir, t.TempDir(), "demo", []string{"sa-east"}); err == nil {
		t.Fatal("a CA certificate without its key was accepted")
	}
}

// TestServerCertReload serves with a ServerCert, replaces its files and
// checks that the next handshake presents the new certificate, and that
// a client CA file makes client certificates required.
func TestServerCertReload(t *testing.T) {
	dir := t.TempDir()
	ca, caKey := testCA(t)
	certFile, keyFile := filepath.Join(dir, "api.crt"), filepath.Join(dir, "api.key")
	writeLeaf(t, ca, caKey, certFile, keyFile, time.Now().Add(48*time.Hour))
	sc, err := LoadServerCert(certFile, keyFile, "")
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	client := &tls.Config{RootCAs: pool, ServerName: "localhost"}
	server := sc.TLSConfig()
	first := serverLeaf(t, client, server)
	exp1, _ := sc.Expiry()
	writeLeaf(t, ca, caKey, certFile, keyFile, time.Now().Add(96*time.Hour))
	if err := sc.Reload(); err != nil {
		t.Fatal(err)
	}
	second := serverLeaf(t, client, server)
	if slices.Equal(first.Raw, second.Raw) {
		t.Fatal("the old certificate is still presented")
	}
	if exp2, _ := sc.Expiry(); !exp2.After(exp1) {
		t.Errorf("expiry %v, then %v", exp1, exp2)
	}
	// A key that does not match is refused and the old pair kept.
	other := filepath.Join(dir, "other.key")
	writeLeaf(t, ca, caKey, filepath.Join(dir, "other.crt"), other, time.Now().Add(time.Hour))
	copyFile(t, other, keyFile)
	if err := sc.Reload(); err == nil {
		t.Fatal("a mismatched key was accepted")
	}
	if err := handshake(client, server); err != nil {
		t.Fatalf("after a failed reload: %v", err)
	}

	// With a client CA, a client certificate is required.
	caFile := filepath.Join(dir, "clients.crt")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	writeLeaf(t, ca, caKey, certFile, keyFile, time.Now().Add(time.Hour))
	mtls, err := LoadServerCert(certFile, keyFile, caFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := handshake(client, mtls.TLSConfig()); err == nil {
		t.Error("a client without a certificate was accepted")
	}
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	withCert := client.Clone()
	withCert.Certificates = []tls.Certificate{pair}
	if err := handshake(withCert, mtls.TLSConfig()); err != nil {
		t.Errorf("a client with a certificate from the CA: %v", err)
	}
	if _, err := LoadServerCert(certFile, keyFile, certFile); err == nil {
		t.Error("a client CA file holding a leaf was accepted")
	}
}

// serverLeaf returns the certificate the server presents to client.
func serverLeaf(t *testing.T, client, server *tls.Config) *x509.Certificate {
	t.Helper()
	c, s := net.Pipe()
	defer c.Close()
	go func() {
		defer s.Close()
		_ = tls.Server(s, server).Handshake()
	}()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	tc := tls.Client(c, client)
	if err := tc.Handshake(); err != nil {
		t.Fatalf("handshake: %v", err)
	}
	return tc.ConnectionState().PeerCertificates[0]
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := writeFile(to, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func testCA(t *testing.T) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(240 * time.Hour),
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true, IsCA: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return ca, key
}

// writeLeaf writes a server and client certificate for localhost and
// 127.0.0.1, signed by ca, and its key.
func writeLeaf(t *testing.T, ca *x509.Certificate, caKey *ecdsa.PrivateKey, certFile, keyFile string, notAfter time.Time) {
	t.Helper()
	key, serial, err := newKey()
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: serial, Subject: pkix.Name{CommonName: "localhost"},
		DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: notAfter, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, err := encodeKey(key)
	if err != nil {
		t.Fatal(err)
	}
	if err := writeFile(keyFile, keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := writeFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
}
