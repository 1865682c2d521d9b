package transport

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/latticedb/lattice/sync/certs"
	"github.com/latticedb/lattice/sync/wan"
)

// Integration tests: real QUIC over UDP sockets on 127.0.0.1.

var threeRegions = []string{"us-east", "eu-west", "ap-south"}

func genCerts(t *testing.T, regions ...string) string {
	t.Helper()
	dir := t.TempDir()
	if err := certs.Generate(dir, "test", regions); err != nil {
		t.Fatal(err)
	}
	return dir
}

func loadBundle(t *testing.T, dir, region string) *certs.Bundle {
	t.Helper()
	b, err := certs.Load(dir, region)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func udp(t *testing.T) *net.UDPConn {
	t.Helper()
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	return pc
}

// testConfig is DefaultConfig with timeouts short enough for tests: a
// dead peer is noticed in 1.5 s, redials back off from 20 to 300 ms.
func testConfig(t *testing.T, dir, region string, peers map[string]string) (Config, *logBuf) {
	t.Helper()
	log, buf := newLogger(t)
	c := DefaultConfig()
	c.Region = region
	c.Peers = peers
	c.Certs = loadBundle(t, dir, region)
	c.Logger = log
	c.HandshakeTimeout = 2 * time.Second
	c.KeepAlivePeriod = 200 * time.Millisecond
	c.MaxIdleTimeout = 1500 * time.Millisecond
	c.ReconnectMin = 20 * time.Millisecond
	c.ReconnectMax = 300 * time.Millisecond
	return c, buf
}

func start(t *testing.T, pc net.PacketConn, cfg Config, h Handler) *QUICTransport {
	t.Helper()
	tr, err := NewQUIC(pc, cfg, h)
	if err != nil {
		t.Fatalf("NewQUIC(%s): %v", cfg.Region, err)
	}
	t.Cleanup(func() { tr.Close() })
	return tr
}

// mesh starts a transport per region, each peered with all the others.
type mesh struct {
	tr   map[string]*QUICTransport
	rec  map[string]*recorder
	log  map[string]*logBuf
	pc   map[string]net.PacketConn
	addr map[string]string
}

func startMesh(t *testing.T, dir string, regions []string, wrap func(name string, pc net.PacketConn) net.PacketConn) *mesh {
	t.Helper()
	m := &mesh{
		tr:   make(map[string]*QUICTransport),
		rec:  make(map[string]*recorder),
		log:  make(map[string]*logBuf),
		pc:   make(map[string]net.PacketConn),
		addr: make(map[string]string),
	}
	for _, r := range regions {
		pc := udp(t)
		m.addr[r] = pc.LocalAddr().String()
		m.pc[r] = pc
		if wrap != nil {
			m.pc[r] = wrap(r, pc)
		}
	}
	for _, r := range regions {
		peers := make(map[string]string)
		for _, p := range regions {
			if p != r {
				peers[p] = m.addr[p]
			}
		}
		cfg, buf := testConfig(t, dir, r, peers)
		m.log[r] = buf
		m.rec[r] = newRecorder()
		m.tr[r] = start(t, m.pc[r], cfg, m.rec[r])
	}
	return m
}

func (m *mesh) waitConnected(t *testing.T, d time.Duration) {
	t.Helper()
	waitFor(t, d, "every region to connect to every other", func() bool {
		for a, ta := range m.tr {
			for b := range m.tr {
				if a != b && !ta.Connected(b) {
					return false
				}
			}
		}
		return true
	})
}

func TestQUICThreeRegions(t *testing.T) {
	dir := genCerts(t, threeRegions...)
	m := startMesh(t, dir, threeRegions, nil)
	m.waitConnected(t, 15*time.Second)

	const count = 200
	for _, from := range threeRegions {
		for _, to := range threeRegions {
			if from == to {
				continue
			}
			for i := range count {
				if err := m.tr[from].Send(to, fmt.Appendf(nil, "msg-%d", i)); err != nil {
					t.Fatalf("Send %s→%s: %v", from, to, err)
				}
			}
		}
	}
	waitFor(t, 15*time.Second, "every message", func() bool {
		for _, from := range threeRegions {
			for _, to := range threeRegions {
				if from != to && m.rec[to].count(from) < count {
					return false
				}
			}
		}
		return true
	})
	for _, from := range threeRegions {
		for _, to := range threeRegions {
			if from != to {
				checkInOrder(t, from+"→"+to, m.rec[to].messages(from), count)
			}
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, from := range threeRegions {
		for _, to := range threeRegions {
			if from == to {
				continue
			}
			resp, err := m.tr[from].Call(ctx, to, []byte("ping"))
			if want := "echo:" + from + ":ping"; err != nil || string(resp) != want {
				t.Fatalf("Call %s→%s = %q, %v; want %q", from, to, resp, err, want)
			}
		}
	}
	_, err := m.tr["us-east"].Call(ctx, "eu-west", []byte("fail"))
	var re *RemoteError
	if !errors.As(err, &re) || re.Peer != "eu-west" || re.Msg != "refusing us-east" {
		t.Fatalf("failing Call: %v", err)
	}
	// Calls run in parallel on streams of their own.
	errs := make(chan error, 50)
	for i := range 50 {
		go func() {
			resp, err := m.tr["ap-south"].Call(ctx, "us-east", fmt.Appendf(nil, "%d", i))
			if err == nil && string(resp) != fmt.Sprintf("echo:ap-south:%d", i) {
				err = fmt.Errorf("call %d answered %q", i, resp)
			}
			errs <- err
		}()
	}
	for range 50 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}

	st := m.tr["us-east"].Peers()
	if len(st) != 2 || st[0].Peer != "ap-south" || st[1].Peer != "eu-west" {
		t.Fatalf("Peers = %+v", st)
	}
	for _, s := range st {
		if !s.Connected || s.Connects != 1 || s.RTT <= 0 || s.SentMessages != count || s.ReceivedMessages != count {
			t.Errorf("status %+v", s)
		}
	}
	if ev := m.rec["us-east"].peerEvents("eu-west"); !slices.Equal(ev, []bool{true}) {
		t.Errorf("peer events %v", ev)
	}
	if err := m.tr["us-east"].Send("nowhere", nil); !errors.Is(err, ErrUnknownPeer) {
		t.Errorf("Send to an unknown peer: %v", err)
	}
}

func TestQUICRefusesOtherCA(t *testing.T) {
	dir := genCerts(t, threeRegions...)
	rogueDir := genCerts(t, threeRegions...) // the same names under another CA
	pcUS, pcEU, pcRogue := udp(t), udp(t), udp(t)
	addrUS, addrEU, addrRogue := pcUS.LocalAddr().String(), pcEU.LocalAddr().String(), pcRogue.LocalAddr().String()

	cfgUS, logUS := testConfig(t, dir, "us-east", map[string]string{"eu-west": addrEU, "ap-south": addrRogue})
	cfgEU, _ := testConfig(t, dir, "eu-west", map[string]string{"us-east": addrUS})
	cfgRogue, logRogue := testConfig(t, rogueDir, "ap-south", map[string]string{"us-east": addrUS})
	us := start(t, pcUS, cfgUS, newRecorder())
	eu := start(t, pcEU, cfgEU, newRecorder())
	rogue := start(t, pcRogue, cfgRogue, newRecorder())

	waitFor(t, 15*time.Second, "us-east and eu-west to connect", func() bool {
		return us.Connected("eu-west") && eu.Connected("us-east")
	})
	waitFor(t, 15*time.Second, "the refusals to be logged", func() bool {
		return logUS.hasLine("refused incoming connection", addrRogue, "certificate") &&
			logUS.hasLine("dial failed", "peer=ap-south", "unknown authority") &&
			logRogue.hasLine("dial failed", "peer=us-east")
	})
	if us.Connected("ap-south") || rogue.Connected("us-east") {
		t.Fatal("a region with a certificate from another CA got connected")
	}
	if err := us.Send("ap-south", []byte("secret")); !errors.Is(err, ErrNotConnected) {
		t.Fatalf("Send to the rogue: %v", err)
	}
}

// rawDial connects to addr with region's certificate from dir, as a peer
// that does not follow the protocol would.
func rawDial(t *testing.T, dir, region, target string, addr net.Addr, withCert bool) (*quic.Conn, error) {
	t.Helper()
	tr := &quic.Transport{Conn: udp(t)}
	t.Cleanup(func() { tr.Close() })
	cfg := loadBundle(t, dir, region).ClientTLS(target)
	if !withCert {
		cfg.Certificates = nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := tr.Dial(ctx, addr, cfg, &quic.Config{HandshakeIdleTimeout: 2 * time.Second})
	if err == nil {
		t.Cleanup(func() { conn.CloseWithError(0, "") })
	}
	return conn, err
}

func TestQUICRefusesClientWithoutCert(t *testing.T) {
	dir := genCerts(t, "us-east", "eu-west")
	pc := udp(t)
	cfg, logUS := testConfig(t, dir, "us-east", map[string]string{"eu-west": "127.0.0.1:9"})
	us := start(t, pc, cfg, newRecorder())

	conn, err := rawDial(t, dir, "eu-west", "us-east", us.Addr(), false)
	if err == nil {
		// TLS 1.3 lets the client finish before the server has checked
		// it; the server then closes the connection.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s, serr := conn.OpenStreamSync(ctx)
		if serr == nil {
			s.Write([]byte{kindCall, 0, 0, 0, 0, 0, 0, 0, 0})
			s.SetReadDeadline(time.Now().Add(5 * time.Second))
			_, serr = s.Read(make([]byte, 1))
		}
		if serr == nil {
			t.Fatal("a client without a certificate was served")
		}
		err = serr
	}
	t.Logf("client without certificate: %v", err)
	waitFor(t, 5*time.Second, "the refusal to be logged", func() bool {
		return logUS.hasLine("refused incoming connection", "certificate")
	})
}

func TestQUICChecksRegionNames(t *testing.T) {
	dir := genCerts(t, "us-east", "eu-west", "ap-south")
	pcUS, pcAP := udp(t), udp(t)
	// us-east believes eu-west lives where ap-south does, and does not
	// count ap-south among its peers.
	cfgUS, logUS := testConfig(t, dir, "us-east", map[string]string{"eu-west": pcAP.LocalAddr().String()})
	cfgAP, _ := testConfig(t, dir, "ap-south", map[string]string{"us-east": pcUS.LocalAddr().String()})
	us := start(t, pcUS, cfgUS, newRecorder())
	ap := start(t, pcAP, cfgAP, newRecorder())
	waitFor(t, 15*time.Second, "both refusals to be logged", func() bool {
		return logUS.hasLine("dial failed", "peer=eu-west", "ap-south") &&
			logUS.hasLine("refused incoming connection", "not a peer")
	})
	if us.Connected("eu-west") || ap.Connected("us-east") {
		t.Fatal("a connection to the wrong region was used")
	}
}

// hostileSetup starts us-east with eu-west as a regular peer and returns a
// raw connection authenticated as its other peer, ap-south.
func hostileSetup(t *testing.T, protocol string) (*mesh, *quic.Conn) {
	t.Helper()
	dir := genCerts(t, threeRegions...)
	raw := &quic.Transport{Conn: udp(t)}
	t.Cleanup(func() { raw.Close() })
	pcUS, pcEU := udp(t), udp(t)
	cfgUS, logUS := testConfig(t, dir, "us-east", map[string]string{
		"eu-west":  pcEU.LocalAddr().String(),
		"ap-south": raw.Conn.LocalAddr().String(),
	})
	cfgEU, logEU := testConfig(t, dir, "eu-west", map[string]string{"us-east": pcUS.LocalAddr().String()})
	m := &mesh{
		tr:  make(map[string]*QUICTransport),
		rec: map[string]*recorder{"us-east": newRecorder(), "eu-west": newRecorder()},
		log: map[string]*logBuf{"us-east": logUS, "eu-west": logEU},
	}
	m.tr["us-east"] = start(t, pcUS, cfgUS, m.rec["us-east"])
	m.tr["eu-west"] = start(t, pcEU, cfgEU, m.rec["eu-west"])
	m.waitConnected(t, 15*time.Second)

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	tc := loadBundle(t, dir, "ap-south").ClientTLS("us-east")
	tc.NextProtos = []string{protocol}
	conn, err := raw.Dial(ctx, pcUS.LocalAddr(), tc, &quic.Config{})
	if err != nil {
		t.Fatalf("raw dial: %v", err)
	}
	if got := conn.ConnectionState().TLS.NegotiatedProtocol; got != protocol {
		t.Fatalf("ALPN %q, want %q", got, protocol)
	}
	t.Cleanup(func() { conn.CloseWithError(0, "") })
	return m, conn
}

// expectReset writes data on a new stream and waits for us-east to reset
// the stream with code.
func expectReset(t *testing.T, conn *quic.Conn, data []byte, code quic.StreamErrorCode) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := conn.OpenStreamSync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	s.Write(data)
	s.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err = io.ReadAll(s)
	var se *quic.StreamError
	if !errors.As(err, &se) || !se.Remote || se.ErrorCode != code {
		t.Fatalf("stream after %d bytes: %v, want a reset with code %#x", len(data), err, code)
	}
}

func TestQUICHostilePeer(t *testing.T) {
	for _, protocol := range []string{certs.ALPN, certs.ALPNCompressed} {
		t.Run(protocol, func(t *testing.T) { testQUICHostilePeer(t, protocol) })
	}
}

func testQUICHostilePeer(t *testing.T, protocol string) {
	m, conn := hostileSetup(t, protocol)
	max := m.tr["us-east"].cfg.MaxFrameSize
	// A message stream opens with the sender's peer name, then frames:
	// their headers are a 4-byte length under lattice-repl/1, a uvarint
	// under /2 (compress.go).
	hello := append([]byte{kindMessages, byte(len("ap-south"))}, "ap-south"...)
	huge := binary.BigEndian.AppendUint32(slices.Clone(hello), 0xFFFFFFFF)
	over := binary.BigEndian.AppendUint32(slices.Clone(hello), uint32(max)+1)
	if protocol == certs.ALPNCompressed {
		huge = binary.AppendUvarint(slices.Clone(hello), 1<<62)
		over = binary.AppendUvarint(slices.Clone(hello), uint64(max+1)<<1)
		// A compressed frame larger than any compressed message can be.
		expectReset(t, conn, binary.AppendUvarint(slices.Clone(hello), (maxCompressedFrame+1)<<1|1), codeFrameTooLarge)
		// A compressed frame that is not DEFLATE.
		expectReset(t, conn, append(slices.Clone(hello), 8<<1|1, 3, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff), codeProtocol)
	}
	callOver := binary.BigEndian.AppendUint32([]byte{kindCall, 0, 0, 0, 100}, uint32(max)+1)

	// Oversized frames: refused from the header, stream closed with an
	// error.
	expectReset(t, conn, huge, codeFrameTooLarge)
	expectReset(t, conn, over, codeFrameTooLarge)
	expectReset(t, conn, callOver, codeFrameTooLarge)

	// Garbage: an unknown stream kind, and random bytes after each kind.
	seed := uint64(20260101)
	t.Logf("garbage seed %d", seed)
	r := rand.New(rand.NewPCG(seed, 0))
	garbage := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		return b
	}
	expectReset(t, conn, append([]byte{'Z'}, garbage(10_000)...), codeProtocol)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for range 20 {
		for _, kind := range []byte{kindMessages, kindCall} {
			s, err := conn.OpenStreamSync(ctx)
			if err != nil {
				t.Fatal(err)
			}
			s.Write(append([]byte{kind}, garbage(1+r.IntN(20_000))...))
			s.Close()
		}
	}
	// A stream opened and left silent is dropped after the handshake
	// timeout; one closed at once is dropped at once.
	if s, err := conn.OpenStreamSync(ctx); err == nil {
		s.Close()
	}

	// us-east still serves its hostile peer's valid requests ...
	s, err := conn.OpenStreamSync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	req := append([]byte{kindCall, 0, 0, 0x13, 0x88}, binary.BigEndian.AppendUint32(nil, 2)...)
	s.Write(append(req, "hi"...))
	s.Close()
	resp, err := io.ReadAll(s)
	if err != nil || string(resp) != "\x00\x00\x00\x00\x10echo:ap-south:hi" {
		t.Fatalf("valid call after garbage: %q, %v", resp, err)
	}
	// ... and its regular peer.
	if err := m.tr["eu-west"].Send("us-east", []byte("msg-0")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "a message from eu-west", func() bool { return m.rec["us-east"].count("eu-west") == 1 })
	if !m.log["us-east"].hasLine("message refused", "peer=ap-south", "frame too large") {
		t.Error("the oversized frame was not logged")
	}
}

func TestQUICOversizedFrameFromPeer(t *testing.T) {
	dir := genCerts(t, "us-east", "eu-west")
	pcUS, pcEU := udp(t), udp(t)
	cfgUS, logUS := testConfig(t, dir, "us-east", map[string]string{"eu-west": pcEU.LocalAddr().String()})
	cfgUS.MaxFrameSize = 1024
	cfgUS.MaxQueuedBytes = 1 << 20
	cfgEU, _ := testConfig(t, dir, "eu-west", map[string]string{"us-east": pcUS.LocalAddr().String()})
	recUS := newRecorder()
	us := start(t, pcUS, cfgUS, recUS)
	eu := start(t, pcEU, cfgEU, newRecorder())
	waitFor(t, 15*time.Second, "connection", func() bool { return us.Connected("eu-west") && eu.Connected("us-east") })

	if err := us.Send("eu-west", make([]byte, 1025)); !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("Send over the limit: %v", err)
	}
	if _, err := us.Call(context.Background(), "eu-west", make([]byte, 1025)); !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("Call over the limit: %v", err)
	}
	// eu-west allows larger frames than us-east accepts.
	if err := eu.Send("us-east", make([]byte, 2048)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the refusal", func() bool { return logUS.hasLine("message refused", "frame too large") })
	// eu-west notices its broken stream when it next writes, redials, and
	// later messages get through.
	waitFor(t, 15*time.Second, "a message after the refusal", func() bool {
		eu.Send("us-east", []byte("small"))
		return recUS.count("eu-west") > 0
	})
	for _, m := range recUS.messages("eu-west") {
		if len(m) > 1024 {
			t.Fatalf("a %d-byte message was delivered", len(m))
		}
	}
}

