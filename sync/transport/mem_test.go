package transport

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"
)

func joinAll(t *testing.T, n *MemNetwork, names ...string) (map[string]*MemTransport, map[string]*recorder) {
	t.Helper()
	ts := make(map[string]*MemTransport)
	rs := make(map[string]*recorder)
	for _, name := range names {
		rs[name] = newRecorder()
		tr, err := n.Join(name, rs[name])
		if err != nil {
			t.Fatal(err)
		}
		ts[name] = tr
	}
	return ts, rs
}

func TestMemExchange(t *testing.T) {
	n := NewMemNetwork()
	defer n.Close()
	names := []string{"us-east", "eu-west", "ap-south"}
	ts, rs := joinAll(t, n, names...)
	const count = 100
	for _, from := range names {
		for _, to := range names {
			if from == to {
				continue
			}
			if !ts[from].Connected(to) {
				t.Fatalf("%s not connected to %s", from, to)
			}
			for i := range count {
				if err := ts[from].Send(to, fmt.Appendf(nil, "msg-%d", i)); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := n.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	for _, from := range names {
		for _, to := range names {
			if from != to {
				checkInOrder(t, from+"→"+to, rs[to].messages(from), count)
			}
		}
	}

	resp, err := ts["us-east"].Call(ctx, "ap-south", []byte("hi"))
	if err != nil || string(resp) != "echo:us-east:hi" {
		t.Fatalf("Call = %q, %v", resp, err)
	}
	_, err = ts["us-east"].Call(ctx, "ap-south", []byte("fail"))
	var re *RemoteError
	if !errors.As(err, &re) || re.Peer != "ap-south" {
		t.Fatalf("failing Call: %v", err)
	}
	st := ts["us-east"].Peers()
	if len(st) != 2 || st[0].Peer != "ap-south" || !st[0].Connected || st[0].SentMessages != count || st[0].ReceivedMessages != count {
		t.Fatalf("Peers = %+v", st)
	}
}

func TestMemErrors(t *testing.T) {
	n := NewMemNetwork(WithMemLimits(16, 2))
	defer n.Close()
	ts, _ := joinAll(t, n, "us-east", "eu-west")
	us := ts["us-east"]
	if err := us.Send("nowhere", nil); !errors.Is(err, ErrUnknownPeer) {
		t.Errorf("unknown peer: %v", err)
	}
	if err := us.Send("eu-west", make([]byte, 17)); !errors.Is(err, ErrFrameTooLarge) {
		t.Errorf("oversized: %v", err)
	}
	if _, err := us.Call(context.Background(), "eu-west", make([]byte, 17)); !errors.Is(err, ErrFrameTooLarge) {
		t.Errorf("oversized call: %v", err)
	}
	if _, err := n.Join("us-east", newRecorder()); err == nil {
		t.Error("joined a name twice")
	}
	n.Disconnect("us-east", "eu-west")
	if err := us.Send("eu-west", []byte("x")); !errors.Is(err, ErrNotConnected) {
		t.Errorf("disconnected: %v", err)
	}
	if _, err := us.Call(context.Background(), "eu-west", []byte("x")); !errors.Is(err, ErrNotConnected) {
		t.Errorf("disconnected call: %v", err)
	}
	us.Close()
	if err := us.Send("eu-west", []byte("x")); !errors.Is(err, ErrClosed) {
		t.Errorf("closed: %v", err)
	}
	var pe *PeerError
	if err := us.Send("eu-west", nil); !errors.As(err, &pe) || pe.Peer != "eu-west" || pe.Op != "send" {
		t.Errorf("error %v is not a PeerError", err)
	} else if got := err.Error(); got != "transport: send eu-west: closed" {
		t.Errorf("error text %q", got)
	}
}

// blockingHandler signals entered and blocks OnMessage until release is
// closed.
type blockingHandler struct {
	*recorder
	entered chan struct{}
	release chan struct{}
}

func (b blockingHandler) OnMessage(from string, payload []byte) {
	select {
	case b.entered <- struct{}{}:
	default:
	}
	<-b.release
	b.recorder.OnMessage(from, payload)
}

func TestMemQueueFullAndLossOnDisconnect(t *testing.T) {
	n := NewMemNetwork(WithMemLimits(0, 3))
	defer n.Close()
	us, err := n.Join("us-east", newRecorder())
	if err != nil {
		t.Fatal(err)
	}
	bh := blockingHandler{newRecorder(), make(chan struct{}, 1), make(chan struct{})}
	if _, err := n.Join("eu-west", bh); err != nil {
		t.Fatal(err)
	}
	// One message is taken by the delivery goroutine (blocked in the
	// handler), three fill the queue, the next is refused.
	if err := us.Send("eu-west", []byte("msg-0")); err != nil {
		t.Fatal(err)
	}
	<-bh.entered
	full := false
	for i := 1; i < 10; i++ {
		if err := us.Send("eu-west", fmt.Appendf(nil, "msg-%d", i)); errors.Is(err, ErrQueueFull) {
			full = true
			break
		} else if err != nil {
			t.Fatal(err)
		}
	}
	if !full {
		t.Fatal("queue never filled")
	}
	// Messages queued when the pair goes down are lost, even if it is back
	// up before they would be delivered.
	n.Disconnect("us-east", "eu-west")
	n.Connect("us-east", "eu-west")
	close(bh.release)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := n.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	if got := bh.count("us-east"); got != 1 {
		t.Fatalf("delivered %d messages, want only the one in the handler", got)
	}
	if err := us.Send("eu-west", []byte("msg-0")); err != nil {
		t.Fatal(err)
	}
	if err := n.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	if got := bh.count("us-east"); got != 2 {
		t.Fatalf("after reconnecting delivered %d, want 2", got)
	}
}

func TestMemCallDeadline(t *testing.T) {
	n := NewMemNetwork()
	defer n.Close()
	ts, rs := joinAll(t, n, "us-east", "eu-west")
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := ts["us-east"].Call(ctx, "eu-west", []byte("block"))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Call: %v", err)
	}
	if el := time.Since(start); el < 100*time.Millisecond {
		t.Fatalf("Call returned after %v, before its deadline", el)
	}
	waitFor(t, 5*time.Second, "the handler to see the cancellation", func() bool { return rs["eu-west"].cancels() == 1 })
}

func TestMemPeerEventsAndRestart(t *testing.T) {
	n := NewMemNetwork()
	defer n.Close()
	ts, rs := joinAll(t, n, "us-east", "eu-west")
	n.Disconnect("us-east", "eu-west")
	n.Connect("us-east", "eu-west")
	ts["eu-west"].Close()
	if ts["us-east"].Connected("eu-west") {
		t.Fatal("connected to a closed peer")
	}
	eu2, err := n.Join("eu-west", newRecorder())
	if err != nil {
		t.Fatalf("rejoin: %v", err)
	}
	if !ts["us-east"].Connected("eu-west") || !eu2.Connected("us-east") {
		t.Fatal("not reconnected after rejoin")
	}
	if got, want := rs["us-east"].peerEvents("eu-west"), []bool{true, false, true, false, true}; !slices.Equal(got, want) {
		t.Fatalf("events = %v, want %v", got, want)
	}
	if st := ts["us-east"].Peers(); st[0].Connects != 3 {
		t.Fatalf("Connects = %d, want 3", st[0].Connects)
	}
}
