package api

import (
	"bufio"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// limServe serves h with the project's own server settings (NewServer)
// on a real listener on 127.0.0.1 and returns its address.
func limServe(t *testing.T, h http.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := NewServer(ln.Addr().String(), h)
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// limPartitioned is the API of a node of a region of 4 partitions that
// owns them all (nothing is forwarded).
func limPartitioned() Options {
	return Options{Logger: slog.New(slog.DiscardHandler), Partitioning: &Partitioning{
		Partitions: 4, Self: "us-east/n1", Owner: func(int) string { return "" }}}
}

func limLiveHeap() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

func limTotalAlloc() uint64 {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.TotalAlloc
}

// limHeldPerConn opens n connections, each sending the headers of an
// add to a cart declaring contentLength bytes of body and then the
// body's first byte only, and returns the largest live heap per
// connection seen while the requests wait for the rest of their bodies.
func limHeldPerConn(t *testing.T, n, contentLength int) uint64 {
	t.Helper()
	var entered atomic.Int64
	e := New(newFake(), Options{Logger: slog.New(slog.DiscardHandler)})
	addr := limServe(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		entered.Add(1)
		e.ServeHTTP(w, r)
	}))
	base := limLiveHeap()
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
		fmt.Fprintf(c, "POST /v1/carts/c%d/items HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n{", i, contentLength)
	}
	deadline := time.Now().Add(10 * time.Second)
	for entered.Load() < int64(n) {
		if time.Now().After(deadline) {
			t.Fatalf("only %d of %d requests reached the handler", entered.Load(), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
	// The handlers are reading their bodies; sample the live heap for a
	// while, keeping the largest.
	var held uint64
	for end := time.Now().Add(500 * time.Millisecond); time.Now().Before(end); {
		if h := limLiveHeap(); h > base && h-base > held {
			held = h - base
		}
	}
	return held / uint64(n)
}

// TestDeclaredLengthNotPreallocated: a request that declares
// Content-Length: 65536 and has sent one byte of its body holds about
// what one that declares 2 bytes and has sent the same byte holds: memory
// follows the bytes received, not the length a client claims (else ~130
// bytes of headers pin 64 KiB for up to ReadTimeout, per connection).
func TestDeclaredLengthNotPreallocated(t *testing.T) {
	const n = 100
	small := limHeldPerConn(t, n, 2)
	big := limHeldPerConn(t, n, MaxBodyBytes)
	if big > small+16<<10 {
		t.Fatalf("live heap per connection that has sent ~130 bytes: %d B when it declares Content-Length: %d, %d B when it declares 2: the declared length (not the bytes received) is allocated up front",
			big, MaxBodyBytes, small)
	}
}

// limRaw sends raw on a new connection and reads one response.
func limRaw(t *testing.T, addr, raw string) (int, string) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestPartitionedReservationBadBody: a POST /v1/reservations whose
// chunked body is malformed is 400 invalid_request (field body) on a node
// of a partitioned region too, whose router reads the body first to find
// its sku's partition, as on a region of one partition (not 500).
func TestPartitionedReservationBadBody(t *testing.T) {
	const raw = "POST /v1/reservations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n"
	addr := limServe(t, New(newFake(), limPartitioned()))
	st, b := limRaw(t, addr, raw)
	if st != http.StatusBadRequest || !strings.Contains(b, `"invalid_request"`) {
		t.Fatalf("partitioned node, malformed chunked body: %d %s; want 400 invalid_request (field body), as a region of one partition answers", st, b)
	}
}

// TestPartitionedReservationBodyAllocation: serving a body allocates at
// most 8× its size plus 32 KiB (MaxBodyDepth's comment) beyond what the
// same request costs on a region of one partition, on a node of a
// partitioned region too, whose router parses the body of
// POST /v1/reservations only within the handler's limits (10,001 '['
// cost ~400 KB when it parsed it first).
func TestPartitionedReservationBodyAllocation(t *testing.T) {
	body := strings.Repeat("[", 10001)
	raw := fmt.Sprintf("POST /v1/reservations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
	measure := func(o Options) uint64 {
		addr := limServe(t, New(newFake(), o))
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		br := bufio.NewReader(c)
		least := uint64(1 << 62)
		for i := 0; i < 5; i++ { // the least of 5 requests on one connection
			runtime.GC()
			before := limTotalAlloc()
			if _, err := io.WriteString(c, raw); err != nil {
				t.Fatal(err)
			}
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusBadRequest {
				t.Fatalf("status %d, want 400", resp.StatusCode)
			}
			least = min(least, limTotalAlloc()-before)
		}
		return least
	}
	plain := measure(Options{Logger: slog.New(slog.DiscardHandler)})
	parted := measure(limPartitioned())
	if bound := plain + uint64(8*len(body)+32<<10); parted > bound {
		t.Fatalf("a %d-byte body nesting 10,001 arrays: %d B allocated on a partitioned node, %d B on a region of one partition; want at most %d (8× the body + 32 KiB more)",
			len(body), parted, plain, bound)
	}
}
