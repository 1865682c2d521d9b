package main

import (
	"errors"
	"flag"
	"os"
	"strings"

	"github.com/latticedb/lattice/api/client"
	"github.com/latticedb/lattice/region/config"
)

// envToken is the environment variable the client commands and status
// take a bearer token from when neither --token nor --token-file is
// given.
const envToken = "LATTICE_TOKEN"

// authFlags are the flags of the client commands and status that reach a
// region serving HTTPS with bearer tokens (api_tls, api_auth).
type authFlags struct {
	token, tokenFile, cacert *string
}

func addAuth(fs *flag.FlagSet) *authFlags {
	return &authFlags{
		token:     fs.String("token", "", "bearer `TOKEN` to send (visible to other users of this machine: prefer --token-file or $"+envToken+")"),
		tokenFile: fs.String("token-file", "", "`FILE` holding the bearer token to send (its first token line, as in a token file)"),
		cacert:    fs.String("cacert", "", "PEM `FILE` of the CA to verify an https region's certificate with (default: the system's)"),
	}
}

// options returns opts with the token and CA the flags give: --token,
// else --token-file, else $LATTICE_TOKEN.
func (a *authFlags) options(opts client.Options) (client.Options, error) {
	if *a.token != "" && *a.tokenFile != "" {
		return opts, errors.New("give either --token or --token-file, not both")
	}
	opts.BearerToken = *a.token
	if *a.tokenFile != "" {
		b, err := os.ReadFile(*a.tokenFile)
		if err != nil {
			return opts, err
		}
		for line := range strings.SplitSeq(string(b), "\n") {
			if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "#") {
				opts.BearerToken = line
				break
			}
		}
		if opts.BearerToken == "" {
			return opts, errors.New("--token-file " + *a.tokenFile + " holds no token")
		}
	}
	if opts.BearerToken == "" {
		opts.BearerToken = os.Getenv(envToken)
	}
	if *a.cacert != "" {
		pool, err := client.LoadCertPool(*a.cacert)
		if err != nil {
			return opts, errors.New(strings.TrimPrefix(err.Error(), "lattice client: "))
		}
		opts.RootCAs = pool
	}
	return opts, nil
}

// regionURL is the base URL of a region of cfg: https when the config
// serves the API over TLS (api_tls). A region of several nodes is
// reached at its first node, which forwards what other nodes own.
func regionURL(cfg *config.Config, rc config.RegionConfig) string {
	addr := rc.API
	if nodes := cfg.Nodes(rc.Name); addr == "" && len(nodes) > 0 {
		addr = nodes[0].DialAPI()
	}
	return baseURL(cfg, addr)
}

// baseURL is the base URL of the API at addr: https when the config
// serves the API over TLS.
func baseURL(cfg *config.Config, addr string) string {
	u := apiURL(addr)
	if cfg.APITLS.Enabled() {
		u = "https://" + strings.TrimPrefix(u, "http://")
	}
	return u
}
