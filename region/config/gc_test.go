package config

import (
	"strings"
	"testing"
)

func TestGCKeys(t *testing.T) {
	c, err := Parse([]byte(base("", "gc: {percent: 250, memory_limit_mib: 2048}\n")))
	if err != nil {
		t.Fatal(err)
	}
	if c.GC.Percent != 250 || c.GC.EffectivePercent() != 250 || c.GC.MemoryLimitMiB != 2048 {
		t.Errorf("parsed %+v", c.GC)
	}
	c, err = Parse([]byte(base("", "")))
	if err != nil {
		t.Fatal(err)
	}
	if c.GC.EffectivePercent() != DefaultGCPercent || c.GC.MemoryLimitMiB != 0 || c.GC.EffectiveHeadroom() != DefaultGCHeadroomMiB<<20 {
		t.Errorf("defaults %+v: percent %d", c.GC, c.GC.EffectivePercent())
	}
	for doc, want := range map[string]int64{"gc: {headroom_mib: 256}\n": 256 << 20, "gc: {headroom_mib: -1}\n": 0} {
		c, err := Parse([]byte(base("", doc)))
		if err != nil || c.GC.EffectiveHeadroom() != want {
			t.Errorf("%q: headroom %d (%v), want %d", doc, c.GC.EffectiveHeadroom(), err, want)
		}
	}
	if _, err := Parse([]byte(base("", "gc: {percent: -1, memory_limit_mib: 512}\n"))); err != nil {
		t.Errorf("collections off with a limit: %v", err)
	}
}

func TestGCErrors(t *testing.T) {
	for _, tc := range []struct{ name, doc, want string }{
		{"percent low", "gc: {percent: -2}\n", "config: gc.percent: -2 is outside -1..10000"},
		{"percent high", "gc: {percent: 10001}\n", "config: gc.percent: 10001 is outside -1..10000"},
		{"negative limit", "gc: {memory_limit_mib: -1}\n", "config: gc.memory_limit_mib: -1 is outside 0..1073741824"},
		{"headroom low", "gc: {headroom_mib: -2}\n", "config: gc.headroom_mib: -2 is outside -1..1073741824"},
		{"off without limit", "gc: {percent: -1}\n", "config: gc.memory_limit_mib: required when gc.percent is -1"},
		{"unknown key", "gc: {gogc: 200}\n", "\"gogc\""},
		{"wrong type", "gc: {percent: lots}\n", `gc.percent: "lots" at line 6 is not an integer`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(base("", tc.doc)))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want it to hold %q", err, tc.want)
			}
		})
	}
}

func TestAntiEntropyRateKey(t *testing.T) {
	for doc, want := range map[string]int64{"": DefaultAntiEntropyRate, "anti_entropy_rate_bytes_per_sec: 65536\n": 65536,
		"anti_entropy_rate_bytes_per_sec: -1\n": 0} {
		c, err := Parse([]byte(base("", doc)))
		if err != nil || c.EffectiveAntiEntropyRate() != want {
			t.Errorf("%q: rate %d (%v), want %d", doc, c.EffectiveAntiEntropyRate(), err, want)
		}
	}
	for _, doc := range []string{"anti_entropy_rate_bytes_per_sec: -2\n", "anti_entropy_rate_bytes_per_sec: 100\n",
		"anti_entropy_rate_bytes_per_sec: 2000000000000\n"} {
		_, err := Parse([]byte(base("", doc)))
		if err == nil || !strings.Contains(err.Error(), "config: anti_entropy_rate_bytes_per_sec: ") {
			t.Errorf("%q: error %v, want one naming anti_entropy_rate_bytes_per_sec", doc, err)
		}
	}
}
