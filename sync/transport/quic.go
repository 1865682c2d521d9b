package transport

import (
	"context"
	"crypto/hkdf"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/latticedb/lattice/sync/certs"
)

// Application error codes, on streams and connections.
const (
	codeNone          = 0x0
	codeFrameTooLarge = 0x10
	codeProtocol      = 0x11
	codeCanceled      = 0x12
	codeUnknownPeer   = 0x13
	codeSuperseded    = 0x14
	codeWriteFailed   = 0x15
	codeShutdown      = 0x16
	codeUnnamed       = 0x17
)

// callGrace is added to the timeout a caller sends, so that the callee's
// context outlives the caller's: the caller decides when a call has timed
// out.
const callGrace = 100 * time.Millisecond

// QUICTransport is the Transport between regions over QUIC.
//
// Each region dials every peer and keeps one connection to it, redialled
// with exponential backoff and jitter whenever it breaks; it sends its
// messages and calls on that connection only, and receives the peer's on
// the connection the peer dialled. Two regions therefore hold two
// connections, one per direction, and dialling each other at the same
// moment needs no tie-break. A peer is Connected once our connection to it
// is up and the peer has accepted our message stream, which it does only
// after checking our certificate.
//
// Every connection is mutual TLS 1.3 with the cluster CA (sync/certs), ALPN
// lattice-repl/2 (compressed message streams, compress.go) or, with a
// region that does not offer it, lattice-repl/1; no session resumption and
// no 0-RTT. A connection whose
// certificate names a region other than the one dialled, or a region that
// is not a configured peer, is refused during the handshake, and logged.
//
// The stateless reset key is derived from the region's private key, so a
// region that restarts on the same address resets the connections its peers
// still hold to its previous run, and they redial at once instead of waiting
// for the idle timeout.
type QUICTransport struct {
	cfg Config
	h   Handler
	obs PeerObserver
	// refusals hears of peers that refused this region (refusedByPeer).
	refusals RefusalObserver
	log      *slog.Logger
	pc       net.PacketConn
	tr       *quic.Transport
	ln       *quic.Listener
	dialCfg  *quic.Config
	peers    map[string]*quicPeer // fixed at construction
	regions  map[string]bool      // the regions of the peers

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu       sync.Mutex
	incoming map[string]*quic.Conn // the connection each peer dialled to us
	names    map[*quic.Conn]string // the peer each incoming connection is from
	// streaming holds the incoming connections whose message stream is
	// being served: a connection carries one at a time.
	streaming map[*quic.Conn]bool
	closed    bool
}

var (
	_ Transport      = (*QUICTransport)(nil)
	_ StatusReporter = (*QUICTransport)(nil)
)

type quicPeer struct {
	name string
	addr string

	queue       chan []byte
	queuedBytes atomic.Int64

	// deliver serialises OnMessage calls for the peer, should two of its
	// connections overlap while it reconnects.
	deliver sync.Mutex

	mu        sync.Mutex
	conn      *quic.Conn // nil while not connected
	since     time.Time
	connects  uint64
	lastError string

	sentMsgs, sentBytes atomic.Uint64
	recvMsgs, recvBytes atomic.Uint64
	// sentStream and recvStream count the message streams' bytes:
	// frames, compressed under lattice-repl/2.
	sentStream, recvStream atomic.Uint64
	protocol               string // the ALPN of the current connection
	dropped                atomic.Uint64
}

func (p *quicPeer) current() *quic.Conn {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.conn
}

// attempt follows one incoming connection attempt, to log it if it is
// refused.
type attempt struct {
	remote   net.Addr
	accepted atomic.Bool
}

type attemptKey struct{}

