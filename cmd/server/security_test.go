package server

import (
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
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/latticedb/lattice/region/config"
	"github.com/latticedb/lattice/region/regiontest"
)

const (
	readToken  = "read-0123456789abcdef"
	writeToken = "write-0123456789abcdef"
)

// testPKI is a CA that issues API certificates for 127.0.0.1.
type testPKI struct {
	t    *testing.T
	ca   *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

func newTestPKI(t *testing.T) *testPKI {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test API CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(1000 * time.Hour),
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true, IsCA: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	return &testPKI{t: t, ca: ca, key: key, pool: pool}
}

// issue writes a certificate for 127.0.0.1 valid until notAfter, and its
// key, each file replaced atomically.
func (p *testPKI) issue(certFile, keyFile string, serial int64, notAfter time.Time) {
	p.t.Helper()
	p.issueFor(certFile, keyFile, serial, notAfter, x509.ExtKeyUsageServerAuth)
}

// issueFor is issue with these extended key usages.
func (p *testPKI) issueFor(certFile, keyFile string, serial int64, notAfter time.Time, usages ...x509.ExtKeyUsage) {
	t := p.t
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: "127.0.0.1"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, NotBefore: time.Now().Add(-time.Hour), NotAfter: notAfter,
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: usages}
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

func writeAtomic(t *testing.T, path string, data []byte) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// syncBuffer is a log sink safe for concurrent writers.
type syncBuffer = regiontest.LogBuffer

// secureRegion starts us-east serving HTTPS with bearer tokens and an
// access log, reloading its files every 20 ms.
func secureRegion(t *testing.T) (r *testRegion, pki *testPKI, dir string, logs *syncBuffer) {
	t.Helper()
	dir = t.TempDir()
	pki = newTestPKI(t)
	cfg := testConfig(dir, config.DurabilityAlways)
	cfg.APITLS = config.APITLS{Cert: filepath.Join(dir, "api", "{region}.crt"), Key: filepath.Join(dir, "api", "{region}.key")}
	cfg.APIAuth = config.APIAuth{ReadTokens: filepath.Join(dir, "read"), WriteTokens: filepath.Join(dir, "write")}
	cfg.AccessLog = true
	if err := os.MkdirAll(filepath.Join(dir, "api"), 0o700); err != nil {
		t.Fatal(err)
	}
	pki.issue(filepath.Join(dir, "api", "us-east.crt"), filepath.Join(dir, "api", "us-east.key"), 2, time.Now().Add(100*time.Hour))
	writeAtomic(t, cfg.APIAuth.ReadTokens, []byte(readToken+"\n"))
	writeAtomic(t, cfg.APIAuth.WriteTokens, []byte(writeToken))
	logs = &syncBuffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	r = startRegion(t, cfg, "us-east", Options{Logger: log, ReloadInterval: 20 * time.Millisecond})
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pki.pool}}
	t.Cleanup(tr.CloseIdleConnections)
	r.client.hc = &http.Client{Transport: tr, Timeout: 30 * time.Second}
	return r, pki, dir, logs
}

