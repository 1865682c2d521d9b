package api

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/latticedb/lattice/crdt"
	"github.com/latticedb/lattice/region"
	"github.com/latticedb/lattice/region/store"
)

// exNode is a region of one node over an in-memory store, with its API.
func exNode(t testing.TB) (*region.Node, http.Handler) {
	t.Helper()
	st, err := region.OpenStore(":memory:", store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	n, err := region.NewNode(region.Options{Name: "us-east", Store: st})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.Close)
	return n, New(n, Options{Logger: slog.New(slog.DiscardHandler)})
}

// exCPU returns the CPU time (user and system) the process has used.
func exCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		panic(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// exAddsCPU makes n adds to a cart through h, one every 5 ms (a steady
// trickle of writes from another client), and returns the CPU time the
// process spent meanwhile.
func exAddsCPU(t testing.TB, h http.Handler, cart string, n int) time.Duration {
	t.Helper()
	start := exCPU()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for i := 0; i < n; i++ {
		<-tick.C
		w := req{method: "POST", path: "/v1/carts/" + cart + "/items", body: `{"sku":"s1","qty":1}`}.do(t, h)
		if w.Code != http.StatusOK {
			t.Fatalf("add: %d %s", w.Code, w.Body)
		}
	}
	return exCPU() - start
}

func exLiveHeap() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// exWaiters starts n requests through h that wait up to 10 s on tok, and
// returns once they have parsed it and wait (the process's CPU is quiet),
// with the live heap per waiter. The waits end with the test.
func exWaiters(t testing.TB, h http.Handler, n int, tok string) uint64 {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() {
		cancel()
		wg.Wait()
	})
	base := exLiveHeap()
	var started sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		started.Add(1)
		go func() {
			defer wg.Done()
			r := httptest.NewRequest("GET", fmt.Sprintf("/v1/carts/w%d", i), nil).WithContext(ctx)
			r.Header.Set(HeaderToken, tok)
			r.Header.Set(HeaderWait, "10000")
			started.Done()
			h.ServeHTTP(httptest.NewRecorder(), r)
		}()
	}
	started.Wait()
	deadline := time.Now().Add(20 * time.Second)
	for {
		c0 := exCPU()
		time.Sleep(50 * time.Millisecond) // the sampling interval of the CPU, in a loop with a deadline
		if exCPU()-c0 < 5*time.Millisecond {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the waiters did not settle")
		}
	}
	held := exLiveHeap()
	if held < base {
		return 0
	}
	return (held - base) / uint64(n)
}

// exToken returns a token of 1,024 out-of-order dots (the most a parsed
// token keeps), all applied by n but one.
func exToken(t testing.TB, n *region.Node) string {
	t.Helper()
	self := n.Self()
	var want crdt.Context
	want.Insert(crdt.Dot{Replica: self, Counter: 1})
	for k := uint64(3); len(want.Cloud) < crdt.MaxTokenCloudDots-1; k += 2 {
		want.Insert(crdt.Dot{Replica: self, Counter: k})
	}
	want.Insert(crdt.Dot{Replica: "eu-west", Counter: 5}) // never applied here
	tok := crdt.FormatToken(&want)
	parsed, err := crdt.ParseToken(tok)
	if err != nil || len(parsed.Cloud) != crdt.MaxTokenCloudDots {
		t.Fatalf("token of %d cloud dots parses to %d cloud dots, %v", len(want.Cloud), len(parsed.Cloud), err)
	}
	return tok
}

// BenchmarkAddWithCausalWaiters measures what requests waiting on a
// causal token the region has not applied cost the writes of every other
// client: 40 adds (one every 5 ms) alone and with 1,000 requests waiting
// (Lattice-Wait 10000) on a token of 1,024 out-of-order dots, all applied
// but one, reported as CPU per add. A waiter checks only from the first
// item of its token still missing (Node.waitCovers), where it re-checked
// the whole token under the applied context's lock: 474-592 ms of CPU for
// the 40 adds with the waiters before that (5-16 ms alone), 82 ms after
// (5.3 ms alone), the rest waking 1,000 goroutines per write. A waiter
// now waits on the replica of that item, and only that replica's writes
// wake it: in one run, interleaved, 1,040-1,688 µs per add with the
// waiters before, 225-265 after (174-304 alone).
func BenchmarkAddWithCausalWaiters(b *testing.B) {
	for range b.N {
		b.StopTimer()
		n, h := exNode(b)
		for i := 0; i < 2100; i++ {
			if _, err := n.AddItem(context.Background(), fmt.Sprintf("seed%d", i%50), "s1", 1); err != nil {
				b.Fatal(err)
			}
		}
		tok := exToken(b, n)
		const adds, waiters = 40, 1000
		exAddsCPU(b, h, "warm", adds)
		baseline := exAddsCPU(b, h, "base", adds)
		exWaiters(b, h, waiters, tok)
		b.StartTimer()
		loaded := exAddsCPU(b, h, "other", adds)
		b.ReportMetric(float64(baseline.Microseconds())/adds, "cpu-us/add-alone")
		b.ReportMetric(float64(loaded.Microseconds())/adds, "cpu-us/add-with-waiters")
	}
}

