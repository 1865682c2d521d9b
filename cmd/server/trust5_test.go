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
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/latticedb/lattice/crdt"
	"github.com/latticedb/lattice/region"
	"github.com/latticedb/lattice/region/config"
	"github.com/latticedb/lattice/region/regiontest"
	"github.com/latticedb/lattice/sync/certs"
	"github.com/latticedb/lattice/sync/replication"
	"github.com/latticedb/lattice/sync/transport"
)

// escrowTrio is a three-region cluster in dir whose "us-" skus are homed
// at us-east with escrow; only us-east runs, replicating over QUIC. The
// returned transport is ap-south's endpoint, a real QUIC transport on
// ap-south's peer address holding ap-south's own certificate, connected
// to us-east.
func escrowTrio(t *testing.T) (*testRegion, *transport.QUICTransport) {
	t.Helper()
	dir := t.TempDir()
	lns, peers := regiontest.Loopback(t, 2)
	apPC, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg := &config.Config{
		Cluster:    "test",
		DataDir:    filepath.Join(dir, "data"),
		TLSDir:     filepath.Join(dir, "certs"),
		Durability: config.DurabilityAlways,
		Regions: []config.RegionConfig{
			{Name: "us-east", API: lns[0].Addr().String(), Peer: peers[0]},
			{Name: "eu-west", API: lns[1].Addr().String(), Peer: peers[1]},
			{Name: "ap-south", API: "127.0.0.1:9", Peer: apPC.LocalAddr().String()},
		},
		Homes: []config.HomeRule{
			{Prefix: "us-", Region: "us-east", Escrow: true},
			{Prefix: "eu-", Region: "eu-west"},
			{Prefix: "ap-", Region: "ap-south"},
		},
	}
	if err := certs.Generate(cfg.TLSDir, cfg.Cluster, cfg.RegionNames()); err != nil {
		t.Fatal(err)
	}
	lns[1].Close() // eu-west does not run
	east := startRegion(t, cfg, "us-east", Options{Listener: lns[0], Replication: QUIC(replication.AttachOptions{})})

	bundle, err := certs.Load(cfg.TLSDir, "ap-south")
	if err != nil {
		t.Fatal(err)
	}
	tc := transport.DefaultConfig()
	tc.Region = "ap-south"
	tc.Peers = map[string]string{"us-east": peers[0]}
	tc.Certs = bundle
	tc.Logger = slog.New(slog.DiscardHandler)
	ap, err := transport.NewQUIC(apPC, tc, transport.HandlerFuncs{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ap.Close() })
	waitFor(t, 15*time.Second, "ap-south's endpoint connected to us-east", func() bool { return ap.Connected("us-east") })
	return east, ap
}

// homeCall sends req to us-east as a home request over tr and decodes the
// answer.
func homeCall(t *testing.T, tr transport.Transport, req *region.HomeRequest) *region.HomeResponse {
	t.Helper()
	b, err := crdt.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := tr.Call(ctx, "us-east", b)
	if err != nil {
		t.Fatalf("home call %s: %v", req.Op, err)
	}
	var out region.HomeResponse
	if err := crdt.Unmarshal(resp, &out, replication.MaxCallBytes); err != nil {
		t.Fatal(err)
	}
	return &out
}

// TestEscrowGrantOnlyToTheAskingRegion: regions authenticate each other by
// certificate, each naming one region (docs/operations.md), and escrow
// rights go to the region that asks the home for them, so that "the last
// units are not all stranded in one quiet region" (docs/configuration.md,
// Escrow). ap-south, connected to us-east with ap-south's own valid
// certificate, sends us-east (the home of the escrow sku us-book, stock
// 100) requests for rights whose From names eu-west, a region that asked
// for nothing and is down. The home must refuse a request for rights on
// behalf of a region other than the one the connection's certificate
// names, and the home must then show every unit available: none granted,
// none held, none sold. (A reservation at the home would wait for its
// catch-up with eu-west, which is down: a new store of a region of
// several decides only once it has caught up with every peer.)
func TestEscrowGrantOnlyToTheAskingRegion(t *testing.T) {
	east, ap := escrowTrio(t)
	east.ok(200, "POST", "/v1/inventory/us-book/restock", `{"qty":100}`)

	var granted uint64
	var accepted int
	for range 20 {
		resp := homeCall(t, ap, &region.HomeRequest{Op: region.OpGrant, SKU: "us-book", Qty: crdt.MaxQty, Delta: 1, From: "eu-west"})
		if resp.Err != nil {
			break
		}
		accepted++
		if it := resp.State.Items["us-book"]; it != nil {
			granted = it.Granted("eu-west")
		}
	}
	item := east.ok(200, "GET", "/v1/inventory/us-book", "")
	if accepted > 0 || item["available"] != float64(100) || item["granted"] != float64(0) {
		t.Fatalf("ap-south (by its certificate) asked us-east for rights to us-book in eu-west's name: %d requests granted, "+
			"%d units now granted to eu-west; the item then shows %v; "+
			"want every such request refused and all 100 units available", accepted, granted, item)
	}
}