func TestQUICReconnectAfterRestart(t *testing.T) {
	dir := genCerts(t, threeRegions...)
	m := startMesh(t, dir, threeRegions, nil)
	m.waitConnected(t, 15*time.Second)

	m.tr["eu-west"].Close()
	waitFor(t, 10*time.Second, "the others to see eu-west go", func() bool {
		return !m.tr["us-east"].Connected("eu-west") && !m.tr["ap-south"].Connected("eu-west")
	})
	pc, err := net.ListenPacket("udp", m.addr["eu-west"])
	if err != nil {
		t.Fatalf("rebind %s: %v", m.addr["eu-west"], err)
	}
	cfg, _ := testConfig(t, dir, "eu-west", map[string]string{"us-east": m.addr["us-east"], "ap-south": m.addr["ap-south"]})
	rec := newRecorder()
	m.tr["eu-west"], m.rec["eu-west"] = start(t, pc, cfg, rec), rec
	m.waitConnected(t, 15*time.Second)

	if err := m.tr["us-east"].Send("eu-west", []byte("msg-0")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "a message to the restarted region", func() bool { return rec.count("us-east") == 1 })
	if got := m.tr["us-east"].Peers()[1]; got.Peer != "eu-west" || got.Connects != 2 {
		t.Fatalf("status %+v, want 2 connects", got)
	}
	if ev := m.rec["us-east"].peerEvents("eu-west"); !slices.Equal(ev, []bool{true, false, true}) {
		t.Fatalf("peer events %v", ev)
	}
	// The new connection made a full handshake: no resumption, no 0-RTT.
	if conn := m.tr["us-east"].peers["eu-west"].current(); conn == nil {
		t.Fatal("no connection")
	} else if cs := conn.ConnectionState(); cs.TLS.DidResume || cs.Used0RTT || len(cs.TLS.VerifiedChains) == 0 {
		t.Fatalf("reconnection resumed=%v 0-RTT=%v verified chains=%d", cs.TLS.DidResume, cs.Used0RTT, len(cs.TLS.VerifiedChains))
	}
}

