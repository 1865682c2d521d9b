package server

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/latticedb/lattice/region/config"
)

// TestPartitionedTLSRegionPlaceholder: docs/configuration.md and
// docs/operations.md (TLS and tokens for the REST API) say "`{region}` in
// the path stands for the region's name" in api_tls.cert and api_tls.key
// (the documented example is cert: api/{region}.crt). A partitioned region
// (partitions: 2) with such paths starts, as an unpartitioned one does
// (secureRegion in security_test.go uses the same paths): the forwarding
// client takes the region's files too.
func TestPartitionedTLSRegionPlaceholder(t *testing.T) {
	dir := t.TempDir()
	pki := newTestPKI(t)
	cfg := testConfig(dir, config.DurabilityAlways)
	cfg.Partitions = 2
	cfg.APITLS = config.APITLS{Cert: filepath.Join(dir, "api", "{region}.crt"), Key: filepath.Join(dir, "api", "{region}.key")}
	if err := os.MkdirAll(filepath.Join(dir, "api"), 0o700); err != nil {
		t.Fatal(err)
	}
	pki.issue(filepath.Join(dir, "api", "us-east.crt"), filepath.Join(dir, "api", "us-east.key"), 2, time.Now().Add(100*time.Hour))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	srv, err := Start(ctx, cfg, "us-east", Options{Listener: ln, Logger: testLogger(t)})
	if err != nil {
		t.Fatalf("a partitioned region whose api_tls.cert is %s does not start: %v", cfg.APITLS.Cert, err)
	}
	srv.Close()
}

// twoNodeTLS is us-east on two nodes over HTTPS: n1 owns partition 0, n2
// partition 1, both presenting the API certificate the test PKI issued
// (serial 2) from one shared api_tls.cert. clientCA, when set, is
// api_tls.client_ca.
func twoNodeTLS(t *testing.T, clientCA bool) (n1, n2 *testRegion, pki *testPKI, cfg *config.Config, dir string) {
	return twoNodeTLSUsage(t, clientCA, x509.ExtKeyUsageServerAuth)
}

// twoNodeTLSUsage is twoNodeTLS with an API certificate of these extended
// key usages.
func twoNodeTLSUsage(t *testing.T, clientCA bool, usages ...x509.ExtKeyUsage) (n1, n2 *testRegion, pki *testPKI, cfg *config.Config, dir string) {
	t.Helper()
	dir = t.TempDir()
	pki = newTestPKI(t)
	cfg = testConfig(dir, config.DurabilityAlways)
	cfg.Partitions = 2
	ln1, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln2, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Regions[0] = config.RegionConfig{Name: "us-east", Nodes: []config.NodeConfig{
		{Name: "n1", API: ln1.Addr().String(), Peer: "127.0.0.1:7201", Partitions: config.PartitionSet{"0"}},
		{Name: "n2", API: ln2.Addr().String(), Peer: "127.0.0.1:7203", Partitions: config.PartitionSet{"1"}},
	}}
	if err := os.MkdirAll(filepath.Join(dir, "api"), 0o700); err != nil {
		t.Fatal(err)
	}
	cfg.APITLS = config.APITLS{Cert: filepath.Join(dir, "api", "us-east.crt"), Key: filepath.Join(dir, "api", "us-east.key")}
	if clientCA {
		cfg.APITLS.ClientCA = filepath.Join(dir, "api", "clients.crt")
		writeAtomic(t, cfg.APITLS.ClientCA, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: pki.ca.Raw}))
	}
	pki.issueFor(cfg.APITLS.Cert, cfg.APITLS.Key, 2, time.Now().Add(100*time.Hour), usages...)
	n1 = startRegion(t, cfg, "us-east", Options{Listener: ln1, Node: "n1", ReloadInterval: 20 * time.Millisecond})
	n2 = startRegion(t, cfg, "us-east", Options{Listener: ln2, Node: "n2", ReloadInterval: 20 * time.Millisecond})
	return n1, n2, pki, cfg, dir
}

// useTLS makes r's client trust the test CA and present certs.
func useTLS(t *testing.T, r *testRegion, pki *testPKI, certs ...tls.Certificate) {
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pki.pool, Certificates: certs}}
	t.Cleanup(tr.CloseIdleConnections)
	r.client.hc = &http.Client{Transport: tr, Timeout: 30 * time.Second}
}

// n2Cart is a cart of partition 1, which n2 owns.
const n2Cart = "c1"

