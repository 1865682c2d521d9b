package replication

import (
	"testing"

	"github.com/latticedb/lattice/region/config"
	"github.com/latticedb/lattice/sync/protocol"
)

// TestProtocolConfigRate checks that a region's anti-entropy rate comes
// from anti_entropy_rate_bytes_per_sec: the protocol's default when the
// config leaves it out, the configured rate, or none for -1, whether or
// not the caller tuned the protocol.
func TestProtocolConfigRate(t *testing.T) {
	tuned := protocol.DefaultConfig()
	tuned.Window = 3
	for _, c := range []struct {
		name  string
		opts  AttachOptions
		rate  int64
		want  int
		check func(protocol.Config) bool
	}{
		{"default", AttachOptions{}, 0, protocol.DefaultAntiEntropyRate, nil},
		{"configured", AttachOptions{}, 65536, 65536, nil},
		{"unbounded", AttachOptions{}, -1, 0, nil},
		{"tuned, config silent", AttachOptions{Protocol: tuned}, 0, tuned.AntiEntropyRate, func(p protocol.Config) bool { return p.Window == 3 }},
		{"tuned, configured", AttachOptions{Protocol: tuned}, 1 << 20, 1 << 20, func(p protocol.Config) bool { return p.Window == 3 }},
	} {
		cfg := config.DefaultConfig()
		cfg.AntiEntropyRate = c.rate
		got := protocolConfig(c.opts, cfg)
		if got.AntiEntropyRate != c.want || (c.check != nil && !c.check(got)) {
			t.Errorf("%s: protocol config %+v, want rate %d", c.name, got, c.want)
		}
		if err := got.Validate(); err != nil {
			t.Errorf("%s: %v", c.name, err)
		}
	}
}
