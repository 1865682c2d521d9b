package protocol_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/latticedb/lattice/crdt"
	"github.com/latticedb/lattice/sync/protocol"
)

// BenchmarkPropagation measures what replication costs on the wire in a
// healthy 3-region mesh: every protocol byte sent (deltas, acks, status)
// per update, against the encoded size of the update's delta and against
// shipping the updated object's full state to every peer. Updates arrive
// every gap of virtual time at random regions (one-way delay 30 ms).
func BenchmarkPropagation(b *testing.B) {
	for _, gap := range []time.Duration{10 * time.Millisecond, time.Millisecond, 100 * time.Microsecond} {
		b.Run(fmt.Sprintf("gap=%s", gap), func(b *testing.B) {
			t := &testing.T{}
			s := newSimWith(t, 42, protocol.DefaultConfig())
			s.unchecked = map[int]bool{0: true, 1: true, 2: true} // measured, not checked
			s.loss, s.dup = 0, 0
			s.delay = [2]time.Duration{30 * time.Millisecond, time.Millisecond}
			for i := range 20 {
				s.carts = append(s.carts, fmt.Sprintf("bench-%d", i))
			}
			var wire, deltaBytes, fullBytes int
			byKind := map[protocol.Kind]int{}
			s.sent = func(m *protocol.Message, n int) { wire += n; byKind[m.Kind] += n }
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				r := s.regions[s.rng.IntN(3)]
				cart := s.carts[s.rng.IntN(len(s.carts))]
				sku := s.skus[s.rng.IntN(len(s.skus))]
				if _, err := r.node.AddItem(bg, cart, sku, 1); err != nil {
					b.Fatal(err)
				}
				for _, d := range r.pub.ds {
					deltaBytes += len(crdt.EncodeGroup(d.Group))
				}
				g, _ := r.node.ReadObjects([]string{cart}, nil)
				fullBytes += len(crdt.EncodeGroup(g))
				s.process(s.index(r))
				s.step(gap)
			}
			for range 100 { // drain
				s.step(10 * time.Millisecond)
			}
			b.StopTimer()
			peers := float64(len(s.regions) - 1)
			b.ReportMetric(float64(wire)/float64(b.N), "wire-B/update")
			b.ReportMetric(float64(deltaBytes)/float64(b.N), "delta-B/update")
			b.ReportMetric(float64(wire)/(peers*float64(deltaBytes)), "wire/((R-1)×delta)")
			b.ReportMetric(float64(wire)/(peers*float64(fullBytes)), "wire/((R-1)×state)")
			for k, n := range byKind {
				b.ReportMetric(float64(n)/float64(b.N), "msg-"+k.String()+"-B/update")
			}
		})
	}
}