func TestAPIServesTLSWithTokens(t *testing.T) {
	r, _, _, logs := secureRegion(t)
	if !strings.HasPrefix(r.srv.URL(), "https://") {
		t.Fatalf("URL %s", r.srv.URL())
	}
	bearer := func(tok string) []string { return []string{"Authorization", "Bearer " + tok} }

	// Probes are open, over TLS verified with the CA.
	for _, p := range []string{"/healthz", "/readyz", "/metrics"} {
		if resp := r.do("GET", p, ""); resp.status != 200 {
			t.Errorf("GET %s without a token: %v", p, resp)
		}
	}
	// Plain HTTP is not served, and a client that does not trust the CA
	// is refused.
	if resp, err := http.Get("http://" + r.srv.Addr().String() + "/healthz"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == 200 {
			t.Error("plain HTTP answered 200")
		}
	}
	if _, err := (&http.Client{Timeout: 5 * time.Second}).Get(r.srv.URL() + "/healthz"); err == nil {
		t.Error("a client without the CA completed a request")
	}

	resp := r.do("GET", "/v1/carts/c1", "")
	expectProblem(t, resp, 401, "unauthorized", "")
	if !strings.HasPrefix(resp.header.Get("WWW-Authenticate"), "Bearer") {
		t.Errorf("WWW-Authenticate %q", resp.header.Get("WWW-Authenticate"))
	}
	resp = r.do("POST", "/v1/inventory/us-book/restock", `{"qty":5}`, bearer(readToken)...)
	expectProblem(t, resp, 403, "forbidden", "")
	resp = r.do("POST", "/v1/carts/c1/items", `{"sku":"us-book","qty":1}`, bearer("not-a-token-of-this-region")...)
	expectProblem(t, resp, 401, "unauthorized", "")

	// The refused writes left the store untouched.
	checkItem(t, r.ok(200, "GET", "/v1/inventory/us-book", "", bearer(readToken)...), "us-book", "us-east", 0, 0)
	checkCart(t, r.ok(200, "GET", "/v1/carts/c1", "", bearer(readToken)...), "c1")

	checkItem(t, r.ok(200, "POST", "/v1/inventory/us-book/restock", `{"qty":5}`, bearer(writeToken)...), "us-book", "us-east", 5, 0)
	checkItem(t, r.ok(200, "GET", "/v1/inventory/us-book", "", bearer(readToken)...), "us-book", "us-east", 5, 0)

	// Request ids: echoed when valid, generated otherwise, in problems.
	resp = r.do("GET", "/v1/carts/c1", "", "X-Request-Id", "trace-42")
	if got := resp.header.Get("X-Request-Id"); got != "trace-42" {
		t.Errorf("echoed X-Request-Id %q", got)
	}
	if m := decode(t, resp); m["request_id"] != "trace-42" {
		t.Errorf("problem request_id %v", m["request_id"])
	}
	resp = r.do("GET", "/healthz", "", "X-Request-Id", "bad id, too long "+strings.Repeat("x", 200))
	if got := resp.header.Get("X-Request-Id"); got == "" || strings.Contains(got, " ") {
		t.Errorf("generated X-Request-Id %q", got)
	}

	// An adjustment is logged with its outcome, after it is decided.
	expectProblem(t, r.do("POST", "/v1/inventory/us-book/adjust", `{"delta":-9,"reason":"audit"}`, bearer(writeToken)...), 409, "insufficient_stock", "")
	r.ok(200, "POST", "/v1/inventory/us-book/adjust", `{"delta":-2,"reason":"damaged"}`, bearer(writeToken)...)
	out := logs.String()
	if !regexp.MustCompile(`msg="inventory adjustment refused".*delta=-9 reason=audit err=`).MatchString(out) {
		t.Errorf("no refused adjustment in the log:\n%s", out)
	}
	if !regexp.MustCompile(`msg="inventory adjustment".*delta=-2 reason=damaged stock=3`).MatchString(out) {
		t.Errorf("no applied adjustment with its stock in the log:\n%s", out)
	}
	if strings.Contains(out, `msg="inventory adjustment" region=us-east sku=us-book delta=-9`) {
		t.Errorf("the refused adjustment was logged as made:\n%s", out)
	}
	// The access log names the request and the region, never the token.
	if !regexp.MustCompile(`level=INFO msg="api: request" region=us-east method=GET .*path=/v1/carts/c1 status=401 .*duration=.* request_id=trace-42`).MatchString(out) {
		t.Errorf("no access log line for trace-42:\n%s", out)
	}
	if strings.Contains(out, readToken) || strings.Contains(out, writeToken) {
		t.Error("a token was logged")
	}
}

