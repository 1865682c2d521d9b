// Package wan emulates a wide-area network in user space, as a wrapper
// around a net.PacketConn, for tests, demos and the benchmark on machines
// whose kernel offers no netem.
//
// A Conn applies, per destination address, a one-way delay with optional
// jitter, loss, duplication and reordering to the packets it sends, and can
// partition itself from an address (dropping everything sent to or
// received from it) and heal at run time. Delays are applied on send by one
// scheduler goroutine per Conn; packets to one destination keep their order
// unless reordering is asked for. All randomness comes from one seeded
// math/rand/v2 generator, so a run is reproducible from its seed up to the
// timing of the goroutines that call WriteTo.
//
// A Network names the Conns of several nodes (regions) and sets links and
// partitions between names, so a mesh such as us-east↔eu-west 34 ms,
// us-east↔ap-south 92 ms, eu-west↔ap-south 60 ms is three calls to
// SetLink.
//
// A Conn is a plain net.PacketConn: it has no SyscallConn, ReadMsgUDP or
// WriteMsgUDP, so quic-go uses it through ReadFrom and WriteTo and turns off
// the optimisations it needs a *net.UDPConn for (ECN, GSO, batched reads,
// path MTU discovery). SetReadBuffer and SetWriteBuffer are forwarded to
// the wrapped connection, so quic-go can still size the socket buffers.
package wan

import (
	"container/heap"
	"errors"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// Link describes the emulated path from a Conn to one destination, in that
// direction only.
type Link struct {
	// Delay is the one-way delay added to every packet.
	Delay time.Duration
	// Jitter adds a uniformly drawn extra delay in [0, Jitter) to each
	// packet, so Delay stays a lower bound. Jitter alone does not reorder
	// packets: a packet is never sent before one written earlier to the
	// same destination, unless it is picked for reordering.
	Jitter time.Duration
	// Loss is the probability in [0, 1] that a packet is dropped.
	Loss float64
	// Duplicate is the probability in [0, 1] that a packet is sent twice.
	Duplicate float64
	// Reorder is the probability in [0, 1] that a packet is held back an
	// extra ReorderGap, letting packets written after it overtake it.
	Reorder float64
	// ReorderGap is the extra delay of a reordered packet; zero means
	// DefaultReorderGap.
	ReorderGap time.Duration
}

// DefaultReorderGap is the extra delay of a reordered packet when
// Link.ReorderGap is zero.
const DefaultReorderGap = 5 * time.Millisecond

// DefaultMaxQueue bounds the packets a Conn holds waiting for their delay
// to pass; a packet written while the queue is full is dropped, as a
// router drops on a full buffer.
const DefaultMaxQueue = 1 << 16

// Validate reports whether every field of l is in range.
func (l Link) Validate() error {
	switch {
	case l.Delay < 0 || l.Jitter < 0 || l.ReorderGap < 0:
		return fmt.Errorf("wan: negative duration in link %+v", l)
	case !isProb(l.Loss), !isProb(l.Duplicate), !isProb(l.Reorder):
		return fmt.Errorf("wan: probability outside [0, 1] in link %+v", l)
	}
	return nil
}

func isProb(p float64) bool { return p >= 0 && p <= 1 }

// Stats counts what a Conn did with packets. All counts are since the Conn
// was made.
type Stats struct {
	// SentPackets and SentBytes count packets handed to the wrapped
	// connection, duplicates included.
	SentPackets, SentBytes uint64
	// DroppedPackets and DroppedBytes count packets written but never sent:
	// the sum of LostPackets, PartitionedPackets and OverflowPackets.
	DroppedPackets, DroppedBytes uint64
	// LostPackets were dropped by the link's loss probability.
	LostPackets uint64
	// PartitionedPackets were dropped because their destination was
	// partitioned when they were written or when their delay ran out.
	PartitionedPackets uint64
	// OverflowPackets were dropped because the delay queue was full.
	OverflowPackets uint64
	// DuplicatedPackets counts the extra copies sent.
	DuplicatedPackets uint64
	// ReceivedPackets and ReceivedBytes count packets returned by ReadFrom.
	ReceivedPackets, ReceivedBytes uint64
	// RefusedPackets counts packets read from a partitioned address and
	// discarded.
	RefusedPackets uint64
	// WriteErrors counts delayed packets the wrapped connection failed to
	// send (the error cannot reach the caller, whose WriteTo has returned).
	WriteErrors uint64
}

type counters struct {
	sentPackets, sentBytes       atomic.Uint64
	droppedPackets, droppedBytes atomic.Uint64
	lost, partitioned, overflow  atomic.Uint64
	duplicated                   atomic.Uint64
	recvPackets, recvBytes       atomic.Uint64
	refused                      atomic.Uint64
	writeErrors                  atomic.Uint64
}

// Option configures a Conn made by Wrap.
type Option func(*options)

type options struct {
	rng      *rand.Rand
	def      Link
	links    map[string]Link
	maxQueue int
}

// WithRand makes the Conn draw every random number from r. The Conn owns r
// from then on: r must not be used elsewhere.
func WithRand(r *rand.Rand) Option { return func(o *options) { o.rng = r } }

// WithSeed makes the Conn draw its random numbers from a PCG generator
// seeded with seed.
func WithSeed(seed uint64) Option {
	return func(o *options) { o.rng = rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)) }
}

