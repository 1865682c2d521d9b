// Package transport carries opaque messages between regions.
//
// Transport is the narrow seam the replication protocol sees: Send for
// one-way messages on an ordered per-peer stream (delta traffic), Call for
// a request and its response on a stream of its own (forwarded requests,
// never stuck behind deltas), Connected for the state of a peer. Incoming
// traffic goes to a Handler. QUICTransport implements it over QUIC
// (quic-go) on any net.PacketConn, so an emulated WAN (sync/wan) can sit
// under it. Regions authenticate each other with mutual TLS (sync/certs);
// a peer is known by the region its verified certificate names. (The
// simulation of sync/protocol drives the protocol over a seeded network of
// its own, below any transport.)
//
// Delivery is at most once. Messages sent to one peer arrive in the order of
// the Send calls, without duplicates, but any of them may be lost when a
// connection breaks or a queue is full; the protocol above repairs losses
// (acknowledgements, anti-entropy).
package transport

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Transport moves messages between this region and its peers. Its methods
// are safe for concurrent use.
type Transport interface {
	// Send queues payload for peer on the ordered message stream and
	// returns without waiting for delivery. It fails at once with
	// ErrNotConnected when the peer is not connected, ErrQueueFull when
	// the peer's queue is full, ErrFrameTooLarge, ErrUnknownPeer or
	// ErrClosed. Send copies payload.
	Send(peer string, payload []byte) error
	// Call sends payload to peer's OnCall on a fresh stream and returns
	// its response. It returns ctx's error (wrapped) when ctx ends first,
	// a *RemoteError when the peer's handler failed, and ErrNotConnected
	// at once when the peer is not connected. Without a ctx deadline the
	// transport's default call timeout applies.
	Call(ctx context.Context, peer string, payload []byte) ([]byte, error)
	// Connected reports whether peer can be sent to now.
	Connected(peer string) bool
	// Close stops the transport and closes its connections. Messages
	// still queued are dropped.
	Close() error
}

// Handler receives a region's incoming traffic. Its methods may be called
// concurrently, but OnMessage never concurrently for one peer: a peer's
// messages are handed over one at a time, in the order they were sent on
// one connection. Each OnCall runs on a goroutine of its own. Handlers own
// the payload slices they are given. A slow OnMessage holds back that
// peer's messages (and, through flow control, its sender).
type Handler interface {
	// OnMessage handles a message sent by region from.
	OnMessage(from string, payload []byte)
	// OnCall answers a call made by region from. ctx ends when the caller
	// gives up or its deadline passes. A returned error reaches the caller
	// as a *RemoteError carrying err.Error().
	OnCall(ctx context.Context, from string, payload []byte) ([]byte, error)
}

// PeerObserver is implemented by a Handler that wants to hear when a peer
// connects or disconnects. OnPeer is called from the transport's own
// goroutines, in order for one peer, and must not block for long.
type PeerObserver interface {
	OnPeer(peer string, connected bool)
}

// RefusalObserver is implemented by a Handler that wants to hear when a
// peer refused this region while it dialled: the peer answered, and
// turned this region's certificate or name down (a TLS alert, or "unknown
// region"), as a region does once this one is removed from its config. A
// cut or a peer that is down refuses nothing. OnRefused is called from
// the dialling goroutine and must not block for long.
type RefusalObserver interface {
	OnRefused(peer string)
}

// HandlerFuncs adapts functions to a Handler. A nil Message drops
// messages; a nil Call answers every call with an error.
type HandlerFuncs struct {
	Message func(from string, payload []byte)
	Call    func(ctx context.Context, from string, payload []byte) ([]byte, error)
	Peer    func(peer string, connected bool)
}

var (
	_ Handler      = HandlerFuncs{}
	_ PeerObserver = HandlerFuncs{}
)

// OnMessage calls f.Message.
func (f HandlerFuncs) OnMessage(from string, payload []byte) {
	if f.Message != nil {
		f.Message(from, payload)
	}
}

// OnCall calls f.Call.
func (f HandlerFuncs) OnCall(ctx context.Context, from string, payload []byte) ([]byte, error) {
	if f.Call == nil {
		return nil, errors.New("transport: calls are not handled")
	}
	return f.Call(ctx, from, payload)
}

// OnPeer calls f.Peer.
func (f HandlerFuncs) OnPeer(peer string, connected bool) {
	if f.Peer != nil {
		f.Peer(peer, connected)
	}
}

// PeerStatus is what a transport knows of one peer (for tests and
// diagnostics; a peer's entry in GET /v1/cluster is region.PeerStatus,
// which the replication driver composes from its protocol's state).
type PeerStatus struct {
	// Peer is the peer's region name and Addr its configured address.
	Peer, Addr string
	// Connected reports whether the peer can be sent to now.
	Connected bool
	// Since is when Connected last changed (zero if it never did).
	Since time.Time
	// RTT is the smoothed round-trip time while connected (QUIC only).
	RTT time.Duration
	// Connects counts the connections to the peer established so far.
	Connects uint64
	// SentMessages and SentBytes count messages written to the peer;
	// ReceivedMessages and ReceivedBytes count messages handed to the
	// handler. Bytes are payload bytes.
	SentMessages, SentBytes         uint64
	ReceivedMessages, ReceivedBytes uint64
	// SentStreamBytes and RecvStreamBytes count what the message streams
	// carried for those messages: their frames, compressed when the
	// connection speaks lattice-repl/2 (QUIC only).
	SentStreamBytes, RecvStreamBytes uint64
	// Protocol is the ALPN the current connection to the peer agreed on
	// ("" while not connected; QUIC only): lattice-repl/2 compresses the
	// message stream.
	Protocol string
	// DroppedMessages counts messages refused by Send because the queue
	// was full, or lost from the queue when a connection broke.
	DroppedMessages uint64
	// Queued is the number of messages waiting to be written.
	Queued int
	// LastError describes the last connection failure, if any.
	LastError string
}

// StatusReporter is implemented by transports that report per-peer state
// (QUICTransport does).
type StatusReporter interface {
	// Peers returns the status of every configured peer, sorted by name.
	Peers() []PeerStatus
}

// Errors returned by transports. Test with errors.Is.
var (
	ErrClosed        = errors.New("transport: closed")
	ErrUnknownPeer   = errors.New("transport: unknown peer")
	ErrNotConnected  = errors.New("transport: peer not connected")
	ErrQueueFull     = errors.New("transport: send queue full")
	ErrFrameTooLarge = errors.New("transport: frame too large")
)

// PeerError is an error of an operation on one peer. It wraps the cause,
// typically one of the Err values, a context error or a *RemoteError.
type PeerError struct {
	Op   string // "send", "call"
	Peer string
	Err  error
}

// Error describes the failed operation, the peer and the cause.
func (e *PeerError) Error() string {
	return "transport: " + e.Op + " " + e.Peer + ": " + strings.TrimPrefix(e.Err.Error(), "transport: ")
}

// Unwrap returns the cause.
func (e *PeerError) Unwrap() error { return e.Err }

func peerErr(op, peer string, err error) error { return &PeerError{Op: op, Peer: peer, Err: err} }

// RemoteError is returned by Call when the peer's handler returned an
// error; Msg is that error's text.
type RemoteError struct {
	Peer string
	Msg  string
}

// Error describes the remote failure.
func (e *RemoteError) Error() string {
	return fmt.Sprintf("transport: remote error from %s: %s", e.Peer, e.Msg)
}

// ctxErr returns ctx's error if it has ended, else err.
func ctxErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}
