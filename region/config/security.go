package config

import (
	"os"
	"path/filepath"
	"strings"
)

// RegionPlaceholder, in a path of api_tls, stands for the name of the
// region reading the config, so that one shared file can give each region
// its own certificate: cert: api/{region}.crt.
const RegionPlaceholder = "{region}"

// APITLS serves a region's REST API over HTTPS. The zero value serves
// plain HTTP.
type APITLS struct {
	// Cert is the PEM certificate chain the API presents, leaf first.
	// Setting it turns HTTPS on. Load resolves a relative path against
	// the config file's directory; {region} is the region's name.
	Cert string `yaml:"cert"`
	// Key is the PEM private key of Cert. Required with Cert.
	Key string `yaml:"key"`
	// ClientCA, when set, is a PEM file of CA certificates: every client
	// must then present a certificate one of them signed (mutual TLS).
	ClientCA string `yaml:"client_ca"`
}

// Enabled reports whether the API is served over HTTPS.
func (t APITLS) Enabled() bool { return t.Cert != "" }

// APIAuth makes a region's REST API need bearer tokens. The zero value
// needs none.
type APIAuth struct {
	// ReadTokens is a file of read-only tokens (GET and HEAD), one per
	// line; empty lines and lines starting with # are ignored. Load
	// resolves a relative path against the config file's directory.
	ReadTokens string `yaml:"read_tokens"`
	// WriteTokens is a file of read-write tokens (every method), in the
	// same format.
	WriteTokens string `yaml:"write_tokens"`
	// ProtectProbes makes /healthz, /readyz and /metrics need a token
	// too; by default they stay open to probes and scrapers.
	ProtectProbes bool `yaml:"protect_probes"`
}

// Enabled reports whether the API needs bearer tokens.
func (a APIAuth) Enabled() bool { return a.ReadTokens != "" || a.WriteTokens != "" }

// APITLSFiles returns the paths of region name's API certificate, key and
// client CA ("" when not set), with {region} replaced by name.
func (c *Config) APITLSFiles(name string) (cert, key, clientCA string) {
	r := func(p string) string { return strings.ReplaceAll(p, RegionPlaceholder, name) }
	return r(c.APITLS.Cert), r(c.APITLS.Key), r(c.APITLS.ClientCA)
}

// resolveSecurityPaths resolves the relative paths of api_tls and
// api_auth against dir.
func (c *Config) resolveSecurityPaths(dir string) {
	for _, p := range []*string{&c.APITLS.Cert, &c.APITLS.Key, &c.APITLS.ClientCA, &c.APIAuth.ReadTokens, &c.APIAuth.WriteTokens} {
		if *p != "" {
			*p = resolve(dir, *p)
		}
	}
}

// sameTokenFile reports whether the token files a and b are one file:
// the same path once cleaned and made absolute (relative paths are taken
// from the working directory here; Load resolves them against the
// config's directory first), or, where both exist, the same file on disk
// (a link). A token listed in both files is read-write, so one file for
// both scopes would make every read token a write token.
func sameTokenFile(a, b string) bool {
	if filepath.Clean(a) == filepath.Clean(b) {
		return true
	}
	aa, err1 := filepath.Abs(a)
	ab, err2 := filepath.Abs(b)
	if err1 == nil && err2 == nil && aa == ab {
		return true
	}
	fa, err := os.Stat(a)
	if err != nil {
		return false
	}
	fb, err := os.Stat(b)
	return err == nil && os.SameFile(fa, fb)
}

// validateSecurity checks api_tls and api_auth; bad records a problem
// with a key.
func (c *Config) validateSecurity(bad func(key, format string, args ...any)) {
	t := c.APITLS
	checkPath := func(key, p string, placeholder bool) {
		switch {
		case p == "":
		case strings.ContainsRune(p, 0):
			bad(key, "%q holds a NUL byte", p)
		case strings.HasSuffix(p, "/") || strings.HasSuffix(p, string(filepath.Separator)):
			bad(key, "%q names a directory, want a file", p)
		case strings.ContainsAny(strings.ReplaceAll(p, RegionPlaceholder, ""), "{}"):
			if placeholder {
				bad(key, "%q: the only placeholder is %s", p, RegionPlaceholder)
			} else {
				bad(key, "%q: placeholders are not taken here", p)
			}
		}
	}
	checkPath("api_tls.cert", t.Cert, true)
	checkPath("api_tls.key", t.Key, true)
	checkPath("api_tls.client_ca", t.ClientCA, true)
	switch {
	case t.Cert != "" && t.Key == "":
		bad("api_tls.key", "required with api_tls.cert")
	case t.Cert == "" && t.Key != "":
		bad("api_tls.cert", "required with api_tls.key")
	case t.Cert != "" && t.Cert == t.Key:
		bad("api_tls.key", "%q is also api_tls.cert; the key needs its own file", t.Key)
	}
	if t.ClientCA != "" && t.Cert == "" {
		bad("api_tls.client_ca", "needs api_tls.cert: client certificates are asked only over HTTPS")
	}

	a := c.APIAuth
	for _, k := range []struct{ key, p string }{{"api_auth.read_tokens", a.ReadTokens}, {"api_auth.write_tokens", a.WriteTokens}} {
		if strings.Contains(k.p, RegionPlaceholder) {
			bad(k.key, "%q: placeholders are not taken here", k.p)
			continue
		}
		checkPath(k.key, k.p, false)
	}
	if a.ReadTokens != "" && a.WriteTokens != "" && sameTokenFile(a.ReadTokens, a.WriteTokens) {
		bad("api_auth.write_tokens", "%q is also api_auth.read_tokens (%q); each scope needs its own file", a.WriteTokens, a.ReadTokens)
	}
	if a.ProtectProbes && !a.Enabled() {
		bad("api_auth.protect_probes", "needs api_auth.read_tokens or api_auth.write_tokens")
	}
}
