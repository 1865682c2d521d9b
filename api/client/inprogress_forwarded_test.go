package client_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/latticedb/lattice/api"
	"github.com/latticedb/lattice/api/client"
	"github.com/latticedb/lattice/region"
)

// ownerConnKey is the context key under which the owner node's server
// keeps each request's connection.
type ownerConnKey struct{}

// keyedOwner is the service of the node that owns a reservation's
// partition. Like a home (region.Node's claim), it holds an
// Idempotency-Key while a commit under it runs and answers another
// request with that key request_in_progress meanwhile, and replays the
// outcome once it is decided. The first commit loses its connection to
// the forwarding node right after the request was read (the link drops)
// and is decided once the copy that connection's loss made net/http send
// again has been refused.
type keyedOwner struct {
	api.Service // only the methods below are called

	mu       sync.Mutex
	running  map[string]bool
	decided  map[string]region.Reservation
	refused  chan struct{} // closed once a copy was refused in progress
	once     sync.Once
	commits  atomic.Int32
	dropConn atomic.Bool
}

func (o *keyedOwner) Region() string                            { return "us-east" }
func (o *keyedOwner) TokenFor(context.Context) string           { return "" }
func (o *keyedOwner) WaitToken(context.Context, string) error   { return nil }
func (o *keyedOwner) ConcernCount(field, v string) (int, error) { return 1, nil }
func (o *keyedOwner) AwaitReplicas(context.Context) error       { return nil }
func (o *keyedOwner) Ready() bool                               { return true }
func (o *keyedOwner) Warnings() []string                        { return nil }
func (o *keyedOwner) Cluster() region.ClusterStatus             { return region.ClusterStatus{} }
func (o *keyedOwner) held(id string) region.Reservation         { return o.res(id, region.StateHeld) }
func (o *keyedOwner) res(id, state string) region.Reservation {
	return region.Reservation{ID: id, SKU: "book", Qty: 1, Home: "us-east", State: state, ExpiresAt: time.Now().Add(time.Hour)}
}

func (o *keyedOwner) GetReservation(ctx context.Context, id string) (region.Reservation, error) {
	return o.held(id), nil
}

func (o *keyedOwner) Commit(ctx context.Context, id string, idem api.Idem) (region.Reservation, error) {
	o.commits.Add(1)
	o.mu.Lock()
	if r, ok := o.decided[idem.Key]; ok {
		o.mu.Unlock()
		return r, nil
	}
	if o.running[idem.Key] {
		o.mu.Unlock()
		o.once.Do(func() { close(o.refused) })
		return region.Reservation{}, region.Errorf(region.CodeRequestInProgress, "a request with this Idempotency-Key is still running")
	}
	o.running[idem.Key] = true
	o.mu.Unlock()
	if o.dropConn.CompareAndSwap(true, false) {
		// The connection from the forwarding node drops under the
		// running commit; the commit itself goes on.
		ctx.Value(ownerConnKey{}).(net.Conn).Close()
		select {
		case <-o.refused:
		case <-time.After(10 * time.Second):
		}
	}
	r := o.res(id, region.StateCommitted)
	o.mu.Lock()
	delete(o.running, idem.Key)
	o.decided[idem.Key] = r
	o.mu.Unlock()
	return r, nil
}

// TestForwardedCommitOwnAttemptWaited: in a partitioned region the node
// the client asks forwards a commit to the node owning the reservation's
// partition over a kept-alive connection. That connection drops after the
// owner read the request, while the commit runs there. Were net/http at
// the forwarding node to send the request again (it has an
// Idempotency-Key and no body), the owner would answer that copy 409
// request_in_progress, and the client, which asked once over one
// connection, would take the 409 for another request's. The forward is
// sent once instead (api/forward.go): it fails as unanswered (503), the
// client asks again under its key, finds its own commit running (409)
// and waits for it. The call must answer the committed reservation, not
// a 409 (the caller does not know the key the client made, so it can
// neither ask again with it nor read the outcome).
func TestForwardedCommitOwnAttemptWaited(t *testing.T) {
	owner := &keyedOwner{running: map[string]bool{}, decided: map[string]region.Reservation{}, refused: make(chan struct{})}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	ownerSrv := httptest.NewUnstartedServer(api.New(owner, api.Options{Logger: quiet}))
	ownerSrv.Config.ConnContext = func(ctx context.Context, c net.Conn) context.Context {
		return context.WithValue(ctx, ownerConnKey{}, c)
	}
	ownerSrv.Start()
	defer ownerSrv.Close()

	fwd := &http.Client{Transport: &http.Transport{}}
	defer fwd.CloseIdleConnections()
	front := httptest.NewServer(api.New(&keyedOwner{}, api.Options{Logger: quiet, Partitioning: &api.Partitioning{
		Partitions: 2, Self: "us-east/n1", Client: fwd,
		Owner: func(p int) string {
			if p == 1 {
				return ownerSrv.URL
			}
			return ""
		},
	}}))
	defer front.Close()

	cl, err := client.New([]string{front.URL}, client.Options{MaxAttempts: 4, Backoff: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	const id = "us-east:1:a"
	// A first request forwarded to the owner leaves the forwarding node a
	// kept-alive connection to it, as traffic does.
	if _, err := cl.Reservation(ctxT(t, 5*time.Second), id); err != nil {
		t.Fatalf("Reservation: %v", err)
	}
	owner.dropConn.Store(true)
	res, err := cl.Commit(ctxT(t, 10*time.Second), id, client.KeyOptions{})
	var p *client.Problem
	if errors.As(err, &p) && p.Code == region.CodeRequestInProgress {
		t.Fatalf("Commit: %v after %d commits at the owner; the 409 is the call's own commit, still running there (the forwarding node sent it again when its connection dropped): want the call to wait for it and answer the committed reservation", err, owner.commits.Load())
	}
	if err != nil {
		t.Fatalf("Commit: %v", err)
	}
	if res.State != region.StateCommitted {
		t.Fatalf("Commit: %+v; want committed", res)
	}
	select {
	case <-owner.refused:
	default:
		t.Fatalf("the owner never refused a copy in progress (%d commits): the scenario did not happen", owner.commits.Load())
	}
}
