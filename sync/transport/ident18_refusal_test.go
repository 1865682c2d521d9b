package transport

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
)

// selfSigned returns a throwaway certificate for name, signed by itself:
// no cluster CA vouches for it.
func selfSigned(t *testing.T, name string) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name}, DNSNames: []string{name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// TestIdent18RefusalNeedsAnAuthenticatedPeer: the address us-east has for
// eu-west is answered by a QUIC endpoint that is not a region of the
// cluster at all (another service now on that address: it speaks another
// ALPN and holds no certificate of the cluster CA). Its handshake alert
// ("no application protocol") never came from eu-west: nothing at that
// address proved to be eu-west. Yet us-east reports it to its
// RefusalObserver as eu-west refusing it — which region.Node.PeerRefused
// takes for "eu-west's config lacks this region" and records in the store,
// so that us-east stops deciding as a home for every sku. The docs promise
// peers are checked "by name, never by address", and RefusalObserver's doc
// says a refusal is the peer turning this region's certificate or name
// down.
func TestIdent18RefusalNeedsAnAuthenticatedPeer(t *testing.T) {
	dir := genCerts(t, "us-east", "eu-west")
	other := &quic.Transport{Conn: udp(t)}
	t.Cleanup(func() { other.Close() })
	ln, err := other.Listen(&tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{selfSigned(t, "other.example")},
		NextProtos: []string{"h3"}}, &quic.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept(context.Background())
			if err != nil {
				return
			}
			c.CloseWithError(0, "")
		}
	}()

	pcUS := udp(t)
	cfgUS, logUS := testConfig(t, dir, "us-east", map[string]string{"eu-west": other.Conn.LocalAddr().String()})
	us := &refusalRecorder{recorder: newRecorder(), refused: map[string]int{}}
	start(t, pcUS, cfgUS, us)
	waitFor(t, 15*time.Second, "us-east's dials of eu-west's address to fail", func() bool {
		return logUS.hasLine("dial failed", "peer=eu-west")
	})
	// A few more dials (backoff at most 300 ms).
	deadline := time.Now().Add(time.Second)
	for time.Now().Before(deadline) && us.count("eu-west") == 0 {
		time.Sleep(20 * time.Millisecond)
	}
	if n := us.count("eu-west"); n != 0 {
		t.Fatalf("an endpoint that never proved to be eu-west (no cluster certificate, another ALPN) was reported %d times as eu-west refusing us-east", n)
	}
}