// NewQUIC starts a transport on pc: it listens for peers' connections and
// dials every peer. The transport owns pc from then on and closes it in
// Close. Incoming messages and calls go to h, which also gets peer events
// if it implements PeerObserver.
func NewQUIC(pc net.PacketConn, cfg Config, h Handler) (*QUICTransport, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if h == nil {
		return nil, errors.New("transport: nil handler")
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	resetKey, err := statelessResetKey(cfg.Certs)
	if err != nil {
		return nil, err
	}

	ctx, cancel := context.WithCancel(context.Background())
	t := &QUICTransport{
		cfg:       cfg,
		h:         h,
		log:       log,
		pc:        pc,
		peers:     make(map[string]*quicPeer, len(cfg.Peers)),
		ctx:       ctx,
		cancel:    cancel,
		incoming:  make(map[string]*quic.Conn),
		names:     make(map[*quic.Conn]string),
		streaming: make(map[*quic.Conn]bool),
		regions:   make(map[string]bool),
	}
	t.obs, _ = h.(PeerObserver)
	t.refusals, _ = h.(RefusalObserver)
	for name, addr := range cfg.Peers {
		t.peers[name] = &quicPeer{name: name, addr: addr, queue: make(chan []byte, cfg.MaxQueuedMessages)}
		t.regions[PeerRegion(name)] = true
	}

	base := quic.Config{
		HandshakeIdleTimeout:           cfg.HandshakeTimeout,
		MaxIdleTimeout:                 cfg.MaxIdleTimeout,
		KeepAlivePeriod:                cfg.KeepAlivePeriod,
		InitialStreamReceiveWindow:     cfg.InitialStreamWindow,
		MaxStreamReceiveWindow:         cfg.MaxStreamWindow,
		InitialConnectionReceiveWindow: cfg.InitialConnectionWindow,
		MaxConnectionReceiveWindow:     cfg.MaxConnectionWindow,
		MaxIncomingUniStreams:          -1,
		Allow0RTT:                      false,
	}
	listenCfg := base
	listenCfg.MaxIncomingStreams = cfg.MaxIncomingStreams
	dialCfg := base
	dialCfg.MaxIncomingStreams = -1 // peers never open streams on our connection
	t.dialCfg = &dialCfg

	t.tr = &quic.Transport{
		Conn:              pc,
		StatelessResetKey: resetKey,
		ConnContext:       t.connContext,
	}
	ln, err := t.tr.Listen(t.serverTLS(), &listenCfg)
	if err != nil {
		cancel()
		t.tr.Close()
		return nil, fmt.Errorf("transport: listen: %w", err)
	}
	t.ln = ln
	t.log.Info("transport: listening", "addr", pc.LocalAddr().String(), "peers", len(t.peers))
	// quic-go has raised the socket's buffers as far as the system lets
	// it by now.
	checkSocketBuffers(pc, t.log)

	t.wg.Add(1)
	go t.acceptLoop()
	for _, p := range t.peers {
		t.wg.Add(1)
		go t.dialLoop(p)
	}
	return t, nil
}

// statelessResetKey derives the QUIC stateless reset key from the region's
// private key: secret, and the same across restarts.
func statelessResetKey(b *certs.Bundle) (*quic.StatelessResetKey, error) {
	der, err := x509.MarshalPKCS8PrivateKey(b.Cert.PrivateKey)
	if err != nil {
		return nil, fmt.Errorf("transport: private key: %w", err)
	}
	k, err := hkdf.Key(sha256.New, der, nil, "lattice quic stateless reset", 32)
	if err != nil {
		return nil, fmt.Errorf("transport: %w", err)
	}
	var key quic.StatelessResetKey
	copy(key[:], k)
	return &key, nil
}

// serverTLS is the bundle's server configuration, also refusing a client
// whose certificate names a region that is not a peer.
func (t *QUICTransport) serverTLS() *tls.Config {
	c := t.cfg.Certs.ServerTLS()
	if t.cfg.protocols != nil {
		c.NextProtos = t.cfg.protocols
	}
	base := c.VerifyConnection
	c.VerifyConnection = func(cs tls.ConnectionState) error {
		if err := base(cs); err != nil {
			return err
		}
		region, err := certs.PeerRegion(cs)
		if err != nil {
			return err
		}
		if !t.regions[region] {
			return fmt.Errorf("transport: region %s is not a peer of %s", region, t.cfg.Region)
		}
		return nil
	}
	return c
}

// connContext tags each incoming connection attempt so that a refusal
// (a failed handshake) is logged with its cause.
func (t *QUICTransport) connContext(ctx context.Context, info *quic.ClientInfo) (context.Context, error) {
	a := &attempt{remote: info.RemoteAddr}
	ctx = context.WithValue(ctx, attemptKey{}, a)
	context.AfterFunc(ctx, func() {
		if !a.accepted.Load() && t.ctx.Err() == nil {
			t.log.Warn("transport: refused incoming connection", "remote", a.remote.String(), "err", context.Cause(ctx))
		}
	})
	return ctx, nil
}

// Send implements Transport.
func (t *QUICTransport) Send(peer string, payload []byte) error {
	p, ok := t.peers[peer]
	if !ok {
		return peerErr("send", peer, ErrUnknownPeer)
	}
	if t.ctx.Err() != nil {
		return peerErr("send", peer, ErrClosed)
	}
	if len(payload) > t.cfg.MaxFrameSize {
		return peerErr("send", peer, fmt.Errorf("%w: %d bytes, max %d", ErrFrameTooLarge, len(payload), t.cfg.MaxFrameSize))
	}
	if p.current() == nil {
		return peerErr("send", peer, ErrNotConnected)
	}
	n := int64(len(payload))
	if p.queuedBytes.Add(n) > t.cfg.MaxQueuedBytes {
		p.queuedBytes.Add(-n)
		p.dropped.Add(1)
		return peerErr("send", peer, ErrQueueFull)
	}
	select {
	case p.queue <- slices.Clone(payload):
		return nil
	default:
		p.queuedBytes.Add(-n)
		p.dropped.Add(1)
		return peerErr("send", peer, ErrQueueFull)
	}
}

// Call implements Transport.
func (t *QUICTransport) Call(ctx context.Context, peer string, payload []byte) ([]byte, error) {
	p, ok := t.peers[peer]
	if !ok {
		return nil, peerErr("call", peer, ErrUnknownPeer)
	}
	if t.ctx.Err() != nil {
		return nil, peerErr("call", peer, ErrClosed)
	}
	if len(payload) > t.cfg.MaxFrameSize {
		return nil, peerErr("call", peer, fmt.Errorf("%w: %d bytes, max %d", ErrFrameTooLarge, len(payload), t.cfg.MaxFrameSize))
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, t.cfg.CallTimeout)
		defer cancel()
	}
	conn := p.current()
	if conn == nil {
		return nil, peerErr("call", peer, ErrNotConnected)
	}
	resp, err := t.call(ctx, conn, payload)
	if err != nil {
		return nil, peerErr("call", peer, err)
	}
	return resp, nil
}