// TestQUICReconnectAfterCrash kills a region without a goodbye (its socket
// closes under it) and restarts it on the same address. Its peers hold
// connections with a 30 s idle timeout; they reconnect well before it,
// because the restarted region answers their packets with stateless
// resets.
func TestQUICReconnectAfterCrash(t *testing.T) {
	dir := genCerts(t, "us-east", "eu-west")
	pcUS, pcEU := udp(t), udp(t)
	addrUS, addrEU := pcUS.LocalAddr().String(), pcEU.LocalAddr().String()
	cfgUS, logUS := testConfig(t, dir, "us-east", map[string]string{"eu-west": addrEU})
	cfgUS.MaxIdleTimeout = 30 * time.Second
	cfgEU, _ := testConfig(t, dir, "eu-west", map[string]string{"us-east": addrUS})
	cfgEU.MaxIdleTimeout = 30 * time.Second
	us := start(t, pcUS, cfgUS, newRecorder())
	eu := start(t, pcEU, cfgEU, newRecorder())
	waitFor(t, 15*time.Second, "connection", func() bool { return us.Connected("eu-west") && eu.Connected("us-east") })

	pcEU.Close() // the crash: nothing more leaves eu-west
	eu.Close()
	pc, err := net.ListenPacket("udp", addrEU)
	if err != nil {
		t.Fatalf("rebind %s: %v", addrEU, err)
	}
	start := time.Now()
	recEU := newRecorder()
	eu2, err := NewQUIC(pc, cfgEU, recEU)
	if err != nil {
		t.Fatal(err)
	}
	defer eu2.Close()
	// Within 20 s, below the 30 s idle timeout, and with room for a loaded
	// machine's redial backoff (10 s was missed once with every core busy).
	waitFor(t, 20*time.Second, "us-east to reconnect to the restarted eu-west", func() bool {
		st := us.Peers()[0]
		return st.Connected && st.Connects == 2 && eu2.Connected("us-east")
	})
	t.Logf("reconnected after %v", time.Since(start))
	if !logUS.hasLine("disconnected", "stateless reset") {
		t.Error("us-east did not learn of the restart from a stateless reset")
	}
	if err := us.Send("eu-west", []byte("msg-0")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "a message", func() bool { return recEU.count("us-east") == 1 })
}

