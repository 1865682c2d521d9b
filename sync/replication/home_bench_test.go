package replication_test

import (
	"encoding/json"
	"fmt"
	"slices"
	"testing"
	"time"
)

// BenchmarkReservationLatency measures POST /v1/reservations as a client
// next to the answering region sees it, on a three-region cluster over
// real QUIC through the emulated WAN at the SPEC's one-way latencies
// (us-east↔eu-west 34 ms, us-east↔ap-south 92 ms, eu-west↔ap-south 60 ms):
// answered at the sku's home, and forwarded to the home from each other
// region. Each sub-benchmark reports the p50 and p99 latency and rtt_ms,
// the emulated round trip between the answering region and the home (0 at
// the home); the goal is p99 ≤ rtt_ms + 10 ms. Requests run one at a time;
// each hold is released at its home, untimed, so the ledger stays small.
//
//	go test -run '^$' -bench BenchmarkReservationLatency -benchtime 300x ./sync/replication/
func BenchmarkReservationLatency(b *testing.B) {
	c := newCluster(b, specLatency)
	cl := newClients(c)
	for _, home := range regions {
		for _, from := range regions {
			name := "from=home/home=" + home
			if from != home {
				name = fmt.Sprintf("from=%s/home=%s", from, home)
			}
			b.Run(name, func(b *testing.B) {
				sku := skuHomedAt(c.cfg, home, "bench-"+from)
				cl.must(b, 200, home, "POST", "/v1/inventory/"+sku+"/restock", map[string]any{"qty": 1_000_000}, nil)
				body := map[string]any{"sku": sku, "qty": 1, "ttl_ms": 60_000}
				lat := make([]time.Duration, 0, b.N)
				b.ResetTimer()
				for range b.N {
					r := cl.send(from, "POST", "/v1/reservations", body)
					var res reservationJSON
					if !r.is(201, "") || json.Unmarshal(r.body, &res) != nil {
						b.Fatalf("reserve %s at %s: %s", sku, from, r)
					}
					lat = append(lat, r.took)
					b.StopTimer()
					cl.must(b, 200, home, "POST", "/v1/reservations/"+res.ID+"/release", nil, nil)
					b.StartTimer()
				}
				b.StopTimer()
				slices.Sort(lat)
				ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
				b.ReportMetric(ms(lat[len(lat)/2]), "p50_ms")
				b.ReportMetric(ms(lat[min(len(lat)-1, len(lat)*99/100)]), "p99_ms")
				b.ReportMetric(ms(2*c.cfg.Latency(from, home)), "rtt_ms")
			})
		}
	}
}
