package protocol_test

import (
	"encoding/binary"
	"fmt"
	"testing"
	"time"

	"github.com/latticedb/lattice/crdt"
	"github.com/latticedb/lattice/sync/protocol"
)

// ae18LoadStore is a memStore that records the most keys one of its
// snapshots loaded.
type ae18LoadStore struct {
	*memStore
	most int
}

func (s *ae18LoadStore) Snapshot(choose func([]uint64) []uint32) (*protocol.Snapshot, error) {
	snap, err := s.memStore.Snapshot(choose)
	if err == nil {
		s.most = max(s.most, len(snap.Keys))
	}
	return snap, err
}

// TestAE18DigestLoadsBoundedKeys: a region holding 256 keys in each of
// its 1,024 digest buckets (262,144 keys) gets one small digest from a
// peer: a single range of every bucket (cut fingerprints that differ,
// one key a bucket), or a request for the list of the root. Answering
// it must load at most aeLoadKeys (131,072) keys in a snapshot (the
// bound anti-entropy keeps on what one snapshot copies, while the store's
// commits wait): a few kilobytes from the network must not make the
// region copy and sort its whole key space (SPEC §8: hostile input never
// exhausts memory).
func TestAE18DigestLoadsBoundedKeys(t *testing.T) {
	const buckets, perBucket, aeLoadKeys = 1024, 256, 1 << 17
	ms := newMemStore(buckets)
	n := 0
	for b := range buckets {
		for range perBucket {
			// memStore's snapshots give key hashes only: any state does.
			k := fmt.Sprintf("%sk-%d", crdt.CartPrefix, n)
			n++
			ms.keys[b][k] = uint64(n)
			ms.digest[b] ^= uint64(n)
		}
	}
	counts := binary.AppendVarint(nil, 1)
	for range buckets - 1 {
		counts = binary.AppendVarint(counts, 0)
	}
	digests := map[string]*protocol.Message{
		"ranges": {Kind: protocol.KindDigest, Round: 1, Step: 1, Ranges: []protocol.BucketRange{{Lo: 0, Hi: buckets, FPs: make([]byte, 2*buckets), Counts: counts}}},
		"list":   {Kind: protocol.KindDigest, Round: 1, Step: 1, Nodes: []protocol.RangeNode{{Lo: 0, Hi: uint64(buckets) << 32, List: true}}},
	}
	for name, m := range digests {
		t.Run(name, func(t *testing.T) {
			st := &ae18LoadStore{memStore: ms}
			cfg := protocol.DefaultConfig()
			cfg.Buckets = buckets
			now := time.Unix(1_800_000_000, 0)
			names := []crdt.ReplicaID{"us-east", "eu-west"}
			p := protocol.New(names[0], names, crdt.Context{}, st, cfg)
			p.PeerUp(names[1], now)
			p.Ready()
			b, err := protocol.Encode(m)
			if err != nil {
				t.Fatal(err)
			}
			d, err := protocol.Decode(b, buckets)
			if err != nil {
				t.Fatal(err)
			}
			p.Step(names[1], d, now)
			p.Ready()
			if st.most > aeLoadKeys {
				t.Fatalf("a digest of %d bytes made the region load %d keys in one snapshot (all %d it holds); want at most %d", len(b), st.most, n, aeLoadKeys)
			}
		})
	}
}
