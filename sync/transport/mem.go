package transport

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"
)

// MemNetwork connects MemTransports in memory, for simulation tests: no
// sockets, no TLS, partitions by Disconnect. Messages from one region to
// another are delivered in order by a goroutine per ordered pair; a message
// queued when its pair is disconnected, or when either side closes, is
// lost, like one in flight on a connection that breaks. Its methods are
// safe for concurrent use.
type MemNetwork struct {
	mu       sync.Mutex
	nodes    map[string]*MemTransport
	down     map[[2]string]bool // unordered pairs
	links    map[[2]string]*memLink
	inflight int
	idle     chan struct{} // closed while inflight == 0
	closed   bool

	maxFrame    int
	maxQueue    int
	callTimeout time.Duration
}

// MemOption configures a MemNetwork.
type MemOption func(*MemNetwork)

// WithMemLimits sets the largest payload (DefaultMaxFrameSize if ≤ 0) and
// the queue of one ordered pair (4096 messages if ≤ 0).
func WithMemLimits(maxFrame, maxQueue int) MemOption {
	return func(n *MemNetwork) {
		if maxFrame > 0 {
			n.maxFrame = maxFrame
		}
		if maxQueue > 0 {
			n.maxQueue = maxQueue
		}
	}
}

// NewMemNetwork returns an empty network.
func NewMemNetwork(opts ...MemOption) *MemNetwork {
	n := &MemNetwork{
		nodes:       make(map[string]*MemTransport),
		down:        make(map[[2]string]bool),
		links:       make(map[[2]string]*memLink),
		idle:        make(chan struct{}),
		maxFrame:    DefaultMaxFrameSize,
		maxQueue:    4096,
		callTimeout: DefaultConfig().CallTimeout,
	}
	close(n.idle)
	for _, o := range opts {
		o(n)
	}
	return n
}

// MemTransport is a Transport on a MemNetwork.
type MemTransport struct {
	net    *MemNetwork
	name   string
	h      Handler
	obs    PeerObserver
	closed bool // guarded by net.mu
}

var (
	_ Transport      = (*MemTransport)(nil)
	_ StatusReporter = (*MemTransport)(nil)
)

// memLink delivers the messages of one ordered pair.
type memLink struct {
	from, to string
	queue    chan memMsg
	epoch    uint64 // bumped each time the pair goes down; guarded by net.mu

	sentMsgs, sentBytes uint64 // guarded by net.mu
	recvMsgs, recvBytes uint64
	dropped             uint64
	since               time.Time
	connects            uint64
	wasUp               bool
}

// memMsg is a queued message and the epoch of its link when it was sent:
// a message from before the pair last went down is lost.
type memMsg struct {
	payload []byte
	epoch   uint64
}

func pairKey(a, b string) [2]string {
	if b < a {
		a, b = b, a
	}
	return [2]string{a, b}
}

// Join adds region name to the network with handler h and returns its
// transport. Every other member becomes its peer. A name may join again
// after its transport is closed (a restart).
func (n *MemNetwork) Join(name string, h Handler) (*MemTransport, error) {
	if h == nil {
		return nil, errors.New("transport: nil handler")
	}
	n.mu.Lock()
	if t, ok := n.nodes[name]; ok && !t.closed {
		n.mu.Unlock()
		return nil, fmt.Errorf("transport: region %s already joined", name)
	}
	t := &MemTransport{net: n, name: name, h: h}
	t.obs, _ = h.(PeerObserver)
	n.nodes[name] = t
	events := n.refreshLocked()
	n.mu.Unlock()
	n.notify(events)
	return t, nil
}

// Disconnect cuts a and b off from each other: sends fail, queued
// messages are lost, calls in progress run to their deadline.
func (n *MemNetwork) Disconnect(a, b string) { n.setDown(a, b, true) }

// Connect undoes Disconnect.
func (n *MemNetwork) Connect(a, b string) { n.setDown(a, b, false) }

