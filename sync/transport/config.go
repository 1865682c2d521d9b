package transport

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"strings"
	"time"

	"github.com/latticedb/lattice/sync/certs"
)

// Config configures a QUICTransport. Start from DefaultConfig and set
// Region, Peers and Certs.
type Config struct {
	// Region is this region's name; Certs must be its bundle.
	Region string
	// Node is this process's node name when its region runs on several
	// nodes (a partitioned region); "" for a region of one node. The
	// transport's own peer name is then "REGION/NODE" (see PeerName).
	Node string
	// Peers maps every peer's name to its QUIC (UDP) address,
	// "host:port", resolved at each dial. A peer is a region ("eu-west")
	// or, when regions run on several nodes, a node "REGION/NODE", which
	// may be of this region too. A peer authenticates with its region's
	// certificate and names its node when it connects.
	Peers map[string]string
	// Certs holds the cluster CA and this region's certificate.
	Certs *certs.Bundle
	// Logger receives the transport's logs (give it one that names the
	// region when several regions share a process); nil discards them.
	Logger *slog.Logger

	// MaxFrameSize bounds one message, request or response payload.
	// A larger incoming frame closes its stream, unread.
	MaxFrameSize int
	// MaxQueuedMessages and MaxQueuedBytes bound the messages waiting to
	// be written to one peer; Send fails with ErrQueueFull beyond them.
	MaxQueuedMessages int
	MaxQueuedBytes    int64

	// CallTimeout bounds a Call whose context has no deadline, and an
	// incoming call whose caller sent no timeout.
	CallTimeout time.Duration
	// WriteTimeout bounds the write of one message; a peer that stops
	// reading for that long has its connection closed and redialled.
	WriteTimeout time.Duration

	// HandshakeTimeout bounds the QUIC handshake when no packet arrives
	// (QUIC's handshake idle timeout; a dial is abandoned after twice
	// this) and the wait for the peer to accept the message stream.
	HandshakeTimeout time.Duration
	// KeepAlivePeriod is how often an idle connection sends a packet, and
	// MaxIdleTimeout how long a connection lives without hearing from the
	// peer: together they bound how fast a partition or a dead peer is
	// noticed.
	KeepAlivePeriod time.Duration
	MaxIdleTimeout  time.Duration
	// ReconnectMin and ReconnectMax bound the exponential backoff between
	// dials of a peer; each wait is drawn uniformly from [d/2, d].
	ReconnectMin time.Duration
	ReconnectMax time.Duration

	// MaxIncomingStreams bounds the streams (one message stream and the
	// calls in progress) a peer may have open on its connection to us.
	MaxIncomingStreams int64
	// Flow-control windows: initial and maximum, per stream and per
	// connection. They bound what a peer can make us buffer, and a
	// window below the link's bandwidth-delay product (bytes per second
	// times round trip) caps its throughput at window / round trip; quic-go
	// grows each window from its initial size up to its maximum as the
	// measured round trip and the reading rate require.
	InitialStreamWindow     uint64
	MaxStreamWindow         uint64
	InitialConnectionWindow uint64
	MaxConnectionWindow     uint64

	// protocols, when set, replaces the ALPN names offered (tests: a
	// region of an earlier version offers only lattice-repl/1).
	protocols []string
}

// DefaultMaxFrameSize is the largest payload under DefaultConfig: 4 MiB.
const DefaultMaxFrameSize = 4 << 20

// DefaultConfig returns a configuration for regions a WAN apart: 4 MiB
// frames, a partition noticed within 5 s (keep-alive every second, well
// below the idle timeout, so that a lost keep-alive does not end an idle
// connection), redials backing off from 100 ms to 5 s, and flow-control
// windows for long fat links: a stream starts at 2 MiB (16 MB/s at a
// 130 ms round trip before any growth) and may grow to 32 MiB (about
// 1.3 Gbit/s at 200 ms), the connection 1.5 times that.
func DefaultConfig() Config {
	return Config{
		MaxFrameSize:            DefaultMaxFrameSize,
		MaxQueuedMessages:       4096,
		MaxQueuedBytes:          64 << 20,
		CallTimeout:             10 * time.Second,
		WriteTimeout:            30 * time.Second,
		HandshakeTimeout:        3 * time.Second,
		KeepAlivePeriod:         time.Second,
		MaxIdleTimeout:          5 * time.Second,
		ReconnectMin:            100 * time.Millisecond,
		ReconnectMax:            5 * time.Second,
		MaxIncomingStreams:      128,
		InitialStreamWindow:     2 << 20,
		MaxStreamWindow:         32 << 20,
		InitialConnectionWindow: 3 << 20,
		MaxConnectionWindow:     48 << 20,
	}
}

