package transport

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/latticedb/lattice/sync/certs"
)

// TestHelloNamingAnotherRegionRefused: a message stream opens with the
// sender's peer name, which must be a peer of the region its certificate
// names. ap-south, connected with its own valid certificate, opens message
// streams naming eu-west, eu-west's node and us-east itself: us-east
// resets each of them and hands no message to its handler as from any of
// those; a stream naming ap-south is then taken, as from ap-south.
func TestHelloNamingAnotherRegionRefused(t *testing.T) {
	m, conn := hostileSetup(t, certs.ALPN)
	for _, name := range []string{"eu-west", "eu-west/n1", "us-east", "ap-south/../eu-west", ""} {
		hello := append([]byte{kindMessages, byte(len(name))}, name...)
		frame := append(append([]byte{}, hello...), 0, 0, 0, 4)
		expectReset(t, conn, append(frame, "evil"...), codeProtocol)
	}
	rec := m.rec["us-east"]
	for _, from := range []string{"eu-west", "eu-west/n1", "us-east", "ap-south/../eu-west", ""} {
		if got := rec.messages(from); len(got) != 0 {
			t.Fatalf("us-east took %q as from %q, sent by ap-south", got, from)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := conn.OpenStreamSync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	hello := append([]byte{kindMessages, byte(len("ap-south"))}, "ap-south"...)
	if _, err := s.Write(append(hello, 0, 0, 0, 2, 'o', 'k')); err != nil {
		t.Fatal(err)
	}
	s.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(s, make([]byte, 1)); err != nil {
		t.Fatalf("no acknowledgement of ap-south's own message stream: %v", err)
	}
	waitFor(t, 5*time.Second, "ap-south's message", func() bool { return rec.count("ap-south") == 1 })
}

// writePeerCert replaces region's certificate and key in dir by one the
// cluster CA signs, valid from notBefore to notAfter.
func writePeerCert(t *testing.T, dir, region string, notBefore, notAfter time.Time) {
	t.Helper()
	writeCert(t, dir, region, notBefore, notAfter, []string{region}, x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth)
}

// writeCert writes, as region's certificate and key in dir, one the
// cluster CA signs for these DNS names and extended key usages.
func writeCert(t *testing.T, dir, region string, notBefore, notAfter time.Time, names []string, usages ...x509.ExtKeyUsage) {
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
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: region},
		DNSNames: names, NotBefore: notBefore, NotAfter: notAfter, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: usages, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caPair.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, certs.KeyFile(region)), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, certs.CertFile(region)), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestPeerReloadOfExpiredCertKeepsOld: a region whose certificate file is
// replaced by an expired certificate (or one not yet valid) refuses to
// reload it and keeps presenting its previous one: the connection up
// stays up and carries messages, and a new connection gets the previous
// certificate.
func TestPeerReloadOfExpiredCertKeepsOld(t *testing.T) {
	dir := genCerts(t, "us-east", "eu-west")
	pcUS, pcEU := udp(t), udp(t)
	cfgUS, _ := testConfig(t, dir, "us-east", map[string]string{"eu-west": pcEU.LocalAddr().String()})
	cfgEU, _ := testConfig(t, dir, "eu-west", map[string]string{"us-east": pcUS.LocalAddr().String()})
	recEU := newRecorder()
	us := start(t, pcUS, cfgUS, newRecorder())
	eu := start(t, pcEU, cfgEU, recEU)
	waitFor(t, 15*time.Second, "connection", func() bool { return us.Connected("eu-west") && eu.Connected("us-east") })
	before, _ := cfgUS.Certs.Expiry()

	now := time.Now()
	for _, w := range [][2]time.Time{{now.Add(-48 * time.Hour), now.Add(-time.Hour)}, {now.Add(time.Hour), now.Add(48 * time.Hour)}} {
		writePeerCert(t, dir, "us-east", w[0], w[1])
		if err := cfgUS.Certs.Reload(); err == nil {
			t.Fatalf("a certificate valid from %v to %v was reloaded", w[0], w[1])
		}
	}
	if after, _ := cfgUS.Certs.Expiry(); !after.Equal(before) {
		t.Fatalf("expiry %v after refused reloads, want %v", after, before)
	}
	if err := us.Send("eu-west", []byte("msg-0")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "a message on the connection made before", func() bool { return recEU.count("us-east") == 1 })
	conn, err := rawDial(t, dir, "eu-west", "us-east", us.Addr(), true)
	if err != nil {
		t.Fatalf("a new connection after the refused reloads: %v", err)
	}
	if got := conn.ConnectionState().TLS.PeerCertificates[0].NotAfter; !got.Equal(before) {
		t.Fatalf("us-east presents a certificate expiring %v, want its previous one (%v)", got, before)
	}
}

// TestPeerWithBadCertificateRefused: us-east refuses, during the
// handshake or at the latest before any stream is served, a peer whose
// certificate the cluster CA signed but that has expired, is not yet
// valid, allows only server authentication, or names two regions.
func TestPeerWithBadCertificateRefused(t *testing.T) {
	dir := genCerts(t, "us-east", "eu-west")
	pc := udp(t)
	cfg, _ := testConfig(t, dir, "us-east", map[string]string{"eu-west": "127.0.0.1:9"})
	rec := newRecorder()
	us := start(t, pc, cfg, rec)
	now := time.Now()
	both := []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	for _, tc := range []struct {
		name     string
		from, to time.Time
		names    []string
		usages   []x509.ExtKeyUsage
	}{
		{"expired", now.Add(-48 * time.Hour), now.Add(-time.Hour), []string{"eu-west"}, both},
		{"not yet valid", now.Add(time.Hour), now.Add(48 * time.Hour), []string{"eu-west"}, both},
		{"servers only", now.Add(-time.Hour), now.Add(48 * time.Hour), []string{"eu-west"}, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}},
		{"two regions", now.Add(-time.Hour), now.Add(48 * time.Hour), []string{"eu-west", "us-east"}, both},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bad := t.TempDir()
			for _, f := range []string{certs.CACertFile, certs.CAKeyFile} {
				b, err := os.ReadFile(filepath.Join(dir, f))
				if err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(bad, f), b, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			writeCert(t, bad, "eu-west", tc.from, tc.to, tc.names, tc.usages...)
			pair, err := tls.LoadX509KeyPair(filepath.Join(bad, certs.CertFile("eu-west")), filepath.Join(bad, certs.KeyFile("eu-west")))
			if err != nil {
				t.Fatal(err)
			}
			tr := &quic.Transport{Conn: udp(t)}
			t.Cleanup(func() { tr.Close() })
			tlsCfg := loadBundle(t, dir, "eu-west").ClientTLS("us-east")
			tlsCfg.Certificates = []tls.Certificate{pair}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			conn, err := tr.Dial(ctx, us.Addr(), tlsCfg, &quic.Config{HandshakeIdleTimeout: 2 * time.Second})
			if err == nil {
				defer conn.CloseWithError(0, "")
				s, serr := conn.OpenStreamSync(ctx)
				if serr == nil {
					hello := append([]byte{kindMessages, byte(len("eu-west"))}, "eu-west"...)
					s.Write(append(hello, 0, 0, 0, 1, 'x'))
					s.SetReadDeadline(time.Now().Add(5 * time.Second))
					_, serr = io.ReadFull(s, make([]byte, 1))
				}
				if serr == nil {
					t.Fatal("us-east acknowledged the message stream of a peer with a bad certificate")
				}
			}
			if n := rec.count("eu-west"); n != 0 {
				t.Fatalf("us-east took %d messages from a peer with a bad certificate", n)
			}
		})
	}
}
