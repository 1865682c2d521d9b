package protocol_test

import "github.com/latticedb/lattice/sync/protocol"

// setCounts gives a snapshot its buckets' key counts (crdt.Digest.Counts).
func setCounts(s *protocol.Snapshot, keys []map[string]uint64) {
	s.Counts = make([]uint32, len(keys))
	for b, ks := range keys {
		s.Counts[b] = uint32(len(ks))
	}
}

// setRate sets Config.AntiEntropyRate.
func setRate(c *protocol.Config, rate int) { c.AntiEntropyRate = rate }
