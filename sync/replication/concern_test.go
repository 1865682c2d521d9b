package replication_test

import (
	"fmt"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/latticedb/lattice/sync/protocol"
	"github.com/latticedb/lattice/sync/replication"
)

// quietRelays keeps deltas from reaching a region by any path but their
// origin's own link: no relays, no anti-entropy for the test's duration.
// A region cut off from a write's origin then lacks it until the test
// reads it with a quorum.
func quietRelays(o *replication.AttachOptions) {
	o.Protocol = protocol.DefaultConfig()
	o.Protocol.RelayDelay = time.Hour
	o.Protocol.AntiEntropyEvery = time.Hour
}

// cut cuts the link between regions a and b (both directions) or heals it.
func (c *cluster) cut(a, b string, on bool) {
	c.t.Helper()
	for _, pair := range [][2]string{{a, b}, {b, a}} {
		c.mu.Lock()
		q := c.repl[pair[0]]
		c.mu.Unlock()
		rc, _ := c.cfg.Region(pair[1])
		addr, err := net.ResolveUDPAddr("udp", rc.Peer)
		if err != nil {
			c.t.Fatal(err)
		}
		if on {
			q.WAN().Partition(addr.String())
		} else {
			q.WAN().Heal(addr.String())
		}
	}
}

type problemBody struct {
	Code   string `json:"code"`
	Detail string `json:"detail"`
}

// TestWriteConcern checks Lattice-Replicas over real QUIC: 2 regions are
// met while the region is connected; an isolated region answers at once
// with 503 replication_timeout, saying the write was applied, and the
// write still converges after the heal.
func TestWriteConcern(t *testing.T) {
	c := newCluster(t, specLatency)
	for _, r := range regions {
		c.waitConnected(r)
	}
	var out map[string]any
	for _, w := range []string{"2", "majority", "all", "3"} {
		start := time.Now()
		code, hdr := c.do("us-east", "POST", "/v1/carts/wc-"+w+"/items", map[string]any{"sku": "book", "qty": 1},
			map[string]string{"Lattice-Replicas": w}, &out)
		if code != 200 {
			t.Fatalf("Lattice-Replicas: %s answered %d %v", w, code, out)
		}
		if hdr.Get("Lattice-Token") == "" {
			t.Errorf("Lattice-Replicas: %s answered without a token", w)
		}
		took := time.Since(start)
		// us-east's nearest peer is 34 ms away, the other 92 ms: a write
		// that reached 2 or 3 regions took at least their round trip.
		floor := 68 * time.Millisecond
		if w == "all" || w == "3" {
			floor = 184 * time.Millisecond
		}
		if took < floor {
			t.Errorf("Lattice-Replicas: %s answered in %v, below the round trip %v to enough regions", w, took, floor)
		}
		t.Logf("Lattice-Replicas: %s answered in %v", w, took)
	}
	// The acknowledgements were real: eu-west holds the write already.
	if got := c.cart("eu-west", "wc-2").String(); got != "book=1 " {
		t.Errorf("eu-west has %q right after a write acknowledged by 2 regions", got)
	}

	for _, bad := range []string{"0", "4", "two", "", "1,2"} {
		var p problemBody
		if code, _ := c.do("us-east", "POST", "/v1/carts/wc-bad/items", map[string]any{"sku": "book", "qty": 1},
			map[string]string{"Lattice-Replicas": bad}, &p); code != 400 || p.Code != "invalid_request" {
			t.Errorf("Lattice-Replicas: %q answered %d %+v, want 400 invalid_request", bad, code, p)
		}
	}
	if got := c.cart("us-east", "wc-bad").String(); got != "" {
		t.Errorf("a refused write concern wrote %q", got)
	}

	c.isolate("us-east", true)
	waitFor(t, 20*time.Second, "us-east sees its peers gone", func() bool {
		var st struct {
			Peers []peerStatus `json:"peers"`
		}
		c.do("us-east", "GET", "/v1/cluster", nil, nil, &st)
		for _, p := range st.Peers {
			if p.Connected {
				return false
			}
		}
		return true
	})
	var p problemBody
	start := time.Now()
	code, hdr := c.do("us-east", "POST", "/v1/carts/wc-cut/items", map[string]any{"sku": "pen", "qty": 2},
		map[string]string{"Lattice-Replicas": "2"}, &p)
	if code != 503 || p.Code != "replication_timeout" || hdr.Get("Retry-After") == "" {
		t.Fatalf("isolated write with Lattice-Replicas: 2 answered %d %+v (Retry-After %q), want 503 replication_timeout", code, p, hdr.Get("Retry-After"))
	}
	if !strings.Contains(p.Detail, "applied") || !strings.Contains(p.Detail, "will still replicate") {
		t.Errorf("the answer does not say the write stays applied: %q", p.Detail)
	}
	if took := time.Since(start); took > time.Second {
		t.Errorf("an isolated region took %v to refuse a write concern it cannot meet", took)
	}
	if got := c.cart("us-east", "wc-cut").String(); got != "pen=2 " {
		t.Errorf("us-east has %q after the timed-out write, want it applied", got)
	}
	// A keyed decision replayed while the concern still cannot be met is
	// refused again, not answered from its record as if it were met.
	var item struct {
		Home string `json:"home"`
	}
	sku := ""
	for i := 0; sku == ""; i++ {
		cand := fmt.Sprintf("wc-sku-%d", i)
		c.do("us-east", "GET", "/v1/inventory/"+cand, nil, nil, &item)
		if item.Home == "us-east" {
			sku = cand
		}
	}
	c.mustDo("us-east", "POST", "/v1/inventory/"+sku+"/restock", map[string]any{"qty": 5})
	keyed := map[string]string{"Lattice-Replicas": "2", "Idempotency-Key": "wc-replay-1"}
	for try := range 2 {
		code, _ := c.do("us-east", "POST", "/v1/reservations", map[string]any{"sku": sku, "qty": 1}, keyed, &p)
		if code != 503 || p.Code != "replication_timeout" {
			t.Fatalf("isolated keyed reservation, try %d: %d %+v, want 503 replication_timeout", try, code, p)
		}
	}
	// Without a write concern the isolated region takes writes as ever.
	c.mustDo("us-east", "POST", "/v1/carts/wc-cut/items", map[string]any{"sku": "cup", "qty": 1})
	c.isolate("us-east", false)
	c.waitCart("wc-cut", "cup=1 pen=2 ")
	// Healed, the replay is answered once the decision is at 2 regions.
	var res struct {
		ID    string `json:"reservation_id"`
		State string `json:"state"`
	}
	waitFor(t, 20*time.Second, "the replayed reservation meets its write concern", func() bool {
		code, _ := c.do("us-east", "POST", "/v1/reservations", map[string]any{"sku": sku, "qty": 1}, keyed, &res)
		return code == 201
	})
	if res.State != "held" {
		t.Errorf("replayed reservation %+v, want held", res)
	}
}

