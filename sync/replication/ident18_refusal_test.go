package replication_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
)

// ident18Impostor listens on addr with a QUIC endpoint that is no region
// of the cluster: a self-signed certificate and ALPN "h3", as another
// service on a reused address would. It refuses every handshake with
// "no application protocol" (a TLS alert) before showing any certificate.
func ident18Impostor(t *testing.T, addr string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "other.example"}, DNSNames: []string{"other.example"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	var pc *net.UDPConn
	waitFor(t, 10*time.Second, "the stopped region's UDP port to be free", func() bool {
		pc, err = net.ListenUDP("udp", ua)
		return err == nil
	})
	tr := &quic.Transport{Conn: pc}
	ln, err := tr.Listen(&tls.Config{MinVersion: tls.VersionTLS13,
		Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}, NextProtos: []string{"h3"}}, &quic.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close(); tr.Close(); pc.Close() })
	go func() {
		for {
			c, err := ln.Accept(context.Background())
			if err != nil {
				return
			}
			c.CloseWithError(0, "")
		}
	}()
}

// TestIdent18ImpostorAtPeerAddressStopsHomes: eu-west is down, and its
// peer address is now answered by a QUIC endpoint that is not a region of
// the cluster (no certificate of the cluster CA, another ALPN). A peer
// that is down refuses nothing, and us-east keeps deciding for the skus
// it is home to. But the endpoint's handshake alert is taken for
// eu-west turning us-east down ("its config lacks this region") although
// nothing at that address proved to be eu-west: us-east stops deciding as
// a home for every sku and answers 503 for reservations it alone decides.
// The docs: regions check peers "by name, never by address"; a refusal
// is the peer turning this region's certificate or name down.
func TestIdent18ImpostorAtPeerAddressStopsHomes(t *testing.T) {
	c := newCluster(t, nil)
	cl := newClients(c)
	sku := skuHomedAt(c.cfg, "us-east", "ident18")
	cl.must(t, 200, "us-east", "POST", "/v1/inventory/"+sku+"/restock", map[string]any{"qty": 100}, nil)
	cl.reserve(t, "us-east", sku, 1)

	var euPeer string
	for _, r := range c.cfg.Regions {
		if r.Name == "eu-west" {
			euPeer = r.Peer
		}
	}
	c.stop("eu-west")
	cl.down("eu-west")
	// Down: us-east still decides.
	cl.reserve(t, "us-east", sku, 1)

	ident18Impostor(t, euPeer)
	// us-east redials eu-west's address within its backoff (at most 5 s);
	// give it time to meet the impostor a few times.
	deadline := time.Now().Add(15 * time.Second)
	var last reply
	for time.Now().Before(deadline) {
		last = cl.send("us-east", "POST", "/v1/reservations", map[string]any{"sku": sku, "qty": 1, "ttl_ms": 600_000})
		if !last.is(201, "") {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if !last.is(201, "") {
		t.Fatalf("us-east, home of %s, stopped deciding after an endpoint that never proved to be eu-west answered at eu-west's address: %s (expected 201 as with eu-west simply down)",
			sku, strings.TrimSpace(last.String()))
	}
}
