package main

import (
	"flag"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/latticedb/lattice/api/client"
	"github.com/latticedb/lattice/region/config"
)

func TestAuthFlags(t *testing.T) {
	dir := t.TempDir()
	tokFile := filepath.Join(dir, "tok")
	if err := os.WriteFile(tokFile, []byte("# mine\n\n  file-token-0123456789  \n"), 0o600); err != nil {
		t.Fatal(err)
	}
	parse := func(args ...string) (client.Options, error) {
		fs := flag.NewFlagSet("x", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		a := addAuth(fs)
		if err := fs.Parse(args); err != nil {
			t.Fatal(err)
		}
		return a.options(client.Options{})
	}
	t.Setenv(envToken, "env-token-0123456789")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--token", "flag-token-0123456789"}, "flag-token-0123456789"},
		{[]string{"--token-file", tokFile}, "file-token-0123456789"},
		{nil, "env-token-0123456789"},
	} {
		o, err := parse(tc.args...)
		if err != nil || o.BearerToken != tc.want {
			t.Errorf("%v: token %q, %v; want %q", tc.args, o.BearerToken, err, tc.want)
		}
	}
	for _, args := range [][]string{
		{"--token", "a", "--token-file", tokFile},
		{"--token-file", filepath.Join(dir, "missing")},
		{"--cacert", tokFile},
	} {
		if _, err := parse(args...); err == nil {
			t.Errorf("%v: no error", args)
		}
	}
	cfg := &config.Config{APITLS: config.APITLS{Cert: "a", Key: "b"}}
	if u := regionURL(cfg, config.RegionConfig{API: ":7101"}); u != "https://127.0.0.1:7101" {
		t.Errorf("regionURL = %q", u)
	}
	if u := regionURL(&config.Config{}, config.RegionConfig{API: "127.0.0.1:7101"}); !strings.HasPrefix(u, "http://") {
		t.Errorf("regionURL = %q", u)
	}
}