// TestQuorumReadSeesAcknowledgedWrite checks that ?quorum=2 at a region
// that never received a write by delta sees it once it was acknowledged
// with Lattice-Replicas: 2 elsewhere, and that read repair leaves the
// stale regions current for plain reads.
func TestQuorumReadSeesAcknowledgedWrite(t *testing.T) {
	c := newClusterWith(t, specLatency, quietRelays)
	for _, r := range regions {
		c.waitConnected(r)
	}
	// ap-south hears nothing from us-east directly, and no relay.
	c.cut("us-east", "ap-south", true)
	var out map[string]any
	if code, _ := c.do("us-east", "POST", "/v1/carts/q1/items", map[string]any{"sku": "book", "qty": 3},
		map[string]string{"Lattice-Replicas": "2"}, &out); code != 200 {
		t.Fatalf("write with Lattice-Replicas: 2 answered %d %v", code, out)
	}
	if got := c.cart("ap-south", "q1").String(); got != "" {
		t.Fatalf("ap-south has %q before any quorum read; the test needs it stale", got)
	}
	var v cartView
	code, hdr := c.do("ap-south", "GET", "/v1/carts/q1?quorum=2", nil, nil, &v)
	if code != 200 || v.String() != "book=3 " {
		t.Fatalf("quorum=2 read at ap-south answered %d %q, want book=3", code, v.String())
	}
	if hdr.Get("Lattice-Token") == "" {
		t.Error("a quorum read answered without a token")
	}
	// The join was applied at ap-south: a plain read now shows it.
	if got := c.cart("ap-south", "q1").String(); got != "book=3 " {
		t.Errorf("plain read at ap-south after the quorum read: %q, want book=3", got)
	}

	// A write eu-west never saw; quorum=all at eu-west repairs ap-south.
	c.cut("us-east", "eu-west", true)
	c.cut("us-east", "ap-south", false)
	c.waitConnected("ap-south")
	c.mustDo("ap-south", "POST", "/v1/carts/q2/items", map[string]any{"sku": "pen", "qty": 1})
	c.cut("us-east", "eu-west", false)
	c.cut("ap-south", "us-east", true)
	c.waitConnected("eu-west")
	// eu-west has q2 from ap-south (its own link); us-east does not.
	waitFor(t, 10*time.Second, "eu-west has q2", func() bool { return c.cart("eu-west", "q2").String() == "pen=1 " })
	if got := c.cart("us-east", "q2").String(); got != "" {
		t.Fatalf("us-east has %q; the test needs it stale", got)
	}
	if code, _ := c.do("eu-west", "GET", "/v1/carts/q2?quorum=all", nil, nil, &v); code != 200 || v.String() != "pen=1 " {
		t.Fatalf("quorum=all at eu-west answered %d %q", code, v.String())
	}
	if got := c.cart("us-east", "q2").String(); got != "pen=1 " {
		t.Errorf("plain read at us-east right after eu-west's quorum read: %q, want the repaired pen=1", got)
	}
	// Stock reads take a quorum too.
	c.mustDo("eu-west", "POST", "/v1/inventory/q-sku/restock", map[string]any{"qty": 5})
	var item struct {
		Stock int64 `json:"stock"`
	}
	if code, _ := c.do("us-east", "GET", "/v1/inventory/q-sku?quorum=2", nil, nil, &item); code != 200 || item.Stock != 5 {
		t.Errorf("quorum=2 stock read at us-east: %d stock %d, want 5", code, item.Stock)
	}

	// Too few regions: quorum_unavailable, fast.
	c.isolate("us-east", true)
	var p problemBody
	start := time.Now()
	code, hdr = c.do("us-east", "GET", "/v1/carts/q1?quorum=2", nil, nil, &p)
	if code != 503 || p.Code != "quorum_unavailable" || hdr.Get("Retry-After") == "" {
		t.Errorf("quorum=2 at an isolated region answered %d %+v, want 503 quorum_unavailable", code, p)
	}
	t.Logf("isolated quorum read refused in %v", time.Since(start))
	for _, bad := range []string{"0", "4", "x"} {
		if code, _ := c.do("eu-west", "GET", "/v1/carts/q1?quorum="+bad, nil, nil, &p); code != 400 {
			t.Errorf("quorum=%s answered %d, want 400", bad, code)
		}
	}
	if code, _ := c.do("eu-west", "GET", "/v1/carts/q1", nil, map[string]string{"Lattice-Replicas": "2"}, &p); code != 400 {
		t.Errorf("Lattice-Replicas on a read answered %d, want 400", code)
	}
}