func (t *QUICTransport) call(ctx context.Context, conn *quic.Conn, payload []byte) ([]byte, error) {
	s, err := conn.OpenStreamSync(ctx)
	if err != nil {
		return nil, ctxErr(ctx, err)
	}
	// Ending ctx aborts both directions of the stream, which unblocks any
	// read or write below and tells the callee to give up.
	stop := context.AfterFunc(ctx, func() {
		s.CancelRead(codeCanceled)
		s.CancelWrite(codeCanceled)
	})
	defer stop()

	deadline, _ := ctx.Deadline()
	ms := (time.Until(deadline) + time.Millisecond - 1).Milliseconds() // rounded up
	ms = max(1, min(ms, int64(^uint32(0))))
	var hdr [5]byte
	hdr[0] = kindCall
	binary.BigEndian.PutUint32(hdr[1:], uint32(ms))
	if _, err := s.Write(hdr[:]); err != nil {
		return nil, ctxErr(ctx, err)
	}
	if err := writeFrame(s, payload, t.cfg.MaxFrameSize); err != nil {
		return nil, ctxErr(ctx, err)
	}
	// The callee may answer, and stop reading (finishRead), before the
	// end of the request reaches it: Close then fails for a stream whose
	// sending the callee stopped, though the whole request was written
	// and the answer is on its way. The read below tells how the call
	// went (a stream really reset, or ctx ended, fails it).
	_ = s.Close()
	var status [1]byte
	if _, err := io.ReadFull(s, status[:]); err != nil {
		return nil, ctxErr(ctx, err)
	}
	body, err := readFrame(s, t.cfg.MaxFrameSize)
	if err != nil {
		if errors.Is(err, ErrFrameTooLarge) {
			s.CancelRead(codeFrameTooLarge)
		}
		return nil, ctxErr(ctx, err)
	}
	finishRead(s)
	switch status[0] {
	case statusOK:
		return body, nil
	case statusError:
		// A callee that gave up because our deadline passed answers
		// with its context's error; report ours.
		return nil, ctxErr(ctx, &RemoteError{Peer: connRegion(conn), Msg: string(body)})
	default:
		return nil, fmt.Errorf("transport: bad call status %d", status[0])
	}
}

