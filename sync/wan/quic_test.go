package wan

import (
	"bytes"
	"context"
	"io"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/latticedb/lattice/sync/certs"
)

// TestQUICOverConn runs a quic.Transport on each side of an emulated link
// with delay and loss and moves a megabyte through a stream: quic-go needs
// nothing of a Conn beyond net.PacketConn.
func TestQUICOverConn(t *testing.T) {
	const oneWay = 20 * time.Millisecond
	dir := t.TempDir()
	if err := certs.Generate(dir, "test", []string{"us-east", "eu-west"}); err != nil {
		t.Fatal(err)
	}
	us, err := certs.Load(dir, "us-east")
	if err != nil {
		t.Fatal(err)
	}
	eu, err := certs.Load(dir, "eu-west")
	if err != nil {
		t.Fatal(err)
	}

	n := NewNetwork(11)
	n.SetLink("us-east", "eu-west", Link{Delay: oneWay, Jitter: 2 * time.Millisecond, Loss: 0.02})
	cu := n.Attach("us-east", listen(t))
	ce := n.Attach("eu-west", listen(t))
	tu := &quic.Transport{Conn: cu}
	te := &quic.Transport{Conn: ce}
	defer cu.Close()
	defer ce.Close()
	defer tu.Close()
	defer te.Close()

	ln, err := te.Listen(eu.ServerTLS(), &quic.Config{MaxIdleTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()

	payload := make([]byte, 1<<20)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range payload {
		payload[i] = byte(r.Uint32())
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	served := make(chan error, 1)
	go func() {
		conn, err := ln.Accept(ctx)
		if err != nil {
			served <- err
			return
		}
		s, err := conn.AcceptStream(ctx)
		if err != nil {
			served <- err
			return
		}
		// Echo the stream back.
		_, err = io.Copy(s, s)
		if err == nil {
			err = s.Close()
		}
		served <- err
	}()

	conn, err := tu.Dial(ctx, ce.LocalAddr(), us.ClientTLS("eu-west"), &quic.Config{MaxIdleTimeout: 10 * time.Second})
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer conn.CloseWithError(0, "")
	s, err := conn.OpenStreamSync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		s.Write(payload)
		s.Close()
	}()
	got, err := io.ReadAll(s)
	if err != nil {
		t.Fatalf("read echo: %v", err)
	}
	if !bytes.Equal(got, payload) {
		t.Fatalf("echo of %d bytes differs from the %d bytes sent", len(got), len(payload))
	}
	if err := <-served; err != nil {
		t.Fatalf("server: %v", err)
	}
	if rtt := conn.ConnectionStats().MinRTT; rtt < 2*oneWay {
		t.Errorf("QUIC measured a minimum RTT of %v, below the emulated %v", rtt, 2*oneWay)
	}
	if st := cu.Stats(); st.LostPackets == 0 {
		t.Errorf("no packet was lost: %+v", st)
	}
}