func TestQUICCallDeadlineUnderPartition(t *testing.T) {
	dir := genCerts(t, "us-east", "eu-west")
	network := wan.NewNetwork(5)
	network.SetLink("us-east", "eu-west", wan.Link{Delay: 10 * time.Millisecond})
	m := startMesh(t, dir, []string{"us-east", "eu-west"}, func(name string, pc net.PacketConn) net.PacketConn {
		return network.Attach(name, pc)
	})
	m.waitConnected(t, 15*time.Second)
	us := m.tr["us-east"]
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	resp, err := us.Call(ctx, "eu-west", []byte("before"))
	cancel()
	if err != nil || string(resp) != "echo:us-east:before" {
		t.Fatalf("Call before the partition: %q, %v", resp, err)
	}

	network.Partition("us-east", "eu-west")
	const timeout = 300 * time.Millisecond
	ctx, cancel = context.WithTimeout(context.Background(), timeout)
	begin := time.Now()
	_, err = us.Call(ctx, "eu-west", []byte("during"))
	elapsed := time.Since(begin)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Call across the partition: %v, want a deadline error", err)
	}
	if elapsed < timeout || elapsed > timeout+time.Second {
		t.Fatalf("Call across the partition returned after %v, want about %v", elapsed, timeout)
	}

	waitFor(t, 10*time.Second, "the partition to be noticed", func() bool {
		return !us.Connected("eu-west") && !m.tr["eu-west"].Connected("us-east")
	})
	begin = time.Now()
	if _, err := us.Call(context.Background(), "eu-west", []byte("x")); !errors.Is(err, ErrNotConnected) {
		t.Fatalf("Call to a lost peer: %v", err)
	}
	if el := time.Since(begin); el > 100*time.Millisecond {
		t.Fatalf("Call to a lost peer took %v; it should fail at once", el)
	}
	if err := us.Send("eu-west", []byte("x")); !errors.Is(err, ErrNotConnected) {
		t.Fatalf("Send to a lost peer: %v", err)
	}

	network.Heal("us-east", "eu-west")
	m.waitConnected(t, 15*time.Second)
	ctx, cancel = context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if resp, err := us.Call(ctx, "eu-west", []byte("after")); err != nil || string(resp) != "echo:us-east:after" {
		t.Fatalf("Call after healing: %q, %v", resp, err)
	}
}

