package wan

import (
	"encoding/binary"
	"errors"
	"math"
	"net"
	"testing"
	"time"

	"github.com/latticedb/lattice/region/regiontest"
)

// listen opens a UDP socket on the loopback interface.
func listen(t *testing.T) *net.UDPConn {
	t.Helper()
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	t.Cleanup(func() { pc.Close() })
	return pc
}

// waitFor waits on a condition with a deadline (regiontest.WaitFor).
var waitFor = regiontest.WaitFor

// read returns the next packet on pc, failing the test if none comes
// within d.
func read(t *testing.T, pc net.PacketConn, d time.Duration) ([]byte, net.Addr) {
	t.Helper()
	buf := make([]byte, 2048)
	pc.SetReadDeadline(time.Now().Add(d))
	n, addr, err := pc.ReadFrom(buf)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	return buf[:n], addr
}

func seqPacket(i uint32) []byte {
	var b [8]byte
	binary.BigEndian.PutUint32(b[:], i)
	return b[:]
}

func seqOf(t *testing.T, p []byte) uint32 {
	t.Helper()
	if len(p) != 8 {
		t.Fatalf("packet of %d bytes", len(p))
	}
	return binary.BigEndian.Uint32(p)
}

func TestDelayIsALowerBound(t *testing.T) {
	const delay = 40 * time.Millisecond
	a, b := listen(t), listen(t)
	w := Wrap(a, WithSeed(1), WithLink(b.LocalAddr().String(), Link{Delay: delay, Jitter: 10 * time.Millisecond}))
	defer w.Close()

	const n = 20
	sent := make([]time.Time, n)
	for i := range n {
		sent[i] = time.Now()
		if _, err := w.WriteTo(seqPacket(uint32(i)), b.LocalAddr()); err != nil {
			t.Fatal(err)
		}
	}
	for i := range n {
		p, from := read(t, b, 5*time.Second)
		got := seqOf(t, p)
		if got != uint32(i) {
			t.Fatalf("packet %d arrived as number %d: jitter reordered packets", got, i)
		}
		if from.String() != a.LocalAddr().String() {
			t.Fatalf("packet from %v, want %v", from, a.LocalAddr())
		}
		if el := time.Since(sent[got]); el < delay {
			t.Fatalf("packet %d took %v, less than the link delay %v", got, el, delay)
		}
	}
	// The sender counts a packet just after handing it to the socket,
	// so the last count may trail its arrival by a moment.
	waitFor(t, 5*time.Second, "every packet counted", func() bool { return w.Stats().SentPackets == n })
	st := w.Stats()
	if st.SentPackets != n || st.SentBytes != 8*n || st.DroppedPackets != 0 {
		t.Fatalf("stats %+v", st)
	}
}