// TestQuorumRegister is a register check in the style of Jepsen's:
// clients in every region add distinct lines to a few carts with
// Lattice-Replicas: 2 and read them with ?quorum=2 (W + R > 3 regions),
// while regions are cut off and healed and restarted; every quorum read
// must contain every write acknowledged before the read began. The seed
// of the faults and the clients' choices is printed (timing still
// varies from run to run).
func TestQuorumRegister(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a three-region cluster with faults for several seconds")
	}
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 7))
	c := newCluster(t, map[string]int{"us-east/eu-west": 5, "us-east/ap-south": 12, "eu-west/ap-south": 8})
	for _, r := range regions {
		c.waitConnected(r)
	}
	type ack struct {
		cart, sku string
		at        time.Time
	}
	var (
		mu       sync.Mutex
		acked    []ack
		reads    atomic.Int64
		failures atomic.Int64
		down     sync.RWMutex // held for writing while a region restarts
	)
	carts := []string{"reg-a", "reg-b", "reg-c"}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for ci := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			crng := rand.New(rand.NewPCG(seed, uint64(ci)))
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				down.RLock()
				name := regions[crng.IntN(len(regions))]
				cart := carts[crng.IntN(len(carts))]
				if crng.IntN(2) == 0 {
					sku := fmt.Sprintf("c%d-%d", ci, i)
					var out map[string]any
					code, _ := c.do(name, "POST", "/v1/carts/"+cart+"/items", map[string]any{"sku": sku, "qty": 1},
						map[string]string{"Lattice-Replicas": "2"}, &out)
					if code == 200 {
						mu.Lock()
						acked = append(acked, ack{cart, sku, time.Now()})
						mu.Unlock()
					} else {
						failures.Add(1)
					}
				} else {
					began := time.Now()
					var v cartView
					code, _ := c.do(name, "GET", "/v1/carts/"+cart+"?quorum=2", nil, nil, &v)
					if code == 200 {
						reads.Add(1)
						have := map[string]bool{}
						for _, it := range v.Items {
							have[it.SKU] = true
						}
						mu.Lock()
						for _, a := range acked {
							if a.cart == cart && a.at.Before(began) && !have[a.sku] {
								t.Errorf("quorum read of %s at %s began %v after %s was acknowledged and does not show it (seed %d)",
									cart, name, began.Sub(a.at), a.sku, seed)
							}
						}
						mu.Unlock()
					} else {
						failures.Add(1)
					}
				}
				down.RUnlock()
			}
		}()
	}
	deadline := time.Now().Add(8 * time.Second)
	for time.Now().Before(deadline) {
		name := regions[rng.IntN(len(regions))]
		switch rng.IntN(3) {
		case 0, 1:
			c.isolate(name, true)
			timer := time.NewTimer(time.Duration(200+rng.IntN(600)) * time.Millisecond)
			<-timer.C
			c.isolate(name, false)
		case 2:
			down.Lock()
			c.stop(name)
			c.start(name)
			down.Unlock()
			c.waitConnected(name)
		}
		timer := time.NewTimer(time.Duration(100+rng.IntN(300)) * time.Millisecond)
		<-timer.C
	}
	close(stop)
	wg.Wait()
	mu.Lock()
	n := len(acked)
	mu.Unlock()
	t.Logf("%d writes acknowledged by 2 regions, %d quorum reads checked, %d requests refused (faults)", n, reads.Load(), failures.Load())
	if n < 20 || reads.Load() < 20 {
		t.Fatalf("too little happened to check anything: %d writes, %d reads", n, reads.Load())
	}
}
