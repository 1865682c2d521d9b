// Package replication runs the replication protocol (sync/protocol) of one
// region over a transport (sync/transport): it feeds the protocol local
// deltas, peer messages, connectivity and ticks from one goroutine, makes
// every received delta durable in the region's store before any message
// that acknowledges it leaves, and forwards home requests to other
// regions. It imports region and the other sync packages; cmd/server
// attaches it to a region (NewQUIC).
package replication

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/latticedb/lattice/crdt"
	"github.com/latticedb/lattice/region"
	"github.com/latticedb/lattice/sync/protocol"
	"github.com/latticedb/lattice/sync/transport"
)

// A region node is what the protocol reads.
var _ protocol.Storage = (*region.Node)(nil)

// Options configure a Replicator.
type Options struct {
	// Region is this region's name.
	Region   string
	Peers    []string
	Protocol protocol.Config
	// TickInterval is how often the protocol's timers are checked.
	TickInterval time.Duration
	Logger       *slog.Logger
	Metrics      *Metrics
	// Now is the clock (default time.Now).
	Now func() time.Time
	// OnApply, if set, is called after each durable apply of remote
	// deltas with the new dot ranges it made visible (the benchmark
	// measures convergence with it).
	OnApply func(from string, ranges []protocol.DotRange, at time.Time)
	// OnPublish, if set, is called with each durable local delta as it is
	// published.
	OnPublish func(d region.Delta, at time.Time)
}

type inbound struct {
	from string
	msg  *protocol.Message
	peer *bool // connectivity event when set
}

// Replicator is one region's replication driver. It implements
// region.Publisher (local deltas in), transport.Handler and
// transport.PeerObserver (traffic in), and region.Forwarder (home requests
// out).
type Replicator struct {
	opts  Options
	node  atomic.Pointer[region.Node]
	log   *slog.Logger
	m     *Metrics
	proto *protocol.Protocol
	drv   *Driver

	mu     sync.Mutex
	local  []region.Delta
	in     []inbound
	inSize int // memory of the messages in in (inboundMem)
	// stepping is the memory of the batch the loop took and is stepping:
	// held until it is done, so it counts against MaxInboundBytes too.
	stepping int
	room     *sync.Cond // on mu: in was taken by the loop, or the replicator stopped
	wake     chan struct{}
	status   []protocol.PeerStatus
	// waiters wait for local writes to reach other regions (concern.go).
	waiters []*waiter

	tmu sync.RWMutex
	t   transport.Transport

	stop chan struct{}
	done chan struct{}
}

