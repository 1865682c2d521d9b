package protocol

import (
	"slices"
	"testing"
	"time"

	"github.com/latticedb/lattice/crdt"
)

// fixedStorage is a key space whose states never change: what anti-entropy
// ships to it joins to nothing new, as with a dot held with two contents.
type fixedStorage struct {
	buckets int
	hashes  map[string]uint64
}

func (f *fixedStorage) Snapshot(choose func([]uint64) []uint32) (*Snapshot, error) {
	s := &Snapshot{Buckets: make([]uint64, f.buckets), Keys: map[string]uint64{}}
	for k, h := range f.hashes {
		s.Buckets[crdt.KeyBucket(k, f.buckets)] ^= h
	}
	if choose != nil {
		for _, b := range choose(s.Buckets) {
			for k, h := range f.hashes {
				if crdt.KeyBucket(k, f.buckets) == b {
					s.Keys[k] = h
				}
			}
		}
	}
	return s, nil
}

func (f *fixedStorage) Read([]string) (*crdt.Group, crdt.Context, error) {
	return &crdt.Group{}, crdt.Context{}, nil
}

// TestUnrepairedKeysAreReported runs anti-entropy between two regions
// whose states for one key differ in a way no join changes: after
// UnrepairedRounds rounds the key is listed; a key that merely differs
// once is not.
func TestUnrepairedKeysAreReported(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Buckets = 8
	cfg.AntiEntropyEvery = time.Second
	a := New("a", []crdt.ReplicaID{"a", "b"}, crdt.Context{}, &fixedStorage{8, map[string]uint64{"c/x": 1, "c/same": 7}}, cfg)
	b := New("b", []crdt.ReplicaID{"a", "b"}, crdt.Context{}, &fixedStorage{8, map[string]uint64{"c/x": 2, "c/same": 7}}, cfg)
	now := time.Unix(1_800_000_000, 0)
	a.PeerUp("b", now)
	b.PeerUp("a", now)
	deliver := func() {
		for range 20 {
			moved := false
			for _, pair := range [][2]*Protocol{{a, b}, {b, a}} {
				for _, env := range pair[0].Ready().Messages {
					b, err := Encode(env.Msg)
					if err != nil {
						t.Fatal(err)
					}
					m, err := Decode(b, cfg.Buckets)
					if err != nil {
						t.Fatal(err)
					}
					pair[1].Step(pair[0].self, m, now)
					moved = true
				}
			}
			if !moved {
				return
			}
		}
	}
	unrepaired := func(p *Protocol) []string { return p.Status()[0].UnrepairedKeys }
	for round := 1; round <= UnrepairedRounds; round++ {
		now = now.Add(2 * time.Second)
		a.Tick(now)
		deliver()
		got := unrepaired(a)
		if round < UnrepairedRounds && len(got) != 0 {
			t.Fatalf("round %d: unrepaired %v too early", round, got)
		}
		if round == UnrepairedRounds && !slices.Equal(got, []string{"c/x"}) {
			t.Fatalf("after %d rounds: unrepaired %v, want [c/x]", round, got)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	for name, change := range map[string]func(*Config){
		"no buckets":          func(c *Config) { c.Buckets = 0 },
		"too many buckets":    func(c *Config) { c.Buckets = MaxBuckets + 1 },
		"no window":           func(c *Config) { c.Window = 0 },
		"no buffer":           func(c *Config) { c.MaxBufferEntries = 0 },
		"huge messages":       func(c *Config) { c.MaxMessageBytes = MaxMessageBytes + 1 },
		"no retransmission":   func(c *Config) { c.RetransmitAfter = 0 },
		"negative relay":      func(c *Config) { c.RelayDelay = -1 },
		"too many round keys": func(c *Config) { c.MaxRoundKeys = MaxKeys + 1 },
	} {
		c := DefaultConfig()
		change(&c)
		if c.Validate() == nil {
			t.Errorf("%s: Validate accepted %+v", name, c)
		}
	}
}