func connRegion(conn *quic.Conn) string {
	r, _ := certs.PeerRegion(conn.ConnectionState().TLS)
	return r
}

// Connected implements Transport.
func (t *QUICTransport) Connected(peer string) bool {
	p, ok := t.peers[peer]
	return ok && p.current() != nil
}

// Peers implements StatusReporter.
func (t *QUICTransport) Peers() []PeerStatus {
	out := make([]PeerStatus, 0, len(t.peers))
	for _, p := range t.peers {
		p.mu.Lock()
		st := PeerStatus{
			Peer:             p.name,
			Addr:             p.addr,
			Connected:        p.conn != nil,
			Since:            p.since,
			Connects:         p.connects,
			LastError:        p.lastError,
			SentMessages:     p.sentMsgs.Load(),
			SentBytes:        p.sentBytes.Load(),
			ReceivedMessages: p.recvMsgs.Load(),
			ReceivedBytes:    p.recvBytes.Load(),
			SentStreamBytes:  p.sentStream.Load(),
			RecvStreamBytes:  p.recvStream.Load(),
			DroppedMessages:  p.dropped.Load(),
			Queued:           len(p.queue),
		}
		if p.conn != nil {
			st.RTT = p.conn.ConnectionStats().SmoothedRTT
			st.Protocol = p.protocol
		}
		p.mu.Unlock()
		out = append(out, st)
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

// Addr returns the local address the transport listens on.
func (t *QUICTransport) Addr() net.Addr { return t.pc.LocalAddr() }

// Close implements Transport. It closes every connection with a
// CONNECTION_CLOSE, so peers notice at once, waits for the handler calls
// in progress to return (their contexts are cancelled), then closes the
// socket.
func (t *QUICTransport) Close() error {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil
	}
	t.closed = true
	in := make([]*quic.Conn, 0, len(t.incoming))
	for _, c := range t.incoming {
		in = append(in, c)
	}
	t.mu.Unlock()

	t.cancel()
	for _, p := range t.peers {
		if c := p.current(); c != nil {
			c.CloseWithError(codeShutdown, "shutdown")
		}
	}
	for _, c := range in {
		c.CloseWithError(codeShutdown, "shutdown")
	}
	t.ln.Close()
	t.wg.Wait()
	err := t.tr.Close()
	if cerr := t.pc.Close(); err == nil && !errors.Is(cerr, net.ErrClosed) {
		err = cerr
	}
	t.log.Info("transport: closed")
	return err
}

// dialLoop keeps a connection to p until the transport closes.
func (t *QUICTransport) dialLoop(p *quicPeer) {
	defer t.wg.Done()
	backoff := t.cfg.ReconnectMin
	var lastErr string
	for t.ctx.Err() == nil {
		conn, s, err := t.dial(p)
		if err != nil {
			if t.ctx.Err() != nil {
				return
			}
			msg := err.Error()
			p.mu.Lock()
			p.lastError = msg
			p.mu.Unlock()
			var de *dialError
			if t.refusals != nil && errors.As(err, &de) && de.verified && refusedByPeer(err) {
				t.refusals.OnRefused(p.name)
			}
			if msg != lastErr {
				t.log.Warn("transport: dial failed", "peer", p.name, "addr", p.addr, "err", err)
				lastErr = msg
			} else {
				t.log.Debug("transport: dial failed", "peer", p.name, "addr", p.addr, "err", err)
			}
			wait := backoff/2 + rand.N(backoff/2+1)
			backoff = min(2*backoff, t.cfg.ReconnectMax)
			select {
			case <-time.After(wait):
			case <-t.ctx.Done():
				return
			}
			continue
		}
		backoff = t.cfg.ReconnectMin
		lastErr = ""
		t.serveOutbound(p, conn, s)
	}
}

// refusedByPeer reports whether err, from dial, is the peer turning this
// region down: a TLS alert it sent (it refused the certificate), or its
// close of the connection as from an unknown region.
func refusedByPeer(err error) bool {
	var te *quic.TransportError
	if errors.As(err, &te) && te.Remote && te.ErrorCode.IsCryptoError() {
		return true
	}
	var ae *quic.ApplicationError
	return errors.As(err, &ae) && ae.Remote && ae.ErrorCode == codeUnknownPeer
}

// dialError is an error of dial, which says whether the other side had
// shown p's certificate by then: only then is a refusal p's (whatever
// answers at p's address, another service on a reused address included,
// may turn the handshake down, and that is p down, not p refusing us).
type dialError struct {
	err      error
	verified bool
}

func (e *dialError) Error() string { return e.err.Error() }
func (e *dialError) Unwrap() error { return e.err }

// dial connects to p and opens the message stream, returning once p has
// accepted it.
func (t *QUICTransport) dial(p *quicPeer) (*quic.Conn, *quic.Stream, error) {
	ctx, cancel := context.WithTimeout(t.ctx, 2*t.cfg.HandshakeTimeout)
	defer cancel()
	addr, err := net.ResolveUDPAddr("udp", p.addr)
	if err != nil {
		return nil, nil, err
	}
	region := PeerRegion(p.name)
	tc := t.cfg.Certs.ClientTLS(region)
	if t.cfg.protocols != nil {
		tc.NextProtos = t.cfg.protocols
	}
	var verified atomic.Bool
	check := tc.VerifyConnection
	tc.VerifyConnection = func(cs tls.ConnectionState) error {
		if check != nil {
			if err := check(cs); err != nil {
				return err
			}
		}
		verified.Store(true)
		return nil
	}
	conn, err := t.tr.Dial(ctx, addr, tc, t.dialCfg)
	if err != nil {
		return nil, nil, &dialError{err: err, verified: verified.Load()}
	}
	// From here on the other side has shown p's certificate (under TLS
	// 1.3 its refusal of ours comes after our side of the handshake).
	fail := func(err error) (*quic.Conn, *quic.Stream, error) {
		conn.CloseWithError(codeProtocol, "message stream refused")
		return nil, nil, &dialError{err: err, verified: true}
	}
	// ClientTLS has checked the certificate names p; check once more
	// here, where a mismatch would misroute traffic.
	if got := connRegion(conn); got != region {
		return fail(fmt.Errorf("transport: %s answered as region %q", p.addr, got))
	}
	s, err := conn.OpenStreamSync(ctx)
	if err != nil {
		return fail(err)
	}
	// The stream opens with its kind and this process's peer name (its
	// region's certificate does not name the node).
	self := t.cfg.PeerName()
	if _, err := s.Write(append([]byte{kindMessages, byte(len(self))}, self...)); err != nil {
		return fail(err)
	}
	// The peer checks our certificate only after our side of the TLS
	// handshake is done; its acknowledgement tells us it took us.
	s.SetReadDeadline(time.Now().Add(t.cfg.HandshakeTimeout))
	// Bounded by ctx too: Close does not wait out the deadline.
	stopRead := context.AfterFunc(ctx, func() { s.CancelRead(codeShutdown) })
	defer stopRead()
	var ack [1]byte
	if _, err := io.ReadFull(s, ack[:]); err != nil {
		return fail(fmt.Errorf("transport: no acknowledgement of the message stream: %w", err))
	}
	if ack[0] != ackMessages {
		return fail(fmt.Errorf("transport: bad acknowledgement %q", ack[0]))
	}
	s.SetReadDeadline(time.Time{})
	return conn, s, nil
}

// serveOutbound writes p's queued messages to s until conn breaks.
func (t *QUICTransport) serveOutbound(p *quicPeer, conn *quic.Conn, s *quic.Stream) {
	var enc *StreamEncoder
	if compressedConn(conn) {
		enc = NewStreamEncoder(t.cfg.MaxFrameSize)
	}
	p.mu.Lock()
	p.conn = conn
	p.protocol = conn.ConnectionState().TLS.NegotiatedProtocol
	p.since = time.Now()
	p.connects++
	p.mu.Unlock()
	t.log.Info("transport: connected", "peer", p.name, "addr", conn.RemoteAddr().String())
	if t.obs != nil {
		t.obs.OnPeer(p.name, true)
	}

	ctx := conn.Context()
	var why error
loop:
	for {
		select {
		case <-ctx.Done():
			why = context.Cause(ctx)
			break loop
		case <-t.ctx.Done():
			// Close may have missed a connection made as it ran.
			conn.CloseWithError(codeShutdown, "shutdown")
			why = ErrClosed
			break loop
		case msg := <-p.queue:
			p.queuedBytes.Add(-int64(len(msg)))
			s.SetWriteDeadline(time.Now().Add(t.cfg.WriteTimeout))
			n, err := t.writeMessage(s, enc, msg)
			if err != nil {
				p.dropped.Add(1)
				why = err
				conn.CloseWithError(codeWriteFailed, "message write failed")
				break loop
			}
			p.sentMsgs.Add(1)
			p.sentBytes.Add(uint64(len(msg)))
			p.sentStream.Add(uint64(n))
		}
	}

	p.mu.Lock()
	p.conn = nil
	p.since = time.Now()
	if why != nil {
		p.lastError = why.Error()
	}
	p.mu.Unlock()
	// What was queued for the broken connection is lost.
	for {
		select {
		case msg := <-p.queue:
			p.queuedBytes.Add(-int64(len(msg)))
			p.dropped.Add(1)
			continue
		default:
		}
		break
	}
	if t.ctx.Err() == nil {
		t.log.Warn("transport: disconnected", "peer", p.name, "err", why)
	}
	if t.obs != nil {
		t.obs.OnPeer(p.name, false)
	}
}

// compressedConn reports whether conn's message stream is compressed:
// whether both ends agreed on lattice-repl/2.
func compressedConn(conn *quic.Conn) bool {
	return conn.ConnectionState().TLS.NegotiatedProtocol == certs.ALPNCompressed
}

// writeMessage writes msg to a message stream, compressed by enc (nil
// under lattice-repl/1), and returns the bytes it wrote.
func (t *QUICTransport) writeMessage(s *quic.Stream, enc *StreamEncoder, msg []byte) (int, error) {
	if enc == nil {
		return frameHeaderLen + len(msg), writeFrame(s, msg, t.cfg.MaxFrameSize)
	}
	f, err := enc.Frame(msg)
	if err != nil {
		return 0, err
	}
	return s.Write(f)
}

// closedConn reports whether err is the connection's closing (by either
// side), seen by a read before the connection's context is done.
func closedConn(err error) bool {
	var ae *quic.ApplicationError
	return errors.As(err, &ae)
}

// countingReader counts the bytes read through it.
type countingReader struct {
	r io.Reader
	n *atomic.Uint64
}

func (c countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(uint64(n))
	return n, err
}

// acceptLoop takes the connections peers dial to us.
func (t *QUICTransport) acceptLoop() {
	defer t.wg.Done()
	for {
		conn, err := t.ln.Accept(t.ctx)
		if err != nil {
			if t.ctx.Err() == nil {
				t.log.Error("transport: accept", "err", err)
			}
			return
		}
		if a, ok := conn.Context().Value(attemptKey{}).(*attempt); ok {
			a.accepted.Store(true)
		}
		t.wg.Add(1)
		go t.serveInbound(conn)
	}
}

// serveInbound serves the streams a peer opens on the connection it
// dialled to us.
func (t *QUICTransport) serveInbound(conn *quic.Conn) {
	defer t.wg.Done()
	region, err := certs.PeerRegion(conn.ConnectionState().TLS)
	if err == nil && !t.regions[region] {
		err = fmt.Errorf("transport: region %s is not a peer", region)
	}
	if err != nil {
		// The TLS configuration refuses such a peer already; this is a
		// second line.
		t.log.Warn("transport: refused incoming connection", "remote", conn.RemoteAddr().String(), "err", err)
		conn.CloseWithError(codeUnknownPeer, "unknown region")
		return
	}

	t.mu.Lock()
	closed := t.closed
	t.mu.Unlock()
	if closed {
		conn.CloseWithError(codeShutdown, "shutdown")
		return
	}
	t.log.Debug("transport: accepted", "region", region, "remote", conn.RemoteAddr().String())
	// A connection whose message stream has not named its peer within
	// twice the handshake timeout is closed: a region names itself at once
	// (its dial waits no longer than the handshake timeout for the
	// answer; twice leaves room for a loaded machine), and only a named
	// connection is replaced by the peer's next one, so unnamed ones would
	// pile up.
	unnamed := time.AfterFunc(2*t.cfg.HandshakeTimeout, func() {
		if _, ok := t.nameOf(conn); !ok {
			conn.CloseWithError(codeUnnamed, "no message stream named a peer in time")
		}
	})
	defer unnamed.Stop()
	// Close closes the connections it knows by name; this one it may
	// not know yet.
	stopClose := context.AfterFunc(t.ctx, func() { conn.CloseWithError(codeShutdown, "shutdown") })
	defer stopClose()

	var streams sync.WaitGroup
	for {
		s, err := conn.AcceptStream(conn.Context())
		if err != nil {
			break
		}
		streams.Add(1)
		go func() {
			defer streams.Done()
			t.serveStream(conn, region, s)
		}()
	}
	streams.Wait()

	t.mu.Lock()
	if name, ok := t.names[conn]; ok && t.incoming[name] == conn {
		delete(t.incoming, name)
	}
	delete(t.names, conn)
	delete(t.streaming, conn)
	t.mu.Unlock()
}

// hello reads the peer name a message stream opens with, checks that it
// is a peer of region (the region the connection's certificate names),
// and makes conn that peer's incoming connection.
func (t *QUICTransport) hello(conn *quic.Conn, region string, s *quic.Stream) (string, error) {
	var n [1]byte
	if _, err := io.ReadFull(s, n[:]); err != nil {
		return "", err
	}
	b := make([]byte, n[0])
	if _, err := io.ReadFull(s, b); err != nil {
		return "", err
	}
	name := string(b)
	if _, ok := t.peers[name]; !ok || PeerRegion(name) != region {
		return "", fmt.Errorf("transport: %q is not a peer of region %s", name, region)
	}
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return "", ErrClosed
	}
	if t.streaming[conn] {
		// A connection carries one message stream at a time (the
		// dialler opens it with the connection): a second would hold a
		// decompressor of its own for a few bytes of the peer's.
		t.mu.Unlock()
		return "", errors.New("transport: the connection has a message stream already")
	}
	t.streaming[conn] = true
	old := t.incoming[name]
	t.incoming[name] = conn
	t.names[conn] = name
	t.mu.Unlock()
	if old != nil && old != conn {
		// The peer dialled again: it has given up on the old connection.
		go old.CloseWithError(codeSuperseded, "superseded by a new connection")
	}
	return name, nil
}