func TestQUICCallCancelReachesCallee(t *testing.T) {
	dir := genCerts(t, "us-east", "eu-west")
	m := startMesh(t, dir, []string{"us-east", "eu-west"}, nil)
	m.waitConnected(t, 15*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if _, err := m.tr["us-east"].Call(ctx, "eu-west", []byte("block")); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Call: %v", err)
	}
	waitFor(t, 5*time.Second, "the callee to give up", func() bool { return m.rec["eu-west"].cancels() == 1 })
	// Delta traffic is not held up by a call in progress.
	ctx2, cancel2 := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel2()
	go m.tr["us-east"].Call(ctx2, "eu-west", []byte("block"))
	if err := m.tr["us-east"].Send("eu-west", []byte("msg-0")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "a message past a blocked call", func() bool { return m.rec["eu-west"].count("us-east") == 1 })
}

func TestQUICClose(t *testing.T) {
	dir := genCerts(t, "us-east", "eu-west")
	m := startMesh(t, dir, []string{"us-east", "eu-west"}, nil)
	m.waitConnected(t, 15*time.Second)
	us := m.tr["us-east"]
	if err := us.Close(); err != nil {
		t.Fatal(err)
	}
	if err := us.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := us.Send("eu-west", nil); !errors.Is(err, ErrClosed) {
		t.Fatalf("Send after Close: %v", err)
	}
	if _, err := us.Call(context.Background(), "eu-west", nil); !errors.Is(err, ErrClosed) {
		t.Fatalf("Call after Close: %v", err)
	}
	// The peer learns at once from the CONNECTION_CLOSE, well before its
	// 1.5 s idle timeout.
	waitFor(t, time.Second, "eu-west to see us-east leave", func() bool { return !m.tr["eu-west"].Connected("us-east") })
}