// TestForwardAfterCertRotation: docs/operations.md ("Rotating
// without a restart") says a region reloads a changed API certificate and
// "New TLS handshakes present the new certificate". Two nodes of a
// partitioned region share api_tls.cert, a leaf of the operator's own CA
// (which clients trust with --cacert). Once that certificate is renewed
// by the same CA and reloaded, n1 still forwards a request for n2's
// partition (its forwarding client trusts the certificates as reloaded),
// rather than answer 503 partition_unavailable.
func TestForwardAfterCertRotation(t *testing.T) {
	n1, n2, pki, cfg, _ := twoNodeTLS(t, false)
	useTLS(t, n1, pki)
	if p := config.PartitionOf(n2Cart, 2); p != 1 {
		t.Fatalf("cart %s is in partition %d", n2Cart, p)
	}

	// The certificate is renewed (same CA, same names) before any
	// request is forwarded, and n2 presents the new one.
	pki.issue(cfg.APITLS.Cert, cfg.APITLS.Key, 3, time.Now().Add(200*time.Hour))
	deadline := time.Now().Add(10 * time.Second)
	for {
		conn, err := tls.Dial("tcp", n2.srv.Addr().String(), &tls.Config{RootCAs: pki.pool})
		if err == nil {
			serial := conn.ConnectionState().PeerCertificates[0].SerialNumber.Int64()
			conn.Close()
			if serial == 3 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("n2 did not reload its renewed certificate")
		}
		time.Sleep(20 * time.Millisecond)
	}

	if resp := n1.do("GET", "/v1/carts/"+n2Cart, ""); resp.status != http.StatusOK {
		t.Fatalf("after the API certificate was renewed by the same CA, GET through n1 of a cart n2 owns: %v; want 200 (n1 forwards to n2)", resp)
	}
}

// TestForwardWithClientCA: with api_tls.client_ca the nodes of a
// partitioned region present the API certificate to each other when they
// forward, so it must allow client authentication: a node whose API
// certificate is for servers only refuses to start, naming the problem
// (it could serve only its own partitions); with one that allows both, a
// client holding a client certificate gets any partition from any node.
func TestForwardWithClientCA(t *testing.T) {
	t.Run("server only", func(t *testing.T) {
		dir := t.TempDir()
		pki := newTestPKI(t)
		cfg := testConfig(dir, config.DurabilityAlways)
		cfg.Partitions = 2
		if err := os.MkdirAll(filepath.Join(dir, "api"), 0o700); err != nil {
			t.Fatal(err)
		}
		cfg.APITLS = config.APITLS{Cert: filepath.Join(dir, "api", "us-east.crt"), Key: filepath.Join(dir, "api", "us-east.key"),
			ClientCA: filepath.Join(dir, "api", "clients.crt")}
		writeAtomic(t, cfg.APITLS.ClientCA, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: pki.ca.Raw}))
		pki.issue(cfg.APITLS.Cert, cfg.APITLS.Key, 2, time.Now().Add(100*time.Hour))
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		srv, err := Start(ctx, cfg, "us-east", Options{Listener: ln, Logger: testLogger(t)})
		if err == nil {
			srv.Close()
			t.Fatal("a partitioned region with api_tls.client_ca and a server-only API certificate started")
		}
		if !strings.Contains(err.Error(), "clientAuth") {
			t.Fatalf("refused with %v; want the missing client authentication named", err)
		}
	})
	t.Run("server and client", func(t *testing.T) {
		n1, _, pki, _, dir := twoNodeTLSUsage(t, true, x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth)
		certFile, keyFile := filepath.Join(dir, "client.crt"), filepath.Join(dir, "client.key")
		issueClientCert(t, pki, certFile, keyFile)
		cc, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			t.Fatal(err)
		}
		useTLS(t, n1, pki, cc)
		if resp := n1.do("GET", "/v1/carts/c2", ""); resp.status != http.StatusOK { // partition 0: n1's own
			t.Fatalf("GET of n1's own partition: %v", resp)
		}
		if resp := n1.do("GET", "/v1/carts/"+n2Cart, ""); resp.status != http.StatusOK {
			t.Fatalf("with api_tls.client_ca, GET through n1 of a cart n2 owns: %v; want 200 (n1 forwards to n2)", resp)
		}
	})
}

// issueClientCert writes a client certificate (ExtKeyUsageClientAuth) the
// test CA signed, and its key.
func issueClientCert(t *testing.T, p *testPKI, certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(99), Subject: pkix.Name{CommonName: "client"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(100 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.ca, &key.PublicKey, p.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	writeAtomic(t, keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}))
	writeAtomic(t, certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}