// nameOf returns the peer an incoming connection is from, once its
// message stream has named it.
func (t *QUICTransport) nameOf(conn *quic.Conn) (string, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	name, ok := t.names[conn]
	return name, ok
}

// serveStream serves one stream opened by peer region.
func (t *QUICTransport) serveStream(conn *quic.Conn, region string, s *quic.Stream) {
	s.SetReadDeadline(time.Now().Add(t.cfg.HandshakeTimeout))
	var kind [1]byte
	if _, err := io.ReadFull(s, kind[:]); err != nil {
		t.abort(s, codeProtocol, region, "stream without a kind", err)
		return
	}
	switch kind[0] {
	case kindMessages:
		name, err := t.hello(conn, region, s)
		if err != nil {
			t.abort(s, codeProtocol, region, "message stream refused", err)
			return
		}
		s.SetReadDeadline(time.Time{})
		t.serveMessages(conn, name, s)
	case kindCall:
		// A peer calls only once its message stream is acknowledged.
		name, ok := t.nameOf(conn)
		if !ok {
			t.abort(s, codeProtocol, region, "call before the message stream", errors.New("transport: unnamed peer"))
			return
		}
		t.serveCall(conn, name, s)
	default:
		t.abort(s, codeProtocol, region, "unknown stream kind", fmt.Errorf("transport: kind byte %#x", kind[0]))
	}
}

