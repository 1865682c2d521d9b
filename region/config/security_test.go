package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestSecurityKeys(t *testing.T) {
	c, err := Parse([]byte(base("", `api_tls: {cert: "api/{region}.crt", key: "api/{region}.key", client_ca: clients.crt}
api_auth: {read_tokens: tokens/read, write_tokens: tokens/write, protect_probes: true}
access_log: true
`)))
	if err != nil {
		t.Fatal(err)
	}
	if !c.APITLS.Enabled() || !c.APIAuth.Enabled() || !c.AccessLog || !c.APIAuth.ProtectProbes {
		t.Fatalf("parsed %+v %+v %v", c.APITLS, c.APIAuth, c.AccessLog)
	}
	cert, key, ca := c.APITLSFiles("us-east")
	if cert != "api/us-east.crt" || key != "api/us-east.key" || ca != "clients.crt" {
		t.Errorf("APITLSFiles = %q %q %q", cert, key, ca)
	}

	// Defaults: plain HTTP, no tokens, no access log.
	c, err = Parse([]byte(base("", "")))
	if err != nil {
		t.Fatal(err)
	}
	if c.APITLS.Enabled() || c.APIAuth.Enabled() || c.AccessLog || c.APIAuth.ProtectProbes {
		t.Errorf("defaults %+v %+v %v", c.APITLS, c.APIAuth, c.AccessLog)
	}
	if d := DefaultConfig(); d.APITLS.Enabled() || d.APIAuth.Enabled() {
		t.Error("DefaultConfig (lattice dev) is not plain HTTP without tokens")
	}
}

func TestSecurityErrors(t *testing.T) {
	for _, tc := range []struct{ name, doc, want string }{
		{"cert without key", "api_tls: {cert: a.crt}\n", "config: api_tls.key: required with api_tls.cert"},
		{"key without cert", "api_tls: {key: a.key}\n", "config: api_tls.cert: required with api_tls.key"},
		{"same file", "api_tls: {cert: a.pem, key: a.pem}\n", "config: api_tls.key: \"a.pem\" is also api_tls.cert"},
		{"client ca alone", "api_tls: {client_ca: ca.crt}\n", "config: api_tls.client_ca: needs api_tls.cert"},
		{"directory", "api_tls: {cert: certs/, key: a.key}\n", "config: api_tls.cert: \"certs/\" names a directory"},
		{"placeholder", "api_tls: {cert: \"{name}.crt\", key: a.key}\n", "config: api_tls.cert: \"{name}.crt\": the only placeholder is {region}"},
		{"token placeholder", "api_auth: {read_tokens: \"{region}.tok\"}\n", "config: api_auth.read_tokens: \"{region}.tok\": placeholders are not taken here"},
		{"token same file", "api_auth: {read_tokens: t, write_tokens: t}\n", "config: api_auth.write_tokens: \"t\" is also api_auth.read_tokens"},
		{"protect without tokens", "api_auth: {protect_probes: true}\n", "config: api_auth.protect_probes: needs api_auth.read_tokens or api_auth.write_tokens"},
		{"unknown tls key", "api_tls: {certificate: a.crt}\n", "\"certificate\""},
		{"wrong type", "access_log: sometimes\n", `access_log: "sometimes" at line 6 is not a boolean (true or false)`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(base("", tc.doc)))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want it to hold %q", err, tc.want)
			}
		})
	}
}

func TestLoadResolvesSecurityPaths(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "lattice.yaml")
	abs := filepath.Join(t.TempDir(), "write")
	doc := base("", "api_tls: {cert: \"api/{region}.crt\", key: \"api/{region}.key\"}\napi_auth: {read_tokens: tokens/read, write_tokens: "+abs+"}\n")
	if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	cert, key, ca := c.APITLSFiles("a")
	if cert != filepath.Join(dir, "api", "a.crt") || key != filepath.Join(dir, "api", "a.key") || ca != "" {
		t.Errorf("APITLSFiles = %q %q %q", cert, key, ca)
	}
	if c.APIAuth.ReadTokens != filepath.Join(dir, "tokens", "read") || c.APIAuth.WriteTokens != abs {
		t.Errorf("token files %q %q", c.APIAuth.ReadTokens, c.APIAuth.WriteTokens)
	}
}