// TestQUICCompressedStreams checks that two regions of this version
// compress their message streams, that a region offering only
// lattice-repl/1 (an earlier version) is spoken to uncompressed, and that
// messages arrive whole and in order either way.
func TestQUICCompressedStreams(t *testing.T) {
	dir := genCerts(t, threeRegions...)
	pcs := map[string]net.PacketConn{}
	for _, r := range threeRegions {
		pcs[r] = udp(t)
	}
	tr, rec := map[string]*QUICTransport{}, map[string]*recorder{}
	for _, r := range threeRegions {
		peers := map[string]string{}
		for _, p := range threeRegions {
			if p != r {
				peers[p] = pcs[p].LocalAddr().String()
			}
		}
		cfg, _ := testConfig(t, dir, r, peers)
		if r == "ap-south" {
			cfg.protocols = []string{certs.ALPN}
		}
		rec[r] = newRecorder()
		tr[r] = start(t, pcs[r], cfg, rec[r])
	}
	waitFor(t, 15*time.Second, "every connection", func() bool {
		for a, ta := range tr {
			for b := range tr {
				if a != b && !ta.Connected(b) {
					return false
				}
			}
		}
		return true
	})
	const n = 300
	msg := func(i int) []byte {
		// Like deltas: a repeated envelope, a counter, a cart and a sku;
		// every 50th large enough to go uncompressed.
		if i%50 == 49 {
			return slices.Repeat(fmt.Appendf(nil, "%06d", i), MaxInflated/6+1)
		}
		return fmt.Appendf(nil, "\xa3\x02\x1a\x28\x98\x80%03d\x15\x81\x84\x60\x01\x00\x00\x16cart-%d/sku-%d", i, i%7, i%5)
	}
	for i := range n {
		for _, from := range threeRegions {
			for _, to := range threeRegions {
				if from != to {
					if err := tr[from].Send(to, msg(i)); err != nil {
						t.Fatalf("%s to %s: %v", from, to, err)
					}
				}
			}
		}
		if i%50 == 0 { // keep within the queue's bounds
			waitFor(t, 10*time.Second, "the queues to drain", func() bool {
				for _, r := range threeRegions {
					for _, p := range tr[r].Peers() {
						if p.Queued > 0 {
							return false
						}
					}
				}
				return true
			})
		}
	}
	for _, to := range threeRegions {
		for _, from := range threeRegions {
			if from == to {
				continue
			}
			waitFor(t, 10*time.Second, fmt.Sprintf("%s's messages at %s", from, to), func() bool { return rec[to].count(from) == n })
			for i, m := range rec[to].messages(from) {
				if string(m) != string(msg(i)) {
					t.Fatalf("%s from %s: message %d differs", to, from, i)
				}
			}
		}
	}
	for _, r := range threeRegions {
		for _, p := range tr[r].Peers() {
			old := r == "ap-south" || p.Peer == "ap-south"
			if want := map[bool]string{true: certs.ALPN, false: certs.ALPNCompressed}[old]; p.Protocol != want {
				t.Errorf("%s to %s: protocol %q, want %q", r, p.Peer, p.Protocol, want)
			}
			if old && p.SentStreamBytes != p.SentBytes+frameHeaderLen*p.SentMessages {
				t.Errorf("%s to %s, lattice-repl/1: stream %d bytes for %d messages of %d", r, p.Peer, p.SentStreamBytes, p.SentMessages, p.SentBytes)
			}
			// The large messages go as they are, after a uvarint header;
			// the short ones in less than half their size.
			var big, small uint64
			for i := range n {
				if m := msg(i); len(m) > MaxInflated {
					big += uint64(len(m) + len(binary.AppendUvarint(nil, uint64(len(m))<<1)))
				} else {
					small += uint64(len(m))
				}
			}
			if !old && (p.SentStreamBytes-big)*2 > small {
				t.Errorf("%s to %s, lattice-repl/2: %d stream bytes for %d of short messages, want less than half", r, p.Peer, p.SentStreamBytes-big, small)
			}
			var back PeerStatus
			for _, q := range tr[p.Peer].Peers() {
				if q.Peer == r {
					back = q
				}
			}
			if back.RecvStreamBytes != p.SentStreamBytes {
				t.Errorf("%s sent %s %d stream bytes, %s received %d", r, p.Peer, p.SentStreamBytes, p.Peer, back.RecvStreamBytes)
			}
		}
	}
}