// WithDefaultLink sets the link used for destinations without a link of
// their own.
func WithDefaultLink(l Link) Option { return func(o *options) { o.def = l } }

// WithLink sets the link to the destination addr ("host:port").
func WithLink(addr string, l Link) Option {
	return func(o *options) {
		if o.links == nil {
			o.links = make(map[string]Link)
		}
		o.links[addrKey(addr)] = l
	}
}

// WithMaxQueue bounds the packets held for delay (DefaultMaxQueue if n ≤ 0).
func WithMaxQueue(n int) Option { return func(o *options) { o.maxQueue = n } }

// Conn is a net.PacketConn that emulates a WAN on the packets it sends. Its
// methods are safe for concurrent use.
type Conn struct {
	pc net.PacketConn

	mu      sync.Mutex
	rng     *rand.Rand
	def     Link
	links   map[string]Link
	cut     map[string]bool
	lastDue map[string]time.Time
	// inOrder counts, per destination, the packets queued in order (not
	// reordered) that are not yet sent: a packet goes out at once only
	// when there are none, or it would overtake them.
	inOrder  map[string]int
	queue    packetHeap
	seq      uint64
	maxQueue int
	closed   bool

	wake chan struct{}
	done chan struct{}
	exit chan struct{}

	pending atomic.Int64
	stats   counters
}

var _ net.PacketConn = (*Conn)(nil)

// Wrap returns a Conn that sends and receives through pc. Without WithRand
// or WithSeed the generator is seeded from the runtime's random source, so
// tests should always pass one. Closing the Conn closes pc. Wrap panics if
// an option sets an invalid Link.
func Wrap(pc net.PacketConn, opts ...Option) *Conn {
	o := options{maxQueue: DefaultMaxQueue}
	for _, opt := range opts {
		opt(&o)
	}
	if o.rng == nil {
		o.rng = rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
	}
	if o.maxQueue <= 0 {
		o.maxQueue = DefaultMaxQueue
	}
	mustValid(o.def)
	links := make(map[string]Link, len(o.links))
	for k, l := range o.links {
		mustValid(l)
		links[k] = l
	}
	c := &Conn{
		pc:       pc,
		rng:      o.rng,
		def:      o.def,
		links:    links,
		cut:      make(map[string]bool),
		lastDue:  make(map[string]time.Time),
		inOrder:  make(map[string]int),
		maxQueue: o.maxQueue,
		wake:     make(chan struct{}, 1),
		done:     make(chan struct{}),
		exit:     make(chan struct{}),
	}
	go c.run()
	return c
}