func (n *MemNetwork) setDown(a, b string, down bool) {
	n.mu.Lock()
	if down {
		n.down[pairKey(a, b)] = true
	} else {
		delete(n.down, pairKey(a, b))
	}
	events := n.refreshLocked()
	n.mu.Unlock()
	n.notify(events)
}

type peerEvent struct {
	obs       PeerObserver
	peer      string
	connected bool
}

// upLocked reports whether from can send to to.
func (n *MemNetwork) upLocked(from, to string) bool {
	a, b := n.nodes[from], n.nodes[to]
	return !n.closed && from != to && a != nil && b != nil && !a.closed && !b.closed && !n.down[pairKey(from, to)]
}

// refreshLocked brings every link's state up to date and returns the
// events to report once the lock is released.
func (n *MemNetwork) refreshLocked() []peerEvent {
	var events []peerEvent
	names := make([]string, 0, len(n.nodes))
	for name := range n.nodes {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, from := range names {
		for _, to := range names {
			if from == to {
				continue
			}
			l := n.linkLocked(from, to)
			up := n.upLocked(from, to)
			if up == l.wasUp {
				continue
			}
			l.wasUp = up
			l.since = time.Now()
			if up {
				l.connects++
			} else {
				l.epoch++
			}
			if t := n.nodes[from]; !t.closed && t.obs != nil {
				events = append(events, peerEvent{t.obs, to, up})
			}
		}
	}
	return events
}

func (n *MemNetwork) notify(events []peerEvent) {
	for _, e := range events {
		e.obs.OnPeer(e.peer, e.connected)
	}
}

func (n *MemNetwork) linkLocked(from, to string) *memLink {
	k := [2]string{from, to}
	l := n.links[k]
	if l == nil {
		l = &memLink{from: from, to: to, queue: make(chan memMsg, n.maxQueue)}
		n.links[k] = l
		if !n.closed {
			go n.deliver(l)
		}
	}
	return l
}

// deliver hands l's messages to the receiver, in order. It runs for the
// life of the network (one goroutine per ordered pair of names).
func (n *MemNetwork) deliver(l *memLink) {
	for msg := range l.queue {
		n.mu.Lock()
		up := n.upLocked(l.from, l.to) && msg.epoch == l.epoch
		to := n.nodes[l.to]
		if up {
			l.recvMsgs++
			l.recvBytes += uint64(len(msg.payload))
		} else {
			l.dropped++
		}
		n.mu.Unlock()
		if up {
			to.h.OnMessage(l.from, msg.payload)
		}
		n.done()
	}
}

func (n *MemNetwork) done() {
	n.mu.Lock()
	n.inflight--
	if n.inflight == 0 {
		close(n.idle)
	}
	n.mu.Unlock()
}

// Wait returns once no message is queued or being handled anywhere in the
// network, or with ctx's error.
func (n *MemNetwork) Wait(ctx context.Context) error {
	for {
		n.mu.Lock()
		idle, quiet := n.idle, n.inflight == 0
		n.mu.Unlock()
		if quiet {
			return nil
		}
		select {
		case <-idle:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Close stops the network's delivery goroutines. Messages still queued are
// lost and every transport on it fails with ErrClosed.
func (n *MemNetwork) Close() {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return
	}
	n.closed = true
	events := n.refreshLocked()
	for _, l := range n.links {
		close(l.queue)
	}
	n.mu.Unlock()
	n.notify(events)
}

// Send implements Transport.
func (t *MemTransport) Send(peer string, payload []byte) error {
	n := t.net
	if len(payload) > n.maxFrame {
		return peerErr("send", peer, fmt.Errorf("%w: %d bytes, max %d", ErrFrameTooLarge, len(payload), n.maxFrame))
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if err := t.checkLocked(peer); err != nil {
		return peerErr("send", peer, err)
	}
	l := n.linkLocked(t.name, peer)
	select {
	case l.queue <- memMsg{payload: slices.Clone(payload), epoch: l.epoch}:
	default:
		l.dropped++
		return peerErr("send", peer, ErrQueueFull)
	}
	l.sentMsgs++
	l.sentBytes += uint64(len(payload))
	if n.inflight == 0 {
		n.idle = make(chan struct{})
	}
	n.inflight++
	return nil
}

func (t *MemTransport) checkLocked(peer string) error {
	n := t.net
	switch {
	case t.closed || n.closed:
		return ErrClosed
	case n.nodes[peer] == nil || peer == t.name:
		return ErrUnknownPeer
	case !n.upLocked(t.name, peer):
		return ErrNotConnected
	}
	return nil
}

// Call implements Transport. The peer's OnCall runs on a goroutine of its
// own; if ctx ends first Call returns and the handler's ctx is cancelled.
func (t *MemTransport) Call(ctx context.Context, peer string, payload []byte) ([]byte, error) {
	n := t.net
	if len(payload) > n.maxFrame {
		return nil, peerErr("call", peer, fmt.Errorf("%w: %d bytes, max %d", ErrFrameTooLarge, len(payload), n.maxFrame))
	}
	n.mu.Lock()
	err := t.checkLocked(peer)
	target := n.nodes[peer]
	n.mu.Unlock()
	if err != nil {
		return nil, peerErr("call", peer, err)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, n.callTimeout)
		defer cancel()
	}
	hctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type result struct {
		resp []byte
		err  error
	}
	done := make(chan result, 1)
	req := slices.Clone(payload)
	go func() {
		resp, err := target.h.OnCall(hctx, t.name, req)
		done <- result{resp, err}
	}()
	select {
	case r := <-done:
		if r.err != nil && ctx.Err() != nil {
			return nil, peerErr("call", peer, ctx.Err())
		}
		if r.err != nil {
			return nil, peerErr("call", peer, &RemoteError{Peer: peer, Msg: r.err.Error()})
		}
		if len(r.resp) > n.maxFrame {
			return nil, peerErr("call", peer, &RemoteError{Peer: peer, Msg: "transport: response exceeds the frame limit"})
		}
		return slices.Clone(r.resp), nil
	case <-ctx.Done():
		return nil, peerErr("call", peer, ctx.Err())
	}
}

// Connected implements Transport.
func (t *MemTransport) Connected(peer string) bool {
	t.net.mu.Lock()
	defer t.net.mu.Unlock()
	return !t.closed && t.net.upLocked(t.name, peer)
}

// Peers implements StatusReporter.
func (t *MemTransport) Peers() []PeerStatus {
	n := t.net
	n.mu.Lock()
	defer n.mu.Unlock()
	var out []PeerStatus
	for name := range n.nodes {
		if name == t.name {
			continue
		}
		l := n.linkLocked(t.name, name)
		back := n.linkLocked(name, t.name)
		out = append(out, PeerStatus{
			Peer:             name,
			Addr:             "mem:" + name,
			Connected:        !t.closed && n.upLocked(t.name, name),
			Since:            l.since,
			Connects:         l.connects,
			SentMessages:     l.sentMsgs,
			SentBytes:        l.sentBytes,
			ReceivedMessages: back.recvMsgs,
			ReceivedBytes:    back.recvBytes,
			DroppedMessages:  l.dropped,
			Queued:           len(l.queue),
		})
	}
	slices.SortFunc(out, func(a, b PeerStatus) int {
		switch {
		case a.Peer < b.Peer:
			return -1
		case a.Peer > b.Peer:
			return 1
		}
		return 0
	})
	return out
}

// Close implements Transport. Messages queued to or from the region are
// lost; the name may join again.
func (t *MemTransport) Close() error {
	n := t.net
	n.mu.Lock()
	if t.closed {
		n.mu.Unlock()
		return nil
	}
	t.closed = true
	events := n.refreshLocked()
	n.mu.Unlock()
	n.notify(events)
	return nil
}