func TestZeroDelaySendsAtOnce(t *testing.T) {
	a, b := listen(t), listen(t)
	w := Wrap(a, WithSeed(1))
	defer w.Close()
	if _, err := w.WriteTo([]byte("x"), b.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	if p, _ := read(t, b, 5*time.Second); string(p) != "x" {
		t.Fatalf("got %q", p)
	}
	if w.Stats().SentPackets != 1 {
		t.Fatalf("stats %+v", w.Stats())
	}
}

// lossRun writes n packets through a link with the given loss and returns
// the Conn's stats.
func lossRun(t *testing.T, seed uint64, n int, l Link) Stats {
	t.Helper()
	a, b := listen(t), listen(t)
	b.SetReadBuffer(4 << 20)
	w := Wrap(a, WithSeed(seed), WithDefaultLink(l))
	defer w.Close()
	got := make(chan int, 1)
	go func() {
		buf := make([]byte, 64)
		count := 0
		for {
			b.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
			if _, _, err := b.ReadFrom(buf); err != nil {
				got <- count
				return
			}
			count++
		}
	}()
	for i := range n {
		if _, err := w.WriteTo(seqPacket(uint32(i)), b.LocalAddr()); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 10*time.Second, "the delay queue to drain", func() bool { return w.Pending() == 0 })
	st := w.Stats()
	received := <-got
	if uint64(received) != st.SentPackets {
		t.Errorf("receiver got %d packets, Conn sent %d", received, st.SentPackets)
	}
	return st
}

func TestLossRate(t *testing.T) {
	const (
		seed = 42
		n    = 2000
		p    = 0.3
	)
	st := lossRun(t, seed, n, Link{Loss: p})
	sd := math.Sqrt(n * p * (1 - p))
	if diff := math.Abs(float64(st.LostPackets) - n*p); diff > 4*sd {
		t.Fatalf("seed %d: lost %d of %d, want about %.0f ± %.0f", seed, st.LostPackets, n, n*p, 4*sd)
	}
	if st.LostPackets != st.DroppedPackets || st.SentPackets+st.DroppedPackets != n {
		t.Fatalf("stats don't add up: %+v", st)
	}
	again := lossRun(t, seed, n, Link{Loss: p})
	if again.LostPackets != st.LostPackets {
		t.Fatalf("seed %d: lost %d then %d packets: not reproducible", seed, st.LostPackets, again.LostPackets)
	}
}

func TestDuplicateRate(t *testing.T) {
	const (
		seed = 7
		n    = 2000
		p    = 0.1
	)
	st := lossRun(t, seed, n, Link{Duplicate: p, Delay: time.Millisecond})
	sd := math.Sqrt(n * p * (1 - p))
	if diff := math.Abs(float64(st.DuplicatedPackets) - n*p); diff > 4*sd {
		t.Fatalf("seed %d: duplicated %d of %d, want about %.0f", seed, st.DuplicatedPackets, n, n*p)
	}
	if st.SentPackets != n+st.DuplicatedPackets {
		t.Fatalf("stats don't add up: %+v", st)
	}
}

func TestReorder(t *testing.T) {
	a, b := listen(t), listen(t)
	// A reordered packet is held long enough for every later packet of
	// the burst to overtake it, however slow the machine.
	w := Wrap(a, WithSeed(3), WithDefaultLink(Link{Reorder: 0.2, ReorderGap: 300 * time.Millisecond}))
	defer w.Close()
	const n = 50
	for i := range n {
		if _, err := w.WriteTo(seqPacket(uint32(i)), b.LocalAddr()); err != nil {
			t.Fatal(err)
		}
	}
	seen := make(map[uint32]bool)
	inversions := 0
	var last uint32
	for i := range n {
		s := seqOf(t, first(read(t, b, 5*time.Second)))
		if i > 0 && s < last {
			inversions++
		}
		last = s
		seen[s] = true
	}
	if len(seen) != n {
		t.Fatalf("got %d distinct packets, want %d", len(seen), n)
	}
	if inversions == 0 {
		t.Fatal("no packet was reordered")
	}
}

func first(p []byte, _ net.Addr) []byte { return p }

func TestPartitionAndHeal(t *testing.T) {
	a, b := listen(t), listen(t)
	w := Wrap(a, WithSeed(1))
	defer w.Close()
	bAddr := b.LocalAddr().String()

	// Outbound: nothing written while partitioned arrives.
	w.Partition(bAddr)
	if !w.Partitioned(bAddr) {
		t.Fatal("Partitioned = false after Partition")
	}
	for i := range 10 {
		if n, err := w.WriteTo(seqPacket(uint32(i)), b.LocalAddr()); err != nil || n != 8 {
			t.Fatalf("WriteTo while partitioned = %d, %v", n, err)
		}
	}
	w.Heal(bAddr)
	if _, err := w.WriteTo(seqPacket(100), b.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	if s := seqOf(t, first(read(t, b, 5*time.Second))); s != 100 {
		t.Fatalf("first packet after heal is %d, want 100: a partitioned packet got through", s)
	}
	if st := w.Stats(); st.PartitionedPackets != 10 || st.DroppedPackets != 10 {
		t.Fatalf("stats %+v", st)
	}

	// Inbound: nothing sent from a partitioned address is read.
	w.Partition(bAddr)
	for i := range 10 {
		if _, err := b.WriteTo(seqPacket(uint32(i)), a.LocalAddr()); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 5*time.Second, "refused packets", func() bool {
		// ReadFrom discards refused packets; a short read deadline lets
		// the loop count them.
		w.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
		w.ReadFrom(make([]byte, 64))
		return w.Stats().RefusedPackets == 10
	})
	w.Heal(bAddr)
	if _, err := b.WriteTo(seqPacket(200), a.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	if s := seqOf(t, first(read(t, w, 5*time.Second))); s != 200 {
		t.Fatalf("read %d after heal, want 200", s)
	}
}

func TestPartitionDropsPacketsInFlight(t *testing.T) {
	a, b := listen(t), listen(t)
	w := Wrap(a, WithSeed(1), WithDefaultLink(Link{Delay: 50 * time.Millisecond}))
	defer w.Close()
	if _, err := w.WriteTo(seqPacket(1), b.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	w.Partition(b.LocalAddr().String())
	waitFor(t, 5*time.Second, "the in-flight packet to be dropped", func() bool {
		return w.Stats().PartitionedPackets == 1
	})
	w.Heal(b.LocalAddr().String())
	if _, err := w.WriteTo(seqPacket(2), b.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	if s := seqOf(t, first(read(t, b, 5*time.Second))); s != 2 {
		t.Fatalf("got packet %d, want 2", s)
	}
}

func TestQueueOverflowDrops(t *testing.T) {
	a, b := listen(t), listen(t)
	w := Wrap(a, WithSeed(1), WithMaxQueue(5), WithDefaultLink(Link{Delay: time.Hour}))
	defer w.Close()
	for i := range 8 {
		w.WriteTo(seqPacket(uint32(i)), b.LocalAddr())
	}
	if st := w.Stats(); st.OverflowPackets != 3 || st.DroppedPackets != 3 {
		t.Fatalf("stats %+v", st)
	}
}

func TestClosed(t *testing.T) {
	a, b := listen(t), listen(t)
	w := Wrap(a, WithSeed(1), WithDefaultLink(Link{Delay: time.Hour}))
	w.WriteTo([]byte("queued"), b.LocalAddr())
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := w.WriteTo([]byte("x"), b.LocalAddr()); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("WriteTo after Close: %v", err)
	}
	if _, _, err := w.ReadFrom(make([]byte, 8)); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("ReadFrom after Close: %v", err)
	}
}

func TestLinkValidate(t *testing.T) {
	for _, l := range []Link{{Delay: -1}, {Jitter: -1}, {Loss: 1.5}, {Duplicate: -0.1}, {Reorder: math.NaN()}} {
		if l.Validate() == nil {
			t.Errorf("Validate(%+v) = nil", l)
		}
	}
	if err := (Link{Delay: time.Second, Loss: 1}).Validate(); err != nil {
		t.Error(err)
	}
}

func TestNetworkMesh(t *testing.T) {
	net3 := NewNetwork(1)
	delays := map[[2]string]time.Duration{
		{"us-east", "eu-west"}:  34 * time.Millisecond,
		{"us-east", "ap-south"}: 92 * time.Millisecond,
		{"eu-west", "ap-south"}: 60 * time.Millisecond,
	}
	for p, d := range delays {
		net3.SetLink(p[0], p[1], Link{Delay: d})
	}
	nodes := map[string]*Conn{}
	for _, name := range []string{"us-east", "eu-west", "ap-south"} {
		nodes[name] = net3.Attach(name, listen(t))
		defer nodes[name].Close()
	}
	measure := func(from, to string) time.Duration {
		t.Helper()
		start := time.Now()
		if _, err := nodes[from].WriteTo([]byte(from), nodes[to].LocalAddr()); err != nil {
			t.Fatal(err)
		}
		p, _ := read(t, nodes[to], 5*time.Second)
		if string(p) != from {
			t.Fatalf("%s read %q, want %q", to, p, from)
		}
		return time.Since(start)
	}
	for p, d := range delays {
		for _, dir := range [][2]string{{p[0], p[1]}, {p[1], p[0]}} {
			if got := measure(dir[0], dir[1]); got < d {
				t.Errorf("%s→%s took %v, want ≥ %v", dir[0], dir[1], got, d)
			}
		}
	}

	// A partition cuts both directions; healing restores them.
	net3.Partition("us-east", "ap-south")
	if !net3.Partitioned("ap-south", "us-east") {
		t.Fatal("Partitioned = false")
	}
	nodes["us-east"].WriteTo([]byte("lost"), nodes["ap-south"].LocalAddr())
	nodes["ap-south"].WriteTo([]byte("lost"), nodes["us-east"].LocalAddr())
	waitFor(t, 5*time.Second, "partitioned packets", func() bool {
		return nodes["us-east"].Stats().PartitionedPackets == 1 && nodes["ap-south"].Stats().PartitionedPackets == 1
	})
	net3.Heal("us-east", "ap-south")
	if got := measure("us-east", "ap-south"); got < 92*time.Millisecond {
		t.Errorf("after heal took %v", got)
	}

	// A node that attaches again (a restart) gets its links back.
	net3.Isolate("eu-west")
	nodes["eu-west"].Close()
	nodes["eu-west"] = net3.Attach("eu-west", listen(t))
	if l := nodes["eu-west"].LinkTo(nodes["us-east"].LocalAddr().String()); l.Delay != 34*time.Millisecond {
		t.Fatalf("re-attached link = %+v", l)
	}
	if !nodes["eu-west"].Partitioned(nodes["us-east"].LocalAddr().String()) {
		t.Fatal("re-attached node lost its partition")
	}
	net3.Rejoin("eu-west")
	if got := measure("eu-west", "us-east"); got < 34*time.Millisecond {
		t.Errorf("after rejoin took %v", got)
	}
}
