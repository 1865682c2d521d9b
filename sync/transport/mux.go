package transport

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
)

// Mux carries the traffic of the partitions one node of a partitioned
// region serves over one transport between nodes (SPEC §10): one
// connection per pair of nodes, whatever the number of partitions. Each
// partition's replication sees a Transport of its own (Partition) whose
// peers are regions, as in an unpartitioned cluster: a message or call for
// region R goes to the node of R that owns the partition, prefixed with
// the partition's number, and the receiving Mux hands it to the handler of
// that partition. Messages of one partition keep their order, since those
// of one pair of nodes do.
//
// The base transport's peers are nodes, "REGION/NODE" (Config.Peers); its
// handler is the Mux (SetBase).
type Mux struct {
	region string
	// owner returns the peer name of the node of region that owns
	// partition p, "" for none.
	owner func(region string, p int) string

	mu       sync.RWMutex
	base     Transport
	handlers map[int]Handler
}

var (
	_ Handler      = (*Mux)(nil)
	_ PeerObserver = (*Mux)(nil)
)

// NewMux returns a Mux of a node of region; owner names the peer (node)
// of any region that owns a partition.
func NewMux(region string, owner func(region string, p int) string) *Mux {
	return &Mux{region: region, owner: owner, handlers: map[int]Handler{}}
}

// SetBase sets the transport between nodes the Mux sends on. Until it is
// set, every partition is not connected.
func (m *Mux) SetBase(t Transport) {
	m.mu.Lock()
	m.base = t
	m.mu.Unlock()
}

// Partition returns the transport of partition p, whose incoming traffic
// goes to h (nil: the partition is not served here; its transport still
// sends and calls, to reach the partition's owners elsewhere).
func (m *Mux) Partition(p int, h Handler) Transport {
	if h != nil {
		m.mu.Lock()
		m.handlers[p] = h
		m.mu.Unlock()
	}
	return &muxPart{m: m, p: p}
}

// ErrNoPartition is the error of a message or call for a partition the
// receiving node does not serve.
var ErrNoPartition = errors.New("transport: partition not served here")

func (m *Mux) get() Transport {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.base
}

func (m *Mux) handler(p int) Handler {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.handlers[p]
}

// split takes the partition prefix off payload.
func split(payload []byte) (int, []byte, error) {
	p, n := binary.Uvarint(payload)
	if n <= 0 || p > 1<<16 {
		return 0, nil, errors.New("transport: message without a partition")
	}
	return int(p), payload[n:], nil
}

// OnMessage implements Handler: it hands the message to its partition's
// handler as coming from the sending node's region, if that node owns the
// partition in its region. Partition p replicates only with partition p
// of the other regions: a message for p from another node of the region
// (one whose configuration disagrees, while a partition moves) is
// dropped, not taken for the owner's.
func (m *Mux) OnMessage(from string, payload []byte) {
	p, msg, err := split(payload)
	if err != nil {
		return
	}
	if m.owner(PeerRegion(from), p) != from {
		return
	}
	if h := m.handler(p); h != nil {
		h.OnMessage(PeerRegion(from), msg)
	}
}

// OnCall implements Handler.
func (m *Mux) OnCall(ctx context.Context, from string, payload []byte) ([]byte, error) {
	p, req, err := split(payload)
	if err != nil {
		return nil, err
	}
	h := m.handler(p)
	if h == nil {
		return nil, fmt.Errorf("%w: partition %d", ErrNoPartition, p)
	}
	return h.OnCall(ctx, PeerRegion(from), req)
}

// OnRefused implements RefusalObserver for every partition: a refusal
// is of this region's certificate, by the peer region's config, whichever
// of its nodes gave it.
func (m *Mux) OnRefused(peer string) {
	region := PeerRegion(peer)
	if region == m.region {
		return
	}
	m.mu.RLock()
	hs := slices.Collect(maps.Values(m.handlers))
	m.mu.RUnlock()
	for _, h := range hs {
		if o, ok := h.(RefusalObserver); ok {
			o.OnRefused(region)
		}
	}
}

// OnPeer implements PeerObserver: a node's connectivity is that of the
// partitions it owns, to the partitions of other regions served here.
func (m *Mux) OnPeer(peer string, connected bool) {
	region := PeerRegion(peer)
	if region == m.region {
		return
	}
	m.mu.RLock()
	var hs []Handler
	for p, h := range m.handlers {
		if m.owner(region, p) == peer {
			hs = append(hs, h)
		}
	}
	m.mu.RUnlock()
	for _, h := range hs {
		if o, ok := h.(PeerObserver); ok {
			o.OnPeer(region, connected)
		}
	}
}

// muxPart is the Transport of one partition.
type muxPart struct {
	m *Mux
	p int
}

func (t *muxPart) route(region string) (Transport, string, error) {
	base := t.m.get()
	if base == nil {
		return nil, "", ErrNotConnected
	}
	peer := t.m.owner(region, t.p)
	if peer == "" {
		return nil, "", ErrUnknownPeer
	}
	return base, peer, nil
}

func (t *muxPart) frame(payload []byte) []byte {
	b := binary.AppendUvarint(make([]byte, 0, binary.MaxVarintLen16+len(payload)), uint64(t.p))
	return append(b, payload...)
}

// Send implements Transport.
func (t *muxPart) Send(region string, payload []byte) error {
	base, peer, err := t.route(region)
	if err != nil {
		return peerErr("send", region, err)
	}
	return base.Send(peer, t.frame(payload))
}

// Call implements Transport.
func (t *muxPart) Call(ctx context.Context, region string, payload []byte) ([]byte, error) {
	base, peer, err := t.route(region)
	if err != nil {
		return nil, peerErr("call", region, err)
	}
	return base.Call(ctx, peer, t.frame(payload))
}

// Connected implements Transport.
func (t *muxPart) Connected(region string) bool {
	base, peer, err := t.route(region)
	return err == nil && base.Connected(peer)
}

// Close implements Transport; the base transport is closed by its owner.
func (t *muxPart) Close() error { return nil }
