package config

import (
	"runtime"
	"runtime/metrics"
	"strings"
	"testing"
	"time"
)

// aliasBase is a valid two-region config that the tests below extend.
const aliasBase = `cluster: demo
regions:
  - name: us-east
    api: 127.0.0.1:7101
    peer: 127.0.0.1:7201
  - name: eu-west
    api: 127.0.0.1:7102
    peer: 127.0.0.1:7202
`

// peakHeap returns how far the heap's objects grew above where they
// stood before f, at the highest point sampled while f ran.
func peakHeap(f func()) uint64 {
	runtime.GC()
	const name = "/memory/classes/heap/objects:bytes"
	s := []metrics.Sample{{Name: name}}
	metrics.Read(s)
	base := s[0].Value.Uint64()
	peak := base
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		s := []metrics.Sample{{Name: name}}
		for {
			metrics.Read(s)
			if v := s[0].Value.Uint64(); v > peak {
				peak = v
			}
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Microsecond):
			}
		}
	}()
	f()
	close(stop)
	<-done
	return peak - base
}

// TestPartitionsNegativeRefused: an explicit `partitions: -1` is out of
// range (a power of two 1..4096), not taken for the key left out.
func TestPartitionsNegativeRefused(t *testing.T) {
	c, err := Parse([]byte(aliasBase + "partitions: -1\n"))
	if err == nil {
		t.Fatalf("partitions: -1 accepted as partitions %d; want an error naming partitions", c.Partitions)
	}
	if !strings.Contains(err.Error(), "partitions") {
		t.Errorf("error %q does not name partitions", err)
	}
}

// TestUnknownKeysThroughAliasesAndMerges: unknown keys are errors however
// they are spelled: in a merge key's list of mappings, as an alias used as
// a key, or in an anchored node reused where its keys mean nothing.
func TestUnknownKeysThroughAliasesAndMerges(t *testing.T) {
	cases := map[string]string{
		// a merge key whose value is a sequence of inline mappings
		"merge of a sequence": aliasBase + "<<: [{bogus_key: 1}]\n",
		// an alias used as a key: the check reads the anchor's name
		// ("cluster"), the decoder the anchored value ("bogus_key")
		"aliased key": aliasBase + "tls_dir: &cluster bogus_key\n*cluster : 1\n",
		// an anchor checked where it stands (a homes rule) and used
		// where its keys mean nothing (emulate)
		"alias of another type": aliasBase + "homes:\n  - &h {prefix: eu-, region: eu-west}\nemulate: *h\n",
	}
	for name, y := range cases {
		t.Run(name, func(t *testing.T) {
			if c, err := Parse([]byte(y)); err == nil {
				t.Errorf("accepted, with the unknown keys dropped: %+v", *c)
			}
		})
	}
}

// TestFractionalIntegersRefused: a fractional value for an integer key is
// a value of the wrong type, not truncated.
func TestFractionalIntegersRefused(t *testing.T) {
	cases := map[string]string{
		"partitions":         aliasBase + "partitions: 2.5\n",
		"emulate.latency_ms": aliasBase + "emulate: {latency_ms: {\"us-east/eu-west\": 34.9}}\n",
		"gc.percent":         aliasBase + "gc: {percent: 150.5}\n",
	}
	for key, y := range cases {
		t.Run(key, func(t *testing.T) {
			c, err := Parse([]byte(y))
			if err == nil {
				t.Errorf("a fractional %s was accepted (partitions %d, latency %v, gc.percent %d)",
					key, c.Partitions, c.Emulate.LatencyMS, c.GC.Percent)
			}
		})
	}
}

// TestAliasBombRefused: a node's partitions (a PartitionSet, which decodes
// its own node and so escapes the YAML library's alias budget) aliased a
// thousand times: a few KB of YAML must not cost hundreds of MB before the
// config is refused.
func TestAliasBombRefused(t *testing.T) {
	var b strings.Builder
	b.WriteString("cluster: d\npartitions: 4\nregions:\n  - name: a\n    nodes:\n      - &n\n        name: n0\n        api: 127.0.0.1:1\n        peer: 127.0.0.1:2\n        partitions: &p [")
	b.WriteString(strings.Repeat("0,", 4096))
	b.WriteString("0]\n")
	b.WriteString(strings.Repeat("      - *n\n", 1000))
	y := b.String()
	var err error
	peak := peakHeap(func() { _, err = Parse([]byte(y)) })
	if err == nil {
		t.Fatal("accepted")
	}
	// A valid config of ordinary shape costs about 50 times its size to
	// parse with this YAML library; allow four times that.
	if limit := uint64(200 * len(y)); peak > limit {
		t.Errorf("parsing %d bytes took %d MB of heap (%.0f× its size), more than %d× its size",
			len(y), peak>>20, float64(peak)/float64(len(y)), 200)
	}
}