// exWideToken returns the token of a context naming crdt.MaxReplicas
// replicas of the longest ids (a 64-byte region name and a 12-digit
// incarnation), each with 4 out-of-order dots: 1,024 in all, the most a
// parsed token keeps. No region has applied it.
func exWideToken(t testing.TB) string {
	t.Helper()
	var c crdt.Context
	name := strings.Repeat("r", crdt.MaxReplicaIDLen-3)
	for i := 0; i < crdt.MaxReplicas; i++ {
		r := crdt.Incarnation(fmt.Sprintf("%s%03d", name, i), 100_000_000_000+uint64(i))
		c.Insert(crdt.Dot{Replica: r, Counter: 1})
		for k := uint64(3); k <= 9; k += 2 {
			c.Insert(crdt.Dot{Replica: r, Counter: k})
		}
	}
	tok := crdt.FormatToken(&c)
	parsed, err := crdt.ParseToken(tok)
	if err != nil || len(parsed.Cloud) != crdt.MaxTokenCloudDots || len(parsed.VV) != crdt.MaxReplicas {
		t.Fatalf("token parses to %d replicas and %d cloud dots, %v; want %d and %d", len(parsed.VV), len(parsed.Cloud), err, crdt.MaxReplicas, crdt.MaxTokenCloudDots)
	}
	return tok
}

// TestCausalWaitHoldsSmallMultipleOfToken: a request waiting (up to
// Lattice-Wait, 10 s) on a causal token the region has not applied holds
// at most a small multiple of what the token stands for: 8× its size (a
// compressed token's inflated size, at most 64 KiB) plus a fixed 32 KiB,
// the bound the API keeps for what it reads. It held the token as maps
// of replica ids and dots: 85 KB for a 3,946-byte token of 1,024 dots
// (21.6×), 121-128 KB for a 1,776-byte compressed one of 256 long
// replica ids; the wait now keeps sorted lists.
func TestCausalWaitHoldsSmallMultipleOfToken(t *testing.T) {
	for _, tc := range []struct {
		name string
		tok  func(testing.TB, *region.Node) string
	}{
		{"1,024 dots of one replica", exToken},
		{"256 replicas of the longest ids", func(t testing.TB, _ *region.Node) string { return exWideToken(t) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n, h := exNode(t)
			for i := 0; i < 2100; i++ {
				if _, err := n.AddItem(context.Background(), "seed", "s1", 1); err != nil {
					t.Fatal(err)
				}
			}
			tok := tc.tok(t, n)
			const waiters = 200
			var small crdt.Context
			small.Insert(crdt.Dot{Replica: "eu-west", Counter: 5}) // never applied here
			smallTok := crdt.FormatToken(&small)
			idle := exWaiters(t, h, waiters, smallTok)
			held := exWaiters(t, h, waiters, tok)
			t.Logf("live heap per waiting request: %d B with a %d-byte token, %d B with a %d-byte one", held, len(tok), idle, len(smallTok))
			parsed, err := crdt.ParseToken(tok)
			if err != nil {
				t.Fatal(err)
			}
			size := max(len(tok), len(crdt.EncodeCart(&crdt.Cart{Ctx: parsed}))) // inflated, for a compressed token
			if limit := uint64(8*size) + 32<<10 + idle; held > limit {
				t.Fatalf("a request waiting on a %d-byte causal token (%d B of context) holds %d B of live heap (%.1f× the context; %d B with a %d-byte token); want at most %d (8× + 32 KiB more)",
					len(tok), size, held, float64(held)/float64(size), idle, len(smallTok), limit)
			}
		})
	}
}

// exHeldWaiting opens n connections to a region's API, each sending a GET
// of a cart with a causal token the region has not applied, Lattice-Wait
// 10000 and the header lines extra, and returns the largest live heap
// per connection seen while the requests wait.
func exHeldWaiting(t *testing.T, n int, extra string) uint64 {
	t.Helper()
	_, h := exNode(t)
	var entered atomic.Int64
	addr := limServe(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		entered.Add(1)
		h.ServeHTTP(w, r)
	}))
	var small crdt.Context
	small.Insert(crdt.Dot{Replica: "eu-west", Counter: 5}) // never applied here
	tok := crdt.FormatToken(&small)
	base := exLiveHeap()
	conns := make([]net.Conn, 0, n)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for i := 0; i < n; i++ {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
		if _, err := fmt.Fprintf(c, "GET /v1/carts/c%d HTTP/1.1\r\nHost: x\r\n%s: %s\r\n%s: 10000\r\n%s\r\n", i, HeaderToken, tok, HeaderWait, extra); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for entered.Load() < int64(n) {
		if time.Now().After(deadline) {
			t.Fatalf("only %d of %d requests reached the handler", entered.Load(), n)
		}
		time.Sleep(5 * time.Millisecond) // poll interval of a wait with a deadline
	}
	var held uint64
	for end := time.Now().Add(300 * time.Millisecond); time.Now().Before(end); {
		if h := exLiveHeap(); h > base && h-base > held {
			held = h - base
		}
	}
	return held / uint64(n)
}

// TestCausalWaitHoldsSmallMultipleOfHeaders: a request that waits on a
// causal token (up to 10 s) holds what its headers were parsed into for
// the whole wait. With 6,000 empty header fields (47 KB, within the
// 64 KiB MaxHeaderBytes) that must stay within a small multiple of the
// header bytes: 8× plus a fixed 32 KiB, the bound the API keeps for what
// it reads.
func TestCausalWaitHoldsSmallMultipleOfHeaders(t *testing.T) {
	var b strings.Builder
	for i := 0; i < 6000; i++ {
		fmt.Fprintf(&b, "H%d:\r\n", i)
	}
	extra := b.String()
	const n = 50
	plain := exHeldWaiting(t, n, "")
	many := exHeldWaiting(t, n, extra)
	t.Logf("live heap per waiting request: %d B with %d B of extra header fields, %d B without", many, len(extra), plain)
	if limit := plain + uint64(8*len(extra)) + 32<<10; many > limit {
		t.Fatalf("a request waiting on a causal token with %d B of extra (empty) header fields holds %d B of live heap (%d B without them: %.1f× the extra bytes); want at most %d (8× + 32 KiB more)",
			len(extra), many, plain, float64(many-plain)/float64(len(extra)), limit)
	}
}