// peerCert writes, in place of region's peer certificate and key in
// dir, a certificate the cluster CA of dir signs naming name, valid until
// notAfter, with these extended key usages.
func peerCert(t *testing.T, dir, region, name string, notAfter time.Time, usages ...x509.ExtKeyUsage) {
	t.Helper()
	caPair, err := tls.LoadX509KeyPair(filepath.Join(dir, certs.CACertFile), filepath.Join(dir, certs.CAKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(caPair.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name, Organization: []string{"test"}},
		DNSNames: []string{name}, NotBefore: notAfter.Add(-48 * time.Hour), NotAfter: notAfter,
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: usages, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caPair.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	writeAtomic(t, filepath.Join(dir, certs.KeyFile(region)), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}))
	writeAtomic(t, filepath.Join(dir, certs.CertFile(region)), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}

// TestBadPeerCertificateStopsStart: a peer certificate that names another
// region than the one started, one from another CA, an expired one and
// one for servers only each stop the start of a region with replication
// (docs/operations.md: "one that does not verify (wrong CA, wrong name,
// expired) stops the start"), and the error says why.
func TestBadPeerCertificateStopsStart(t *testing.T) {
	both := []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	for _, tc := range []struct {
		name string
		bad  func(t *testing.T, dir string)
	}{
		{"other region", func(t *testing.T, dir string) {
			peerCert(t, dir, "us-east", "eu-west", time.Now().Add(time.Hour), both...)
		}},
		{"other CA", func(t *testing.T, dir string) {
			other := t.TempDir()
			if err := certs.Generate(other, "test", []string{"us-east"}); err != nil {
				t.Fatal(err)
			}
			for _, f := range []string{certs.CertFile("us-east"), certs.KeyFile("us-east")} {
				b, err := os.ReadFile(filepath.Join(other, f))
				if err != nil {
					t.Fatal(err)
				}
				writeAtomic(t, filepath.Join(dir, f), b)
			}
		}},
		{"expired", func(t *testing.T, dir string) {
			peerCert(t, dir, "us-east", "us-east", time.Now().Add(-time.Hour), both...)
		}},
		{"servers only", func(t *testing.T, dir string) {
			peerCert(t, dir, "us-east", "us-east", time.Now().Add(time.Hour), x509.ExtKeyUsageServerAuth)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			cfg := testConfig(dir, config.DurabilityAlways)
			lns, peers := regiontest.Loopback(t, len(cfg.Regions))
			for i := range cfg.Regions {
				cfg.Regions[i].API, cfg.Regions[i].Peer = lns[i].Addr().String(), peers[i]
			}
			if err := certs.Generate(cfg.TLSDir, cfg.Cluster, cfg.RegionNames()); err != nil {
				t.Fatal(err)
			}
			tc.bad(t, cfg.TLSDir)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			srv, err := Start(ctx, cfg, "us-east", Options{Listener: lns[0], Logger: testLogger(t), Replication: QUIC(replication.AttachOptions{})})
			if err == nil {
				srv.Close()
				t.Fatal("us-east started with a bad peer certificate")
			}
			t.Logf("refused: %v", err)
		})
	}
}

// clientCATwoNodes is twoNodeTLSUsage with the nodes' logs kept.
func clientCATwoNodes(t *testing.T) (n1, n2 *testRegion, pki *testPKI, cfg *config.Config, dir string, logs *syncBuffer) {
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
	cfg.APITLS = config.APITLS{Cert: filepath.Join(dir, "api", "us-east.crt"), Key: filepath.Join(dir, "api", "us-east.key"),
		ClientCA: filepath.Join(dir, "api", "clients.crt")}
	writeAtomic(t, cfg.APITLS.ClientCA, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: pki.ca.Raw}))
	pki.issueFor(cfg.APITLS.Cert, cfg.APITLS.Key, 2, time.Now().Add(100*time.Hour), x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth)
	logs = &syncBuffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	n1 = startRegion(t, cfg, "us-east", Options{Listener: ln1, Node: "n1", ReloadInterval: 20 * time.Millisecond, Logger: log})
	n2 = startRegion(t, cfg, "us-east", Options{Listener: ln2, Node: "n2", ReloadInterval: 20 * time.Millisecond, Logger: log})
	return n1, n2, pki, cfg, dir, logs
}

