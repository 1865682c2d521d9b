package transport

import (
	"context"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
)

// TestQUICCloseClosesConnectionsNotYetNamed: Close closes every
// connection with a CONNECTION_CLOSE, so that peers notice at once, and
// returns once the handler calls in progress have. A connection a peer
// has dialled whose message stream has not named the peer yet (the
// moment between the handshake and the peer's first stream, or a peer
// cut off right after its handshake) is one of them: Close neither
// leaves it open nor waits for it to time out.
func TestQUICCloseClosesConnectionsNotYetNamed(t *testing.T) {
	dir := genCerts(t, threeRegions...)
	pcUS := udp(t)
	raw := &quic.Transport{Conn: udp(t)}
	t.Cleanup(func() { raw.Close() })
	cfgUS, _ := testConfig(t, dir, "us-east", map[string]string{"ap-south": raw.Conn.LocalAddr().String()})
	cfgUS.HandshakeTimeout = 5 * time.Second
	us := start(t, pcUS, cfgUS, newRecorder())

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	tc := loadBundle(t, dir, "ap-south").ClientTLS("us-east")
	conn, err := raw.Dial(ctx, us.Addr(), tc, &quic.Config{KeepAlivePeriod: 100 * time.Millisecond, MaxIdleTimeout: 30 * time.Second})
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { conn.CloseWithError(0, "") })
	// us-east has accepted the connection (the handshake is confirmed
	// once a packet of it arrives after the handshake).
	waitFor(t, 5*time.Second, "the handshake to complete", func() bool {
		select {
		case <-conn.HandshakeComplete():
			return true
		default:
			return false
		}
	})
	time.Sleep(100 * time.Millisecond)

	const bound = 2 * time.Second // well below 2 × HandshakeTimeout
	done := make(chan time.Duration, 1)
	t0 := time.Now()
	go func() {
		us.Close()
		done <- time.Since(t0)
	}()
	select {
	case d := <-done:
		if d > bound {
			t.Fatalf("Close took %v with a connection from ap-south not yet named; want under %v", d, bound)
		}
	case <-time.After(bound):
		t.Errorf("Close has not returned after %v with a connection from ap-south not yet named (HandshakeTimeout %v)", bound, cfgUS.HandshakeTimeout)
		select {
		case d := <-done:
			t.Logf("Close returned after %v", d)
		case <-time.After(4 * cfgUS.HandshakeTimeout):
			t.Log("Close had not returned after 4 × HandshakeTimeout")
		}
	}
}

// TestQUICCloseDoesNotWaitOnADialsAcknowledgement: a dial that has
// finished its handshake and waits for the peer to acknowledge the
// message stream (a peer that is loaded, or cut off right after the
// handshake) ends with Close, as the handshake itself does: Close does
// not wait out the acknowledgement's HandshakeTimeout.
func TestQUICCloseDoesNotWaitOnADialsAcknowledgement(t *testing.T) {
	dir := genCerts(t, threeRegions...)
	pcUS := udp(t)
	// eu-west completes the handshake and never answers the message
	// stream.
	raw := &quic.Transport{Conn: udp(t)}
	t.Cleanup(func() { raw.Close() })
	ln, err := raw.Listen(loadBundle(t, dir, "eu-west").ServerTLS(), &quic.Config{KeepAlivePeriod: 100 * time.Millisecond, MaxIdleTimeout: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	accepted := make(chan *quic.Conn, 16)
	go func() {
		for {
			c, err := ln.Accept(context.Background())
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	cfgUS, _ := testConfig(t, dir, "us-east", map[string]string{"eu-west": raw.Conn.LocalAddr().String()})
	cfgUS.HandshakeTimeout = 5 * time.Second
	us := start(t, pcUS, cfgUS, newRecorder())
	select {
	case c := <-accepted:
		t.Cleanup(func() { c.CloseWithError(0, "") })
	case <-time.After(10 * time.Second):
		t.Fatal("us-east did not dial eu-west")
	}
	time.Sleep(200 * time.Millisecond) // us-east now waits for the acknowledgement

	const bound = 2 * time.Second // well below HandshakeTimeout
	done := make(chan time.Duration, 1)
	t0 := time.Now()
	go func() {
		us.Close()
		done <- time.Since(t0)
	}()
	select {
	case d := <-done:
		if d > bound {
			t.Fatalf("Close took %v while a dial waited for its acknowledgement; want under %v", d, bound)
		}
	case <-time.After(bound):
		t.Errorf("Close has not returned after %v while a dial waited for its acknowledgement (HandshakeTimeout %v)", bound, cfgUS.HandshakeTimeout)
		select {
		case d := <-done:
			t.Logf("Close returned after %v", d)
		case <-time.After(4 * cfgUS.HandshakeTimeout):
			t.Log("Close had not returned after 4 × HandshakeTimeout")
		}
	}
}
