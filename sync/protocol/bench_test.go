package protocol_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/latticedb/lattice/crdt"
	"github.com/latticedb/lattice/sync/protocol"
	"github.com/latticedb/lattice/sync/transport"
)

// BenchmarkPropagation measures what replication costs on the wire in a
// healthy 3-region mesh in steady state: every protocol byte sent per
// update, against the encoded size of the update's delta and against
// shipping the updated object's full state to every peer. Updates arrive
// every gap of virtual time at random regions (one-way delay 30 ms).
//
// The anti-entropy rounds a fresh cluster opens at start-up are over
// before the measured updates begin (a warm-up of 2 s): they are paid
// once, not per update. The periodic rounds (every AntiEntropyEvery) are
// paid per period whatever the rate, and a measured window shorter than
// the period would hide them, so they are measured apart: the bytes of
// one period's rounds among the three regions once the updates have
// settled (ae-B/period), and charged per update at the benchmark's rate
// (ae-B/update = ae-B/period ÷ the updates of one period at this gap).
// wire-B/update is everything sent during the measured window (deltas,
// acknowledgements, status, and any round that ran in it) plus
// ae-B/update. stream-B/update is the same messages as the transport's
// message streams carry them between regions that speak lattice-repl/2:
// framed and compressed, each link's messages in the order sent (a QUIC
// stream delivers them in that order), plus the periodic rounds' stream
// bytes per update.
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
			// Each link's stream from the start, so that the measured
			// messages are compressed against what went before them.
			streams := map[string]*transport.StreamEncoder{}
			var stream *int
			s.link = func(from int, to crdt.ReplicaID, msg []byte) {
				k := fmt.Sprint(from, to)
				e := streams[k]
				if e == nil {
					e = transport.NewStreamEncoder(protocol.MaxMessageBytes)
					streams[k] = e
				}
				f, err := e.Frame(msg)
				if err != nil {
					panic(err)
				}
				if stream != nil {
					*stream += len(f)
				}
			}
			for range 200 { // warm-up: the start-up rounds
				s.step(10 * time.Millisecond)
			}
			var wire, measured, deltaBytes, fullBytes int
			stream = &measured
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
			// One period of anti-entropy with nothing to repair.
			every := protocol.DefaultConfig().AntiEntropyEvery
			ae := 0
			s.sent = func(m *protocol.Message, n int) {
				if m.Kind != protocol.KindDelta && m.Kind != protocol.KindAck {
					ae += n
				}
			}
			aeStream := 0
			stream = &aeStream // deltas and acks of the drain too: few
			for range int(every / (10 * time.Millisecond)) {
				s.step(10 * time.Millisecond)
			}
			aePerUpdate := float64(ae) / float64(every/gap)
			wire += int(aePerUpdate * float64(b.N))
			streamBytes := measured + int(float64(aeStream)/float64(every/gap)*float64(b.N))
			peers := float64(len(s.regions) - 1)
			b.ReportMetric(float64(wire)/float64(b.N), "wire-B/update")
			b.ReportMetric(float64(deltaBytes)/float64(b.N), "delta-B/update")
			b.ReportMetric(float64(wire)/(peers*float64(deltaBytes)), "wire/((R-1)×delta)")
			b.ReportMetric(float64(wire)/(peers*float64(fullBytes)), "wire/((R-1)×state)")
			b.ReportMetric(float64(streamBytes)/float64(b.N), "stream-B/update")
			b.ReportMetric(float64(streamBytes)/(peers*float64(deltaBytes)), "stream/((R-1)×delta)")
			b.ReportMetric(float64(ae), "ae-B/period")
			b.ReportMetric(aePerUpdate, "ae-B/update")
			for k, n := range byKind {
				b.ReportMetric(float64(n)/float64(b.N), "msg-"+k.String()+"-B/update")
			}
		})
	}
}