// servedSerial returns the serial of the certificate addr presents, or
// -1.
func servedSerial(addr string, pki *testPKI, client tls.Certificate) int64 {
	conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: pki.pool, Certificates: []tls.Certificate{client}})
	if err != nil {
		return -1
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0].SerialNumber.Int64()
}

// TestAPICertReloadKeepsForwardingWithClientCA: with api_tls.client_ca, a
// node of a partitioned region refuses to start with an API certificate
// that does not allow client authentication, since the other nodes ask
// for it when it forwards a request to them (docs/operations.md, TLS and
// tokens for the REST API). A certificate renewed in place is reloaded
// without a restart, and "A file that does not load ... the region keeps
// what it had". Two nodes share an API certificate for servers and
// clients; it is replaced by one for servers only. Either the reload
// refuses it (keeping the old one, as the start would have refused it),
// or forwarding keeps working: a GET through n1 of a cart n2 owns must
// answer 200, not 503 partition_unavailable for the rest of the run.
func TestAPICertReloadKeepsForwardingWithClientCA(t *testing.T) {
	n1, n2, pki, cfg, dir, logs := clientCATwoNodes(t)
	certFile, keyFile := filepath.Join(dir, "client.crt"), filepath.Join(dir, "client.key")
	issueClientCert(t, pki, certFile, keyFile)
	cc, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	useTLS(t, n1, pki, cc)
	if p := config.PartitionOf(n2Cart, 2); p != 1 {
		t.Fatalf("cart %s is in partition %d", n2Cart, p)
	}

	// Renewed for servers only; nothing has been forwarded yet, so no
	// connection between the nodes predates it.
	pki.issueFor(cfg.APITLS.Cert, cfg.APITLS.Key, 3, time.Now().Add(200*time.Hour), x509.ExtKeyUsageServerAuth)
	waitFor(t, 10*time.Second, "both nodes to reload the certificate or refuse it", func() bool {
		refused := strings.Count(logs.String(), "reload failed")
		s1, s2 := servedSerial(n1.srv.Addr().String(), pki, cc), servedSerial(n2.srv.Addr().String(), pki, cc)
		return refused >= 2 || s1 == 3 && s2 == 3
	})
	s1, s2 := servedSerial(n1.srv.Addr().String(), pki, cc), servedSerial(n2.srv.Addr().String(), pki, cc)
	if resp := n1.do("GET", "/v1/carts/"+n2Cart, ""); resp.status != http.StatusOK {
		t.Fatalf("after the API certificate (client_ca set) was replaced by one for servers only, the nodes serve serials %d and %d "+
			"(3 is the new one: the reload took it); GET through n1 of a cart n2 owns: %v; want 200 (the reload refuses a "+
			"certificate the start refuses, or n1 still forwards)", s1, s2, resp)
	}
}

// TestProtectedHealthzWhileStarting: with api_auth.protect_probes: true,
// "/healthz, /readyz and /metrics need a token too" (docs/configuration.md)
// — from the moment the region listens. While its store opens (held open
// by the test), GET /healthz without a token must answer 401 as it does
// once the region serves, not 200 with the region's name to anyone.
func TestProtectedHealthzWhileStarting(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(dir, config.DurabilityEverySec)
	cfg.APIAuth = config.APIAuth{ReadTokens: filepath.Join(dir, "read"), WriteTokens: filepath.Join(dir, "write"), ProtectProbes: true}
	writeAtomic(t, cfg.APIAuth.ReadTokens, []byte(readToken+"\n"))
	writeAtomic(t, cfg.APIAuth.WriteTokens, []byte(writeToken+"\n"))
	entered := make(chan struct{}, 2)
	release := make(chan struct{})
	var once bool
	opts := Options{openHook: func(stage string) {
		if once {
			return
		}
		once = true
		entered <- struct{}{}
		<-release
	}}
	base, done, _ := startAsync(t, cfg, "us-east", opts)
	select {
	case <-entered:
	case err := <-done:
		t.Fatalf("Start returned before opening its store: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("the store was not opened within 10 s")
	}
	c := newClient(t, base)
	starting := c.do("GET", "/healthz", "")
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	serving := c.do("GET", "/healthz", "")
	if serving.status != http.StatusUnauthorized {
		t.Fatalf("GET /healthz without a token once serving: %v, want 401", serving)
	}
	if starting.status != http.StatusUnauthorized {
		t.Fatalf("GET /healthz without a token while the store opens: %v; once serving: %d; want 401 both times (protect_probes)", starting, serving.status)
	}
}