func mustValid(l Link) {
	if err := l.Validate(); err != nil {
		panic(err)
	}
}

// addrKey normalises an address so that "127.0.0.1:7201", the same
// address as an IPv4-mapped IPv6 address and a *net.UDPAddr for it all
// name one destination.
func addrKey(s string) string {
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()).String()
	}
	return s
}

func keyOf(a net.Addr) string {
	if u, ok := a.(*net.UDPAddr); ok {
		ap := u.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()).String()
	}
	return addrKey(a.String())
}

// SetLink sets the link to addr ("host:port"). Packets already queued keep
// the delay they were given. It panics if l is invalid.
func (c *Conn) SetLink(addr string, l Link) {
	mustValid(l)
	c.mu.Lock()
	c.links[addrKey(addr)] = l
	c.mu.Unlock()
}

// ClearLink makes addr use the default link again.
func (c *Conn) ClearLink(addr string) {
	c.mu.Lock()
	delete(c.links, addrKey(addr))
	c.mu.Unlock()
}

// SetDefaultLink sets the link used for destinations without their own.
// It panics if l is invalid.
func (c *Conn) SetDefaultLink(l Link) {
	mustValid(l)
	c.mu.Lock()
	c.def = l
	c.mu.Unlock()
}

// LinkTo returns the link in force for packets sent to addr.
func (c *Conn) LinkTo(addr string) Link {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.linkLocked(addrKey(addr))
}

func (c *Conn) linkLocked(key string) Link {
	if l, ok := c.links[key]; ok {
		return l
	}
	return c.def
}

// Partition cuts this Conn off from addr ("host:port"): packets written to
// it, including those already waiting for their delay, and packets read
// from it are dropped until Heal.
func (c *Conn) Partition(addr string) {
	c.mu.Lock()
	c.cut[addrKey(addr)] = true
	c.mu.Unlock()
}

// Heal undoes Partition(addr). Packets dropped meanwhile stay lost.
func (c *Conn) Heal(addr string) {
	c.mu.Lock()
	delete(c.cut, addrKey(addr))
	c.mu.Unlock()
}

// Partitioned reports whether addr is partitioned from this Conn.
func (c *Conn) Partitioned(addr string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cut[addrKey(addr)]
}

// Stats returns the packet counts so far.
func (c *Conn) Stats() Stats {
	s := &c.stats
	return Stats{
		SentPackets:        s.sentPackets.Load(),
		SentBytes:          s.sentBytes.Load(),
		DroppedPackets:     s.droppedPackets.Load(),
		DroppedBytes:       s.droppedBytes.Load(),
		LostPackets:        s.lost.Load(),
		PartitionedPackets: s.partitioned.Load(),
		OverflowPackets:    s.overflow.Load(),
		DuplicatedPackets:  s.duplicated.Load(),
		ReceivedPackets:    s.recvPackets.Load(),
		ReceivedBytes:      s.recvBytes.Load(),
		RefusedPackets:     s.refused.Load(),
		WriteErrors:        s.writeErrors.Load(),
	}
}

// Pending returns how many packets are waiting for their delay to pass or
// being sent.
func (c *Conn) Pending() int { return int(c.pending.Load()) }

// Unwrap returns the wrapped connection.
func (c *Conn) Unwrap() net.PacketConn { return c.pc }

// ReadFrom reads the next packet that does not come from a partitioned
// address. Read deadlines are those of the wrapped connection.
func (c *Conn) ReadFrom(p []byte) (int, net.Addr, error) {
	for {
		n, addr, err := c.pc.ReadFrom(p)
		if err != nil {
			return n, addr, err
		}
		c.mu.Lock()
		cut := c.cut[keyOf(addr)]
		c.mu.Unlock()
		if cut {
			c.stats.refused.Add(1)
			continue
		}
		c.stats.recvPackets.Add(1)
		c.stats.recvBytes.Add(uint64(n))
		return n, addr, nil
	}
}