// abort closes both directions of s with code and logs why.
func (t *QUICTransport) abort(s *quic.Stream, code quic.StreamErrorCode, region, what string, err error) {
	s.CancelRead(code)
	s.CancelWrite(code)
	t.log.Warn("transport: "+what, "peer", region, "stream", int64(s.StreamID()), "err", err)
}

// endMessages lets conn open a message stream again. It runs before the
// old stream is reset, so a peer that sees the reset and opens a new
// stream finds the connection free.
func (t *QUICTransport) endMessages(conn *quic.Conn) {
	t.mu.Lock()
	delete(t.streaming, conn)
	t.mu.Unlock()
}

func (t *QUICTransport) serveMessages(conn *quic.Conn, region string, s *quic.Stream) {
	if _, err := s.Write([]byte{ackMessages}); err != nil {
		t.endMessages(conn)
		t.abort(s, codeProtocol, region, "message stream", err)
		return
	}
	p := t.peers[region]
	next := func() ([]byte, error) {
		msg, err := readFrame(s, t.cfg.MaxFrameSize)
		if err == nil {
			p.recvStream.Add(uint64(frameHeaderLen + len(msg)))
		}
		return msg, err
	}
	if compressedConn(conn) {
		next = NewStreamDecoder(countingReader{s, &p.recvStream}, t.cfg.MaxFrameSize).Next
	}
	for {
		msg, err := next()
		if err != nil {
			t.endMessages(conn)
			switch {
			case errors.Is(err, ErrFrameTooLarge):
				t.abort(s, codeFrameTooLarge, region, "message refused", err)
			case errors.Is(err, io.EOF), conn.Context().Err() != nil, closedConn(err):
				s.CancelWrite(codeNone)
			default:
				t.abort(s, codeProtocol, region, "message stream broken", err)
			}
			return
		}
		p.recvMsgs.Add(1)
		p.recvBytes.Add(uint64(len(msg)))
		p.deliver.Lock()
		t.h.OnMessage(region, msg)
		p.deliver.Unlock()
	}
}

