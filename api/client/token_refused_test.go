package client_test

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/latticedb/lattice/api/client"
	"github.com/latticedb/lattice/crdt"
	"github.com/latticedb/lattice/region"
)

// tokenCheckingRegion fakes a region that refuses, as a region does, a
// request whose Lattice-Token it cannot parse: 400 invalid_token, before
// doing anything. answer writes the answer of every other request; the
// region records the token each request carried and the requests it
// served.
type tokenCheckingRegion struct {
	mu     sync.Mutex
	sent   []string // the Lattice-Token of every request, "" for none
	served int
}

func (g *tokenCheckingRegion) handler(answer func(w http.ResponseWriter, r *http.Request)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		tok := r.Header.Get("Lattice-Token")
		g.mu.Lock()
		g.sent = append(g.sent, tok)
		g.mu.Unlock()
		if _, err := crdt.ParseToken(tok); tok != "" && err != nil && !region.IsPartitionToken(tok) {
			w.Header().Set("Content-Type", "application/problem+json")
			w.WriteHeader(http.StatusBadRequest)
			io.WriteString(w, `{"type":"urn:lattice:problem:invalid_token","title":"Invalid causal token","status":400,"code":"invalid_token","detail":"malformed Lattice-Token"}`)
			return
		}
		g.mu.Lock()
		g.served++
		g.mu.Unlock()
		answer(w, r)
	})
}

func (g *tokenCheckingRegion) counts() (requests, served int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.sent), g.served
}

func goodToken(n uint64) string {
	return crdt.FormatToken(&crdt.Context{VV: map[crdt.ReplicaID]uint64{"us-east": n}})
}

// TestMalformedAnswerTokenDoesNotWedge: a client with no token yet gets
// an answer whose Lattice-Token is garbage, and keeps it (it may be a
// form of a later version). The region refuses the next request, which
// carries it, with 400 invalid_token: the client drops the token and
// sends the request again without it, and that call and every later one
// is served, rather than every later call failing until a new client is
// made.
func TestMalformedAnswerTokenDoesNotWedge(t *testing.T) {
	good := goodToken(3)
	var g tokenCheckingRegion
	var mu sync.Mutex
	answers := 0
	srv := httptest.NewServer(g.handler(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		answers++
		n := answers
		mu.Unlock()
		if n == 1 {
			hostileCart(w, "garbage!", "c1")
			return
		}
		hostileCart(w, good, "c1")
	}))
	defer srv.Close()
	cl, err := client.New([]string{srv.URL}, client.Options{MaxAttempts: 1})
	if err != nil {
		t.Fatal(err)
	}
	ctx := ctxT(t, 10*time.Second)
	if _, err := cl.Cart(ctx, "c1"); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if _, err := cl.Cart(ctx, "c1"); err != nil {
			t.Fatalf("call %d after an answer with the token %q (the client's token now %q): %v", i+2, "garbage!", cl.Token(), err)
		}
	}
	if cl.Token() != good {
		t.Fatalf("token %q after the region's well-formed answers; want %q", cl.Token(), good)
	}
	requests, served := g.counts()
	if requests != 5 || served != 4 {
		t.Fatalf("%d requests, %d served, for 4 calls; want 5 and 4 (one refused for its token, sent again once)", requests, served)
	}
}

// TestMalformedSetTokenDoesNotWedge: SetToken given garbage (a web
// session's cookie tampered with) first: the region refuses the token
// and the client drops it. A cart add, which is otherwise never repeated
// after an answer, is sent again (the refusal applied nothing) and
// applied once; a restock, never repeated either, too.
func TestMalformedSetTokenDoesNotWedge(t *testing.T) {
	var g tokenCheckingRegion
	srv := httptest.NewServer(g.handler(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v1/inventory/book/restock" {
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Lattice-Token", goodToken(2))
			io.WriteString(w, `{"sku":"book","region":"us-east","home":"us-east","stock":1}`)
			return
		}
		hostileCart(w, goodToken(1), "c1")
	}))
	defer srv.Close()
	cl, err := client.New([]string{srv.URL}, client.Options{MaxAttempts: 1})
	if err != nil {
		t.Fatal(err)
	}
	ctx := ctxT(t, 10*time.Second)
	cl.SetToken("not-a-token!")
	if _, err := cl.AddItem(ctx, "c1", "book", 1); err != nil {
		t.Fatalf("AddItem after SetToken of garbage: %v", err)
	}
	if requests, served := g.counts(); requests != 2 || served != 1 {
		t.Fatalf("AddItem: %d requests, %d applied; want 2 (the first refused for its token) and 1", requests, served)
	}
	cl.SetToken("garbage!")
	if cl.Token() != goodToken(1) {
		t.Fatalf("garbage replaced the well-formed token: %q", cl.Token())
	}
	cl2, err := client.New([]string{srv.URL}, client.Options{MaxAttempts: 1})
	if err != nil {
		t.Fatal(err)
	}
	cl2.SetToken("garbage!")
	if _, err := cl2.Restock(ctx, "book", 1); err != nil {
		t.Fatalf("Restock after SetToken of garbage: %v", err)
	}
	if cl2.Token() != goodToken(2) {
		t.Fatalf("token %q after the restock's answer; want the answer's", cl2.Token())
	}
}

