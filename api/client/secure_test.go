package client_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/latticedb/lattice/api/client"
	"github.com/latticedb/lattice/cmd/server"
	"github.com/latticedb/lattice/region/config"
)

// writeTestCA writes a CA and a certificate for 127.0.0.1 it signed:
// ca.crt, api.crt and api.key in dir.
func writeTestCA(t *testing.T, dir string) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true, IsCA: true}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalPKCS8PrivateKey(key)
	for name, b := range map[string][]byte{
		"ca.crt":  pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}),
		"api.crt": pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		"api.key": pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}),
	} {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// TestBearerTokenAndCA calls a region serving HTTPS with tokens: a
// client with the CA and a read-write token reads and writes, one with a
// read-only token gets a 403 Problem, one without the CA cannot connect.
func TestBearerTokenAndCA(t *testing.T) {
	dir := t.TempDir()
	writeTestCA(t, dir)
	const readTok, writeTok = "client-read-0123456789", "client-write-0123456789"
	for name, tok := range map[string]string{"read": readTok, "write": writeTok} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(tok+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cfg := config.DefaultConfig()
	cfg.Regions = cfg.Regions[:1]
	cfg.Emulate.LatencyMS = nil
	cfg.DataDir = filepath.Join(dir, "data")
	cfg.APITLS = config.APITLS{Cert: filepath.Join(dir, "api.crt"), Key: filepath.Join(dir, "api.key")}
	cfg.APIAuth = config.APIAuth{ReadTokens: filepath.Join(dir, "read"), WriteTokens: filepath.Join(dir, "write")}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv, err := server.Start(context.Background(), cfg, "us-east", server.Options{Listener: ln, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })

	pool, err := client.LoadCertPool(filepath.Join(dir, "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	rw, err := client.New([]string{srv.URL()}, client.Options{RootCAs: pool, BearerToken: writeTok})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rw.AddItem(ctx, "c1", "book", 2); err != nil {
		t.Fatalf("write with a read-write token: %v", err)
	}
	ro, err := client.New([]string{srv.URL()}, client.Options{RootCAs: pool, BearerToken: readTok})
	if err != nil {
		t.Fatal(err)
	}
	cart, err := ro.Cart(ctx, "c1")
	if err != nil || len(cart.Items) != 1 {
		t.Fatalf("read with a read-only token: %+v, %v", cart, err)
	}
	var p *client.Problem
	if _, err := ro.AddItem(ctx, "c1", "book", 1); !errors.As(err, &p) || p.Status != 403 || p.Code != "forbidden" || p.RequestID == "" {
		t.Fatalf("write with a read-only token: %v (%+v)", err, p)
	}
	anon, _ := client.New([]string{srv.URL()}, client.Options{RootCAs: pool, MaxAttempts: 1})
	if _, err := anon.Cart(ctx, "c1"); !errors.As(err, &p) || p.Status != 401 || p.Code != "unauthorized" {
		t.Fatalf("no token: %v", err)
	}
	untrusting, _ := client.New([]string{srv.URL()}, client.Options{BearerToken: writeTok, MaxAttempts: 1})
	if _, err := untrusting.Cart(ctx, "c1"); err == nil || errors.As(err, &p) {
		t.Fatalf("a client without the CA: %v", err)
	}
	if cart, _ := rw.Cart(ctx, "c1"); len(cart.Items) != 1 || cart.Items[0].Qty != 2 {
		t.Fatalf("the refused write changed the cart: %+v", cart)
	}
	if _, err := client.New([]string{srv.URL()}, client.Options{BearerToken: "two words"}); err == nil {
		t.Error("a token with a blank was accepted")
	}
	if _, err := client.LoadCertPool(filepath.Join(dir, "read")); err == nil {
		t.Error("a file without certificates loaded as a pool")
	}
}