// WriteTo sends p to addr through the emulated link. A packet that the
// link drops or delays is reported as written in full, as a real network
// would; only a packet sent at once can return the wrapped connection's
// error. WriteTo copies p, so the caller may reuse it on return.
func (c *Conn) WriteTo(p []byte, addr net.Addr) (int, error) {
	key := keyOf(addr)
	now := time.Now()

	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return 0, &net.OpError{Op: "write", Net: "udp", Addr: addr, Err: net.ErrClosed}
	}
	if c.cut[key] {
		c.mu.Unlock()
		c.drop(&c.stats.partitioned, len(p))
		return len(p), nil
	}
	l := c.linkLocked(key)
	if l.Loss > 0 && c.rng.Float64() < l.Loss {
		c.mu.Unlock()
		c.drop(&c.stats.lost, len(p))
		return len(p), nil
	}
	delay := l.Delay
	if l.Jitter > 0 {
		delay += time.Duration(c.rng.Int64N(int64(l.Jitter)))
	}
	copies := 1
	if l.Duplicate > 0 && c.rng.Float64() < l.Duplicate {
		copies = 2
	}
	reordered := l.Reorder > 0 && c.rng.Float64() < l.Reorder
	due := now.Add(delay)
	if reordered {
		gap := l.ReorderGap
		if gap == 0 {
			gap = DefaultReorderGap
		}
		due = due.Add(gap)
	} else {
		// Keep order with what is already queued for this destination.
		if last, ok := c.lastDue[key]; ok && due.Before(last) {
			due = last
		}
	}
	if !due.After(now) && copies == 1 && (reordered || c.inOrder[key] == 0) {
		c.mu.Unlock()
		return c.send(p, addr)
	}
	if c.queue.Len()+copies > c.maxQueue {
		c.mu.Unlock()
		c.drop(&c.stats.overflow, len(p))
		return len(p), nil
	}
	if !reordered {
		c.lastDue[key] = due
	}
	buf := append([]byte(nil), p...)
	for range copies {
		c.seq++
		heap.Push(&c.queue, &packet{due: due, seq: c.seq, data: buf, addr: addr, key: key, ordered: !reordered})
	}
	if !reordered {
		c.inOrder[key] += copies
	}
	c.pending.Add(int64(copies))
	if copies == 2 {
		c.stats.duplicated.Add(1)
	}
	c.mu.Unlock()
	c.poke()
	return len(p), nil
}

func (c *Conn) drop(reason *atomic.Uint64, n int) {
	reason.Add(1)
	c.stats.droppedPackets.Add(1)
	c.stats.droppedBytes.Add(uint64(n))
}

func (c *Conn) send(p []byte, addr net.Addr) (int, error) {
	n, err := c.pc.WriteTo(p, addr)
	if err == nil {
		c.stats.sentPackets.Add(1)
		c.stats.sentBytes.Add(uint64(n))
	}
	return n, err
}

func (c *Conn) poke() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// run sends queued packets when their delay has passed.
func (c *Conn) run() {
	defer close(c.exit)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		c.mu.Lock()
		var wait time.Duration = -1
		var due []*packet
		now := time.Now()
		for c.queue.Len() > 0 {
			head := c.queue[0]
			if head.due.After(now) {
				wait = head.due.Sub(now)
				break
			}
			due = append(due, heap.Pop(&c.queue).(*packet))
		}
		for _, pk := range due {
			if c.cut[pk.key] {
				pk.cut = true
			}
		}
		c.mu.Unlock()

		for _, pk := range due {
			if pk.cut {
				c.drop(&c.stats.partitioned, len(pk.data))
			} else if _, err := c.send(pk.data, pk.addr); err != nil {
				c.stats.writeErrors.Add(1)
			}
			c.pending.Add(-1)
			if pk.ordered {
				// Counted down only once sent: until then a packet
				// written for the same destination queues behind it.
				c.mu.Lock()
				if c.inOrder[pk.key]--; c.inOrder[pk.key] <= 0 {
					delete(c.inOrder, pk.key)
					delete(c.lastDue, pk.key)
				}
				c.mu.Unlock()
			}
		}
		if len(due) > 0 {
			continue
		}

		var fire <-chan time.Time
		if wait >= 0 {
			timer.Reset(wait)
			fire = timer.C
		}
		select {
		case <-c.done:
			timer.Stop()
			return
		case <-c.wake:
			timer.Stop()
		case <-fire:
		}
	}
}

