package protocol_test

import (
	"container/heap"
	"fmt"
	"testing"
	"time"

	"github.com/latticedb/lattice/crdt"
	"github.com/latticedb/lattice/sync/protocol"
)

// meshMsg is a message on its way between two protocols of meshBench.
type meshMsg struct {
	at       time.Time
	from, to int
	b        []byte
}

type meshQueue []meshMsg

func (q meshQueue) Len() int           { return len(q) }
func (q meshQueue) Less(i, j int) bool { return q[i].at.Before(q[j].at) }
func (q meshQueue) Swap(i, j int)      { q[i], q[j] = q[j], q[i] }
func (q *meshQueue) Push(x any)        { *q = append(*q, x.(meshMsg)) }
func (q *meshQueue) Pop() any {
	old := *q
	m := old[len(old)-1]
	*q = old[:len(old)-1]
	return m
}

// BenchmarkProtocolMesh measures the replication protocol's own work (no
// store: nullStorage) in a healthy three-region mesh with the benchmark's
// one-way delays (34, 60 and 92 ms): rate local writes a second in all,
// round robin over the regions, every message encoded and decoded, ticks
// every 5 ms. ns/op is the CPU of one write's share: its delta to two
// peers, their relays' bookkeeping, acknowledgements and status reports.
// buffer-entries is the mean length of a region's delta buffer (local
// deltas in flight and remote ones kept for relaying).
func BenchmarkProtocolMesh(b *testing.B) {
	for _, rate := range []int{500, 2000, 10000} {
		b.Run(fmt.Sprintf("rate=%d", rate), func(b *testing.B) {
			ids := []crdt.ReplicaID{"us-east", "eu-west", "ap-south"}
			oneWay := [3][3]time.Duration{
				{0, 34 * time.Millisecond, 92 * time.Millisecond},
				{34 * time.Millisecond, 0, 60 * time.Millisecond},
				{92 * time.Millisecond, 60 * time.Millisecond, 0},
			}
			now := time.Unix(1_800_000_000, 0)
			ps := make([]*protocol.Protocol, 3)
			for i, id := range ids {
				cfg := protocol.DefaultConfig()
				cfg.AntiEntropyEvery = time.Hour // deltas only
				ps[i] = protocol.New(id, ids, crdt.Context{}, nullStorage{}, cfg)
			}
			for i := range ps {
				for j, id := range ids {
					if i != j {
						ps[i].PeerUp(id, now)
					}
				}
			}
			var q meshQueue
			send := func(i int) {
				for _, env := range ps[i].Ready().Messages {
					if env.Msg.Kind != protocol.KindDelta && env.Msg.Kind != protocol.KindAck {
						continue // anti-entropy of empty stores
					}
					enc, err := protocol.Encode(env.Msg)
					if err != nil {
						b.Fatal(err)
					}
					j := 0
					for k, id := range ids {
						if id == env.To {
							j = k
						}
					}
					heap.Push(&q, meshMsg{at: now.Add(oneWay[i][j]), from: i, to: j, b: enc})
				}
			}
			deliver := func(until time.Time) {
				for q.Len() > 0 && !q[0].at.After(until) {
					m := heap.Pop(&q).(meshMsg)
					now = m.at
					dm, err := protocol.Decode(m.b, protocol.DefaultConfig().Buckets)
					if err != nil {
						b.Fatal(err)
					}
					ps[m.to].Step(ids[m.from], dm, now)
					send(m.to)
				}
			}
			gap := time.Second / time.Duration(rate)
			tick := now
			seqs := make([]uint64, 3)
			var bufSum, bufN int
			b.ResetTimer()
			for n := 0; n < b.N; n++ {
				next := now.Add(gap)
				for !tick.After(next) {
					deliver(tick)
					now = tick
					for i := range ps {
						ps[i].Tick(now)
						ps[i].Flush(now)
						send(i)
					}
					tick = tick.Add(5 * time.Millisecond)
				}
				deliver(next)
				now = next
				i := n % 3
				seqs[i]++
				var c crdt.Cart
				g := &crdt.Group{}
				g.AddCart(fmt.Sprintf("cart-%d", n%64), c.Add(ids[i], "sku-1", 1))
				ps[i].Local(protocol.LocalDelta{Seq: seqs[i], Group: g, At: now}, now)
				send(i)
				if n%64 == 0 {
					for _, p := range ps {
						for _, st := range p.Status() {
							bufSum += st.PendingDeltas
							bufN++
						}
					}
				}
			}
			b.StopTimer()
			if bufN > 0 {
				b.ReportMetric(float64(bufSum)/float64(bufN), "pending/peer")
			}
		})
	}
}