// TestUnsendableTokenIgnored: SetToken of a token with a line break (no
// request could carry it: net/http refuses the header) is ignored, and
// calls are served.
func TestUnsendableTokenIgnored(t *testing.T) {
	var g tokenCheckingRegion
	srv := httptest.NewServer(g.handler(func(w http.ResponseWriter, r *http.Request) {
		hostileCart(w, "", "c1")
	}))
	defer srv.Close()
	cl, err := client.New([]string{srv.URL}, client.Options{MaxAttempts: 1})
	if err != nil {
		t.Fatal(err)
	}
	cl.SetToken("gQ\nX-Evil: 1")
	if cl.Token() != "" {
		t.Fatalf("kept the unsendable token %q", cl.Token())
	}
	if _, err := cl.Cart(ctxT(t, 10*time.Second), "c1"); err != nil {
		t.Fatal(err)
	}
}

// TestRefusedTokenSentAgainOnce: a region that answers every request
// carrying a token 400 invalid_token, and then refuses the request sent
// without it too (with the same code): the call sends the request again
// once only, and returns the region's problem; the client's token is
// dropped.
func TestRefusedTokenSentAgainOnce(t *testing.T) {
	var mu sync.Mutex
	var sent []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		mu.Lock()
		sent = append(sent, r.Header.Get("Lattice-Token"))
		mu.Unlock()
		w.Header().Set("Content-Type", "application/problem+json")
		w.WriteHeader(http.StatusBadRequest)
		io.WriteString(w, `{"type":"urn:lattice:problem:invalid_token","title":"Invalid causal token","status":400,"code":"invalid_token"}`)
	}))
	defer srv.Close()
	cl, err := client.New([]string{srv.URL}, client.Options{MaxAttempts: 4})
	if err != nil {
		t.Fatal(err)
	}
	cl.SetToken(goodToken(7))
	_, err = cl.Cart(ctxT(t, 10*time.Second), "c1")
	var p *client.Problem
	if !errors.As(err, &p) || p.Code != region.CodeInvalidToken {
		t.Fatalf("Cart: %v; want the region's invalid_token", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(sent) != 2 || sent[0] != goodToken(7) || sent[1] != "" {
		t.Fatalf("requests carried the tokens %q; want the client's, then none", sent)
	}
	if cl.Token() != "" {
		t.Fatalf("the refused token %q is kept", cl.Token())
	}
}

// TestRefusedTokenKeepsNewerToken: while a request carrying a garbage
// token is at the region, another answer gives the client a well-formed
// token. The region then refuses the garbage: the client keeps the newer
// token (it was not refused) and sends the request again with it, so the
// guarantee of that answer is not given up.
func TestRefusedTokenKeepsNewerToken(t *testing.T) {
	newer := goodToken(9)
	arrived := make(chan struct{})
	proceed := make(chan struct{})
	var g tokenCheckingRegion
	inner := g.handler(func(w http.ResponseWriter, r *http.Request) { hostileCart(w, "", "c1") })
	gate := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Lattice-Token") == "garbage!" {
			close(arrived)
			<-proceed
		}
		inner.ServeHTTP(w, r)
	}))
	defer gate.Close()
	cl, err := client.New([]string{gate.URL}, client.Options{MaxAttempts: 1})
	if err != nil {
		t.Fatal(err)
	}
	cl.SetToken("garbage!")
	done := make(chan error, 1)
	go func() {
		_, err := cl.Cart(ctxT(t, 10*time.Second), "c1")
		done <- err
	}()
	select {
	case <-arrived:
	case <-time.After(10 * time.Second):
		t.Fatal("the request did not reach the region")
	}
	cl.SetToken(newer) // another call's answer, meanwhile
	close(proceed)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	g.mu.Lock()
	sent := append([]string(nil), g.sent...)
	g.mu.Unlock()
	if len(sent) != 2 || sent[1] != newer {
		t.Fatalf("requests carried the tokens %q; want the garbage, then the newer token", sent)
	}
	if cl.Token() != newer {
		t.Fatalf("token %q; want the newer %q kept", cl.Token(), newer)
	}
}