// Close stops the scheduler, drops the packets still waiting for their
// delay and closes the wrapped connection.
func (c *Conn) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return c.pc.Close()
	}
	c.closed = true
	c.pending.Add(-int64(c.queue.Len()))
	c.queue = nil
	c.mu.Unlock()
	close(c.done)
	<-c.exit
	return c.pc.Close()
}

// LocalAddr returns the wrapped connection's local address.
func (c *Conn) LocalAddr() net.Addr { return c.pc.LocalAddr() }

// SetDeadline sets the wrapped connection's deadlines. A write deadline
// only bounds packets sent at once, not delayed ones.
func (c *Conn) SetDeadline(t time.Time) error { return c.pc.SetDeadline(t) }

// SetReadDeadline sets the wrapped connection's read deadline.
func (c *Conn) SetReadDeadline(t time.Time) error { return c.pc.SetReadDeadline(t) }

// SetWriteDeadline sets the wrapped connection's write deadline.
func (c *Conn) SetWriteDeadline(t time.Time) error { return c.pc.SetWriteDeadline(t) }

// SetReadBuffer sets the wrapped connection's receive buffer size, if it
// has one (quic-go calls it to enlarge the buffer).
func (c *Conn) SetReadBuffer(bytes int) error {
	if b, ok := c.pc.(interface{ SetReadBuffer(int) error }); ok {
		return b.SetReadBuffer(bytes)
	}
	return errors.New("wan: wrapped connection has no SetReadBuffer")
}

// SetWriteBuffer sets the wrapped connection's send buffer size, if it has
// one.
func (c *Conn) SetWriteBuffer(bytes int) error {
	if b, ok := c.pc.(interface{ SetWriteBuffer(int) error }); ok {
		return b.SetWriteBuffer(bytes)
	}
	return errors.New("wan: wrapped connection has no SetWriteBuffer")
}

type packet struct {
	due  time.Time
	seq  uint64
	data []byte
	addr net.Addr
	key  string
	cut  bool
	// ordered: queued in order with its destination's other packets
	// (counted in Conn.inOrder).
	ordered bool
}

// packetHeap orders packets by due time, then by write order.
type packetHeap []*packet

func (h packetHeap) Len() int { return len(h) }
func (h packetHeap) Less(i, j int) bool {
	if !h[i].due.Equal(h[j].due) {
		return h[i].due.Before(h[j].due)
	}
	return h[i].seq < h[j].seq
}
func (h packetHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *packetHeap) Push(x any)   { *h = append(*h, x.(*packet)) }
func (h *packetHeap) Pop() any {
	old := *h
	n := len(old)
	p := old[n-1]
	old[n-1] = nil
	*h = old[:n-1]
	return p
}

// Network is a set of named nodes, each a Conn, with links and partitions
// set between names. Links and partitions may be set before or after the
// nodes attach; a node that attaches again (after a restart) gets them
// again. Its methods are safe for concurrent use.
type Network struct {
	mu    sync.Mutex
	seed  uint64
	nodes map[string]*Conn
	addrs map[string]string
	links map[[2]string]Link
	cut   map[[2]string]bool
}