func (t *QUICTransport) serveCall(conn *quic.Conn, region string, s *quic.Stream) {
	var hdr [4]byte
	if _, err := io.ReadFull(s, hdr[:]); err != nil {
		t.abort(s, codeProtocol, region, "call without a timeout", err)
		return
	}
	timeout := time.Duration(binary.BigEndian.Uint32(hdr[:])) * time.Millisecond
	if timeout <= 0 || timeout > t.cfg.CallTimeout {
		timeout = t.cfg.CallTimeout
	}
	// The caller aborting the stream is what ends the call; the timeout it
	// sent, plus a grace for the trip here, is the backstop for a caller
	// cut off by a partition.
	timeout += callGrace
	s.SetReadDeadline(time.Now().Add(timeout))
	req, err := readFrame(s, t.cfg.MaxFrameSize)
	if err != nil {
		code := quic.StreamErrorCode(codeProtocol)
		if errors.Is(err, ErrFrameTooLarge) {
			code = codeFrameTooLarge
		}
		t.abort(s, code, region, "call refused", err)
		return
	}
	s.SetReadDeadline(time.Time{})

	// The call ends with the caller's deadline, when the caller aborts the
	// stream (which cancels s.Context()), or when the connection closes.
	ctx, cancel := context.WithTimeout(conn.Context(), timeout)
	defer cancel()
	stop := context.AfterFunc(s.Context(), cancel)
	defer stop()

	resp, herr := t.h.OnCall(ctx, region, req)
	status := statusOK
	if herr != nil {
		status, resp = statusError, []byte(herr.Error())
	}
	if len(resp) > t.cfg.MaxFrameSize {
		status, resp = statusError, fmt.Appendf(nil, "transport: response of %d bytes exceeds the %d-byte frame limit", len(resp), t.cfg.MaxFrameSize)
	}
	s.SetWriteDeadline(time.Now().Add(t.cfg.WriteTimeout))
	defer finishRead(s)
	if _, err := s.Write([]byte{status}); err == nil {
		err = writeFrame(s, resp, t.cfg.MaxFrameSize)
		if err == nil {
			s.Close()
			return
		}
	}
	s.CancelWrite(codeCanceled)
}

// finishRead ends the receive side of a call's stream once its one frame
// has been read. QUIC counts a stream against the peer's stream limit
// until both sides are done, and a receive side is done only once its end
// (FIN) has been read or reading was cancelled; the end usually comes
// with the frame's last bytes, which reading the frame then takes, but a
// peer may send it later, alone. So the end is taken if it is there and
// reading is cancelled otherwise (a peer still sending, or sending more
// than the frame, is told to stop): else every such call would keep one
// of the connection's streams, and after MaxIncomingStreams of them no
// call could open one.
func finishRead(s *quic.Stream) {
	s.SetReadDeadline(time.Now()) // take only what has come
	var b [1]byte
	if _, err := s.Read(b[:]); err != io.EOF {
		s.CancelRead(codeCanceled)
	}
}