// New returns a replicator; Start attaches the node and the transport.
// Local deltas published before Start are kept and sent once it runs.
func New(opts Options) *Replicator {
	if opts.Protocol.Buckets == 0 {
		opts.Protocol = protocol.DefaultConfig()
	}
	if opts.TickInterval == 0 {
		opts.TickInterval = 20 * time.Millisecond
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Metrics == nil {
		opts.Metrics = NewMetrics(nil)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	r := &Replicator{opts: opts, log: opts.Logger, m: opts.Metrics,
		wake: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	r.room = sync.NewCond(&r.mu)
	return r
}

// Check reports whether the replicator can run for node: its protocol
// settings are valid, with the digest's bucket count taken from the node
// (one source: region.Options.DigestBuckets).
func (r *Replicator) Check(node *region.Node) error {
	r.opts.Protocol.Buckets = node.DigestBuckets()
	r.opts.Protocol.Homes = node.HomesID()
	return r.opts.Protocol.Validate()
}

// Start runs the replicator for node over t until Close. The node's
// region must be Options.Region; Check must have passed.
func (r *Replicator) Start(node *region.Node, t transport.Transport) {
	peers := make([]crdt.ReplicaID, 0, len(r.opts.Peers))
	for _, p := range r.opts.Peers {
		peers = append(peers, crdt.ReplicaID(p))
	}
	r.node.Store(node)
	node.ArmStartGate() // its time counts from now, when the peers are dialled
	r.proto = protocol.New(node.Self(), peers, node.Applied(), node, r.opts.Protocol)
	r.drv = &Driver{Protocol: r.proto, Node: node, Peers: r.opts.Peers, Now: r.opts.Now, Metrics: r.m, OnApply: r.opts.OnApply,
		Send: func(to crdt.ReplicaID, _ *protocol.Message, b []byte) error { return r.transport().Send(string(to), b) }}
	r.tmu.Lock()
	r.t = t
	r.tmu.Unlock()
	for _, p := range r.opts.Peers {
		if t.Connected(p) {
			r.OnPeer(p, true)
		}
	}
	// The peers' status from the start (before the loop's first tick, a
	// status would list no peers); the loop has not started, so the
	// protocol is this goroutine's.
	r.publishStatus()
	go r.loop()
}

// Close stops the loop. It does not close the transport.
func (r *Replicator) Close() {
	select {
	case <-r.stop:
		return
	default:
	}
	close(r.stop)
	r.mu.Lock()
	r.room.Broadcast() // OnMessage waiting for room gives up
	r.mu.Unlock()
	if r.proto != nil {
		select {
		case <-r.done:
		case <-time.After(5 * time.Second):
			r.log.Error("replication loop did not stop")
		}
	}
	// No loop serves the write concerns still waiting: they are not met
	// (the write stays applied), and so are later ones (wait).
	r.mu.Lock()
	for _, w := range r.waiters {
		w.err = ErrTooFewRegions
		close(w.done)
	}
	r.waiters = nil
	r.mu.Unlock()
}

func (r *Replicator) transport() transport.Transport {
	r.tmu.RLock()
	defer r.tmu.RUnlock()
	return r.t
}

func (r *Replicator) signal() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// Publish implements region.Publisher.
func (r *Replicator) Publish(d region.Delta) {
	if r.opts.OnPublish != nil {
		r.opts.OnPublish(d, r.opts.Now())
	}
	r.mu.Lock()
	r.local = append(r.local, d)
	r.mu.Unlock()
	r.signal()
}

// OnMessage implements transport.Handler: it decodes and validates a
// protocol message; a bad one is logged, counted and dropped.
func (r *Replicator) OnMessage(from string, payload []byte) {
	r.m.BytesReceived.WithLabelValues(from).Add(float64(len(payload)))
	m, err := protocol.Decode(payload, r.opts.Protocol.Buckets)
	if err != nil {
		r.m.Rejected.WithLabelValues(from).Inc()
		r.log.Warn("rejected a message from a peer", "peer", from, "err", err)
		return
	}
	r.m.MessagesReceived.WithLabelValues(from, m.Kind.String()).Inc()
	r.mu.Lock()
	// Bounded: past MaxInbound messages or MaxInboundBytes waiting for the
	// loop, the peer's delivery waits for the loop to take them, which
	// holds back its messages and, through flow control, its sender.
	for len(r.in) >= MaxInbound || r.inSize+r.stepping >= MaxInboundBytes {
		select {
		case <-r.stop:
			r.mu.Unlock()
			return
		default:
		}
		r.room.Wait()
	}
	r.in = append(r.in, inbound{from: from, msg: m})
	r.inSize += inboundMem(len(payload), m)
	r.mu.Unlock()
	r.signal()
}

// inboundMem estimates the memory a decoded message of size bytes holds:
// its struct, and decoded fields up to about nine times their encoding
// (a group's maps; acknowledgements of a byte each that decode to eight),
// and what its group holds that its encoding does not tell (a key's maps,
// a cloud dot of a few bytes that decodes to a map entry: DecodedMem).
func inboundMem(size int, m *protocol.Message) int {
	n := 768 + 9*size
	if m.Group != nil {
		n += m.Group.DecodedMem()
	}
	return n
}

// Bounds of the messages received and not yet stepped (OnMessage).
const (
	MaxInbound      = 4096
	MaxInboundBytes = 64 << 20
)

// OnPeer implements transport.PeerObserver.
// OnRefused implements transport.RefusalObserver: a peer that turned
// this region down runs a config without it (region.Node.PeerRefused).
func (r *Replicator) OnRefused(peer string) {
	if n := r.node.Load(); n != nil {
		n.PeerRefused(peer)
	}
}

func (r *Replicator) OnPeer(peer string, connected bool) {
	if n := r.node.Load(); n != nil && connected {
		n.PeerReached(peer) // it took this region
	}
	r.mu.Lock()
	r.in = append(r.in, inbound{from: peer, peer: &connected})
	r.mu.Unlock()
	r.signal()
}

func (r *Replicator) loop() {
	defer close(r.done)
	tick := time.NewTicker(r.opts.TickInterval)
	defer tick.Stop()
	// flush fires when a batch the protocol holds comes due
	// (protocol.Protocol.Due).
	flush := time.NewTimer(time.Hour)
	flush.Stop()
	defer flush.Stop()
	for {
		ticked, flushed := false, false
		select {
		case <-r.stop:
			return
		case <-r.wake:
		case <-tick.C:
			ticked = true
		case <-flush.C:
			flushed = true
		}
		r.mu.Lock()
		local, in := r.local, r.in
		r.stepping, r.inSize = r.inSize, 0
		r.local, r.in = nil, nil
		r.room.Broadcast()
		r.mu.Unlock()
		now := r.opts.Now()
		for _, ev := range in {
			switch {
			case ev.peer != nil && *ev.peer:
				r.proto.PeerUp(crdt.ReplicaID(ev.from), now)
			case ev.peer != nil:
				r.proto.PeerDown(crdt.ReplicaID(ev.from), now)
			default:
				r.proto.Step(crdt.ReplicaID(ev.from), ev.msg, now)
			}
		}
		if len(in) > 0 {
			clear(in) // the stepped messages are the protocol's now, or garbage
			r.mu.Lock()
			r.stepping = 0
			r.room.Broadcast()
			r.mu.Unlock()
		}
		for _, d := range local {
			r.drv.Local(d, now)
		}
		if ticked {
			r.proto.Tick(now)
		}
		if flushed {
			r.proto.Flush(now)
		}
		if err := r.proto.Err(); err != nil {
			r.log.Error("replication could not read the store", "err", err)
		}
		r.serveWaiters(now)
		r.process()
		if ticked {
			r.publishStatus()
		}
		flush.Stop()
		if due := r.proto.Due(); !due.IsZero() {
			flush.Reset(max(due.Sub(r.opts.Now()), 0))
		}
	}
}

// process carries out what the protocol produced (Driver.Process):
// applies durable first, then messages. A failed apply sends nothing (the
// peers retransmit).
func (r *Replicator) process() {
	err := r.drv.Process()
	var ae *ApplyError
	switch {
	case errors.As(err, &ae):
		r.log.Error("could not apply remote deltas; not acknowledging them", "err", ae.Err)
	case err != nil:
		r.log.Error("could not encode a message", "err", err)
	}
}

func (r *Replicator) publishStatus() {
	st := r.proto.Status()
	for _, s := range st {
		r.m.PendingDeltas.WithLabelValues(s.Region).Set(float64(s.PendingDeltas))
		r.m.PendingBytes.WithLabelValues(s.Region).Set(float64(s.PendingBytes))
		r.m.LagSeconds.WithLabelValues(s.Region).Set(float64(s.LagMs) / 1000)
		r.m.AERounds.WithLabelValues(s.Region).Set(float64(s.AERounds))
		r.m.AEUnrepaired.WithLabelValues(s.Region).Set(float64(len(s.UnrepairedKeys)))
		if node := r.node.Load(); node != nil {
			node.NoteUnrepaired(s.Region, s.UnrepairedKeys)
		}
		r.m.AEKeys.WithLabelValues(s.Region, "pushed").Set(float64(s.AEKeysPushed))
		r.m.AEKeys.WithLabelValues(s.Region, "pulled").Set(float64(s.AEKeysPulled))
	}
	r.mu.Lock()
	for i, s := range st {
		if len(s.UnrepairedKeys) > 0 && (i >= len(r.status) || len(r.status[i].UnrepairedKeys) < len(s.UnrepairedKeys)) {
			r.log.Error("anti-entropy ships keys again and again without repairing them: the regions diverge",
				"peer", s.Region, "keys", s.UnrepairedKeys)
		}
	}
	r.status = st
	r.mu.Unlock()
}

// Status returns each peer's replication state for /v1/cluster, as of
// the last tick.
func (r *Replicator) Status() []region.PeerStatus {
	st := r.protocolStatus()
	out := make([]region.PeerStatus, len(st))
	for i, s := range st {
		out[i] = peerStatus(s)
	}
	return out
}

// protocolStatus returns what the protocol knew of each peer at the last
// tick.
func (r *Replicator) protocolStatus() []protocol.PeerStatus {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.status)
}

// peerStatus composes a peer's entry in /v1/cluster from what the
// protocol knows of it.
func peerStatus(s protocol.PeerStatus) region.PeerStatus {
	return region.PeerStatus{
		Region:            s.Region,
		Connected:         s.Connected,
		PendingDeltas:     s.PendingDeltas,
		PendingBytes:      s.PendingBytes,
		InflightMessages:  s.InflightMsgs,
		LagMs:             s.LagMs,
		LastAck:           s.LastAck,
		PeerVersionVector: s.PeerApplied,
		AntiEntropy:       s.AntiEntropy,
		AntiEntropyRounds: s.AERounds,
		UnrepairedKeys:    s.UnrepairedKeys,
		KeysPushed:        s.AEKeysPushed,
		KeysPulled:        s.AEKeysPulled,
		AntiEntropyRate:   s.AERate,
		LastAntiEntropy:   s.LastAntiEntropy,
		BytesSent:         s.BytesSent,
		DeltaMessagesSent: s.DeltasSent,
	}
}

// applyKeys bounds the keys of one store transaction of remote applies:
// the applies of one Ready are joined up to it (one apply, whose group
// came in one message, has at most as many, well within
// region.MaxApplyKeys).
const applyKeys = crdt.MaxGroupKeys

// MaxCallBytes bounds a forwarded request or its answer: a transport
// frame. A quorum read's answer, a read repair and a forwarded
// checkout's answer carry the state of a cart that, joined from the adds
// of four or more regions, may pass 2 MiB.
const MaxCallBytes = transport.DefaultMaxFrameSize

// Forward implements region.Forwarder: it sends req to the home region on
// a stream of its own and returns the home's answer. An unreachable home
// fails at once, and a home that does not answer within ctx's deadline
// fails then, with home_unavailable.
func (r *Replicator) Forward(ctx context.Context, home string, req *region.HomeRequest) (*region.HomeResponse, error) {
	return forward(ctx, r.transport(), home, req)
}

// forward sends req to the home region over t (see Replicator.Forward).
func forward(ctx context.Context, t transport.Transport, home string, req *region.HomeRequest) (*region.HomeResponse, error) {
	unavailable := func(why string) error {
		return &region.Error{Code: region.CodeHomeUnavailable, RetryAfter: 1,
			Detail: fmt.Sprintf("home region %s is unreachable: %s", home, why)}
	}
	if t == nil || !t.Connected(home) {
		err := unavailable("not connected").(*region.Error)
		err.NotSent = true // the home decided nothing (region.Error.NotSent)
		return nil, err
	}
	b, err := crdt.Marshal(req)
	if err != nil {
		return nil, err
	}
	resp, err := t.Call(ctx, home, b)
	if err != nil {
		var re *transport.RemoteError
		if errors.As(err, &re) {
			return nil, unavailable(re.Msg)
		}
		return nil, unavailable(err.Error())
	}
	var out region.HomeResponse
	if err := crdt.UnmarshalCarrier(resp, &out, MaxCallBytes); err != nil {
		return nil, unavailable("malformed answer")
	}
	if out.Res == nil && out.Item == nil && out.Err == nil && out.Order == nil && out.Saga == nil && out.State == nil && out.Token == "" {
		return nil, unavailable("empty answer")
	}
	return &out, nil
}

// OnCall implements transport.Handler: it decides a home request from
// another region.
func (r *Replicator) OnCall(ctx context.Context, from string, payload []byte) ([]byte, error) {
	node := r.node.Load()
	if node == nil {
		return nil, errors.New("replication: region is starting")
	}
	var req region.HomeRequest
	if err := crdt.UnmarshalCarrier(payload, &req, MaxCallBytes); err != nil {
		r.m.Rejected.WithLabelValues(from).Inc()
		return nil, fmt.Errorf("replication: bad home request: %w", err)
	}
	if req.From != "" && req.From != from {
		// A request in a region's own name (escrow grants and recalls) is
		// that region's only: a peer's certificate names the region it
		// speaks for, and no region asks on another's behalf.
		r.m.Rejected.WithLabelValues(from).Inc()
		return crdt.Marshal(&region.HomeResponse{Err: region.InvalidField("from", "a request from region %s in the name of another region", from)})
	}
	return crdt.Marshal(node.ServeForwarded(ctx, &req))
}

var (
	_ region.Publisher       = (*Replicator)(nil)
	_ region.Forwarder       = (*Replicator)(nil)
	_ transport.Handler      = (*Replicator)(nil)
	_ transport.PeerObserver = (*Replicator)(nil)
)