// NewNetwork returns an empty network. Node NAME draws its random numbers
// from a generator seeded by seed and NAME, so a run is reproducible.
func NewNetwork(seed uint64) *Network {
	return &Network{
		seed:  seed,
		nodes: make(map[string]*Conn),
		addrs: make(map[string]string),
		links: make(map[[2]string]Link),
		cut:   make(map[[2]string]bool),
	}
}

// Seed returns the seed the network was made with.
func (n *Network) Seed() uint64 { return n.seed }

// Attach wraps pc as node name and returns the Conn to use in its place.
// If name was attached before, the new Conn replaces the old one (which
// the caller closes). Options apply after the network's own seed, so
// WithRand or WithSeed override it.
func (n *Network) Attach(name string, pc net.PacketConn, opts ...Option) *Conn {
	h := fnv.New64a()
	h.Write([]byte(name))
	all := append([]Option{func(o *options) {
		o.rng = rand.New(rand.NewPCG(n.seed, h.Sum64()))
	}}, opts...)
	c := Wrap(pc, all...)
	addr := keyOf(pc.LocalAddr())

	n.mu.Lock()
	defer n.mu.Unlock()
	if old, ok := n.addrs[name]; ok && old != addr {
		for other, oc := range n.nodes {
			if other != name {
				oc.ClearLink(old)
				oc.Heal(old)
			}
		}
	}
	n.nodes[name] = c
	n.addrs[name] = addr
	for other := range n.nodes {
		if other != name {
			n.applyLocked(name, other)
			n.applyLocked(other, name)
		}
	}
	return c
}

// applyLocked sets on node from's Conn the link and partition state towards
// node to, if both are attached.
func (n *Network) applyLocked(from, to string) {
	c, ok := n.nodes[from]
	addr, ok2 := n.addrs[to]
	if !ok || !ok2 {
		return
	}
	if l, ok := n.links[[2]string{from, to}]; ok {
		c.SetLink(addr, l)
	} else {
		c.ClearLink(addr)
	}
	if n.cut[pair(from, to)] {
		c.Partition(addr)
	} else {
		c.Heal(addr)
	}
}

func pair(a, b string) [2]string {
	if b < a {
		a, b = b, a
	}
	return [2]string{a, b}
}

// Node returns the Conn attached as name, or nil.
func (n *Network) Node(name string) *Conn {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.nodes[name]
}

// SetLink sets the link between a and b, the same in both directions. It
// panics if l is invalid.
func (n *Network) SetLink(a, b string, l Link) {
	n.SetOneWay(a, b, l)
	n.SetOneWay(b, a, l)
}

// SetOneWay sets the link for packets from node from to node to. It panics
// if l is invalid.
func (n *Network) SetOneWay(from, to string, l Link) {
	mustValid(l)
	n.mu.Lock()
	defer n.mu.Unlock()
	n.links[[2]string{from, to}] = l
	n.applyLocked(from, to)
}

// Partition cuts a and b off from each other in both directions.
func (n *Network) Partition(a, b string) { n.setCut(a, b, true) }

// Heal reconnects a and b.
func (n *Network) Heal(a, b string) { n.setCut(a, b, false) }

func (n *Network) setCut(a, b string, cut bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if cut {
		n.cut[pair(a, b)] = true
	} else {
		delete(n.cut, pair(a, b))
	}
	n.applyLocked(a, b)
	n.applyLocked(b, a)
}

// Isolate partitions name from every other attached node.
func (n *Network) Isolate(name string) {
	for _, other := range n.names() {
		if other != name {
			n.Partition(name, other)
		}
	}
}

// Rejoin heals every partition involving name.
func (n *Network) Rejoin(name string) {
	for _, other := range n.names() {
		if other != name {
			n.Heal(name, other)
		}
	}
}

func (n *Network) names() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	names := make([]string, 0, len(n.nodes))
	for name := range n.nodes {
		names = append(names, name)
	}
	return names
}

// Partitioned reports whether a and b are cut off from each other.
func (n *Network) Partitioned(a, b string) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.cut[pair(a, b)]
}
