package bench

import (
	"context"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestConcernReadsOnlyCartsAlreadyWritten: the concern probe's quorum
// reads are of a cart the region's probe wrote a few cycles earlier,
// "whose writes are done" (README, concern.go), so that they measure a
// quorum read of regions that agree on a written cart. A read sent
// before any write of its cart was answered reads a cart that does not
// exist yet: it measures something else. The regions here answer every
// request at once and record, per cart, whether a write of it had
// arrived before each read of it.
func TestConcernReadsOnlyCartsAlreadyWritten(t *testing.T) {
	names := RegionNames(3)
	var mu sync.Mutex
	written := map[string]bool{}
	var reads, early int
	var firstEarly string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cart, _, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/v1/carts/"), "/")
		mu.Lock()
		switch r.Method {
		case "GET":
			reads++
			if !written[cart] {
				early++
				if firstEarly == "" {
					firstEarly = r.URL.String()
				}
			}
		case "POST":
			written[cart] = true
		}
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"cart_id":"` + cart + `","items":[]}`))
	}))
	defer srv.Close()
	urls := [][]string{{srv.URL}, {srv.URL}, {srv.URL}}
	cl := newClient(urls, 8, 2*time.Second)
	defer cl.close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// 600 ms, as the package's runs probe (shortConfig): five cycles of
	// six requests per region.
	res := probeConcerns(ctx, cl, names, LatencyMatrix(names), 600*time.Millisecond)
	mu.Lock()
	defer mu.Unlock()
	if reads == 0 {
		t.Fatalf("no quorum read sent: %+v", res)
	}
	if early > 0 {
		t.Errorf("%d of %d quorum reads were of a cart no write had reached yet (first: GET %s); the reads should be of a cart written cycles earlier",
			early, reads, firstEarly)
	}
}

// TestConcernFloorDescribedAsItIsComputed: the summary describes the
// floor of N = 3 as the emulated round trip "to the farthest" other
// region. concernFloors computes it as the round trip to the second
// nearest (N − 1 nearest acknowledge a concern of N), which is the
// farthest with 3 regions only: with --regions 4 (or 5, as README's
// examples run) the floor printed beside "the farthest" is that of a
// nearer region.
func TestConcernFloorDescribedAsItIsComputed(t *testing.T) {
	names := RegionNames(4)
	lat := LatencyMatrix(names)
	floors := concernFloors(names, lat, MaxConcern)
	c := &ConcernResult{DurationS: 3, IntervalMS: ms(ProbeInterval)}
	for _, name := range names {
		rc := RegionConcerns{Region: name}
		for n := 1; n <= MaxConcern; n++ {
			rc.Levels = append(rc.Levels, ConcernLevel{N: n, FloorMS: floors[name][n-1]})
		}
		c.Regions = append(c.Regions, rc)
	}
	r := &Result{Regions: names, DurationS: 1, Latency: "wan", LatencyMS: lat, Concerns: c}
	md := r.Markdown()
	claimsFarthest := strings.Contains(md, "to the farthest for N = 3")
	for _, a := range names {
		var oneWay []int
		for _, b := range names {
			if a != b {
				oneWay = append(oneWay, oneWayMS(lat, a, b))
			}
		}
		farthest := float64(2 * slices.Max(oneWay))
		if got := floors[a][2]; claimsFarthest && got != farthest {
			t.Errorf("%s: the summary calls the N = 3 floor the round trip to the farthest region (%v ms), but prints %v ms (one-way delays %v)",
				a, farthest, got, oneWay)
		}
	}
}
