package certs

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

var regions = []string{"us-east", "eu-west", "ap-south"}

func generate(t *testing.T, cluster string) string {
	t.Helper()
	dir := t.TempDir()
	if err := Generate(dir, cluster, regions); err != nil {
		t.Fatalf("Generate: %v", err)
	}
	return dir
}

func load(t *testing.T, dir, region string) *Bundle {
	t.Helper()
	b, err := Load(dir, region)
	if err != nil {
		t.Fatalf("Load(%s): %v", region, err)
	}
	return b
}

func TestGenerateFiles(t *testing.T) {
	dir := generate(t, "demo")
	want := []string{"ca.crt", "ca.key"}
	for _, r := range regions {
		want = append(want, r+".crt", r+".key")
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range ents {
		got = append(got, e.Name())
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("files = %v, want %v", got, want)
	}
	for _, name := range got {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		wantMode := os.FileMode(0o644)
		if strings.HasSuffix(name, ".key") {
			wantMode = 0o600
		}
		if fi.Mode().Perm() != wantMode {
			t.Errorf("%s mode = %v, want %v", name, fi.Mode().Perm(), wantMode)
		}
	}

	ca, err := readCert(filepath.Join(dir, CACertFile))
	if err != nil {
		t.Fatal(err)
	}
	if !ca.IsCA || clusterOf(ca) != "demo" {
		t.Errorf("CA: IsCA=%v cluster=%q", ca.IsCA, clusterOf(ca))
	}
	for _, r := range regions {
		c, err := readCert(filepath.Join(dir, CertFile(r)))
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(c.DNSNames, []string{r}) {
			t.Errorf("%s DNSNames = %v", r, c.DNSNames)
		}
		if len(c.IPAddresses) != 0 {
			t.Errorf("%s has IP SANs %v", r, c.IPAddresses)
		}
		if !slices.Contains(c.ExtKeyUsage, x509.ExtKeyUsageServerAuth) || !slices.Contains(c.ExtKeyUsage, x509.ExtKeyUsageClientAuth) {
			t.Errorf("%s ExtKeyUsage = %v", r, c.ExtKeyUsage)
		}
		pub, ok := c.PublicKey.(*ecdsa.PublicKey)
		if !ok || pub.Curve != elliptic.P256() {
			t.Errorf("%s key is not ECDSA P-256", r)
		}
		if c.NotAfter.Before(time.Now().Add(5 * 365 * 24 * time.Hour)) {
			t.Errorf("%s expires at %v, want a long validity", r, c.NotAfter)
		}
		if err := c.CheckSignatureFrom(ca); err != nil {
			t.Errorf("%s not signed by CA: %v", r, err)
		}
		b := load(t, dir, r)
		if b.Region != r || !b.CA.Equal(ca) {
			t.Errorf("Load(%s) = region %q", r, b.Region)
		}
	}
}

func TestGenerateReusesCA(t *testing.T) {
	dir := t.TempDir()
	if err := Generate(dir, "demo", []string{"us-east"}); err != nil {
		t.Fatal(err)
	}
	before, err := os.ReadFile(filepath.Join(dir, CACertFile))
	if err != nil {
		t.Fatal(err)
	}
	if err := Generate(dir, "demo", []string{"eu-west"}); err != nil {
		t.Fatal(err)
	}
	after, err := os.ReadFile(filepath.Join(dir, CACertFile))
	if err != nil {
		t.Fatal(err)
	}
	if string(before) != string(after) {
		t.Fatal("second Generate replaced the CA")
	}
	// Both regions, issued by separate calls, trust each other.
	if err := handshake(load(t, dir, "us-east").ClientTLS("eu-west"), load(t, dir, "eu-west").ServerTLS()); err != nil {
		t.Fatalf("handshake: %v", err)
	}
	if err := Generate(dir, "other", []string{"ap-south"}); err == nil {
		t.Fatal("Generate with another cluster name over an existing CA succeeded")
	}
	if err := os.Remove(filepath.Join(dir, CAKeyFile)); err != nil {
		t.Fatal(err)
	}
	if err := Generate(dir, "demo", []string{"ap-south"}); err == nil {
		t.Fatal("Generate with ca.crt but no ca.key succeeded")
	}
}

func TestGenerateRejectsBadInput(t *testing.T) {
	for _, tc := range []struct {
		cluster string
		regions []string
	}{
		{"", []string{"us-east"}},
		{"demo", nil},
		{"demo", []string{"us-east", "us-east"}},
		{"demo", []string{"ca"}},
		{"demo", []string{"US-East"}},
		{"demo", []string{"../etc"}},
		{"demo", []string{"-lead"}},
		{"demo", []string{"trail-"}},
		{"demo", []string{""}},
		{"demo", []string{strings.Repeat("a", 64)}},
	} {
		dir := t.TempDir()
		if err := Generate(dir, tc.cluster, tc.regions); err == nil {
			t.Errorf("Generate(%q, %q) succeeded", tc.cluster, tc.regions)
		} else if !strings.HasPrefix(err.Error(), "certs: ") {
			t.Errorf("error %q lacks the package prefix", err)
		}
	}
}

func TestLoadChecksFiles(t *testing.T) {
	dir := generate(t, "demo")
	if _, err := Load(dir, "nowhere"); err == nil {
		t.Error("Load of a missing region succeeded")
	}
	// A certificate that names another region is refused.
	crt, err := os.ReadFile(filepath.Join(dir, CertFile("eu-west")))
	if err != nil {
		t.Fatal(err)
	}
	key, err := os.ReadFile(filepath.Join(dir, KeyFile("eu-west")))
	if err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string][]byte{CertFile("us-east"): crt, KeyFile("us-east"): key} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := Load(dir, "us-east"); err == nil {
		t.Error("Load accepted a certificate naming eu-west as us-east")
	}
	// A region certificate from another cluster's CA is refused.
	other := generate(t, "other")
	for _, name := range []string{CertFile("ap-south"), KeyFile("ap-south")} {
		data, err := os.ReadFile(filepath.Join(other, name))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := Load(dir, "ap-south"); err == nil {
		t.Error("Load accepted a certificate from another CA")
	}
}

// handshake runs a TLS handshake over an in-memory pipe and returns the
// first error either side saw. The server answers one byte after a
// successful handshake so that a refusal of the client's certificate (which
// TLS 1.3 reports after the client's handshake returned) reaches the client.
func handshake(client, server *tls.Config) error {
	_, cerr, serr := handshakeBoth(client, server)
	return errors.Join(serr, cerr)
}

func handshakeState(client, server *tls.Config) (tls.ConnectionState, error) {
	cs, cerr, serr := handshakeBoth(client, server)
	return cs, errors.Join(serr, cerr)
}

// handshakeBoth returns the server's view of the connection and the errors
// of the client and the server.
func handshakeBoth(client, server *tls.Config) (cs tls.ConnectionState, clientErr, serverErr error) {
	c, s := net.Pipe()
	deadline := time.Now().Add(10 * time.Second)
	c.SetDeadline(deadline)
	s.SetDeadline(deadline)
	type result struct {
		cs  tls.ConnectionState
		err error
	}
	done := make(chan result, 1)
	go func() {
		defer s.Close()
		ts := tls.Server(s, server)
		if err := ts.Handshake(); err != nil {
			done <- result{err: err}
			return
		}
		if _, err := ts.Write([]byte{1}); err != nil {
			done <- result{err: err}
			return
		}
		done <- result{cs: ts.ConnectionState()}
	}()
	tc := tls.Client(c, client)
	cerr := tc.Handshake()
	if cerr == nil {
		var b [1]byte
		_, cerr = io.ReadFull(tc, b[:])
	}
	c.Close()
	r := <-done
	return r.cs, cerr, r.err
}

func TestMutualTLS(t *testing.T) {
	dir := generate(t, "demo")
	us, eu := load(t, dir, "us-east"), load(t, dir, "eu-west")
	cs, err := handshakeState(us.ClientTLS("eu-west"), eu.ServerTLS())
	if err != nil {
		t.Fatalf("handshake: %v", err)
	}
	if cs.Version != tls.VersionTLS13 || cs.NegotiatedProtocol != ALPNCompressed {
		t.Errorf("version %x, ALPN %q", cs.Version, cs.NegotiatedProtocol)
	}
	got, err := PeerRegion(cs)
	if err != nil || got != "us-east" {
		t.Errorf("PeerRegion = %q, %v; want us-east", got, err)
	}
	// A region of an earlier version offers and accepts only
	// lattice-repl/1, and is answered in it, both ways.
	old := us.ClientTLS("eu-west")
	old.NextProtos = []string{ALPN}
	if cs, err := handshakeState(old, eu.ServerTLS()); err != nil || cs.NegotiatedProtocol != ALPN {
		t.Errorf("client offering only %s: %v, ALPN %q", ALPN, err, cs.NegotiatedProtocol)
	}
	oldServer := eu.ServerTLS()
	oldServer.NextProtos = []string{ALPN}
	oldServer.GetConfigForClient = nil
	if cs, err := handshakeState(us.ClientTLS("eu-west"), oldServer); err != nil || cs.NegotiatedProtocol != ALPN {
		t.Errorf("server accepting only %s: %v, ALPN %q", ALPN, err, cs.NegotiatedProtocol)
	}
}

func TestOtherCARefusedBothWays(t *testing.T) {
	dir := generate(t, "demo")
	rogueDir := generate(t, "demo") // same names, another CA
	us, eu := load(t, dir, "us-east"), load(t, dir, "eu-west")
	rogueUS, rogueEU := load(t, rogueDir, "us-east"), load(t, rogueDir, "eu-west")

	err := handshake(rogueUS.ClientTLS("eu-west"), eu.ServerTLS())
	if err == nil {
		t.Error("server accepted a client certificate from another CA")
	} else {
		t.Logf("client from another CA: %v", err)
	}
	_, cerr, _ := handshakeBoth(us.ClientTLS("eu-west"), rogueEU.ServerTLS())
	var unknown x509.UnknownAuthorityError
	if !errors.As(cerr, &unknown) {
		t.Errorf("client accepted a server certificate from another CA: %v", cerr)
	} else {
		t.Logf("server from another CA: %v", cerr)
	}
}

func TestClientWithoutCertRefused(t *testing.T) {
	dir := generate(t, "demo")
	us, eu := load(t, dir, "us-east"), load(t, dir, "eu-west")
	cfg := us.ClientTLS("eu-west")
	cfg.Certificates = nil
	if err := handshake(cfg, eu.ServerTLS()); err == nil {
		t.Fatal("server accepted a client without a certificate")
	} else {
		t.Logf("client without certificate: %v", err)
	}
}

func TestServerNameChecked(t *testing.T) {
	dir := generate(t, "demo")
	us, ap := load(t, dir, "us-east"), load(t, dir, "ap-south")
	// us-east means to reach eu-west but reaches ap-south.
	if err := handshake(us.ClientTLS("eu-west"), ap.ServerTLS()); err == nil {
		t.Fatal("client accepted ap-south as eu-west")
	}
	// A name check by IP address is never what passes: 127.0.0.1 is no region.
	if err := handshake(us.ClientTLS("127.0.0.1"), ap.ServerTLS()); err == nil {
		t.Fatal("client accepted a server by IP address")
	}
}

func TestTLS12Refused(t *testing.T) {
	dir := generate(t, "demo")
	us, eu := load(t, dir, "us-east"), load(t, dir, "eu-west")
	cfg := us.ClientTLS("eu-west")
	cfg.MinVersion, cfg.MaxVersion = tls.VersionTLS12, tls.VersionTLS12
	if err := handshake(cfg, eu.ServerTLS()); err == nil {
		t.Fatal("server accepted TLS 1.2")
	}
}

func TestNoResumption(t *testing.T) {
	dir := generate(t, "demo")
	us, eu := load(t, dir, "us-east"), load(t, dir, "eu-west")
	cfg := us.ClientTLS("eu-west")
	cfg.ClientSessionCache = tls.NewLRUClientSessionCache(4)
	server := eu.ServerTLS()
	for i := range 2 {
		cs, err := handshakeState(cfg, server)
		if err != nil {
			t.Fatalf("handshake %d: %v", i, err)
		}
		if cs.DidResume {
			t.Fatalf("handshake %d resumed a session", i)
		}
		if len(cs.VerifiedChains) == 0 {
			t.Fatalf("handshake %d: client certificate not verified", i)
		}
	}
}

func TestPeerRegionUnverified(t *testing.T) {
	if _, err := PeerRegion(tls.ConnectionState{}); !errors.Is(err, ErrNoVerifiedPeer) {
		t.Fatalf("PeerRegion of an unverified connection: %v", err)
	}
}

func TestRegionOfNeedsOneName(t *testing.T) {
	for _, names := range [][]string{nil, {"us-east", "eu-west"}, {"US-EAST"}, {"ca"}} {
		if _, err := regionOf(&x509.Certificate{DNSNames: names}); err == nil {
			t.Errorf("regionOf(%q) succeeded", names)
		}
	}
	if got, err := regionOf(&x509.Certificate{DNSNames: []string{"eu-west"}}); err != nil || got != "eu-west" {
		t.Errorf("regionOf(eu-west) = %q, %v", got, err)
	}
}
