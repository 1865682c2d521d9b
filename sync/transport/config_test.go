package transport

import (
	"strings"
	"testing"
	"time"

	"github.com/latticedb/lattice/sync/certs"
)

func TestConfigValidate(t *testing.T) {
	dir := t.TempDir()
	if err := certs.Generate(dir, "test", []string{"us-east", "eu-west"}); err != nil {
		t.Fatal(err)
	}
	b, err := certs.Load(dir, "us-east")
	if err != nil {
		t.Fatal(err)
	}
	good := func() Config {
		c := DefaultConfig()
		c.Region = "us-east"
		c.Peers = map[string]string{"eu-west": "127.0.0.1:7202"}
		c.Certs = b
		return c
	}
	if c := good(); c.Validate() != nil {
		t.Fatalf("good config: %v", c.Validate())
	}
	for name, mutate := range map[string]func(*Config){
		"no region":         func(c *Config) { c.Region = "" },
		"self as peer":      func(c *Config) { c.Peers["us-east"] = "127.0.0.1:1" },
		"bad peer name":     func(c *Config) { c.Peers["EU"] = "127.0.0.1:1" },
		"bad address":       func(c *Config) { c.Peers["eu-west"] = "nowhere" },
		"no certs":          func(c *Config) { c.Certs = nil },
		"other region cert": func(c *Config) { c.Region = "ap-south" },
		"zero frame":        func(c *Config) { c.MaxFrameSize = 0 },
		"huge frame":        func(c *Config) { c.MaxFrameSize = 2 << 30 },
		"zero queue":        func(c *Config) { c.MaxQueuedMessages = 0 },
		"queue bytes":       func(c *Config) { c.MaxQueuedBytes = 1 },
		"idle vs keepalive": func(c *Config) { c.MaxIdleTimeout = c.KeepAlivePeriod },
		"backoff":           func(c *Config) { c.ReconnectMax = c.ReconnectMin - time.Millisecond },
		"zero call timeout": func(c *Config) { c.CallTimeout = 0 },
		"streams":           func(c *Config) { c.MaxIncomingStreams = 0 },
		"stream window":     func(c *Config) { c.MaxStreamWindow = c.InitialStreamWindow - 1 },
		"conn window":       func(c *Config) { c.InitialConnectionWindow = 0 },
	} {
		c := good()
		mutate(&c)
		err := c.Validate()
		if err == nil {
			t.Errorf("%s: Validate accepted it", name)
		} else if !strings.HasPrefix(err.Error(), "transport: ") {
			t.Errorf("%s: error %q lacks the package prefix", name, err)
		}
	}
}