// PeerName returns the name this process has as a peer of others:
// "REGION", or "REGION/NODE" when Node is set.
func (c *Config) PeerName() string {
	if c.Node == "" {
		return c.Region
	}
	return c.Region + "/" + c.Node
}

// PeerRegion returns the region of peer name ("REGION" or "REGION/NODE").
func PeerRegion(name string) string {
	region, _, _ := strings.Cut(name, "/")
	return region
}

// Validate reports the first problem with c.
func (c *Config) Validate() error {
	if err := certs.ValidateRegionName(c.Region); err != nil {
		return fmt.Errorf("transport: config: region: %w", err)
	}
	if c.Node != "" {
		if err := certs.ValidateRegionName(c.Node); err != nil {
			return fmt.Errorf("transport: config: node: %w", err)
		}
	}
	for name, addr := range c.Peers {
		region, node, isNode := strings.Cut(name, "/")
		if err := certs.ValidateRegionName(region); err != nil {
			return fmt.Errorf("transport: config: peer: %w", err)
		}
		if isNode {
			if err := certs.ValidateRegionName(node); err != nil {
				return fmt.Errorf("transport: config: peer %s: node: %w", name, err)
			}
		}
		if name == c.PeerName() || region == c.Region && !isNode {
			return fmt.Errorf("transport: config: %s lists itself as a peer", name)
		}
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return fmt.Errorf("transport: config: peer %s address %q: %w", name, addr, err)
		}
	}
	if c.Certs == nil {
		return errors.New("transport: config: no certificates")
	}
	if c.Certs.Region != c.Region {
		return fmt.Errorf("transport: config: certificate names region %s, not %s", c.Certs.Region, c.Region)
	}
	type check struct {
		ok   bool
		what string
	}
	for _, ck := range []check{
		{c.MaxFrameSize > 0 && c.MaxFrameSize <= math.MaxUint32 && c.MaxFrameSize <= 1<<30, "MaxFrameSize must be in 1..1 GiB"},
		{c.MaxQueuedMessages > 0, "MaxQueuedMessages must be positive"},
		{c.MaxQueuedBytes >= int64(c.MaxFrameSize), "MaxQueuedBytes must be at least MaxFrameSize"},
		{c.CallTimeout > 0, "CallTimeout must be positive"},
		{c.WriteTimeout > 0, "WriteTimeout must be positive"},
		{c.HandshakeTimeout > 0, "HandshakeTimeout must be positive"},
		{c.KeepAlivePeriod > 0, "KeepAlivePeriod must be positive"},
		{c.MaxIdleTimeout > c.KeepAlivePeriod, "MaxIdleTimeout must exceed KeepAlivePeriod"},
		{c.MaxConnectionWindow >= c.MaxStreamWindow, "MaxConnectionWindow must be at least MaxStreamWindow"},
		{c.ReconnectMin > 0 && c.ReconnectMax >= c.ReconnectMin, "need 0 < ReconnectMin ≤ ReconnectMax"},
		{c.MaxIncomingStreams > 0, "MaxIncomingStreams must be positive"},
		{c.InitialStreamWindow > 0 && c.MaxStreamWindow >= c.InitialStreamWindow, "need 0 < InitialStreamWindow ≤ MaxStreamWindow"},
		{c.InitialConnectionWindow > 0 && c.MaxConnectionWindow >= c.InitialConnectionWindow, "need 0 < InitialConnectionWindow ≤ MaxConnectionWindow"},
	} {
		if !ck.ok {
			return errors.New("transport: config: " + ck.what)
		}
	}
	return nil
}
