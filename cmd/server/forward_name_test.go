package server

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
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/latticedb/lattice/region/config"
)

// TestForwardChecksOwnerName: docs/operations.md (TLS and tokens for the
// REST API) says the nodes of a partitioned region forward requests to
// each other over HTTPS and trust "the other nodes'" certificates against
// the system's roots, the client CAs and the certificates of
// api_tls.cert (the operator's CA put after the leaf). Trusting a node's
// certificate means one issued to that node: a certificate the same CA
// (or any public CA among the system's roots) issued for another name
// must not pass for the node at 127.0.0.1, or whoever holds one and
// stands at that address receives the forwarded requests, with the
// client's bearer token in their Authorization header.
//
// n1 owns partition 0; at n2's address (partition 1) a server presents a
// certificate the region's CA issued to other.example, with no IP
// address. A write for a cart of partition 1, sent to n1 with a
// read-write token, must not reach that server: the forward fails (503
// partition_unavailable) and the token stays with n1.
func TestForwardChecksOwnerName(t *testing.T) {
	dir := t.TempDir()
	pki := newTestPKI(t)
	cfg := testConfig(dir, config.DurabilityAlways)
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
	pki.issue(cfg.APITLS.Cert, cfg.APITLS.Key, 2, time.Now().Add(100*time.Hour))
	// The operator's CA after the leaf, as the docs advise.
	leaf, err := os.ReadFile(cfg.APITLS.Cert)
	if err != nil {
		t.Fatal(err)
	}
	writeAtomic(t, cfg.APITLS.Cert, append(leaf, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: pki.ca.Raw})...))
	cfg.APIAuth = config.APIAuth{WriteTokens: filepath.Join(dir, "write")}
	writeAtomic(t, cfg.APIAuth.WriteTokens, []byte(writeToken+"\n"))

	// A certificate of the same CA, for another name only.
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(77), Subject: pkix.Name{CommonName: "other.example"},
		DNSNames: []string{"other.example"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(100 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, pki.ca, &key.PublicKey, pki.key)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var got []string
	other := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		got = append(got, r.Method+" "+r.URL.Path+" Authorization="+r.Header.Get("Authorization"))
		mu.Unlock()
		w.WriteHeader(http.StatusTeapot)
	}))
	other.Listener.Close()
	other.Listener = ln2
	other.TLS = &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}
	other.StartTLS()
	t.Cleanup(other.Close)

	n1 := startRegion(t, cfg, "us-east", Options{Listener: ln1, Node: "n1"})
	useTLS(t, n1, pki)
	if p := config.PartitionOf(n2Cart, 2); p != 1 {
		t.Fatalf("cart %s is in partition %d", n2Cart, p)
	}
	resp := n1.do("POST", "/v1/carts/"+n2Cart+"/items", `{"sku":"us-book","qty":1}`, "Authorization", "Bearer "+writeToken)
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 0 {
		t.Errorf("n1 forwarded to a server whose certificate names other.example, not 127.0.0.1: it received %q", got)
	}
	expectProblem(t, resp, 503, "partition_unavailable", "")
}