func TestTokenFileRotation(t *testing.T) {
	r, _, dir, logs := secureRegion(t)
	const next = "rotated-0123456789abcdef"
	restock := func(tok string) int {
		return r.do("POST", "/v1/inventory/us-pen/restock", `{"qty":1}`, "Authorization", "Bearer "+tok).status
	}
	if got := restock(next); got != 401 {
		t.Fatalf("new token before rotation: %d", got)
	}
	// A Secret's update: the new token first added, then the old removed.
	writeAtomic(t, filepath.Join(dir, "write"), []byte("# rotation\n"+writeToken+"\n"+next+"\n"))
	waitFor(t, 10*time.Second, "the new token to be accepted", func() bool { return restock(next) == 200 })
	if got := restock(writeToken); got != 200 {
		t.Fatalf("old token during rotation: %d", got)
	}
	writeAtomic(t, filepath.Join(dir, "write"), []byte(next+"\n"))
	waitFor(t, 10*time.Second, "the old token to be refused", func() bool { return restock(writeToken) == 401 })
	// A broken file keeps the tokens that were loaded.
	writeAtomic(t, filepath.Join(dir, "write"), []byte("short\n"))
	waitFor(t, 10*time.Second, "the broken file to be refused", func() bool {
		return strings.Contains(logs.String(), `msg="reload failed; keeping what was loaded" region=us-east what="api tokens"`)
	})
	if got := restock(next); got != 200 {
		t.Fatalf("after a broken token file: %d", got)
	}
}

func TestAPICertificateRotation(t *testing.T) {
	r, pki, dir, logs := secureRegion(t)
	addr := r.srv.Addr().String()
	served := func() *x509.Certificate {
		conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: pki.pool})
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		return conn.ConnectionState().PeerCertificates[0]
	}
	expiry := func() float64 {
		resp := r.do("GET", "/metrics", "")
		m := regexp.MustCompile(`(?m)^lattice_tls_certificate_expiry_seconds\{cert="api",region="us-east"\} (\S+)$`).FindSubmatch(resp.body)
		if m == nil {
			t.Fatalf("no api expiry in /metrics")
		}
		v, err := strconv.ParseFloat(string(m[1]), 64)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	if got := served().SerialNumber.Int64(); got != 2 {
		t.Fatalf("serial %d", got)
	}
	before := expiry()
	notAfter := time.Now().Add(500 * time.Hour).Truncate(time.Second)
	pki.issue(filepath.Join(dir, "api", "us-east.crt"), filepath.Join(dir, "api", "us-east.key"), 3, notAfter)
	waitFor(t, 10*time.Second, "the new certificate to be served", func() bool { return served().SerialNumber.Int64() == 3 })
	if after := expiry(); after == before || after != float64(notAfter.Unix()) {
		t.Errorf("expiry %v, then %v; want %v", before, after, notAfter.Unix())
	}
	// Requests keep working over the new certificate.
	if resp := r.do("GET", "/healthz", ""); resp.status != 200 {
		t.Fatal(resp)
	}
	// A half-written certificate is not taken.
	writeAtomic(t, filepath.Join(dir, "api", "us-east.crt"), []byte("-----BEGIN CERTIFICATE-----\n"))
	waitFor(t, 10*time.Second, "the broken file to be refused", func() bool {
		return strings.Contains(logs.String(), `msg="reload failed; keeping what was loaded" region=us-east what="api certificate"`)
	})
	if got := served().SerialNumber.Int64(); got != 3 {
		t.Fatalf("serial %d after a broken file", got)
	}
}

func TestSecurityStartErrors(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(dir, config.DurabilityAlways)
	cfg.APITLS = config.APITLS{Cert: filepath.Join(dir, "missing.crt"), Key: filepath.Join(dir, "missing.key")}
	if _, err := Start(t.Context(), cfg, "us-east", Options{Logger: slog.New(slog.DiscardHandler)}); err == nil || !strings.Contains(err.Error(), "api_tls") {
		t.Errorf("missing certificate: %v", err)
	}
	cfg = testConfig(dir, config.DurabilityAlways)
	cfg.APIAuth = config.APIAuth{WriteTokens: filepath.Join(dir, "empty")}
	writeAtomic(t, cfg.APIAuth.WriteTokens, []byte("# none yet\n"))
	if _, err := Start(t.Context(), cfg, "us-east", Options{Logger: slog.New(slog.DiscardHandler)}); err == nil || !strings.Contains(err.Error(), "api_auth") {
		t.Errorf("empty token file: %v", err)
	}
}
